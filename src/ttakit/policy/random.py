"""Random views with the parameters and semantics of Keras
``ImageDataGenerator``, materialised into concrete views.

Each of the ``n`` copies draws its parameters in Keras' order (rotation,
height shift, width shift, shear, zoom, flips, channel shift, brightness)
from ``numpy.random.default_rng(seed)`` and becomes one deterministic view
applied in Keras' order: affine, channel shift, horizontal flip, vertical
flip, brightness. Identical draws (for example the two outcomes of a coin
flip) become identical views, which a policy then runs once.

Pixel values are on the ``[0, 1]`` scale: a ``channel_shift_range`` written
for 0-255 data should be divided by 255.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..errors import PolicyError, did_you_mean
from ..limits import current
from ..views import Affine, ChannelShift, Multiply, compose, hflip, identity, vflip
from ..views.base import View, check_bool, check_seed
from ..views.sampling import FILL_MODES

KERAS_PARAMETERS = {
    "rotation_range": 0.0,
    "width_shift_range": 0.0,
    "height_shift_range": 0.0,
    "brightness_range": None,
    "shear_range": 0.0,
    "zoom_range": 0.0,
    "channel_shift_range": 0.0,
    "fill_mode": "nearest",
    "cval": 0.0,
    "horizontal_flip": False,
    "vertical_flip": False,
}
#: largest size of a range, shift or value (degrees, pixels): far beyond any sensible augmentation,
#: small enough that every draw and every matrix built from it stays finite
MAX_MAGNITUDE = 1e6


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:60] + f"... ({len(text):,} characters)"


def _real(name: str, v, *, low: float | None = 0.0, positive: bool = False) -> float:
    """``v`` as a float if it is a finite real number (>= ``low``, > 0 when
    ``positive``), small enough that a uniform draw over ``[-v, v]`` stays finite."""
    ok = not isinstance(v, bool) and isinstance(v, numbers.Real)
    try:
        f = float(v) if ok else math.nan
    except OverflowError:
        f = math.inf
    if not math.isfinite(f) or abs(f) > MAX_MAGNITUDE:
        raise PolicyError(f"{name} must be a finite number (at most {MAX_MAGNITUDE:g} in size), got {_short(v)}")
    if (positive and f <= 0) or (low is not None and f < low):
        bound = "> 0" if positive else f">= {low:g}"
        raise PolicyError(f"{name} must be {bound}, got {_short(v)}")
    return f


def _pair(name: str, v, *, positive: bool) -> tuple[float, float]:
    if not (isinstance(v, (list, tuple)) and len(v) == 2):
        raise PolicyError(f"{name} must be a pair (lo, hi), got {_short(v)}")
    lo, hi = _real(name, v[0], positive=positive), _real(name, v[1], positive=positive)
    if lo > hi:
        raise PolicyError(f"{name} must be a pair (lo, hi) with lo <= hi, got {_short(v)}")
    return lo, hi


def _shift_range(name: str, v):
    """A Keras shift range: a number (a fraction below 1, else pixels; an
    int draws whole pixels) or a non-empty list of shifts."""
    if isinstance(v, (list, tuple)):
        if not v:
            raise PolicyError(f"{name} must be a number or a non-empty list of shifts, got []")
        return [_real(name, x, low=None) for x in v]
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        if not 0 <= v <= MAX_MAGNITUDE:
            raise PolicyError(f"{name} must be from 0 to {MAX_MAGNITUDE:g} pixels, got {_short(v)}")
        return int(v)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise PolicyError(f"{name} must be a number or a list of shifts, got {_short(v)}")
    return _real(name, v)


def check_copies(n) -> int:
    """``n`` as an int if it is a positive integer within the ``max_copies`` limit."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise PolicyError(f"the number of random copies must be a positive integer, got {_short(n)}")
    current().check("max_copies", int(n), "too many random copies")
    return int(n)


