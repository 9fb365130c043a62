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

import numbers

import numpy as np

from ..errors import PolicyError, did_you_mean
from ..views import Affine, ChannelShift, Multiply, compose, hflip, identity, vflip
from ..views.base import View
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


def check_parameters(params: dict) -> dict:
    unknown = [k for k in params if k not in KERAS_PARAMETERS]
    if unknown:
        raise PolicyError(
            f"random views take no parameter {unknown[0]!r}.{did_you_mean(unknown[0], KERAS_PARAMETERS)} "
            f"Valid (Keras ImageDataGenerator names): {', '.join(KERAS_PARAMETERS)}"
        )
    p = {**KERAS_PARAMETERS, **params}
    if p["fill_mode"] not in FILL_MODES:
        raise PolicyError(f"fill_mode must be one of {', '.join(FILL_MODES)}, got {p['fill_mode']!r}")
    z = p["zoom_range"]
    if isinstance(z, numbers.Number):
        p["zoom_range"] = (1 - z, 1 + z)
    elif isinstance(z, (list, tuple)) and len(z) == 2:
        p["zoom_range"] = (float(z[0]), float(z[1]))
    else:
        raise PolicyError(f"zoom_range must be a number or a pair (lo, hi), got {z!r}")
    if min(p["zoom_range"]) <= 0:
        raise PolicyError(f"zoom_range must stay above 0, got {p['zoom_range']}")
    b = p["brightness_range"]
    if b is not None and not (isinstance(b, (list, tuple)) and len(b) == 2):
        raise PolicyError(f"brightness_range must be a pair (lo, hi) or none, got {b!r}")
    for k in ("rotation_range", "shear_range", "channel_shift_range"):
        if not isinstance(p[k], numbers.Number) or p[k] < 0:
            raise PolicyError(f"{k} must be a number >= 0, got {p[k]!r}")
    for k in ("width_shift_range", "height_shift_range"):
        v = p[k]
        ok = isinstance(v, numbers.Number) or (isinstance(v, (list, tuple)) and len(v) > 0)
        if not ok:
            raise PolicyError(f"{k} must be a number or a list of shifts, got {v!r}")
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
    """``n`` random views drawn with Keras ``ImageDataGenerator`` parameters."""
    if not isinstance(n, numbers.Integral) or n < 1:
        raise PolicyError(f"the number of random copies must be a positive integer, got {n!r}")
    p = check_parameters(params)
    rng = np.random.default_rng(seed)
    return [draw_view(rng, p) for _ in range(int(n))]
