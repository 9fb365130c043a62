"""Names of views and view groups, as used in policy specs and files.

``make_views(name, *args, **kwargs)`` builds the views a spec call names.
Positional values all go to the view's first parameter, one view each
(``scale(0.9, 1.1)`` is two views); a keyword given a list ``[a, b]`` also
expands (``shift(dx=[-2, 2], dy=[-2, 2])`` is four views).

:func:`register_view` adds a user's view (or group) to these tables. The
spec parser, ``Policy.load`` (through :func:`view_from_dict`) and ``ttakit
views`` all look names up here at call time, so a registered view works
everywhere a built-in one does.
"""

from __future__ import annotations

import inspect
import itertools
import keyword
import math
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import PolicyError, did_you_mean
from ..limits import current
from . import affine, dihedral, photometric
from .base import View
from .compose import compose


@dataclass(frozen=True)
class Entry:
    factory: Callable[..., Any]
    summary: str
    group: bool = False  # a group returns several views

    @property
    def parameters(self) -> list[str]:
        return list(inspect.signature(self.factory).parameters)


VIEWS: dict[str, Entry] = {
    "identity": Entry(dihedral.identity, "the input unchanged"),
    "hflip": Entry(dihedral.hflip, "mirror left-right"),
    "vflip": Entry(dihedral.vflip, "mirror top-bottom"),
    "rot90": Entry(dihedral.rot90, "k quarter turns counter-clockwise (k = 1, 2, 3)"),
    "rot180": Entry(lambda: dihedral.rot90(2), "half turn"),
    "rot270": Entry(lambda: dihedral.rot90(3), "three quarter turns"),
    "transpose": Entry(dihedral.transpose, "swap rows and columns"),
    "transverse": Entry(dihedral.transverse, "transpose about the anti-diagonal"),
    "shift": Entry(affine.Shift, "move content dx right, dy down, in pixels (unit='fraction': shares of width, height)"),
    "scale": Entry(affine.Scale, "resize by factor, then crop or pad back to size"),
    "zoom": Entry(affine.Scale, "alias of scale"),
    "rotate": Entry(affine.Rotate, "rotate by angle degrees about the centre"),
    "affine": Entry(affine.Affine, "Keras-style affine: theta, tx, ty, shear, zx, zy"),
    "crop": Entry(affine.Crop, "crop a window (size, pos in c/tl/tr/bl/br), resize back"),
    "multiply": Entry(photometric.Multiply, "x * factor"),
    "brightness": Entry(photometric.Multiply, "alias of multiply (PIL/Keras brightness)"),
    "add": Entry(photometric.Add, "x + value"),
    "contrast": Entry(photometric.Contrast, "blend with the mean grey level"),
    "channel_shift": Entry(photometric.ChannelShift, "Keras channel shift: x + value"),
    "noise": Entry(photometric.GaussianNoise, "add a fixed Gaussian noise field (std, seed)"),
}


def _tencrop(size=0.875):
    crops = affine.five_crop(size)
    return crops + [compose(c, dihedral.hflip()) for c in crops]


GROUPS: dict[str, Entry] = {
    "d4": Entry(dihedral.d4, "the 8 flips and quarter turns", group=True),
    "flips": Entry(lambda: [dihedral.identity(), dihedral.hflip(), dihedral.vflip()],
                   "identity, hflip, vflip", group=True),
    "hflips": Entry(lambda: [dihedral.identity(), dihedral.hflip()], "identity, hflip", group=True),
    "vflips": Entry(lambda: [dihedral.identity(), dihedral.vflip()], "identity, vflip", group=True),
    "rot90s": Entry(lambda: [dihedral.rot90(k) for k in range(4)], "the 4 quarter turns", group=True),
    "fivecrop": Entry(affine.five_crop, "centre and 4 corner crops of size, resized back", group=True),
    "tencrop": Entry(_tencrop, "five crops and their mirror images", group=True),
}


#: names the spec and policy-file readers handle themselves, never looked up here
RESERVED = frozenset({"random", "policy", "file", "compose"})
#: the names ttakit defines, which a user's view may only take with ``replace=True``
BUILTIN_NAMES = frozenset(VIEWS) | frozenset(GROUPS)


def register_view(name: str, factory: Callable[..., Any], summary: str = "", *, group: bool = False,
                  replace: bool = False) -> Entry:
    """Make ``name`` usable in policy specs and files, built by ``factory``.

    ``factory`` is usually a :class:`~ttakit.views.View` subclass (its
    ``name`` must be ``name``, since ``Policy.save`` writes ``view.name`` and
    ``Policy.load`` looks that up here; its constructor's parameters must be
    the keys of its ``params()``), or any callable returning a view, or, with
    ``group=True``, a list of views. ``summary`` is the line ``ttakit views``
    shows (default: the first line of the factory's docstring).

    Raises :class:`~ttakit.PolicyError` when ``name`` is not an identifier,
    is reserved by the spec syntax (``random``, ``policy``, ``file``,
    ``compose``), or is taken (a built-in or an earlier registration) and
    ``replace`` is false; and when ``factory`` is not callable, is a view
    instance (not its class), or is a view class with another ``name``.
    Returns the new :class:`Entry`.
    """
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise PolicyError(f"a view name must be a Python identifier, got {name!r}")
    if name in RESERVED or name.lower() in ("true", "false", "none"):
        raise PolicyError(f"{name!r} is reserved by the policy spec syntax; choose another name")
    if (name in VIEWS or name in GROUPS) and not replace:
        which = "a built-in view" if name in BUILTIN_NAMES else "already registered"
        raise PolicyError(f"view name {name!r} is {which}; pass replace=True to replace it")
    if isinstance(factory, View):
        raise PolicyError(f"register the view's class ({type(factory).__name__}) or a function returning "
                          f"views for {name!r}, not a view instance")
    if not callable(factory):
        raise PolicyError(f"the factory of view {name!r} must be callable (a View class or a function), "
                          f"got a {type(factory).__name__}")
    if isinstance(factory, type) and issubclass(factory, View) and factory.name != name:
        raise PolicyError(f"{factory.__name__}.name is {factory.name!r}, not {name!r}: policy files store "
                          "view.name, so the class must be registered under its own name")
    summary = summary or (inspect.getdoc(factory) or "").strip().split("\n")[0]
    entry = Entry(factory, summary, group=group)
    VIEWS.pop(name, None)
    GROUPS.pop(name, None)
    (GROUPS if group else VIEWS)[name] = entry
    return entry


