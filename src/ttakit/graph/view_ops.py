"""Views as graph operations: each built-in view, on a fixed input size,
becomes a small ``nn.Module`` made of operations every exporter takes
(flips, transposes, a gather with fixed indices, matrix products, clamps),
computing what :meth:`View.apply <ttakit.views.View.apply>` computes.

- D4 elements: ``flip`` and ``transpose`` (exact);
- shift, rotate, affine: one gather with the indices and bilinear weights
  :func:`ttakit.views.sampling.gather_plan` gives the view itself, and the
  constant fill as a bias (exact up to the order of four additions);
- scale, crop: the bilinear (antialiased when shrinking) resize as two
  fixed matrices, ``R_h @ x @ R_w^T``, read off ``F.interpolate`` itself,
  then scale's crop or pad as a gather;
- multiply, add, contrast, channel shift, noise (its fixed field as a
  constant): the same arithmetic;
- compositions: the parts one after the other.

Any other view (one a user registered) is refused with a
:class:`~ttakit.errors.PolicyError` naming it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PolicyError
from ..views import (Add, Affine, ChannelShift, Compose, Contrast, Crop, Dihedral, GaussianNoise, Multiply,
                     Rotate, Scale, Shift, View)
from ..views import sampling

Size = tuple[int, int]


class Flips(nn.Module):
    """A D4 element: horizontal flip (if ``flip``) then ``k`` quarter turns,
    written with ``flip`` and ``transpose`` only."""

    def __init__(self, k: int, flip: bool):
        super().__init__()
        self.k = int(k) % 4
        self.flip = bool(flip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip:
            x = torch.flip(x, [-1])
        if self.k == 1:
            x = torch.flip(x, [-1]).transpose(-2, -1)
        elif self.k == 2:
            x = torch.flip(x, [-2, -1])
        elif self.k == 3:
            x = torch.flip(x.transpose(-2, -1), [-1])
        return x


class Gather(nn.Module):
    """``out[q] = sum_t w_t[q] * x[idx_t[q]] + bias[q]`` per image and
    channel: resampling at fixed points (see :func:`sampling.gather_plan`)."""

    def __init__(self, m_out_to_in: np.ndarray, in_size: Size, out_size: Size, fill: str, cval: float):
        super().__init__()
        taps = sampling.gather_plan(m_out_to_in, in_size, out_size, fill)
        idx = np.stack([t[0] for t in taps])
        valid = np.stack([t[1] for t in taps]).astype(np.float64)
        wt = np.stack([t[2] for t in taps]).astype(np.float64)
        if fill == "constant":
            bias = (cval * (1 - valid) * wt).sum(0)
            wt = wt * valid
        else:
            bias = np.zeros(idx.shape[1])
        self.taps = int(idx.shape[0])
        self.in_pixels = int(in_size[0] * in_size[1])
        self.out_h, self.out_w = int(out_size[0]), int(out_size[1])
        self.register_buffer("idx", torch.from_numpy(idx.reshape(-1).astype(np.int64)))
        self.register_buffer("weight", torch.from_numpy(wt.astype(np.float32)))
        self.register_buffer("bias", torch.from_numpy(bias.astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        flat = x.reshape(-1, self.in_pixels).index_select(1, self.idx)
        out = (flat.reshape(-1, self.taps, self.out_h * self.out_w) * self.weight).sum(1) + self.bias
        return out.reshape(-1, c, self.out_h, self.out_w)


class Resize(nn.Module):
    """``R_h @ x @ R_w^T``: a separable linear map of each image and channel."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray):
        super().__init__()
        self.register_buffer("rows", torch.as_tensor(rows, dtype=torch.float32))
        self.register_buffer("cols_t", torch.as_tensor(cols, dtype=torch.float32).T.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(self.rows, x), self.cols_t)


