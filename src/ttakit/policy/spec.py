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
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import PolicyError

_TOKEN = re.compile(
    r"\s*(?:(?P<num>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<str>'[^']*'|\"[^\"]*\")"
    r"|(?P<op>[-+*(),=\[\]]))"
)


def tokenize(spec: str) -> list[tuple[str, Any, int]]:
    tokens, pos = [], 0
    spec = spec.rstrip()
    while pos < len(spec):
        m = _TOKEN.match(spec, pos)
        if not m or m.end() == pos:
            pos += len(spec[pos:]) - len(spec[pos:].lstrip())  # point at the character, not the space
            raise PolicyError(f"cannot read policy spec at position {pos}: {spec[pos:pos + 20]!r}\n"
                              f"  {spec}\n  {' ' * pos}^")
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
            value: Any = float(text) if any(c in text for c in ".eE") else int(text)
        elif kind == "str":
            value = text[1:-1]
        else:
            value = text
        tokens.append((kind, value, start))
        pos = m.end()
    tokens.append(("end", None, len(spec)))
    return tokens


class _Parser:
    def __init__(self, spec: str, builder):
        self.spec = spec
        self.tokens = tokenize(spec)
        self.i = 0
        self.build = builder  # (name, args, kwargs) -> Policy

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
        found = "end of spec" if tok[0] == "end" else repr(str(tok[1]))
        raise PolicyError(f"{msg}, found {found} at position {pos}\n  {self.spec}\n  {' ' * pos}^")

    # -- grammar ------------------------------------------------------------
    def parse(self):
        if self.peek()[0] == "end":
            raise PolicyError("empty policy spec; try 'identity', 'identity + hflip' or 'd4'")
        result = self.expr()
        if self.peek()[0] != "end":
            self.fail("expected '+', '*' or the end of the spec", self.peek())
        return result

    def expr(self):
        left = self.term()
        while self.is_op("+"):
            plus = self.take()
            right = self.term()
            if isinstance(left, float) or isinstance(right, float):
                self.fail("a number can only multiply views ('0.5 * hflip'), not be added to them", plus)
            left = left + right
        return left

    def term(self):
        left = self.factor()
        while self.is_op("*"):
            self.take()
            right = self.factor()
            left = _times(left, right)
        return left

    def factor(self):
        tok = self.peek()
        if tok[0] == "num":
            self.take()
            return float(tok[1])
        if self.is_op("("):
            self.take()
            inner = self.expr()
            self.take(")")
            return inner
        if tok[0] == "name":
            return self.call()
        self.fail("expected a view name, a number or '('", tok)

    def call(self):
        name = self.take()[1]
        args, kwargs = [], {}
        if self.is_op("("):
            self.take()
            while not self.is_op(")"):
                tok = self.peek()
                if tok[0] == "name" and self.tokens[self.i + 1][0] == "op" and self.tokens[self.i + 1][1] == "=":
                    self.take()
                    self.take("=")
                    if tok[1] in kwargs:
                        self.fail(f"parameter {tok[1]!r} given twice", tok)
                    kwargs[tok[1]] = self.value()
                else:
                    if kwargs:
                        self.fail("positional value after a named one", tok)
                    args.append(self.value())
                if not self.is_op(")"):
                    self.take(",")
            self.take(")")
        return self.build(name, args, kwargs)

    def value(self):
        tok = self.peek()
        if tok[0] == "num":
            self.take()
            return tok[1]
        if tok[0] == "str":
            self.take()
            return tok[1]
        if tok[0] == "name":
            self.take()
            return {"true": True, "false": False, "none": None}.get(tok[1].lower(), tok[1])
        if self.is_op("[") or self.is_op("("):
            close = "]" if tok[1] == "[" else ")"
            self.take()
            items = []
            while not self.is_op(close):
                items.append(self.value())
                if not self.is_op(close):
                    self.take(",")
            self.take(close)
            return items if close == "]" else tuple(items)
        self.fail("expected a value", tok)


def _times(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return a * b
    if isinstance(a, float):
        return b.scaled(a)
    if isinstance(b, float):
        return a.scaled(b)
    return a * b


def parse(spec: str, builder):
    """Parse ``spec`` into a Policy; ``builder(name, args, kwargs)`` turns
    one call into a Policy."""
    if not isinstance(spec, str):
        raise PolicyError(f"a policy spec must be a string, got {type(spec).__name__}")
    result = _Parser(spec, builder).parse()
    if isinstance(result, float):
        raise PolicyError(f"policy spec {spec!r} is a number, not views")
    return result
