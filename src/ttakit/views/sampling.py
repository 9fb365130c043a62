"""Resampling and coordinate helpers shared by the geometric views.

Coordinates are continuous pixel coordinates: pixel ``(row i, col j)`` has its
centre at ``(x, y) = (j + 0.5, i + 0.5)``. Fill modes follow Keras
``ImageDataGenerator`` (for input ``abcd``):

- ``constant``: ``kkkk|abcd|kkkk`` (``k`` is ``cval``)
- ``nearest``:  ``aaaa|abcd|dddd``
- ``reflect``:  ``dcba|abcd|dcba`` (edge pixel repeated)
- ``wrap``:     ``abcd|abcd|abcd``
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..errors import PolicyError

FILL_MODES = ("constant", "nearest", "reflect", "wrap")


def map_index(idx: np.ndarray, n: int, fill: str) -> tuple[np.ndarray, np.ndarray]:
    """Map integer indices (possibly out of ``[0, n)``) into range.

    Returns ``(index, valid)``; ``valid`` is False where a constant fill applies.
    """
    idx = np.asarray(idx, dtype=np.int64)
    valid = np.ones(idx.shape, dtype=bool)
    if fill == "nearest":
        out = np.clip(idx, 0, n - 1)
    elif fill == "reflect":
        period = np.mod(idx, 2 * n)
        out = np.where(period >= n, 2 * n - 1 - period, period)
    elif fill == "wrap":
        out = np.mod(idx, n)
    elif fill == "constant":
        valid = (idx >= 0) & (idx < n)
        out = np.clip(idx, 0, n - 1)
    else:
        raise PolicyError(f"unknown fill mode {fill!r}; valid: {', '.join(FILL_MODES)}")
    return out, valid


def gather_plan(m: np.ndarray, in_size: tuple, out_size: tuple, fill: str):
    """How :func:`resample` samples an ``in_size`` image at the points
    ``m @ q`` for every pixel centre ``q`` of an ``out_size`` grid: a list of
    taps ``(index, valid, weight)``, NumPy arrays over the ``oh * ow`` output
    pixels (flat input index, 0/1 float where a constant fill applies,
    bilinear weight). One tap with weight 1 when the map is integer-aligned
    (an exact copy), else four. Also what :mod:`ttakit.graph` writes into a
    graph."""
    m = np.asarray(m, dtype=np.float64).reshape(3, 3)
    h, w = in_size
    oh, ow = out_size
    ys, xs = np.meshgrid(np.arange(oh) + 0.5, np.arange(ow) + 0.5, indexing="ij")
    sx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2] - 0.5
    sy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2] - 0.5
    rx, ry = np.rint(sx), np.rint(sy)
    exact = np.allclose(sx, rx, atol=1e-6) and np.allclose(sy, ry, atol=1e-6)
    if exact:
        cols, vc = map_index(rx, w, fill)
        rows, vr = map_index(ry, h, fill)
        return [((rows * w + cols).ravel(), (vr & vc).ravel().astype(np.float32), np.ones(oh * ow, dtype=np.float32))]
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0, sy - y0
    taps = []
    for dy, wy in ((0, 1 - fy), (1, fy)):
        rows, vr = map_index(y0 + dy, h, fill)
        for dx, wx in ((0, 1 - fx), (1, fx)):
            cols, vc = map_index(x0 + dx, w, fill)
            taps.append(((rows * w + cols).ravel(), (vr & vc).ravel().astype(np.float32),
                         (wy * wx).ravel().astype(np.float32)))
    return taps


@lru_cache(maxsize=256)
def _plan(mbytes: bytes, in_size: tuple, out_size: tuple, fill: str, device: str):
    """:func:`gather_plan` as tensors on ``device`` (cached)."""
    m = np.frombuffer(mbytes, dtype=np.float64).reshape(3, 3)
    dev = torch.device(device)
    return [(torch.from_numpy(i).to(dev), torch.from_numpy(v).to(dev), torch.from_numpy(wt).to(dev))
            for i, v, wt in gather_plan(m, in_size, out_size, fill)]


def resample(
    src: torch.Tensor,
    m_out_to_src: np.ndarray,
    out_size: tuple[int, int],
    fill: str = "constant",
    cval: float = 0.0,
) -> torch.Tensor:
    """Bilinear resampling: ``out[q] = src[M @ q]`` for every output pixel ``q``.

    Integer-aligned maps (flips, whole-pixel shifts) are copied exactly.
    """
    n, c, h, w = src.shape
    plan = _plan(
        np.ascontiguousarray(m_out_to_src, dtype=np.float64).tobytes(),
        (h, w),
        tuple(out_size),
        fill,
        str(src.device),
    )
    # gathering along the last axis of a 2-D tensor is ~50x faster on CPU than
    # along the last axis of the same data viewed as 3-D (torch's index_select)
    flat = src.reshape(n * c, h * w)
    out = None
    for idx, valid, wt in plan:
        vals = flat.index_select(1, idx)
        if fill == "constant":
            vals = vals * valid + cval * (1 - valid) if cval else vals * valid
        term = vals * wt if len(plan) > 1 else vals
        out = term if out is None else out + term
    return out.reshape(n, c, *out_size).to(src.dtype)


def coverage(m_in_to_view: np.ndarray, in_size, view_size, device="cpu") -> torch.Tensor:
    """Boolean ``(H, W)`` mask of input pixels whose centre lands inside the
    view's grid of pixel centres, so that resampling the view there reads no
    pixel outside it (a centre landing in the view's outer half-pixel would
    be blended with the fill)."""
    h, w = in_size
    vh, vw = view_size
    ys, xs = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    vx = m_in_to_view[0, 0] * xs + m_in_to_view[0, 1] * ys + m_in_to_view[0, 2]
    vy = m_in_to_view[1, 0] * xs + m_in_to_view[1, 1] * ys + m_in_to_view[1, 2]
    eps = 1e-6
    ok = (vx >= 0.5 - eps) & (vx <= vw - 0.5 + eps) & (vy >= 0.5 - eps) & (vy <= vh - 0.5 + eps)
    return torch.from_numpy(ok).to(device)


def transform_points(points, m: np.ndarray):
    """Apply a 3x3 affine matrix to points ``(..., 2)`` given as ``(x, y)``."""
    if isinstance(points, torch.Tensor):
        mt = torch.as_tensor(m, dtype=points.dtype, device=points.device)
        return points @ mt[:2, :2].T + mt[:2, 2]
    pts = np.asarray(points, dtype=np.float64)
    return pts @ m[:2, :2].T + m[:2, 2]


def transform_boxes(boxes, m: np.ndarray):
    """Map boxes ``(..., 4)`` (x1, y1, x2, y2) through ``m``; returns the
    axis-aligned hull of the four mapped corners."""
    is_torch = isinstance(boxes, torch.Tensor)
    lib = torch if is_torch else np
    b = boxes if is_torch else np.asarray(boxes, dtype=np.float64)
    x1, y1, x2, y2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    corners = lib.stack(
        [lib.stack([x1, y1], -1), lib.stack([x2, y1], -1), lib.stack([x1, y2], -1), lib.stack([x2, y2], -1)],
        -2,
    )
    mapped = transform_points(corners, m)
    if is_torch:
        lo, hi = mapped.min(-2).values, mapped.max(-2).values
    else:
        lo, hi = mapped.min(-2), mapped.max(-2)
    return lib.concatenate([lo, hi], -1) if not is_torch else torch.cat([lo, hi], -1)
