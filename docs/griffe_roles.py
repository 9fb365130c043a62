"""A griffe extension for the API reference: Sphinx roles in docstrings
(:class:`~ttakit.Policy`, :func:`tune`, :mod:`ttakit.views`...) become
code spans, so they read as names instead of raw markup."""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`~?([^`]+)`")


def plain_roles(text: str) -> str:
    """``:class:`~a.b.C``` -> ```C```, ``:func:`a.f``` -> ```a.f```."""
    def code(m: re.Match) -> str:
        target = m.group(1)
        shown = target.rsplit(".", 1)[-1] if m.group(0).count("~") else target
        return f"`{shown}`"
    return ROLE.sub(code, text)


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(obj.docstring.value)
