"""One self-contained HTML page: inline CSS, no script, no font or file
from the network (a Content-Security-Policy forbids every fetch but the
page's own folder and inline ``data:`` images), readable from disk without
a server. :class:`Page` collects sections; :meth:`Page.write` writes
``index.html``."""

from __future__ import annotations

import html
from pathlib import Path

from ..files import write_atomic

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1180px;
 padding:16px 24px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:8px 0}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #dde;padding-bottom:3px}
.verdict{font-size:16px;padding:10px 14px;border-radius:6px;background:#eef1f6;border-left:6px solid #8a94a6}
.verdict.good{background:#e8f6ec;border-color:#2e9e4f}.verdict.bad{background:#fbeaea;border-color:#c83c3c}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 9px;border-bottom:1px solid #e4e6ec;text-align:right}
th{background:#f4f5f8}td:first-child,th:first-child{text-align:left}
.note{color:#59627a;font-size:13px}.plots img{height:230px;max-width:100%;margin:4px 12px 4px 0;vertical-align:top}
.gallery{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #dfe2ea;border-radius:6px;padding:6px;width:var(--w,150px);font-size:12px;background:#fafbfc}
.card img{display:block;width:100%;image-rendering:pixelated;border-radius:3px}
.card.wide{--w:330px}.card.xwide{--w:100%}.card .row{display:flex;gap:6px}.card .row figure{margin:0;flex:1}
.card figcaption{text-align:center;color:#59627a}
.ok{color:#1f7a3c;font-weight:600}.wrong{color:#b32d2d;font-weight:600}.votes{color:#59627a}
code{background:#f1f2f6;padding:0 3px;border-radius:3px}
"""

#: the page may load images from its own folder or inline, and nothing else
CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def table(header: list[str], rows: list[list], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (cells built from :func:`esc` already)."""
    cell = (lambda v: str(v)) if raw else esc
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def markdown_table(text: str) -> str:
    """The first Markdown table of ``text`` (``| a | b |`` lines) as HTML."""
    lines: list[str] = []
    for ln in map(str.strip, text.splitlines()):
        if ln.startswith("|"):
            lines.append(ln)
        elif lines:
            break
    if len(lines) < 2:
        return ""
    split = [[c.strip().replace("`", "") for c in ln.strip("|").split("|")] for ln in lines]
    return table(split[0], [r for r in split[2:]])


def image(src: str, alt: str, width: int | None = None) -> str:
    w = f' width="{int(width)}"' if width else ""
    return f'<img src="{esc(src)}" alt="{esc(alt)}"{w} loading="eager">'


class Page:
    """An HTML page built section by section."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> "Page":
        self.parts.append(f"<h{level}>{esc(text)}</h{level}>")
        return self

    def text(self, text: str, cls: str = "") -> "Page":
        self.parts.append(f'<p class="{cls}">{esc(text)}</p>' if cls else f"<p>{esc(text)}</p>")
        return self

    def raw(self, fragment: str) -> "Page":
        self.parts.append(fragment)
        return self

    def verdict(self, text: str, tone: str) -> "Page":
        """``tone``: good, bad or neutral."""
        return self.raw(f'<p class="verdict {esc(tone)}">{esc(text)}</p>')

    def render(self) -> str:
        return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{esc(self.title)}</title><style>{CSS}</style></head>\n<body>\n"
                f"<h1>{esc(self.title)}</h1>\n" + "\n".join(self.parts) + "\n</body></html>\n")

    def write(self, folder) -> Path:
        path = Path(folder) / "index.html"
        write_atomic(path, self.render())
        return path


__all__ = ["Page", "esc", "table", "markdown_table", "image", "CSS", "CSP"]
