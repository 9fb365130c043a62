"""The modality seam: how inputs of one kind enter the run loop.

The engine knows nothing of images or tables. An :class:`Inputs` object
cuts the user's data into chunks (:meth:`Inputs.chunks`), validates and
converts one chunk into the tensor every view and adapter of that modality
expects (:meth:`Inputs.prepare`), and checks it against what the model
says it takes (:meth:`Inputs.check_model`). Images live in
:mod:`ttakit.inputs.image`; a table of rows is another subclass.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from ..errors import InputError


class Inputs(abc.ABC):
    """One modality's validation and conversion, in one place."""

    #: what a single input is called in messages ("image", "row")
    noun: str = "input"

    def chunks(self, data, size: int) -> Iterator[tuple[object, int]]:
        """Yield ``(raw_chunk, start_index)`` of at most ``size`` inputs.
        ``data`` is an array/tensor (sliced) or an iterable of batches (each
        re-sliced; a batch given as ``(x, y, ...)`` contributes ``x``)."""
        if isinstance(data, (np.ndarray, torch.Tensor)):
            if data.ndim == 0:
                raise InputError(f"inputs must be a batch with one {self.noun} per row, got a 0-d array")
            for s in range(0, len(data), size):
                yield data[s:s + size], s
            return
        if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
            raise InputError(f"inputs must be a NumPy array, a torch tensor or an iterable of batches, "
                             f"got {type(data).__name__}")
        start = 0
        for batch in data:
            batch = self.batch_array(batch)
            for s in range(0, len(batch), size):
                part = batch[s:s + size]
                yield part, start
                start += len(part)

    def batch_array(self, batch):
        """One batch of an iterable as an array or tensor."""
        if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], (np.ndarray, torch.Tensor)):
            batch = batch[0]
        if isinstance(batch, (np.ndarray, torch.Tensor)):
            if batch.ndim == 0:
                raise InputError(f"each batch of inputs must hold one {self.noun} per row, got a 0-d array")
            return batch
        try:
            arr = np.asarray(batch)
        except (TypeError, ValueError) as e:
            raise InputError(f"a batch of inputs is not an array ({type(batch).__name__}: {e})") from None
        if arr.ndim == 0 or arr.dtype.kind in "OSUV":
            raise InputError(f"each batch of inputs must be an array of {self.noun}s, got {arr.dtype} "
                             f"with shape {arr.shape}")
        return arr

    def count(self, data) -> int | None:
        """The number of inputs when it is known without reading them."""
        if isinstance(data, (np.ndarray, torch.Tensor)):
            return len(data) if data.ndim else None
        if isinstance(data, (list, tuple)):
            try:
                return sum(len(b[0] if isinstance(b, (tuple, list)) else b) for b in data)
            except TypeError:
                return None
        return None

    @abc.abstractmethod
    def prepare(self, raw, device: torch.device, start: int = 0) -> torch.Tensor:
        """Validate one raw chunk and convert it to the modality's tensor."""

    def check_model(self, x: torch.Tensor, adapter) -> None:
        """Check a prepared chunk against what the adapter says it expects."""

    def invalid(self, x: torch.Tensor) -> tuple[torch.Tensor, str] | None:
        """Inputs of a prepared chunk that cannot be used, as a boolean mask
        ``(n,)`` and the reason, or None when all are fine. The run loop fails
        only those inputs (the task reports them); the others go on."""
        if x.is_floating_point():
            bad = ~torch.isfinite(x).flatten(1).all(1)
            if bad.any():
                return bad, "the input contains NaN or infinite values"
        return None

    def check_range(self, raw, x: torch.Tensor, preprocess) -> None:
        """Warn when the first chunk's values look like another scale than
        the one declared (called once per run). Default: nothing."""

    def describe(self, shape: tuple) -> str:
        return str(tuple(shape))


def as_tensor_chunk(raw) -> torch.Tensor:
    """A raw chunk (NumPy array or tensor) as a CPU or device tensor, no copy
    when possible."""
    if isinstance(raw, np.ndarray):
        if raw.dtype == object:
            raise InputError("inputs are an object array (inputs of different sizes?); "
                             "pass one array with one row per input")
        return torch.from_numpy(np.ascontiguousarray(raw))
    if isinstance(raw, torch.Tensor):
        return raw.detach()
    raise InputError(f"inputs must be a NumPy array or a torch tensor, got {type(raw).__name__}")