def valid_names() -> list[str]:
    return sorted(VIEWS) + sorted(GROUPS)


def _call(name: str, entry: Entry, args: tuple, kwargs: dict) -> list[View]:
    try:
        made = entry.factory(*args, **kwargs)
    except PolicyError:
        raise
    except (TypeError, ValueError, ArithmeticError) as e:
        params = ", ".join(entry.parameters) or "no parameters"
        raise PolicyError(f"bad parameters for {name}{_fmt_call(args, kwargs)}: {_cut(e)}. "
                          f"{name} takes: {params}") from None
    return list(made) if entry.group else [made]


def _fmt_call(args, kwargs) -> str:
    parts = [_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width] + f"... ({len(text):,} characters)"


def _cut(e: Exception, width: int = 200) -> str:
    text = str(e)
    return text if len(text) <= width else text[:width] + "..."


def _name(name: Any) -> str:
    return _short(name, 40) if isinstance(name, str) else repr(type(name).__name__)


def _choices(name: str, args: tuple, kwargs: dict) -> tuple[Entry, list[tuple[str, list]]]:
    """The entry ``name`` stands for and, per parameter, the values it takes
    (a list expands into one view per element)."""
    entry = (VIEWS.get(name) or GROUPS.get(name)) if isinstance(name, str) else None
    if entry is None:
        hint = did_you_mean(name, valid_names()) if isinstance(name, str) and len(name) <= 40 else ""
        raise PolicyError(f"unknown view {_name(name)}.{hint} "
                          f"Valid views: {', '.join(sorted(VIEWS))}; groups: {', '.join(sorted(GROUPS))}")
    params = entry.parameters
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        hint = did_you_mean(unknown[0], params) if len(str(unknown[0])) <= 40 else ""
        raise PolicyError(f"{name} has no parameter {_name(unknown[0])}.{hint} "
                          f"{name} takes: {', '.join(params) or 'no parameters'}")
    if args and not params:
        raise PolicyError(f"{name} takes no parameters, got {len(args)}")
    # expand: every positional value is one choice of the first parameter
    choices: list[tuple[str, list]] = []
    if args:
        first = [v for a in args for v in (a if isinstance(a, list) else [a])]
        if params[0] in kwargs:
            raise PolicyError(f"{name}: {params[0]!r} given both by position and by name")
        choices.append((params[0], first))
    for k, v in kwargs.items():
        choices.append((k, v if isinstance(v, list) else [v]))
    return entry, choices


def count_views(name: str, *args: Any, **kwargs: Any) -> int:
    """How many views ``make_views(name, *args, **kwargs)`` returns, without
    building them all (a group is built once, for its size)."""
    entry, choices = _choices(name, args, kwargs)
    combos = math.prod(len(vals) for _, vals in choices)
    if entry.group and combos:
        combos *= len(_call(name, entry, (), {k: vals[0] for k, vals in choices}))
    return combos


def make_views(name: str, *args: Any, **kwargs: Any) -> list[View]:
    """All views a spec call ``name(args, kwargs)`` stands for, in order.
    Refuses (before building any) more than the ``max_copies`` limit."""
    entry, choices = _choices(name, args, kwargs)
    current().check("max_copies", math.prod(len(vals) for _, vals in choices),
                    f"{name}{_fmt_call(args, kwargs)} expands to too many views")
    views: list[View] = []
    for combo in itertools.product(*(vals for _, vals in choices)):
        kw = {k: v for (k, _), v in zip(choices, combo)}
        views.extend(_call(name, entry, (), kw))
    return views


def view_from_dict(d: dict) -> View:
    """Inverse of ``View.to_dict``."""
    if not isinstance(d, dict) or "view" not in d:
        raise PolicyError(f"a view entry must be a mapping with a 'view' key, got {_short(d)}")
    d = dict(d)
    name = d.pop("view")
    if name == "compose":
        parts = d.get("views", [])
        if not isinstance(parts, list):
            raise PolicyError(f"a compose entry's 'views' must be a list, got {_short(parts)}")
        return compose(*[view_from_dict(v) for v in parts])
    if not isinstance(name, str):
        raise PolicyError(f"a view's name must be a string, got {_short(name)}")
    if name in GROUPS:
        raise PolicyError(f"{_name(name)} is a group of views, not one view")
    bad = [k for k in d if not isinstance(k, str)]
    if bad:
        raise PolicyError(f"view {_name(name)} has a parameter name that is not a string: {_short(bad[0])}")
    views = make_views(name, **{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})
    return views[0]
