"""Geometric views that resample: shift, scale (zoom), rotate, crop and the
Keras-style general affine transform.

Each is defined by a matrix on continuous pixel coordinates (see
:mod:`ttakit.views.base`); applying a view samples the input at the inverse
map, and the inverses (dense, boxes, points) follow from the same matrix.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import PolicyError
from . import sampling
from .base import GeometricView, Size, check_bool, check_number, short_repr


def _check_fill(fill: str) -> str:
    if not isinstance(fill, str) or fill not in sampling.FILL_MODES:
        raise PolicyError(f"unknown fill mode {short_repr(fill)}; valid: {', '.join(sampling.FILL_MODES)}")
    return fill


#: what a shift's numbers count: pixels, or shares of the width and height
SHIFT_UNITS = ("px", "fraction")


def _centred(m2: np.ndarray, in_size: Size, out_size: Size | None = None) -> np.ndarray:
    """Lift a 3x3 matrix about the image centre to pixel coordinates."""
    h, w = in_size
    oh, ow = out_size or in_size
    to_c = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1]], dtype=float)
    from_c = np.array([[1, 0, ow / 2], [0, 1, oh / 2], [0, 0, 1]], dtype=float)
    return from_c @ m2 @ to_c


class _Resampled(GeometricView):
    """A geometric view applied by sampling the input at the inverse matrix."""

    fill = "nearest"
    cval = 0.0

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2], x.shape[-1])
        inv = np.linalg.inv(self.matrix(size))
        return sampling.resample(x, inv, self.output_size(size), self.fill, self.cval)


class Shift(_Resampled):
    """Move the image content by ``dx`` pixels right and ``dy`` pixels down;
    with ``unit="fraction"``, by ``dx`` times the width and ``dy`` times the
    height. Whole-pixel shifts are exact copies.

    A value strictly between -1 and 1 other than 0 (``shift(0.5)``) is
    refused without a ``unit``: Keras reads it as a fraction of the image,
    while ``shift(1)`` is one pixel, so say which (``unit="px"`` or
    ``unit="fraction"``).
    """

    name = "shift"

    def __init__(self, dx: float = 0, dy: float = 0, fill: str = "nearest", cval: float = 0.0,
                 unit: str | None = None):
        self.dx, self.dy = check_number("shift dx", dx), check_number("shift dy", dy)
        self.fill, self.cval = _check_fill(fill), float(check_number("cval", cval))
        if unit is not None and unit not in SHIFT_UNITS:
            raise PolicyError(f"shift unit must be one of {', '.join(map(repr, SHIFT_UNITS))}, got {short_repr(unit)}")
        if unit is None and self._ambiguous():
            v = next(v for v in (self.dx, self.dy) if 0 < abs(v) < 1)
            raise PolicyError(f"shift by {v:g}: pixels or a share of the image? Write unit='px' for {v:g} pixel, "
                              f"unit='fraction' for {v:g} x the width/height (Keras' width_shift_range reading)")
        self.unit = unit or "px"

    def _ambiguous(self) -> bool:
        return any(0 < abs(v) < 1 for v in (self.dx, self.dy))

    def params(self):
        p = {"dx": self.dx, "dy": self.dy, "fill": self.fill, "cval": self.cval}
        if self.unit == "fraction" or self._ambiguous():  # written only where the numbers alone do not say
            p["unit"] = self.unit
        return p

    def matrix(self, size: Size) -> np.ndarray:
        h, w = size
        sx, sy = (w, h) if self.unit == "fraction" else (1, 1)
        return np.array([[1, 0, self.dx * sx], [0, 1, self.dy * sy], [0, 0, 1]], dtype=float)


class Rotate(_Resampled):
    """Rotate by ``angle`` degrees counter-clockwise about the image centre."""

    name = "rotate"

    def __init__(self, angle: float = 0.0, fill: str = "nearest", cval: float = 0.0):
        self.angle = check_number("rotate angle", angle)
        self.fill, self.cval = _check_fill(fill), float(check_number("cval", cval))

    def params(self):
        return {"angle": self.angle, "fill": self.fill, "cval": self.cval}

    def matrix(self, size: Size) -> np.ndarray:
        t = math.radians(self.angle)
        c, s = math.cos(t), math.sin(t)
        # y points down, so a counter-clockwise turn on screen is this matrix
        return _centred(np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]]), size)


class Affine(_Resampled):
    """The random affine transform of Keras ``ImageDataGenerator``:
    rotation ``theta`` (degrees), shift ``tx``/``ty`` (right/down; pixels,
    or fractions of the width/height when ``relative``), ``shear`` (degrees)
    and zoom ``zx``/``zy`` (below 1 zooms in, as in Keras), composed in
    Keras' order about the image centre."""

    name = "affine"

    def __init__(self, theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0,
                 relative=False, fill="nearest", cval=0.0):
        self.relative = check_bool("affine relative", relative)
        self.theta, self.tx, self.ty, self.shear, self.zx, self.zy = (
            float(check_number(f"affine {k}", v))
            for k, v in (("theta", theta), ("tx", tx), ("ty", ty), ("shear", shear), ("zx", zx), ("zy", zy)))
        if self.zx <= 0 or self.zy <= 0:
            raise PolicyError(f"affine zoom must be positive, got zx={zx}, zy={zy}")
        self.fill, self.cval = _check_fill(fill), float(check_number("cval", cval))

    def params(self):
        return {
            "theta": self.theta, "tx": self.tx, "ty": self.ty, "shear": self.shear,
            "zx": self.zx, "zy": self.zy, "relative": self.relative,
            "fill": self.fill, "cval": self.cval,
        }

    def matrix(self, size: Size) -> np.ndarray:
        # Keras builds the map from output to input: rotation @ shift @ shear @ zoom
        t, sh = math.radians(self.theta), math.radians(self.shear)
        rot = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
        h, w = size
        tx, ty = (self.tx * w, self.ty * h) if self.relative else (self.tx, self.ty)
        shift = np.array([[1, 0, -tx], [0, 1, -ty], [0, 0, 1]])
        shear = np.array([[1, -math.sin(sh), 0], [0, math.cos(sh), 0], [0, 0, 1]])
        zoom = np.array([[self.zx, 0, 0], [0, self.zy, 0], [0, 0, 1]])
        out_to_in = rot @ shift @ shear @ zoom
        return np.linalg.inv(_centred(out_to_in, size))