def check_parameters(params: dict) -> dict:
    """Keras ``ImageDataGenerator`` parameters, each checked: booleans are
    true/false, ranges finite numbers (>= 0 where Keras draws from
    ``[-r, r]``), zooms and brightness positive."""
    unknown = [k for k in params if k not in KERAS_PARAMETERS]
    if unknown:
        name = repr(unknown[0]) if len(str(unknown[0])) <= 40 else _short(unknown[0])
        raise PolicyError(
            f"random views take no parameter {name}.{did_you_mean(str(unknown[0])[:40], KERAS_PARAMETERS)} "
            f"Valid (Keras ImageDataGenerator names): {', '.join(KERAS_PARAMETERS)}"
        )
    p = {**KERAS_PARAMETERS, **params}
    if not isinstance(p["fill_mode"], str) or p["fill_mode"] not in FILL_MODES:
        raise PolicyError(f"fill_mode must be one of {', '.join(FILL_MODES)}, got {_short(p['fill_mode'])}")
    z = p["zoom_range"]
    if isinstance(z, (list, tuple)):
        p["zoom_range"] = _pair("zoom_range", z, positive=True)
    elif isinstance(z, numbers.Real) and not isinstance(z, bool):
        z = _real("zoom_range", z)
        p["zoom_range"] = (1 - z, 1 + z)
    else:
        raise PolicyError(f"zoom_range must be a number or a pair (lo, hi), got {_short(z)}")
    if min(p["zoom_range"]) <= 0:
        raise PolicyError(f"zoom_range must stay above 0, got {p['zoom_range']}")
    if p["brightness_range"] is not None:
        p["brightness_range"] = _pair("brightness_range", p["brightness_range"], positive=False)
    for k in ("rotation_range", "shear_range", "channel_shift_range"):
        p[k] = _real(k, p[k])
    p["cval"] = _real("cval", p["cval"], low=None)
    for k in ("horizontal_flip", "vertical_flip"):
        p[k] = check_bool(k, p[k])
    for k in ("width_shift_range", "height_shift_range"):
        p[k] = _shift_range(k, p[k])
    units = {_is_fraction(p[k]) for k in ("width_shift_range", "height_shift_range") if _nonzero(p[k])}
    if len(units) > 1:
        raise PolicyError("width_shift_range and height_shift_range must both be fractions (< 1) "
                          "or both pixels (>= 1)")
    return p


def _nonzero(r) -> bool:
    return bool(r) if isinstance(r, numbers.Number) else len(r) > 0


def _is_fraction(r) -> bool:
    vals = r if isinstance(r, (list, tuple)) else [r]
    return max(abs(float(v)) for v in vals) < 1


def _shift(rng: np.random.Generator, r) -> tuple[float, bool]:
    """One Keras shift draw; returns (value, relative)."""
    if isinstance(r, (list, tuple)):
        v = float(rng.choice(np.asarray(r))) * rng.choice([-1, 1])
        return v, max(abs(float(x)) for x in r) < 1
    if isinstance(r, numbers.Integral) and not isinstance(r, bool):
        # Keras: an int r means a whole-pixel shift drawn from [0, r), either sign
        return float(rng.choice(int(r)) * rng.choice([-1, 1])), False
    v = float(rng.uniform(-r, r))
    return v, r < 1


def draw_view(rng: np.random.Generator, p: dict) -> View:
    """One random view with checked parameters ``p`` (see ``check_parameters``)."""
    theta = float(rng.uniform(-p["rotation_range"], p["rotation_range"])) if p["rotation_range"] else 0.0
    ty, rel_y = _shift(rng, p["height_shift_range"]) if p["height_shift_range"] else (0.0, False)
    tx, rel_x = _shift(rng, p["width_shift_range"]) if p["width_shift_range"] else (0.0, False)
    shear = float(rng.uniform(-p["shear_range"], p["shear_range"])) if p["shear_range"] else 0.0
    lo, hi = p["zoom_range"]
    zx, zy = (1.0, 1.0) if lo == 1 and hi == 1 else tuple(float(v) for v in rng.uniform(lo, hi, 2))
    flip_h = bool(rng.random() < 0.5) and bool(p["horizontal_flip"])
    flip_v = bool(rng.random() < 0.5) and bool(p["vertical_flip"])
    channel = float(rng.uniform(-p["channel_shift_range"], p["channel_shift_range"])) if p["channel_shift_range"] else 0.0
    bright = float(rng.uniform(*p["brightness_range"])) if p["brightness_range"] is not None else None

    parts: list[View] = []
    if theta or tx or ty or shear or zx != 1 or zy != 1:
        parts.append(Affine(theta, tx, ty, shear, zx, zy, relative=rel_x or rel_y,
                            fill=p["fill_mode"], cval=p["cval"]))
    if channel:
        parts.append(ChannelShift(channel))
    if flip_h:
        parts.append(hflip())
    if flip_v:
        parts.append(vflip())
    if bright is not None:
        parts.append(Multiply(bright))
    return compose(*parts) if parts else identity()


def draw_views(n: int, seed: int | None, **params) -> list[View]:
    """``n`` random views drawn with Keras ``ImageDataGenerator`` parameters.
    ``n`` is at most the ``max_copies`` limit; drawing stops (with a
    :class:`~ttakit.limits.LimitError`) as soon as the distinct views pass
    ``max_views``."""
    n = check_copies(n)
    if seed is not None:
        seed = check_seed("random seed", seed)
    p = check_parameters(params)
    rng = np.random.default_rng(seed)
    limits = current()
    views, seen = [], set()
    for _ in range(n):
        view = draw_view(rng, p)
        views.append(view)
        if n > limits.max_views:
            seen.add(view)
            limits.check("max_views", len(seen), f"random({n}, ...) draws too many distinct views "
                                                  "(forward passes per input), counted while drawing")
    return views
