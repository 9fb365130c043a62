"""The one engine: run a model on every view of the inputs, in bounded batches.

For each chunk of inputs, the views are applied on the model's device and
concatenated into one batch of about ``batch_size`` model inputs; the model
runs once per batch; the outputs come back shaped ``(V, n, ...)``. Memory is
bounded by ``batch_size``, never by the size of the data.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import InputError, ModelOutputError
from .models.base import ModelAdapter, check_layout
from .views import View

#: forward batch sizes used when none is given. On CPU, glibc's allocator
#: hands every large tensor back to the OS after each batch unless told not
#: to (see :func:`tune_allocator`), which makes batches of 512 and more about
#: 2.5x slower; with it tuned, throughput is flat from 128 to 2048 and 512 is
#: as fast as any (bench/bench_batch_size.py, BENCHMARKS.md).
CPU_BATCH = 256
CPU_BATCH_TUNED = 512
GPU_BATCH = 1024

_ALLOCATOR_TUNED = False
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def allocator_tuned() -> bool:
    """True when glibc's allocator keeps large tensors (environment
    variables set before the process started, or :func:`tune_allocator`)."""
    return _ALLOCATOR_TUNED or bool(os.environ.get("MALLOC_TRIM_THRESHOLD_") or
                                    os.environ.get("MALLOC_MMAP_THRESHOLD_"))


def tune_allocator() -> bool:
    """Ask glibc (via ``mallopt``) to keep freed memory instead of returning
    it to the OS after every batch. Process-wide, so ttakit never does it on
    its own: the ``ttakit`` command does, and so may you. Returns False where
    it does not apply (not glibc)."""
    global _ALLOCATOR_TUNED
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
        # the largest mmap threshold glibc accepts (it refuses values above its limit)
        for value in (2**31 - 1, 2**30, 2**28, 2**25):
            if libc.mallopt(_M_MMAP_THRESHOLD, value) == 1:
                break
    except (OSError, AttributeError):
        return False
    _ALLOCATOR_TUNED = ok
    return ok


def default_batch_size(device: torch.device) -> int:
    if device.type == "cuda":
        return GPU_BATCH
    return CPU_BATCH_TUNED if allocator_tuned() else CPU_BATCH


@dataclass
class Chunk:
    """A slice of the inputs, converted: ``x`` is float32 NCHW on the device."""

    x: torch.Tensor
    start: int


def iter_input_chunks(data, chunk: int) -> Iterator[tuple[object, int]]:
    """Yield ``(raw_chunk, start_index)``. ``data`` is an array/tensor
    (sliced) or an iterable of batches (each re-sliced to at most ``chunk``;
    a batch given as ``(x, y, ...)`` contributes ``x``)."""
    if isinstance(data, (np.ndarray, torch.Tensor)):
        for s in range(0, len(data), chunk):
            yield data[s:s + chunk], s
        return
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise InputError(f"inputs must be a NumPy array, a torch tensor or an iterable of batches, "
                         f"got {type(data).__name__}")
    start = 0
    for batch in data:
        if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], (np.ndarray, torch.Tensor)):
            batch = batch[0]
        if not isinstance(batch, (np.ndarray, torch.Tensor)):
            try:
                batch = np.asarray(batch)
            except (TypeError, ValueError) as e:
                raise InputError(f"a batch of inputs is not an array ({type(batch).__name__}: {e})") from None
            if batch.ndim == 0 or batch.dtype.kind in "OSUV":
                raise InputError(f"each batch of inputs must be an array of images, got {batch.dtype} "
                                 f"with shape {batch.shape}; pass one array of shape (N, C, H, W) or (N, H, W, C)")
        for s in range(0, len(batch), chunk):
            part = batch[s:s + chunk]
            yield part, start
            start += len(part)


def to_nchw_float(raw, layout: str, device: torch.device, start: int = 0) -> torch.Tensor:
    """Validate one raw chunk and convert it to float32 NCHW on ``device``.

    uint8 pixels are scaled to ``[0, 1]``; floats are kept as given.
    """
    if isinstance(raw, np.ndarray):
        if raw.dtype == object:
            raise InputError("inputs are an object array (images of different sizes?); "
                             "pass one array of shape (N, C, H, W) or (N, H, W, C)")
        t = torch.from_numpy(np.ascontiguousarray(raw))
    elif isinstance(raw, torch.Tensor):
        t = raw.detach()
    else:
        raise InputError(f"inputs must be a NumPy array or a torch tensor, got {type(raw).__name__}")
    check_shape(tuple(t.shape), layout)
    pixels = t.dtype == torch.uint8  # cannot hold NaN or infinity
    if pixels:
        t = t.to(device, non_blocking=True).to(torch.float32).div_(255.0)
    elif t.is_floating_point():
        t = t.to(device=device, dtype=torch.float32, non_blocking=True)
    else:
        raise InputError(f"unsupported input dtype {t.dtype}: pass uint8 pixels (0-255) or floats")
    if layout == "NHWC":
        t = t.permute(0, 3, 1, 2)
    if not pixels and not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).flatten(1).any(1).nonzero().flatten()
        first = int(bad[0]) + start
        raise InputError(f"{len(bad)} input(s) contain NaN or infinite values (first at index {first})")
    return t.contiguous()


def check_shape(shape: tuple, layout: str) -> None:
    if len(shape) != 4:
        want = "(N, C, H, W)" if layout == "NCHW" else "(N, H, W, C)"
        hint = " For one image, pass x[None]." if len(shape) == 3 else ""
        raise InputError(f"expected a batch of images of rank 4 {want} for layout {layout}, "
                         f"got shape {shape}.{hint}")
    c = shape[1] if layout == "NCHW" else shape[3]
    other = shape[3] if layout == "NCHW" else shape[1]
    if c not in (1, 2, 3, 4) and other in (1, 3, 4):
        alt = "NHWC" if layout == "NCHW" else "NCHW"
        raise InputError(f"shape {shape} has {c} channels for layout {layout}; it looks like {alt}. "
                         f"Pass data_layout={alt!r}")


def check_against_model(x: torch.Tensor, adapter: ModelAdapter) -> None:
    c = x.shape[1]
    if adapter.expected_channels is not None and c != adapter.expected_channels:
        raise InputError(f"the model expects {adapter.expected_channels} channels, the input has {c} "
                         f"(shape {tuple(x.shape)} as NCHW)")


def run_views(
    adapter: ModelAdapter,
    x: torch.Tensor,
    views: Sequence[View],
    batch_size: int,
    preprocess=None,
) -> torch.Tensor:
    """Outputs of ``adapter`` on every view of ``x``: shape ``(V, n, ...)``.

    Each forward pass gets about ``batch_size`` model inputs: one view of the
    chunk when the chunk is that large, else several views of the same
    output size concatenated. Only one augmented batch exists at a time.
    """
    n = x.shape[0]
    size = (x.shape[-2], x.shape[-1])
    groups: dict[tuple, list[int]] = {}
    for i, v in enumerate(views):
        groups.setdefault(v.output_size(size), []).append(i)
    per_forward = max(1, batch_size // max(1, n))
    per_view: list[torch.Tensor | None] = [None] * len(views)
    for idx in groups.values():
        for g in range(0, len(idx), per_forward):
            part = idx[g:g + per_forward]
            batch = torch.cat([views[i].apply(x) for i in part]) if len(part) > 1 else views[part[0]].apply(x)
            if preprocess is not None:
                batch = preprocess(batch)
            outs = [_forward(adapter, batch[s:s + batch_size]) for s in range(0, batch.shape[0], batch_size)]
            out = outs[0] if len(outs) == 1 else torch.cat(outs)
            for j, i in enumerate(part):
                per_view[i] = out[j * n:(j + 1) * n]
    return torch.stack(per_view)  # type: ignore[arg-type]


def _forward(adapter: ModelAdapter, batch: torch.Tensor) -> torch.Tensor:
    y = adapter(batch)
    if not isinstance(y, torch.Tensor) or y.ndim == 0 or y.shape[0] != batch.shape[0]:
        shape = tuple(y.shape) if hasattr(y, "shape") else type(y).__name__
        raise ModelOutputError(f"the model returned shape {shape} for a batch of {batch.shape[0]} "
                               f"inputs; expected ({batch.shape[0]}, ...)")
    return y


def chunk_size(batch_size: int, n_views: int) -> int:
    """Inputs per chunk: one forward batch's worth (views then share a
    forward pass only when the data is smaller than a batch)."""
    return max(1, batch_size)


def count_inputs(data) -> int | None:
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return len(data)
    try:
        return sum(len(b[0] if isinstance(b, (tuple, list)) else b) for b in data) if isinstance(
            data, (list, tuple)) else None
    except TypeError:
        return None


def iter_view_outputs(
    adapter: ModelAdapter,
    data: Iterable,
    views: Sequence[View],
    *,
    layout: str = "NCHW",
    batch_size: int | None = None,
    preprocess=None,
    input_check=None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Stream ``(start, outputs (V, n, ...))`` over chunks of ``data``."""
    layout = check_layout(layout)
    device = adapter.device
    bs = batch_size or default_batch_size(device)
    for raw, start in iter_input_chunks(data, chunk_size(bs, len(views))):
        if len(raw) == 0:
            continue
        x = to_nchw_float(raw, layout, device, start)
        check_against_model(x, adapter)
        if input_check is not None:
            input_check(x, start)
        yield start, run_views(adapter, x, views, bs, preprocess)
