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

from ..errors import InputError

LAYOUTS = ("NCHW", "NHWC")


def check_layout(layout: str, what: str = "layout") -> str:
    if not isinstance(layout, str) or layout.upper() not in LAYOUTS:
        raise InputError(f"{what} must be 'NCHW' or 'NHWC', got {layout!r}")
    return layout.upper()


def to_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """NCHW tensor to the model's layout."""
    return x.permute(0, 2, 3, 1).contiguous() if layout == "NHWC" else x


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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layout={self.layout!r}, device={str(self.device)!r})"


def as_tensor(y, device: torch.device | str = "cpu") -> torch.Tensor:
    """Any array-like model output as a float32 torch tensor on ``device``."""
    if isinstance(y, torch.Tensor):
        t = y.detach()
    else:
        import numpy as np

        if isinstance(y, (list, tuple)) and len(y) == 1:
            y = y[0]
        t = torch.from_numpy(np.asarray(y))
    if not t.is_floating_point():
        t = t.to(torch.float32)
    return t.to(device=device, dtype=torch.float32)
