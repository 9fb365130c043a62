"""Model adapters: PyTorch, Keras 3, ONNX Runtime, scikit-learn and plain
callables behind one interface (see :class:`ModelAdapter`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelLoadError
from .base import ModelAdapter
from .callable_model import CallableModel, SklearnModel
from .preprocess import Normalize


def as_model(model, *, default_layout: str | None = None, **kwargs) -> ModelAdapter:
    """Wrap ``model`` in the right adapter.

    Accepts an adapter (returned as is), a ``torch.nn.Module``, a Keras
    model, an ONNX Runtime session, a path to a model file (``.onnx``,
    ``.pt``/``.ts`` TorchScript, ``.keras``), a scikit-learn estimator, or
    any callable from arrays to arrays. ``kwargs`` go to the adapter.
    ``default_layout`` is the layout a scikit-learn estimator or a callable
    consumes when ``layout`` is not given: the data's own layout, since such
    a model was fitted on the user's arrays as they are.
    """
    if isinstance(model, ModelAdapter):
        return model
    if isinstance(model, (str, Path)):
        from .loading import load_model

        return load_model(model, **kwargs)
    mod = type(model).__module__
    from .keras_model import _is_keras_model

    # before torch: on the torch backend a Keras model is also a torch Module
    if _is_keras_model(model):
        from .keras_model import KerasModel

        return KerasModel(model, **kwargs)
    try:
        import torch

        if isinstance(model, torch.nn.Module):
            from .torch_model import TorchModel

            return TorchModel(model, **kwargs)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if mod.startswith("onnxruntime"):
        from .onnx_model import OnnxModel

        return OnnxModel(model, **kwargs)
    if default_layout is not None:
        kwargs.setdefault("layout", default_layout)
    if mod.startswith("sklearn") or (hasattr(model, "predict_proba") and hasattr(model, "fit")):
        return SklearnModel(model, **kwargs)
    if callable(model):
        return CallableModel(model, **kwargs)
    raise ModelLoadError(
        f"cannot use a {type(model).__name__} as a model: pass a torch.nn.Module, a Keras model, "
        "an ONNX Runtime session or file, a scikit-learn estimator, or a callable"
    )


__all__ = ["ModelAdapter", "CallableModel", "SklearnModel", "Normalize", "as_model"]
