"""The dihedral group D4: flips, quarter turns and transposes, computed
exactly with ``torch.flip``/``torch.rot90`` (no resampling).

Every element is ``rot90(k)`` applied after an optional horizontal flip, and
has one canonical name, so ``hflip * hflip`` simplifies to ``identity`` and
``rot90(1) * rot90(1)`` to ``rot180``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import PolicyError
from .base import GeometricView, Size, check_bool, check_number

# 2x2 matrices on centred coordinates (x right, y down).
_R = np.array([[0, 1], [-1, 0]])  # rot90: torch.rot90(x, 1, dims=(2, 3))
_F = np.array([[-1, 0], [0, 1]])  # horizontal flip


def _element_matrix(k: int, flip: bool) -> np.ndarray:
    m = _F if flip else np.eye(2, dtype=int)
    return np.linalg.matrix_power(_R, k) @ m


_ELEMENTS = {(k, f): _element_matrix(k, f) for k in range(4) for f in (False, True)}
_NAMES = {
    (0, False): "identity",
    (1, False): "rot90",
    (2, False): "rot180",
    (3, False): "rot270",
    (0, True): "hflip",
    (2, True): "vflip",
    (1, True): "transpose",
    (3, True): "transverse",
}


def _lookup(m: np.ndarray) -> tuple[int, bool]:
    for key, e in _ELEMENTS.items():
        if np.array_equal(e, m):
            return key
    raise AssertionError("not a D4 element")  # pragma: no cover


class Dihedral(GeometricView):
    """One element of D4: horizontal flip (if ``flip``) then ``k`` quarter
    turns counter-clockwise. Prefer the named constructors (``hflip()``...)."""

    def __init__(self, k: int = 0, flip: bool = False):
        check_number("rot90 k", k)
        if not float(k).is_integer():
            raise PolicyError(f"k must be a whole number of quarter turns (rot90(k)), got {k!r}")
        self.k = int(k) % 4
        self.flip = check_bool("flip", flip)

    @property
    def name(self) -> str:  # type: ignore[override]
        return _NAMES[(self.k, self.flip)]

    def params(self):
        return {}

    def _key(self):
        return ("dihedral", self.k, self.flip)

    def to_dict(self):
        return {"view": self.name}

    @property
    def is_identity(self) -> bool:
        return self.k == 0 and not self.flip

    def then(self, other: "Dihedral") -> "Dihedral":
        """The element equal to applying ``self`` and then ``other``."""
        return Dihedral(*_lookup(_ELEMENTS[(other.k, other.flip)] @ _ELEMENTS[(self.k, self.flip)]))

    def inverse(self) -> "Dihedral":
        return Dihedral(*_lookup(_ELEMENTS[(self.k, self.flip)].T))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip:
            x = torch.flip(x, dims=(-1,))
        if self.k:
            x = torch.rot90(x, self.k, dims=(-2, -1))
        return x

    def output_size(self, size: Size) -> Size:
        h, w = size
        return (w, h) if self.k % 2 else (h, w)

    def matrix(self, size: Size) -> np.ndarray:
        h, w = size
        oh, ow = self.output_size(size)
        e = _ELEMENTS[(self.k, self.flip)].astype(float)
        # centre input, apply the 2x2 element, move to the output's centre
        m = np.eye(3)
        m[:2, :2] = e
        m[:2, 2] = np.array([ow / 2, oh / 2]) - e @ np.array([w / 2, h / 2])
        return m

    def invert_dense(self, y: torch.Tensor, size: Size) -> torch.Tensor:
        return self.inverse().apply(y)

    def valid_mask(self, size, device="cpu"):
        return torch.ones(size, dtype=torch.bool, device=device)


def identity() -> Dihedral:
    return Dihedral(0, False)


def hflip() -> Dihedral:
    return Dihedral(0, True)


def vflip() -> Dihedral:
    return Dihedral(2, True)


def rot90(k: int = 1) -> Dihedral:
    return Dihedral(k, False)


def transpose() -> Dihedral:
    return Dihedral(1, True)


def transverse() -> Dihedral:
    return Dihedral(3, True)


def d4() -> list[Dihedral]:
    """All eight elements of D4, identity first."""
    return [Dihedral(k, f) for f in (False, True) for k in range(4)]
