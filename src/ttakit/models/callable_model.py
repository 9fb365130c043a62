"""Adapters for plain callables and scikit-learn estimators."""

from __future__ import annotations

import torch

from ..errors import ModelLoadError
from .base import ModelAdapter, as_tensor, check_layout, to_layout


class CallableModel(ModelAdapter):
    """Any function from a batch to predictions.

    ``fn`` receives a float32 batch in ``layout``, as a NumPy array
    (``array="numpy"``, the default) or a torch tensor on ``device``
    (``array="torch"``), and returns anything array-like of shape ``(n, ...)``.
    """

    def __init__(self, fn, layout: str = "NCHW", array: str = "numpy", device="cpu"):
        if not callable(fn):
            raise ModelLoadError(f"CallableModel needs a callable, got {type(fn).__name__}")
        if array not in ("numpy", "torch"):
            raise ModelLoadError(f"array must be 'numpy' or 'torch', got {array!r}")
        self.fn = fn
        self.layout = check_layout(layout)
        self.array = array
        self._device = torch.device(device)

    @property
    def device(self) -> torch.device:
        return self._device

    def forward_raw(self, x: torch.Tensor):
        x = to_layout(x, self.layout)
        arg = x.cpu().numpy() if self.array == "numpy" else x
        return self.fn(arg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return as_tensor(self.forward_raw(x), self._device)


class SklearnModel(CallableModel):
    """A scikit-learn estimator with ``predict_proba`` (or ``decision_function``):
    each input is flattened to one row of features, in ``layout`` order: an
    estimator trained on ``images.reshape(n, -1)`` of channel-last images
    needs ``layout="NHWC"`` (``Classifier`` passes its ``data_layout`` when no
    ``model_layout`` is given, so rows come out as the user made them)."""

    def __init__(self, estimator, layout: str = "NCHW"):
        method = getattr(estimator, "predict_proba", None) or getattr(estimator, "decision_function", None)
        if method is None:
            raise ModelLoadError("a scikit-learn estimator needs predict_proba or decision_function")
        self.estimator = estimator
        super().__init__(lambda a: method(a.reshape(a.shape[0], -1)), layout=layout)