class Pixels(nn.Module):
    """``x * factor + value``, clipped to ``[0, 1]`` when ``clip``."""

    def __init__(self, factor: float, value: float, clip: bool):
        super().__init__()
        self.factor, self.value, self.clip = float(factor), float(value), bool(clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor != 1.0:
            x = x * self.factor
        if self.value != 0.0:
            x = x + self.value
        if self.clip:
            x = torch.clamp(x, 0.0, 1.0)
        return x


class ContrastOp(nn.Module):
    """:class:`~ttakit.views.Contrast`: blend with the mean grey level."""

    def __init__(self, factor: float, clip: bool, rgb: bool):
        super().__init__()
        self.factor, self.clip, self.rgb = float(factor), bool(clip), bool(rgb)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rgb:
            lum = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
            mean = lum.mean(dim=(-2, -1), keepdim=True).unsqueeze(1)
        else:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = mean + self.factor * (x - mean)
        if self.clip:
            x = torch.clamp(x, 0.0, 1.0)
        return x


class ChannelShiftOp(nn.Module):
    """:class:`~ttakit.views.ChannelShift`: ``x + value`` within each image's own range."""

    def __init__(self, value: float):
        super().__init__()
        self.value = float(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        return torch.minimum(torch.maximum(x + self.value, lo), hi)


class AddField(nn.Module):
    """``x + field`` (a fixed ``(C, H, W)`` constant), clipped when ``clip``."""

    def __init__(self, field: torch.Tensor, clip: bool):
        super().__init__()
        self.register_buffer("field", field.detach().to(torch.float32).clone())
        self.clip = bool(clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.field
        if self.clip:
            x = torch.clamp(x, 0.0, 1.0)
        return x


def interpolation_matrix(n_in: int, n_out: int, antialias: bool) -> np.ndarray:
    """The ``(n_out, n_in)`` matrix of ``F.interpolate``'s bilinear resize
    (``align_corners=False``) along one axis, read off ``F.interpolate``
    applied to the unit vectors (the resize is separable)."""
    # one unit vector per image; the other axis 4 wide and kept (a 1-wide axis takes another path when antialiased)
    eye = torch.eye(n_in).reshape(n_in, 1, n_in, 1).expand(n_in, 1, n_in, 4).contiguous()
    out = F.interpolate(eye, size=(n_out, 4), mode="bilinear", align_corners=False, antialias=antialias)
    return out[:, 0, :, 0].double().numpy().T


def _crop_ops(view: Crop, size: Size) -> list[nn.Module]:
    h, w = size
    m = view.matrix(size)  # [[w/cw, 0, -left w/cw], [0, h/ch, -top h/ch]]
    cw, ch = round(w / m[0, 0]), round(h / m[1, 1])
    left, top = round(-m[0, 2] / m[0, 0]), round(-m[1, 2] / m[1, 1])
    if (ch, cw) == (h, w):
        return []
    rows = np.zeros((h, h))
    rows[:, top:top + ch] = interpolation_matrix(ch, h, False)
    cols = np.zeros((w, w))
    cols[:, left:left + cw] = interpolation_matrix(cw, w, False)
    return [Resize(rows, cols)]


def _scale_ops(view: Scale, size: Size) -> list[nn.Module]:
    h, w = size
    m = view.matrix(size)  # [[rw/w, 0, -ox], [0, rh/h, -oy]]
    rw, rh = round(m[0, 0] * w), round(m[1, 1] * h)
    ox, oy = -m[0, 2], -m[1, 2]
    ops: list[nn.Module] = []
    if (rh, rw) != (h, w):
        aa = rh < h or rw < w
        ops.append(Resize(interpolation_matrix(h, rh, aa), interpolation_matrix(w, rw, aa)))
    shift = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]], dtype=float)
    ops.append(Gather(shift, (rh, rw), size, view.fill, view.cval))
    return ops


def view_ops(view: View, shape: tuple[int, int, int]) -> list[nn.Module]:
    """The operations computing ``view`` on one input of shape ``(C, H, W)``
    (NCHW), in order. Raises a PolicyError naming a view with none."""
    c, h, w = shape
    size = (h, w)
    if isinstance(view, Compose):
        ops: list[nn.Module] = []
        for part in view.views:
            ops.extend(view_ops(part, shape))
            shape = (c, *part.output_size(shape[1:]))
        return ops
    if isinstance(view, Dihedral):
        return [] if view.is_identity else [Flips(view.k, view.flip)]
    if isinstance(view, (Shift, Rotate, Affine)):
        inv = np.linalg.inv(view.matrix(size))
        return [Gather(inv, size, view.output_size(size), view.fill, view.cval)]
    if isinstance(view, Scale):
        return _scale_ops(view, size)
    if isinstance(view, Crop):
        return _crop_ops(view, size)
    if isinstance(view, Multiply):
        return [Pixels(view.factor, 0.0, view.clip)]
    if isinstance(view, Add):
        return [Pixels(1.0, view.value, view.clip)]
    if isinstance(view, Contrast):
        return [ContrastOp(view.factor, view.clip, c == 3)]
    if isinstance(view, ChannelShift):
        return [ChannelShiftOp(view.value)]
    if isinstance(view, GaussianNoise):
        return [AddField(view.field(shape, "cpu", torch.float32), view.clip)]
    raise PolicyError(f"cannot export view {view!r} ({type(view).__name__}): only ttakit's built-in views "
                      f"({', '.join(EXPORTABLE)}) and their compositions become graph operations")


#: the view names :func:`view_ops` knows
EXPORTABLE = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270", "transpose", "transverse", "shift",
              "rotate", "affine", "scale", "crop", "multiply", "add", "contrast", "channel_shift", "noise")


class ViewOps(nn.Module):
    """One view as a sequence of operations."""

    def __init__(self, ops: list[nn.Module]):
        super().__init__()
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            x = op(x)
        return x


def view_module(view: View, shape: tuple[int, int, int]) -> ViewOps:
    """``view`` on inputs of shape ``(C, H, W)`` as a module (see :func:`view_ops`)."""
    return ViewOps(view_ops(view, shape))
