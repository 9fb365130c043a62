"""The model adapter interface.

An adapter turns any model into one function: a float32 batch ``(n, C, H, W)``
on ``adapter.device`` in, a tensor ``(n, ...)`` out. It converts to the
layout and array type the model wants (NHWC NumPy for Keras or ONNX...),
and says what it knows about the expected input so bad input can be caught
before it reaches the model.
"""

from __future__ import annotations

import abc

import torch

from ..errors import InputError, ModelOutputError

LAYOUTS = ("NCHW", "NHWC")


def check_layout(layout: str, what: str = "layout") -> str:
    if not isinstance(layout, str) or layout.upper() not in LAYOUTS:
        raise InputError(f"{what} must be 'NCHW' or 'NHWC', got {layout!r}")
    return layout.upper()


def to_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """NCHW image tensor to the model's layout (other ranks pass unchanged)."""
    return x.permute(0, 2, 3, 1).contiguous() if layout == "NHWC" and x.dim() == 4 else x


class ModelAdapter(abc.ABC):
    """Base class of model adapters."""

    #: the layout the model consumes
    layout: str = "NCHW"
    #: channels the model expects, when known
    expected_channels: int | None = None
    #: (H, W) the model expects, when known
    expected_size: tuple[int, int] | None = None

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Model outputs ``(n, ...)`` for a float32 NCHW batch on ``self.device``."""

    def forward_raw(self, x: torch.Tensor):
        """The model's outputs as it returns them (a tensor, an array, or one
        record per input for detectors); the task converts them. Default:
        :meth:`forward`."""
        return self.forward(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layout={self.layout!r}, device={str(self.device)!r})"


def as_tensor(y, device: torch.device | str = "cpu") -> torch.Tensor:
    """Any array-like model output as a float32 torch tensor on ``device``.

    A dict gives its ``"logits"`` entry (else its first); a tuple or list of
    tensors gives its first (a model returning ``(outputs, extras...)``).
    Anything that is not numbers is a :class:`ModelOutputError`."""
    import numpy as np

    if isinstance(y, dict):  # e.g. Hugging Face outputs
        if not y:
            raise ModelOutputError("the model returned an empty mapping")
        y = y["logits"] if "logits" in y else next(iter(y.values()))
    if isinstance(y, (list, tuple)) and y and (len(y) == 1 or isinstance(y[0], torch.Tensor)):
        y = y[0]  # a model returning (outputs, extras...) or [outputs]
    if isinstance(y, torch.Tensor):
        t = y.detach()
        if t.is_complex():
            raise ModelOutputError(f"the model returned complex numbers ({t.dtype}); expected real scores")
    else:
        try:
            arr = np.asarray(y)
        except (TypeError, ValueError) as e:
            raise ModelOutputError(f"the model's output is not an array ({type(y).__name__}: {e})") from None
        if arr.dtype.kind not in "biuf":
            raise ModelOutputError(f"the model returned {type(y).__name__} of dtype {arr.dtype}; expected an "
                                   f"array of real numbers with one row per input")
        # integers and booleans (any width, e.g. numpy's ulonglong, which torch cannot take) as float64
        arr = arr.astype(np.float64 if arr.dtype.kind in "biu" or arr.dtype not in (np.float32, np.float64)
                         else arr.dtype, copy=False)
        t = torch.from_numpy(np.ascontiguousarray(arr) if arr.ndim else arr)
    if not t.is_floating_point():
        t = t.to(torch.float32)
    return t.to(device=device, dtype=torch.float32)
