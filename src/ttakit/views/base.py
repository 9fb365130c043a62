"""The view type: a deterministic transform of a batch of images.

A view maps a float tensor of shape ``(N, C, H, W)`` to a float tensor of
shape ``(N, C, H', W')`` on the same device. Views are values: two views with
the same name and parameters are equal and hash alike, which is what lets a
policy merge duplicate views into one forward pass.

Geometric views also describe *where* every pixel goes, as a 3x3 affine
matrix on continuous pixel coordinates (pixel ``(row i, col j)`` covers
``[j, j+1) x [i, i+1)``; points are ``(x, y)``). From that one matrix they
can undo themselves on dense outputs (masks, heatmaps), boxes and points.
Photometric views leave positions alone, so their inverses are the identity.
"""

from __future__ import annotations

import abc
import inspect
import math
import numbers
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import PolicyError
from . import sampling

Size = tuple[int, int]


def _format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return v
    if isinstance(v, tuple):
        return "(" + ", ".join(_format_value(x) for x in v) + ")"
    if isinstance(v, list):
        return "[" + ", ".join(_format_value(x) for x in v) + "]"
    return repr(v)


def short_repr(v: Any, width: int = 60) -> str:
    """``repr(v)``, cut to about ``width`` characters."""
    text = repr(v)
    return text if len(text) <= width else text[:width] + f"... ({len(text):,} characters)"


def check_number(name: str, v: Any) -> Any:
    """``v`` if it is a finite real number (not a bool), else a PolicyError."""
    try:
        ok = not isinstance(v, bool) and isinstance(v, numbers.Real) and math.isfinite(v)
    except (OverflowError, TypeError, ValueError):  # an int too large for a float
        ok = False
    if not ok:
        raise PolicyError(f"{name} must be a finite number, got {short_repr(v)}")
    return v


def check_bool(name: str, v: Any) -> bool:
    """``v`` as a bool if it is true/false (or the integers 0/1), else a PolicyError."""
    if isinstance(v, (bool, np.bool_)) or (isinstance(v, numbers.Integral) and v in (0, 1)):
        return bool(v)
    raise PolicyError(f"{name} must be true or false, got {short_repr(v)}")


#: largest seed accepted (numpy's legacy and Keras' 32-bit seeds)
MAX_SEED = 2**32 - 1


def check_seed(name: str, v: Any) -> int:
    """``v`` as an int if it is an integer in ``[0, 2**32 - 1]``, else a PolicyError."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 0 <= v <= MAX_SEED:
        raise PolicyError(f"{name} must be an integer from 0 to {MAX_SEED}, got {short_repr(v)}")
    return int(v)


class View(abc.ABC):
    """Base class of every view. Subclasses set ``name`` and implement
    :meth:`params` and :meth:`apply`."""

    name: ClassVar[str] = "view"
    geometric: ClassVar[bool] = False

    # -- identity -------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The parameters that define this view (JSON-serialisable)."""
        return {}

    def _key(self) -> tuple:
        return (self.name, tuple(sorted((k, _hashable(v)) for k, v in self.params().items())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, View) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        """The view's spec: parameters left at their defaults are omitted, and
        the first parameter is written by position (``scale(1.1)``)."""
        p = self.params()
        try:
            sig = inspect.signature(type(self).__init__).parameters
        except (TypeError, ValueError):  # pragma: no cover
            sig = {}
        shown = {
            k: v for k, v in p.items()
            if not (k in sig and sig[k].default is not inspect.Parameter.empty
                    and _hashable(sig[k].default) == _hashable(v))
        }
        if not shown:
            return self.name
        first = next(iter(p))
        parts = []
        for k, v in shown.items():
            parts.append(_format_value(v) if k == first else f"{k}={_format_value(v)}")
        return f"{self.name}(" + ", ".join(parts) + ")"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"view": self.name}
        d.update(self.params())
        return d

    # -- forward ----------------------------------------------------------
    @abc.abstractmethod
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The view of a batch ``(N, C, H, W)``."""

    def apply_into(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """Write the view of ``x`` into ``out``, a slice of a forward batch of
        shape ``output_shape(x.shape)``. Default: ``out.copy_(self.apply(x))``;
        a view may override it to write there directly (row views do: no
        tensor per view, no concatenation)."""
        out.copy_(self.apply(x))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x)

    def output_size(self, size: Size) -> Size:
        """Spatial size ``(H', W')`` of the view of an ``(H, W)`` input."""
        return size

    def output_shape(self, shape: tuple) -> tuple:
        """Shape of one augmented input, given one input's shape (no batch
        axis). Image views change the last two axes; the run loop groups views
        of equal output shape into shared forward batches."""
        if len(shape) < 3:
            return tuple(shape)
        return (*shape[:-2], *self.output_size(tuple(shape[-2:])))

    def check_input(self, x: torch.Tensor, start: int = 0) -> None:
        """Refuse a chunk this view cannot treat correctly (raise
        :class:`~ttakit.errors.InputError`); ``start`` is the index of its
        first input. Default: accept everything."""

    # -- geometry -----------------------------------------------------------
    def matrix(self, size: Size) -> np.ndarray:
        """3x3 matrix taking input coordinates ``(x, y, 1)`` to view coordinates."""
        return np.eye(3)

    def invert_dense(self, y: torch.Tensor, size: Size) -> torch.Tensor:
        """Map a dense output ``(N, K, H', W')`` in view coordinates back onto
        the input grid ``(N, K, H, W)``. Input pixels the view never saw are 0;
        :meth:`valid_mask` says which those are."""
        return y

    def valid_mask(self, size: Size, device: torch.device | str = "cpu") -> torch.Tensor:
        """Boolean ``(H, W)``: input pixels whose de-augmented value is known."""
        return torch.ones(size, dtype=torch.bool, device=device)

    def invert_points(self, points: np.ndarray | torch.Tensor, size: Size):
        """Map points ``(..., 2)`` given as ``(x, y)`` in view coordinates back
        to input coordinates."""
        return points

    def invert_boxes(self, boxes: np.ndarray | torch.Tensor, size: Size):
        """Map boxes ``(..., 4)`` as ``(x1, y1, x2, y2)`` in view coordinates
        back to input coordinates (the axis-aligned hull of the mapped box)."""
        return boxes


def _hashable(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        # 2 and 2.0 describe the same view
        return int(v)
    return v


class GeometricView(View):
    """A view that moves pixels. Subclasses define :meth:`matrix` and
    :meth:`output_size`; the default inverses follow from the matrix, and a
    subclass may override them with exact fast paths."""

    geometric: ClassVar[bool] = True

    def invert_dense(self, y: torch.Tensor, size: Size) -> torch.Tensor:
        m = self.matrix(size)
        return sampling.resample(y, m, size, fill="constant", cval=0.0)

    def valid_mask(self, size: Size, device: torch.device | str = "cpu") -> torch.Tensor:
        m = self.matrix(size)
        return sampling.coverage(m, size, self.output_size(size), device=device)

    def invert_points(self, points, size: Size):
        inv = np.linalg.inv(self.matrix(size))
        return sampling.transform_points(points, inv)

    def invert_boxes(self, boxes, size: Size):
        inv = np.linalg.inv(self.matrix(size))
        return sampling.transform_boxes(boxes, inv)
