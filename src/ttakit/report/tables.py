"""The HTML page of an evaluation on a table
(:class:`~ttakit.evaluation.rows.RowReport`): the scores without and with
the row views, the distribution of the per-row change, and the rows that
changed most."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .page import Page, markdown_table, table
from .svg import histogram

#: rows listed as "most changed"
MOST_CHANGED = 15


def write_table(report, out) -> Path:
    """``index.html`` for a table ``report`` in the folder ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    page = Page(f"TTA evaluation: {report.task} on a table")
    first = report.paired.get("accuracy") or report.paired.get("absolute_error")
    head = report.to_markdown().splitlines()
    page.text(head[0])
    if first is not None:
        good = first["ci_low"] > 0 if "accuracy" in report.paired else first["ci_high"] < 0
        bad = first["ci_high"] < 0 if "accuracy" in report.paired else first["ci_low"] > 0
        page.verdict(head[-1] if head[-1].strip() else head[-2], "good" if good else "bad" if bad else "neutral")
    page.heading("Paired comparison").raw(markdown_table(report.to_markdown()))
    rows = report.rows or {}
    change = rows.get("change")
    if change is not None and len(change):
        what = rows.get("change_name", "change")
        page.heading("Per-row change")
        page.raw(histogram(change, title=f"{what} per row (right of zero: better with TTA)"))
        c = np.asarray(change, np.float64)
        page.text(f"{int((c > 0).sum())} rows better, {int((c < 0).sum())} worse, {int((c == 0).sum())} unchanged; "
                  f"median {np.median(c):+.4g}, 5th to 95th percentile {np.quantile(c, 0.05):+.4g} to "
                  f"{np.quantile(c, 0.95):+.4g}.", "note")
        order = np.argsort(-np.abs(c), kind="stable")[:MOST_CHANGED]
        cols = rows.get("columns", {})
        header = ["row"] + list(cols) + [what]
        body = [[int(i)] + [_fmt(cols[k][i]) for k in cols] + [f"{c[i]:+.4g}"] for i in order]
        page.heading(f"The {len(order)} rows most changed").raw(table(header, body))
    return page.write(out)


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return str(v)


__all__ = ["write_table", "MOST_CHANGED"]