class Scale(GeometricView):
    """Resize by ``factor`` (bilinear, antialiased when shrinking), then
    centre-crop (factor > 1) or pad with ``fill`` (factor < 1) back to the
    input size."""

    name = "scale"

    def __init__(self, factor: float = 1.0, fill: str = "nearest", cval: float = 0.0):
        if not check_number("scale factor", factor) > 0:
            raise PolicyError(f"scale factor must be positive, got {factor}")
        self.factor = factor
        self.fill, self.cval = _check_fill(fill), float(check_number("cval", cval))

    def params(self):
        return {"factor": self.factor, "fill": self.fill, "cval": self.cval}

    def _geometry(self, size: Size):
        h, w = size
        rh, rw = max(1, round(h * self.factor)), max(1, round(w * self.factor))
        oy = (rh - h) // 2 if rh >= h else -((h - rh) // 2)
        ox = (rw - w) // 2 if rw >= w else -((w - rw) // 2)
        return rh, rw, oy, ox

    def matrix(self, size: Size) -> np.ndarray:
        h, w = size
        rh, rw, oy, ox = self._geometry(size)
        return np.array([[rw / w, 0, -ox], [0, rh / h, -oy], [0, 0, 1]], dtype=float)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        rh, rw, oy, ox = self._geometry((h, w))
        if (rh, rw) != (h, w):
            x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False,
                              antialias=rh < h or rw < w)
        shift = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]], dtype=float)
        return sampling.resample(x, shift, (h, w), self.fill, self.cval)


_CROP_POSITIONS = ("c", "tl", "tr", "bl", "br")


class Crop(GeometricView):
    """Crop a window of ``size`` at ``pos`` (``c``, ``tl``, ``tr``, ``bl``,
    ``br``) and resize it back to the input size. ``size`` is pixels (int),
    a fraction of each side (float < 1), or ``[h, w]``."""

    name = "crop"

    def __init__(self, size=0.875, pos: str = "c"):
        if not isinstance(pos, str) or pos not in _CROP_POSITIONS:
            raise PolicyError(f"unknown crop position {short_repr(pos)}; valid: {', '.join(_CROP_POSITIONS)}")
        self.size = tuple(size) if isinstance(size, (list, tuple)) else size
        for s in self.size if isinstance(self.size, tuple) else (self.size,):
            if not check_number("crop size", s) > 0:
                raise PolicyError(f"crop size must be positive, got {short_repr(size)}")
        if isinstance(self.size, tuple) and len(self.size) != 2:
            raise PolicyError(f"crop size is one number or a pair (h, w), got {short_repr(size)}")
        self.pos = pos

    def params(self):
        return {"size": self.size, "pos": self.pos}

    def _window(self, size: Size):
        h, w = size
        s = self.size
        ch, cw = (s if isinstance(s, tuple) else (s, s))
        ch = round(ch * h) if isinstance(ch, float) and ch <= 1 else int(ch)
        cw = round(cw * w) if isinstance(cw, float) and cw <= 1 else int(cw)
        if not (0 < ch <= h and 0 < cw <= w):
            raise PolicyError(f"crop size {self.size} does not fit an image of size {h}x{w}")
        top = {"c": (h - ch) // 2, "tl": 0, "tr": 0, "bl": h - ch, "br": h - ch}[self.pos]
        left = {"c": (w - cw) // 2, "tl": 0, "tr": w - cw, "bl": 0, "br": w - cw}[self.pos]
        return top, left, ch, cw

    def matrix(self, size: Size) -> np.ndarray:
        h, w = size
        top, left, ch, cw = self._window(size)
        sx, sy = w / cw, h / ch
        return np.array([[sx, 0, -left * sx], [0, sy, -top * sy], [0, 0, 1]], dtype=float)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        top, left, ch, cw = self._window((h, w))
        win = x[..., top:top + ch, left:left + cw]
        if (ch, cw) == (h, w):
            return win
        return F.interpolate(win, size=(h, w), mode="bilinear", align_corners=False)


def five_crop(size=0.875) -> list[Crop]:
    return [Crop(size, p) for p in _CROP_POSITIONS]
