"""Adapter for Keras 3 models (any backend)."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ModelLoadError, require
from .base import ModelAdapter, as_tensor, check_layout, to_layout


def _is_keras_model(obj) -> bool:
    return any(c.__module__.startswith(("keras", "tf_keras")) and c.__name__ in ("Model", "Layer")
               for c in type(obj).__mro__)


class KerasModel(ModelAdapter):
    """Run a Keras 3 model (``model(x, training=False)``).

    The layout defaults to the model's own data format (``channels_last`` is
    NHWC). With the torch backend, batches are passed as torch tensors with
    no copy through NumPy; other backends get NumPy arrays.

    ``runtime="onnx"`` exports the model once with Keras' own ONNX exporter
    (``model.export(..., format="onnx")``) and runs that with ONNX Runtime:
    the same model and weights, often several times faster on CPU
    (BENCHMARKS.md); outputs agree to float rounding (about 1e-6).
    """

    def __init__(self, model, layout: str | None = None, runtime: str = "keras"):
        keras = require("keras", "keras", "a Keras model")
        if runtime not in ("keras", "onnx"):
            raise ModelLoadError(f"runtime must be 'keras' or 'onnx', got {runtime!r}")
        self.model = model
        self.runtime = runtime
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
        self._onnx = _export_onnx(model, shape) if runtime == "onnx" else None
        if self.backend == "torch" and self._onnx is None:
            from keras.src.backend.torch.core import get_device

            self._device = torch.device(get_device())

    @property
    def device(self) -> torch.device:
        return self._device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._onnx is not None:
            return self._onnx.forward(x)
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


def _export_onnx(model, shape):
    """Export with Keras' exporter to a temporary file; an OnnxModel on it."""
    import tempfile
    from pathlib import Path

    from ..errors import ModelLoadError, require
    from .onnx_model import OnnxModel

    if not getattr(model, "built", True) or shape is None:
        raise ModelLoadError("runtime='onnx' needs a built Keras model with a known input shape")
    folder = Path(tempfile.mkdtemp(prefix="ttakit-keras-onnx-"))
    path = folder / "model.onnx"
    import warnings

    try:
        # Keras exports only models that have been called once; the tracer
        # warns about shape arithmetic that is constant for a given model
        model.predict(np.zeros((1, *shape[1:]), dtype="float32"), verbose=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.export(str(path), format="onnx", verbose=False)
    except Exception as e:  # exporters raise many types
        raise ModelLoadError(f"Keras could not export the model to ONNX ({type(e).__name__}: {e}); "
                             "use runtime='keras'") from None
    layout = "NCHW" if len(shape) == 4 and shape[1] in (1, 3, 4) and shape[3] not in (1, 3, 4) else "NHWC"
    return OnnxModel(path, layout=layout, providers=["CPUExecutionProvider"])
