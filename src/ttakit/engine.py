"""The one run loop: chunks of inputs -> views -> bounded forward batches ->
each view's output handed to the task.

For each chunk (at most ``batch_size`` inputs) the views are applied on the
model's device; views with the same output shape are concatenated into one
forward batch of about ``batch_size`` model inputs when the chunk is small,
else each view of the chunk is one forward. As soon as a forward returns,
its output is split by view and handed to the task's run
(:meth:`~ttakit.tasks.base.TaskRun.add`), which de-augments it and folds it
into running accumulators. So a chunk holds one forward batch of outputs
beside the accumulators, never ``views x batch``, and outputs whose size
differs per view (rot90 of a non-square mask) or per input (boxes) pass
through. The engine knows no modality (that is :mod:`ttakit.inputs`) and no
task (that is :mod:`ttakit.tasks`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch

from .errors import InputError, ModelError, TTAKitError, ViewError
from .inputs import Inputs

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


def check_batch_size(batch_size) -> int | None:
    import numbers

    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def run(task, adapter, data, views: Sequence, weights: Sequence[float], *, inputs: Inputs,
        batch_size: int | None = None, preprocess=None, progress=None):
    """Run ``task`` over ``data``: returns the task's result.

    ``views``/``weights`` are the distinct views to run and their weights;
    ``inputs`` validates and converts chunks; ``progress`` is an object with
    ``update(n)`` (a tqdm bar) or None, told the forward passes (inputs x
    views) after every forward batch: its total is the number of inputs
    times ``len(views)``, and it moves as often as the model runs.
    """
    bs = check_batch_size(batch_size) or default_batch_size(adapter.device)
    views = list(views)
    task_run = task.start(views, list(weights), inputs.count(data))
    for raw, start, x in prepared_chunks(adapter, data, bs, inputs, preprocess):
        task_run.begin(x, start)
        bad = inputs.invalid(x)
        if bad is not None:  # those inputs fail alone (or the run stops, as the task's on_error says)
            task_run.fail(bad[0], bad[1])
            x = x.masked_fill(bad[0].view(-1, *([1] * (x.dim() - 1))), 0.0)
        for v in dict.fromkeys(views):
            v.check_input(x, start)
        add_many = getattr(task_run, "add_many", None)
        for part, out in forward_batches(adapter, x, views, bs, preprocess, task.convert_output, inputs):
            if add_many is not None and len(part) > 1:
                add_many(part, out)  # the task checks the batch's outputs at once
            else:
                for j, i in enumerate(part):
                    task_run.add(i, _slice(out, j, x.shape[0], len(part)))
            if progress is not None:
                progress.update(len(part) * x.shape[0])
        task_run.end()
    return task_run.finish()


def prepared_chunks(adapter, data, batch_size: int, inputs: Inputs, preprocess=None):
    """Yield ``(raw, start, x)`` for each non-empty chunk of at most
    ``batch_size`` inputs: as given, the index of its first input, and
    prepared on the model's device (checked against the model; the first
    chunk's value range against ``preprocess``). An adapter with an
    ``adapt_to(x, preprocess)`` method sees each chunk before it is yielded."""
    first = True
    adapt_to = getattr(adapter, "adapt_to", None)  # a model that adapts to its inputs (ttakit.adapt)
    for raw, start in inputs.chunks(data, batch_size):
        if len(raw) == 0:
            continue
        x = inputs.prepare(raw, adapter.device, start)
        inputs.check_model(x, adapter)
        if first:
            inputs.check_range(raw, x, preprocess)
            first = False
        if adapt_to is not None:
            adapt_to(x, preprocess)
        yield raw, start, x


def forward_views(adapter, x: torch.Tensor, views: Sequence, batch_size: int, preprocess=None,
                  convert=None, inputs: Inputs | None = None) -> Iterator[tuple[int, object]]:
    """Yield ``(view_index, output)`` for every view of the chunk ``x``.

    Views of the same output shape share forward batches of about
    ``batch_size`` inputs; only one augmented batch and its outputs exist at
    a time. ``convert(raw_output, n_rows, device)`` turns the model's raw
    output into what the task takes (a tensor, or one record per input).
    """
    n = x.shape[0]
    for part, out in forward_batches(adapter, x, views, batch_size, preprocess, convert, inputs):
        for j, i in enumerate(part):
            yield i, _slice(out, j, n, len(part))


def forward_batches(adapter, x: torch.Tensor, views: Sequence, batch_size: int, preprocess=None,
                    convert=None, inputs: Inputs | None = None) -> Iterator[tuple[list[int], object]]:
    """Yield ``(view_indices, outputs)`` for each forward batch of the chunk
    ``x``: the outputs of views ``view_indices``, one after the other
    (``len(view_indices) x N`` rows). See :func:`forward_views`."""
    n = x.shape[0]
    shape = tuple(x.shape[1:])
    groups: dict[tuple, list[int]] = {}
    for i, v in enumerate(views):
        groups.setdefault(tuple(v.output_shape(shape)), []).append(i)
    per_forward = max(1, batch_size // max(1, n))
    for idx in groups.values():
        for g in range(0, len(idx), per_forward):
            part = idx[g:g + per_forward]
            batch = _apply(views, part, x, inputs)
            if preprocess is not None:
                batch = preprocess(batch)
            yield part, _forward(adapter, batch, [views[i] for i in part], convert, inputs)


def _slice(out, j: int, n: int, k: int):
    """The ``j``-th of ``k`` views' outputs in a batch of ``k x n`` rows."""
    return out[j * n:(j + 1) * n] if k > 1 else out


def _apply(views, part: list[int], x: torch.Tensor, inputs) -> torch.Tensor:
    """The views ``part`` of ``x``, one after the other in one batch: the
    first view's output sets its dtype and shape, the others are written
    into their slice of it (:meth:`~ttakit.views.View.apply_into`)."""
    first = _call(views, part[0], x, inputs, None)
    if len(part) == 1:
        return first
    n = first.shape[0]
    batch = first.new_empty((n * len(part), *first.shape[1:]))
    batch[:n].copy_(first)
    del first
    for j, i in enumerate(part[1:], 1):
        _call(views, i, x, inputs, batch[j * n:(j + 1) * n])
    return batch


def _call(views, i: int, x: torch.Tensor, inputs, out):
    try:
        if out is None:
            return views[i].apply(x)
        views[i].apply_into(x, out)
        return out
    except TTAKitError:
        raise
    except Exception as e:
        where = inputs.describe(x.shape) if inputs is not None else tuple(x.shape)
        raise ViewError(f"view {views[i]!r} failed on inputs of shape {where}: "
                        f"{type(e).__name__}: {e}") from e


def _forward(adapter, batch: torch.Tensor, views: list, convert, inputs):
    try:
        raw = adapter.forward_raw(batch)
    except TTAKitError:
        raise
    except Exception as e:
        where = inputs.describe(batch.shape) if inputs is not None else tuple(batch.shape)
        names = ", ".join(repr(v) for v in views)
        raise ModelError(f"the model failed on a batch of shape {where} (view{'s' if len(views) > 1 else ''} "
                         f"{names}): {type(e).__name__}: {e}") from e
    if convert is None:
        return raw
    return convert(raw, batch.shape[0], adapter.device)
