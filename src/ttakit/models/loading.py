"""Load a model file by its suffix: ``.onnx``, TorchScript (``.pt``,
``.pth``, ``.ts``, ``.torchscript``) or Keras (``.keras``)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelLoadError
from .base import ModelAdapter

SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".pth": "torchscript", ".ts": "torchscript",
            ".torchscript": "torchscript", ".keras": "keras"}


def load_model(path, **kwargs) -> ModelAdapter:
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ModelLoadError(f"cannot tell the model type of {path.name}: use one of "
                             f"{', '.join(sorted(SUFFIXES))}")
    if kind == "onnx":
        from .onnx_model import OnnxModel

        return OnnxModel(path, **kwargs)
    if kind == "torchscript":
        import torch

        from .torch_model import TorchModel

        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # torch raises RuntimeError with a long trace
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(f"{path} is not a TorchScript file ({first}). Save a model with "
                                 "torch.jit.script(model).save(path) or torch.jit.trace") from None
        return TorchModel(module, **kwargs)
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        raise ModelLoadError("loading a .keras model needs keras: pip install 'ttakit[keras]'") from None
    from .keras_model import KerasModel

    try:
        model = keras.saving.load_model(str(path))
    except Exception as e:
        raise ModelLoadError(f"Keras cannot load {path}: {e}") from None
    return KerasModel(model, **kwargs)
