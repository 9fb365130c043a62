"""Composition of views, with the simplifications that make dedupe work:
identities vanish and runs of D4 elements collapse into one element."""

from __future__ import annotations

import numpy as np
import torch

from .base import Size, View
from .dihedral import Dihedral, identity


class Compose(View):
    """Apply ``views`` left to right. Build with :func:`compose`, which
    simplifies; a ``Compose`` always holds two or more views."""

    name = "compose"

    def __init__(self, views):
        self.views = tuple(views)

    @property
    def geometric(self) -> bool:  # type: ignore[override]
        return any(v.geometric for v in self.views)

    def params(self):
        return {"views": [v.to_dict() for v in self.views]}

    def _key(self):
        return ("compose", tuple(v._key() for v in self.views))

    def to_dict(self):
        return {"view": "compose", "views": [v.to_dict() for v in self.views]}

    def __repr__(self) -> str:
        return " * ".join(repr(v) for v in self.views)

    def _sizes(self, size: Size) -> list[Size]:
        sizes = [size]
        for v in self.views:
            sizes.append(v.output_size(sizes[-1]))
        return sizes

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        for v in self.views:
            x = v.apply(x)
        return x

    def check_input(self, x: torch.Tensor, start: int = 0) -> None:
        for v in self.views:
            v.check_input(x, start)

    def output_size(self, size: Size) -> Size:
        return self._sizes(size)[-1]

    def matrix(self, size: Size) -> np.ndarray:
        m = np.eye(3)
        for v, s in zip(self.views, self._sizes(size)):
            m = v.matrix(s) @ m
        return m

    def invert_dense(self, y, size: Size):
        sizes = self._sizes(size)
        for v, s in zip(reversed(self.views), reversed(sizes[:-1])):
            y = v.invert_dense(y, s)
        return y

    def valid_mask(self, size: Size, device="cpu"):
        # a pixel is known when every stage kept it: push each stage's mask back
        sizes = self._sizes(size)
        mask = torch.ones(sizes[-1], dtype=torch.float32, device=device)[None, None]
        for v, s in zip(reversed(self.views), reversed(sizes[:-1])):
            mask = v.invert_dense(mask, s) * v.valid_mask(s, device)
        return mask[0, 0] > 0.999

    def invert_points(self, points, size: Size):
        sizes = self._sizes(size)
        for v, s in zip(reversed(self.views), reversed(sizes[:-1])):
            points = v.invert_points(points, s)
        return points

    def invert_boxes(self, boxes, size: Size):
        sizes = self._sizes(size)
        for v, s in zip(reversed(self.views), reversed(sizes[:-1])):
            boxes = v.invert_boxes(boxes, s)
        return boxes


def compose(*views: View) -> View:
    """The view that applies ``views`` left to right, simplified."""
    flat: list[View] = []
    for v in views:
        flat.extend(v.views if isinstance(v, Compose) else (v,))
    out: list[View] = []
    for v in flat:
        if isinstance(v, Dihedral) and out and isinstance(out[-1], Dihedral):
            out[-1] = out[-1].then(v)
        else:
            out.append(v)
        if isinstance(out[-1], Dihedral) and out[-1].is_identity:
            out.pop()
    if not out:
        return identity()
    return out[0] if len(out) == 1 else Compose(out)
