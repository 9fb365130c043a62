"""``ttakit views``: the view, group and merge names a policy can use.

Read from the registries at run time, so views added with
:func:`ttakit.views.register_view` are listed too.
"""

from __future__ import annotations

import argparse
import inspect
import json

from .common import EXIT_OK, Command

#: names with longer signatures than this get the summary on the next line
COLUMN = 26


def signature(factory, skip_self: bool = False) -> str:
    """``(a, b=1)`` for a factory's parameters, '' when it has none."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return ""
    if skip_self:
        params = params[1:]
    parts = [p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}" for p in params]
    return f"({', '.join(parts)})" if parts else ""


def first_sentence(obj) -> str:
    """The docstring's first sentence, on one line."""
    doc = " ".join((inspect.getdoc(obj) or "").split("\n\n")[0].replace("``", "").split())
    end = doc.find(". ")
    return doc[: end + 1] if end >= 0 else doc


def sections() -> list[tuple[str, list[tuple[str, str, str]]]]:
    """``(title, [(name, signature, summary)])`` for views, groups and merges."""
    from ...merge import MERGES
    from ...views.registry import GROUPS, VIEWS

    return [
        ("views", [(n, signature(e.factory), e.summary) for n, e in VIEWS.items()]),
        ("groups (several views each)", [(n, signature(e.factory), e.summary) for n, e in GROUPS.items()]),
        ("merges (--merge)", [(n, signature(cls.__init__, skip_self=True) if "__init__" in vars(cls) else "",
                               first_sentence(cls)) for n, cls in MERGES.items()]),
    ]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", "-f", choices=("text", "json"), default="text",
                   help="text: aligned lists; json: names, parameters and summaries. Default: text")


def run(args: argparse.Namespace) -> int:
    found = sections()
    if args.format == "json":
        out = {title.split()[0]: [{"name": n, "parameters": s, "summary": d} for n, s, d in rows]
               for title, rows in found}
        print(json.dumps(out, indent=2))
        return EXIT_OK
    for k, (title, rows) in enumerate(found):
        if k:
            print()
        print(f"{title}:")
        width = min(max(len(n + s) for n, s, _ in rows), COLUMN)
        for n, s, d in rows:
            if len(n + s) > width:  # long signatures get their own line
                print(f"  {n + s}\n  {'':<{width}}  {d}")
            else:
                print(f"  {n + s:<{width}}  {d}")
    print("\nCombine them in a policy spec: 'identity + hflip', 'd4 * scale(0.9, 1.1)', '0.5 * hflip'.")
    return EXIT_OK


COMMAND = Command("views", "list the view, group and merge names usable in policies", configure=configure,
                  run=run, description="List every view and group name with its parameters and defaults, and "
                                       "the merges, for use in --policy and --merge.")
