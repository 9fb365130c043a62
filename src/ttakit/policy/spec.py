"""The policy spec grammar.

A spec reads like the maths of the views it names::

    identity + hflip                 two views, weight 1 each
    d4                               the 8 dihedral views
    hflips * scale(0.9, 1.1)         product: every pair, composed left to right
    identity + 0.5 * hflip           a number scales weights
    (identity + hflip) * shift(dx=[-2, 2])
    random(7, seed=0, horizontal_flip=true, width_shift_range=0.1)

Grammar::

    expr   := term ('+' term)*
    term   := factor ('*' factor)*
    factor := NUMBER | call | '(' expr ')'
    call   := NAME ['(' [arg (',' arg)*] ')']
    arg    := [NAME '='] value
    value  := NUMBER | NAME | STRING | 'true' | 'false'
            | '[' value, ... ']'      (a list: one view per element)
            | '(' value, ... ')'      (a tuple: one value, e.g. a crop size)

Parsing takes time linear in the length of the spec and never recurses
deeper than the bracket nesting, which :mod:`ttakit.limits` bounds
(``max_depth``), as it bounds the spec's length (``max_spec_chars``). A spec
is read into a small tree first; the number of views it expands to is
counted from the tree (a product multiplies its factors' counts, a sum adds
its terms', ``random(n)`` is ``n``) and checked against ``max_copies``
before any view is built. Files are not part of the grammar: load a policy
file with ``Policy.load(path)`` (``--policy FILE`` on the command line).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from ..errors import PolicyError
from ..limits import LimitError, Limits, current

_TOKEN = re.compile(
    r"\s*(?:(?P<num>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<str>'[^']*'|\"[^\"]*\")"
    r"|(?P<op>[-+*(),=\[\]]))",
    re.ASCII,
)
#: characters of the spec shown around the position an error points at
WINDOW = 60
#: longest integer literal read (a float's range: 1.8e308)
MAX_DIGITS = 308
_OPEN = {"(": ")", "[": "]"}

# the tree: ("num", value, pos) | ("call", name, args, kwargs, pos)
#         | ("sum", [term, ...], [pos of each '+']) | ("prod", [factor, ...], pos)


def excerpt(text: str, pos: int, width: int = WINDOW) -> str:
    """Two lines: ``text`` (a window of ``width`` characters around ``pos``
    when longer, with its total length) and a caret under ``pos``."""
    if len(text) <= width:
        start, end, note = 0, len(text), ""
    else:
        start = max(0, min(pos - width // 2, len(text) - width))
        end = start + width
        note = f" (characters {start}-{end} of {len(text):,})"
    prefix, suffix = ("..." if start > 0 else ""), ("..." if end < len(text) else "")
    line = "".join(c if c.isprintable() else " " for c in text[start:end])
    return f"{note}\n  {prefix}{line}{suffix}\n  {' ' * (len(prefix) + pos - start)}^"


def short(text: Any, width: int = 40) -> str:
    """``repr(str(text))``, cut to about ``width`` characters."""
    text = str(text)
    return repr(text) if len(text) <= width else repr(text[:width]) + f"... ({len(text):,} characters)"


def _number(text: str, spec: str, start: int) -> Any:
    digits = text.lstrip("+-").split("e")[0].split("E")[0]
    if not any(c in text for c in ".eE"):
        if len(digits) > MAX_DIGITS:
            raise PolicyError(f"number too large at position {start} ({len(digits):,} digits)"
                              + excerpt(spec, start))
        return int(text)
    value = float(text)
    if not math.isfinite(value):
        raise PolicyError(f"number out of range at position {start}: {short(text)}" + excerpt(spec, start))
    return value


def tokenize(spec: str) -> list[tuple[str, Any, int]]:
    tokens: list[tuple[str, Any, int]] = []
    pos = 0
    spec = spec.rstrip()
    while pos < len(spec):
        m = _TOKEN.match(spec, pos)
        if not m or m.end() == pos:
            while pos < len(spec) and spec[pos].isspace():  # point at the character, not the space
                pos += 1
            raise PolicyError(f"cannot read policy spec at position {pos}: {spec[pos:pos + 20]!r}"
                              + excerpt(spec, pos))
        kind = m.lastgroup
        text = m.group(kind)
        start = m.start(kind)
        if kind == "num" and text[0] in "+-" and tokens and (
            tokens[-1][0] in ("num", "name", "str") or tokens[-1][1] in (")", "]")
        ):
            # a binary '+'/'-' written without a space: 'identity +0.5*hflip'
            tokens.append(("op", text[0], start))
            text, start = text[1:], start + 1
        if kind == "num":
            value: Any = _number(text, spec, start)
        elif kind == "str":
            value = text[1:-1]
        else:
            value = text
        tokens.append((kind, value, start))
        pos = m.end()
    tokens.append(("end", None, len(spec)))
    return tokens


class _Parser:
    """Reads tokens into the tree; recursion follows bracket nesting only,
    which ``max_depth`` bounds."""

    def __init__(self, spec: str, limits: Limits):
        self.spec = spec
        self.limits = limits
        self.tokens = tokenize(spec)
        self.i = 0
        self.depth = 0

    # -- helpers ----------------------------------------------------------
    def peek(self):
        return self.tokens[self.i]

    def take(self, op=None):
        tok = self.tokens[self.i]
        if op is not None and not (tok[0] == "op" and tok[1] == op):
            self.fail(f"expected {op!r}", tok)
        self.i += 1
        return tok

    def is_op(self, op) -> bool:
        tok = self.peek()
        return tok[0] == "op" and tok[1] == op

    def fail(self, msg, tok):
        pos = tok[2]
        found = "end of spec" if tok[0] == "end" else short(tok[1])
        raise PolicyError(f"{msg}, found {found} at position {pos}" + excerpt(self.spec, pos))

    def open(self, tok) -> None:
        """Enter a bracket, refusing nesting deeper than ``max_depth``."""
        self.depth += 1
        self.limits.check("max_depth", self.depth, f"policy spec nests brackets too deeply at position {tok[2]}",
                          excerpt(self.spec, tok[2]))

    # -- grammar ------------------------------------------------------------
    def parse(self):
        if self.peek()[0] == "end":
            raise PolicyError("empty policy spec; try 'identity', 'identity + hflip' or 'd4'")
        tree = self.expr()
        if self.peek()[0] != "end":
            self.fail("expected '+', '*' or the end of the spec", self.peek())
        return tree

    def expr(self):
        terms, plus = [self.term()], []
        while self.is_op("+"):
            plus.append(self.take())
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else ("sum", terms, plus)

    def term(self):
        pos = self.peek()[2]
        factors = [self.factor()]
        while self.is_op("*"):
            self.take()
            factors.append(self.factor())
        return factors[0] if len(factors) == 1 else ("prod", factors, pos)

    def factor(self):
        tok = self.peek()
        if tok[0] == "num":
            self.take()
            return ("num", float(tok[1]), tok[2])
        if self.is_op("("):
            self.open(self.take())
            inner = self.expr()
            self.take(")")
            self.depth -= 1
            return inner
        if tok[0] == "name":
            return self.call()
        self.fail("expected a view name, a number or '('", tok)

    def call(self):
        tok = self.take()
        args, kwargs = [], {}
        if self.is_op("("):
            self.open(self.take())
            while not self.is_op(")"):
                arg = self.peek()
                if arg[0] == "name" and self.tokens[self.i + 1][0] == "op" and self.tokens[self.i + 1][1] == "=":
                    self.take()
                    self.take("=")
                    if arg[1] in kwargs:
                        self.fail(f"parameter {short(arg[1])} given twice", arg)
                    kwargs[arg[1]] = self.value()
                else:
                    if kwargs:
                        self.fail("positional value after a named one", arg)
                    args.append(self.value())
                if not self.is_op(")"):
                    self.take(",")
            self.take(")")
            self.depth -= 1
        return ("call", tok[1], args, kwargs, tok[2])

    def value(self):
        tok = self.peek()
        if tok[0] in ("num", "str"):
            self.take()
            return tok[1]
        if tok[0] == "name":
            self.take()
            return {"true": True, "false": False, "none": None}.get(tok[1].lower(), tok[1])
        if self.is_op("[") or self.is_op("("):
            close = _OPEN[tok[1]]
            self.open(self.take())
            items = []
            while not self.is_op(close):
                items.append(self.value())
                if not self.is_op(close):
                    self.take(",")
            self.take(close)
            self.depth -= 1
            return items if close == "]" else tuple(items)
        self.fail("expected a value", tok)


def _count(node, count_call: Callable) -> int | None:
    """Views ``node`` expands to, duplicates included, without building
    them (None for a number). Exact: a spec's length bounds the size of
    the integer."""
    kind = node[0]
    if kind == "num":
        return None
    if kind == "call":
        return count_call(node[1], node[2], node[3])
    counts = [_count(child, count_call) for child in node[1]]
    if kind == "sum":
        return sum(c or 0 for c in counts)
    return math.prod(1 if c is None else c for c in counts)


class _Builder:
    def __init__(self, spec: str, call: Callable, concat: Callable):
        self.spec, self.call, self.concat = spec, call, concat

    def build(self, node):
        kind = node[0]
        if kind == "num":
            return node[1]
        if kind == "call":
            return self.call(node[1], node[2], node[3])
        parts = [self.build(child) for child in node[1]]
        if kind == "sum":
            for k, part in enumerate(parts):
                if isinstance(part, float):
                    plus = node[2][max(k - 1, 0)]
                    raise PolicyError("a number can only multiply views ('0.5 * hflip'), not be added to them, "
                                      f"found '+' at position {plus[2]}" + excerpt(self.spec, plus[2]))
            return self.concat(parts)
        result = parts[0]
        for part in parts[1:]:
            result = _times(result, part)
        return result


def _times(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return a * b
    if isinstance(a, float):
        return b.scaled(a)
    if isinstance(b, float):
        return a.scaled(b)
    return a * b


def parse(spec: str, call: Callable, count: Callable, concat: Callable):
    """Parse ``spec`` into a Policy. ``call(name, args, kwargs)`` turns one
    call into a Policy, ``count(name, args, kwargs)`` says how many views
    it would hold without building them, ``concat(policies)`` joins the
    terms of a sum."""
    if not isinstance(spec, str):
        raise PolicyError(f"a policy spec must be a string, got {type(spec).__name__}")
    limits = current()
    limits.check("max_spec_chars", len(spec), "policy spec too long (characters)")
    try:
        tree = _Parser(spec, limits).parse()
        limits.check("max_copies", _count(tree, count) or 0,
                     f"policy spec {short(spec)} expands to too many views, counting duplicates")
        result = _Builder(spec.rstrip(), call, concat).build(tree)
    except RecursionError:  # only when max_depth was raised beyond what Python's stack holds
        raise LimitError(f"policy spec nests too deeply for Python's stack; lower max_depth "
                         f"(now {limits.max_depth})", "max_depth", limits.max_depth, limits.max_depth) from None
    if isinstance(result, float):
        raise PolicyError(f"policy spec {short(spec)} is a number, not views")
    return result


def split_stages(spec: str) -> list[str]:
    """``spec`` split at the ``|`` outside quotes (the stages of an adaptive policy)."""
    parts, cur, quote = [], [], None
    for c in spec:
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "|":
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(c)
    parts.append("".join(cur))
    return parts


def is_staged(spec: str) -> bool:
    """True when ``spec`` has stages (a ``|`` outside quotes)."""
    return len(split_stages(spec)) > 1
