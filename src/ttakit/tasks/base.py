"""The task interface: what happens to each view's output.

A :class:`Task` is configuration (a merge, what the model returns, class
names...): immutable, shared by any number of concurrent calls. Each call of
the run loop (:func:`ttakit.engine.run`) asks it for a fresh
:class:`TaskRun`, which holds that call's state and nothing else:

- :meth:`TaskRun.begin` with each chunk of prepared inputs,
- :meth:`TaskRun.add` with each view's output for that chunk, as soon as
  it exists (de-augment it, fold it into running accumulators),
- :meth:`TaskRun.end` to write the chunk's merged results out,
- :meth:`TaskRun.finish` for the result of the whole run.

Results go into :class:`ResultBuffer` arrays, preallocated when the number
of inputs is known and grown geometrically otherwise, so nothing is kept
per chunk and memory stays flat in the number of inputs.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InputError, ModelOutputError
from ..models.base import as_tensor


class TaskRun(abc.ABC):
    """The state of one run of a task."""

    def __init__(self, task: "Task", views: Sequence, weights: Sequence[float], n: int | None):
        self.task = task
        self.views = list(views)
        self.weights = [float(w) for w in weights]
        self.n_expected = n
        self.n_seen = 0
        #: global input index -> why it failed (on_error="mark")
        self.errors: dict[int, str] = {}
        self.chunk_failed: torch.Tensor | None = None
        self.chunk_start = 0

    def begin_failures(self, n: int, start: int, device) -> None:
        """Reset the per-chunk failure mask (subclasses call it from begin)."""
        self.chunk_failed = torch.zeros(n, dtype=torch.bool, device=device)
        self.chunk_start = start

    def fail(self, rows: torch.Tensor, reason: str, error: type = InputError) -> None:
        """Inputs ``rows`` (a boolean mask over the current chunk) failed for
        ``reason``: raise (``on_error="raise"``, the message names the first
        input) or mark them and go on (``"mark"``)."""
        idx = rows.nonzero().flatten().tolist()
        if not idx:
            return
        first = idx[0] + self.chunk_start
        if self.task.on_error == "raise":
            raise error(f"{len(idx)} input(s) failed: {reason} (first at index {first}). Pass on_error='mark' "
                      f"to get the other results and a list of the failed inputs")
        if self.chunk_failed is None or self.chunk_failed.shape != rows.shape:
            self.chunk_failed = torch.zeros_like(rows)
        self.chunk_failed |= rows
        for i in idx:
            self.errors.setdefault(i + self.chunk_start, reason)

    @abc.abstractmethod
    def begin(self, x: torch.Tensor, start: int) -> None:
        """A new chunk of prepared inputs starts at index ``start``."""

    @abc.abstractmethod
    def add(self, i: int, output) -> None:
        """The output of view ``i`` on the current chunk."""

    @abc.abstractmethod
    def end(self) -> None:
        """The current chunk is complete: write its results."""

    @abc.abstractmethod
    def finish(self):
        """The result of the run."""


ON_ERROR = ("raise", "mark")


def check_on_error(value) -> str:
    """``value`` if it is a valid ``on_error``, else an InputError."""
    if value not in ON_ERROR:
        raise InputError(f"on_error must be one of {', '.join(ON_ERROR)}, got {value!r}")
    return value


class Task(abc.ABC):
    """Base class of tasks (classification, segmentation, detection...)."""

    #: "array": outputs are arrays ``(n, ...)``; "records": one record per input
    output_structure: str = "array"
    #: what an input that cannot be used (NaN pixels, a non-finite output) does:
    #: "raise" stops the run naming it, "mark" fails it alone and goes on
    on_error: str = "raise"

    @abc.abstractmethod
    def start(self, views: Sequence, weights: Sequence[float], n: int | None) -> TaskRun:
        """A fresh run over ``n`` inputs (None when unknown)."""

    def check_views(self, views: Sequence) -> None:
        """Refuse views that cannot undo themselves on this task's outputs."""

    def convert_output(self, raw, n: int, device: torch.device):
        """The model's raw output for a batch of ``n`` inputs in the form
        :meth:`TaskRun.add` takes: a tensor ``(n, ...)`` for array tasks, a
        sequence of ``n`` records for record tasks."""
        if self.output_structure == "records":
            if isinstance(raw, (np.ndarray, torch.Tensor)) or not hasattr(raw, "__len__"):
                raise ModelOutputError(f"the model must return one record per input (a list of {n}), got "
                                       f"{type(raw).__name__}")
            if len(raw) != n:
                raise ModelOutputError(f"the model returned {len(raw)} records for a batch of {n} inputs")
            return raw
        y = as_tensor(raw, device)
        if y.ndim == 0 or y.shape[0] != n:
            raise ModelOutputError(f"the model returned shape {tuple(y.shape)} for a batch of {n} inputs; "
                                   f"expected ({n}, ...)")
        return y


class ResultBuffer:
    """A NumPy array filled chunk by chunk along ``axis``: preallocated when
    the length is known, else grown geometrically (amortised O(1) copies,
    and no per-chunk objects kept alive)."""

    def __init__(self, n: int | None, item_shape: tuple, dtype, axis: int = 0, lead: tuple = ()):
        self.axis = axis
        self.lead = tuple(lead)  # axes before the growing one (e.g. views)
        self.item_shape = tuple(item_shape)
        self.dtype = np.dtype(dtype)
        self.capacity = n if n is not None else 1024
        self.data = np.empty(self._shape(self.capacity), self.dtype)
        self.length = 0

    def _shape(self, n: int) -> tuple:
        return (*self.lead, n, *self.item_shape)

    def write(self, start: int, values) -> None:
        values = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        k = values.shape[len(self.lead)]
        end = start + k
        if end > self.capacity:
            cap = max(end, 2 * self.capacity)
            grown = np.empty(self._shape(cap), self.dtype)
            idx = (slice(None),) * len(self.lead) + (slice(0, self.length),)
            grown[idx] = self.data[idx]
            self.data, self.capacity = grown, cap
        idx = (slice(None),) * len(self.lead) + (slice(start, end),)
        self.data[idx] = values
        self.length = max(self.length, end)

    def write_at(self, indices, values) -> None:
        """Write ``values`` at positions ``indices`` (any order) of the growing axis."""
        values = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            return
        end = int(indices.max()) + 1
        if end > self.capacity:
            self.write(end - 1, np.zeros(self._shape(1), self.dtype))  # grows the buffer
        idx = (slice(None),) * len(self.lead) + (indices,)
        self.data[idx] = values
        self.length = max(self.length, end)

    def result(self) -> np.ndarray:
        idx = (slice(None),) * len(self.lead) + (slice(0, self.length),)
        out = self.data[idx]
        if self.length < self.capacity // 2 and self.length < self.capacity:
            out = out.copy()  # give the unused capacity back
        return out
