"""Adapter for Keras 3 models (any backend)."""

from __future__ import annotations

import numpy as np
import torch

from .base import ModelAdapter, as_tensor, check_layout, to_layout


def _is_keras_model(obj) -> bool:
    return any(c.__module__.startswith(("keras", "tf_keras")) and c.__name__ in ("Model", "Layer")
               for c in type(obj).__mro__)


class KerasModel(ModelAdapter):
    """Run a Keras 3 model (``model(x, training=False)``).

    The layout defaults to the model's own data format (``channels_last`` is
    NHWC). With the torch backend, batches are passed as torch tensors with
    no copy through NumPy; other backends get NumPy arrays.
    """

    def __init__(self, model, layout: str | None = None):
        import keras

        self.model = model
        self.backend = keras.backend.backend()
        shape = _input_shape(model)
        if layout is None:
            layout = "NCHW" if keras.config.image_data_format() == "channels_first" else "NHWC"
        self.layout = check_layout(layout)
        if shape is not None and len(shape) == 4:
            c = shape[1] if self.layout == "NCHW" else shape[3]
            hw = (shape[2], shape[3]) if self.layout == "NCHW" else (shape[1], shape[2])
            self.expected_channels = c
            if all(isinstance(v, int) for v in hw):
                self.expected_size = tuple(hw)
        self._device = torch.device("cpu")
        if self.backend == "torch":
            from keras.src.backend.torch.core import get_device

            self._device = torch.device(get_device())

    @property
    def device(self) -> torch.device:
        return self._device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_layout(x, self.layout)
        if self.backend == "torch":
            with torch.no_grad():
                y = self.model(x, training=False)
        else:
            y = self.model(x.cpu().numpy(), training=False)
            y = np.asarray(y)
        return as_tensor(y, self._device)


def _input_shape(model):
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, list):
        shape = shape[0] if shape else None
    return tuple(shape) if shape is not None else None
