"""Numbers as the reports print them.

:func:`signed` prints a difference or a CI bound with its sign and never as
"-0.00" or "+0.00" for a value that is not zero: a bound that rounds to zero
gets the digits that show its sign (``-0.0004``), an exact zero prints as
``0.00`` (floating-point dust below 1e-12 counts as zero).
"""

from __future__ import annotations

import math


def signed(value: float, digits: int = 2) -> str:
    """``value`` with its sign and ``digits`` decimals (see the module doc)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if abs(value) < 1e-12:
        return f"{0:.{digits}f}"
    text = f"{value:+.{digits}f}"
    if float(text) == 0:
        return f"{value:+.1g}"
    return text


def points(value: float, digits: int = 2) -> str:
    """A share (0.0123) as signed percentage points (``+1.23``)."""
    return signed(value * 100 if value is not None else value, digits)


def ci(low: float, high: float, scale: float = 100, digits: int = 2) -> str:
    """``[low, high]``, each bound :func:`signed` after multiplying by ``scale``."""
    return f"[{signed(low * scale, digits)}, {signed(high * scale, digits)}]"


__all__ = ["signed", "points", "ci"]
