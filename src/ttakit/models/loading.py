"""Load a model file by its suffix: ``.onnx``, TorchScript (``.pt``,
``.pth``, ``.ts``, ``.torchscript``) or Keras (``.keras``).

:func:`load_model` passes adapter options through as they are;
:func:`load_model_file` takes the two choices a user makes about a file,
``layout`` and ``device``, and checks them against the file's kind and this
machine first, so that a command line or a server can report a bad choice
in one line (a :class:`~ttakit.ModelLoadError`) instead of a runtime's trace.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelLoadError, require
from .base import ModelAdapter

SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".pth": "torchscript", ".ts": "torchscript",
            ".torchscript": "torchscript", ".keras": "keras"}


def load_model(path, **kwargs) -> ModelAdapter:
    """The adapter for the model file ``path``; ``kwargs`` go to the adapter."""
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
    keras = require("keras", "keras", "loading a .keras model")
    from .keras_model import KerasModel

    try:
        model = keras.saving.load_model(str(path), safe_mode=True)  # Lambda layers (code) are refused
    except Exception as e:
        raise ModelLoadError(f"Keras cannot load {path}: {e}") from None
    return KerasModel(model, **kwargs)


def _check_device(device: str, kind: str | None) -> dict:
    """The adapter options that put a ``kind`` model on ``device``."""
    dev = device.lower()
    if not (dev in ("cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ModelLoadError(f"device={device!r} is not cpu, cuda or cuda:N")
    if kind == "torchscript":
        import torch

        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise ModelLoadError(f"device={device!r}: CUDA is not available to PyTorch here")
        return {"device": dev}
    if kind == "onnx":
        ort = require("onnxruntime", "onnx", "running an .onnx model")
        provider = "CPUExecutionProvider" if dev == "cpu" else "CUDAExecutionProvider"
        available = ort.get_available_providers()
        if provider not in available:
            raise ModelLoadError(f"device={device!r}: ONNX Runtime here has no {provider} "
                                 f"(it has {', '.join(available)})")
        return {"providers": [(provider, {"device_id": int(dev[5:])})] if ":" in dev else [provider]}
    if kind == "keras":
        raise ModelLoadError(f"device={device!r}: only TorchScript and ONNX models take a device; Keras picks "
                             "its own (use CUDA_VISIBLE_DEVICES to choose)")
    return {}


def load_model_file(path, layout: str | None = None, device: str | None = None) -> ModelAdapter:
    """The adapter for the model file ``path``.

    ``layout`` is the layout the model consumes (``"NCHW"`` or ``"NHWC"``;
    default: read from ONNX and Keras models, NCHW for TorchScript).
    ``device`` is ``"cpu"``, ``"cuda"`` or ``"cuda:N"``, for TorchScript and
    ONNX models (default: TorchScript on cpu, ONNX on CUDA when available).
    Raises :class:`~ttakit.ModelLoadError` for a missing or unreadable file,
    an unknown suffix, or a device this file or machine cannot use.
    """
    kind = SUFFIXES.get(Path(path).suffix.lower())
    kwargs: dict = {}
    if layout is not None:
        kwargs["layout"] = layout
    if device is not None:
        kwargs.update(_check_device(device, kind))
    return load_model(path, **kwargs)
