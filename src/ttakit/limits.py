"""Limits on the work a short input may ask for.

(Tables too: ``max_table_columns`` and ``max_cell_chars`` below bound what a
CSV or Parquet file given to ``ttakit evaluate``/``predict`` may hold; its
header is checked before the table is read.)

A policy spec of a few characters can name millions of views
(``d4*d4*d4*d4*d4*d4*d4*d4``), a 500-byte YAML file can expand to gigabytes,
and every distinct view is one forward pass per input. ttakit checks each
limit below *before* doing the work it guards, and refuses with a
:class:`LimitError` (a :class:`~ttakit.errors.PolicyError`) that names the
limit, its value, the value found and how to raise it.

=======================  ========  ====================================================
limit                    default   what it bounds
=======================  ========  ====================================================
``max_views``            4096      distinct views of a policy (forward passes per input)
``max_copies``           100000    views a policy lists, duplicates included (``random(n)``
                                   copies, the expanded product of a spec), counted
                                   before expanding
``max_spec_chars``       10000     characters in a policy spec string
``max_depth``            64        nesting of brackets in a spec, and of lists and
                                   mappings in a policy file
``max_file_bytes``       1048576   size of a policy file (1 MiB)
``max_table_columns``    100000    columns of a table file (CSV header, Parquet
                                   schema), checked before the rows are read
``max_cell_chars``       100000    characters in one cell of a table file (a column
                                   name included)
=======================  ========  ====================================================

YAML aliases and anchors (the "billion laughs" expansion) are always refused
in policy files; with them gone a document holds at most as many nodes as it
has bytes.

Raise a limit in one of two ways:

- for a block of code (thread- and task-local)::

      with ttakit.limits.override(max_views=20000):
          policy = ttakit.Policy.parse(spec)

- for a whole process, the command line included, with an environment
  variable named after the limit: ``TTAKIT_MAX_VIEWS=20000``,
  ``TTAKIT_MAX_COPIES``, ``TTAKIT_MAX_SPEC_CHARS``, ``TTAKIT_MAX_DEPTH``,
  ``TTAKIT_MAX_FILE_BYTES``, ``TTAKIT_MAX_TABLE_COLUMNS``, ``TTAKIT_MAX_CELL_CHARS``.

:func:`current` returns the limits in force: those of the innermost
:func:`override`, else the defaults above with the environment applied.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from .errors import PolicyError


class LimitError(PolicyError):
    """A policy or policy file asks for more than a limit allows; ``limit``
    is its name, ``value`` its value and ``found`` what was asked for."""

    def __init__(self, message: str, limit: str = "", value: int = 0, found: int = 0):
        super().__init__(message)
        self.limit, self.value, self.found = limit, value, found


@dataclass(frozen=True)
class Limits:
    """The limits in force (see the module documentation)."""

    max_views: int = 4096
    max_copies: int = 100_000
    max_spec_chars: int = 10_000
    max_depth: int = 64
    max_file_bytes: int = 1 << 20
    max_table_columns: int = 100_000
    max_cell_chars: int = 100_000

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise PolicyError(f"limit {f.name} must be a positive integer, got {v!r}")

    def check(self, name: str, found: int, what: str, detail: str = "") -> None:
        """Refuse ``found`` (described by ``what``, e.g. "distinct views")
        when it is over the limit ``name``; ``detail`` ends the message."""
        value = getattr(self, name)
        if found > value:
            shown = f"{found:,}" if found < 10**18 else f"about 1e{len(str(found)) - 1}"
            raise LimitError(f"{what}: {shown} is over the limit {name}={value:,}. {how_to_raise(name)}"
                             f"{detail}", name, value, found)


def env_name(limit: str) -> str:
    """The environment variable that sets ``limit``: ``TTAKIT_MAX_VIEWS``."""
    return "TTAKIT_" + limit.upper()


def how_to_raise(limit: str) -> str:
    return (f"Raise it with the environment variable {env_name(limit)}=N or, in Python, "
            f"with ttakit.limits.override({limit}=N)")


NAMES = tuple(f.name for f in dataclasses.fields(Limits))
DEFAULTS = Limits()
_override: ContextVar[Limits | None] = ContextVar("ttakit_limits", default=None)


def from_environment() -> Limits:
    """The defaults with the ``TTAKIT_MAX_*`` environment variables applied."""
    changes = {}
    for name in NAMES:
        text = os.environ.get(env_name(name))
        if text is None or not text.strip():
            continue
        try:
            changes[name] = int(text.strip().replace("_", ""))
        except ValueError:
            raise PolicyError(f"{env_name(name)} must be a positive integer, got {text[:40]!r}") from None
        if changes[name] < 1:
            raise PolicyError(f"{env_name(name)} must be a positive integer, got {text[:40]!r}")
    return dataclasses.replace(DEFAULTS, **changes) if changes else DEFAULTS


def current() -> Limits:
    """The limits in force here."""
    active = _override.get()
    return active if active is not None else from_environment()


@contextlib.contextmanager
def override(**changes: int) -> Iterator[Limits]:
    """Within the ``with`` block (this thread or task only), the current
    limits with ``changes`` applied: ``override(max_views=20000)``."""
    unknown = [k for k in changes if k not in NAMES]
    if unknown:
        raise PolicyError(f"no limit named {unknown[0]!r}; limits: {', '.join(NAMES)}")
    limits = dataclasses.replace(current(), **changes)
    token = _override.set(limits)
    try:
        yield limits
    finally:
        _override.reset(token)


__all__ = ["Limits", "LimitError", "DEFAULTS", "NAMES", "current", "override", "from_environment", "env_name",
           "how_to_raise"]
