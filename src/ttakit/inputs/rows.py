"""Tabular rows: batches ``(N, F)`` of numbers in, float tensors out.

Rows are kept as **float64** by default: scikit-learn estimators are fitted
on float64, and a row that reaches the model unchanged (the identity view,
no TTA) must give exactly the estimator's own prediction. ``dtype="float32"``
halves the memory and suits torch and Keras tabular models. Booleans and
integers are converted; strings and objects are refused (encode them, or
let :class:`~ttakit.views.rows.FeatureStats` encode a DataFrame).

NaN is handled in one place, by name: ``nan="raise"`` (default) makes the
row fail as the task's ``on_error`` says (an error naming its index, or the
row marked failed); ``nan="impute"`` replaces it by ``fill`` (the training
median or mode, one value per feature) before any view. Infinity always fails.

``chunk_rows`` fixes how many rows a chunk holds whatever the forward batch
size: with ``batch_size = copies x chunk_rows`` the run loop sends all the
copies of a chunk to the model in one call.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from .base import Inputs, as_tensor_chunk

DTYPES = {"float64": torch.float64, "float32": torch.float32}


class RowInputs(Inputs):
    """Rows of ``n_features`` numbers (any count when None)."""

    noun = "row"

    def __init__(self, n_features: int | None = None, *, dtype: str = "float64", nan: str = "raise",
                 fill=None, chunk_rows: int | None = None):
        if dtype not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if nan not in ("raise", "impute"):
            raise InputError(f"nan must be 'raise' or 'impute', got {nan!r}")
        if nan == "impute" and fill is None:
            raise InputError("nan='impute' needs fill: one value per feature (e.g. FeatureStats.centre)")
        if chunk_rows is not None and (isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int)
                                       or chunk_rows < 1):
            raise InputError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
        self.n_features = n_features
        self.dtype = dtype
        self.nan = nan
        self.fill = None if fill is None else np.asarray(fill, dtype=np.float64)
        self.chunk_rows = chunk_rows

    def chunks(self, data, size):
        if isinstance(data, (np.ndarray, torch.Tensor)) and data.ndim == 1:
            raise InputError(f"rows must be 2-D (n_rows, n_features), got shape {tuple(data.shape)}. "
                             "For one row, pass x.reshape(1, -1); for one feature, x.reshape(-1, 1)")
        return super().chunks(data, self.chunk_rows or size)

    def batch_array(self, batch):
        try:
            return super().batch_array(batch)
        except InputError as e:
            raise InputError(f"{e}; pass one array of shape (n_rows, n_features)") from None

    def prepare(self, raw, device, start=0):
        if isinstance(raw, np.ndarray) and raw.dtype.kind not in "biuf":
            raise InputError(f"unsupported row dtype {raw.dtype}: pass real numbers (encode categories as codes, "
                             f"or pass a DataFrame to ttakit.sklearn)")
        t = as_tensor_chunk(raw)
        if t.is_complex():
            raise InputError(f"unsupported row dtype {t.dtype}: pass real numbers")
        if t.ndim != 2:
            hint = " For one row, pass x.reshape(1, -1)." if t.ndim == 1 else ""
            raise InputError(f"rows must be 2-D (n_rows, n_features), got shape {tuple(t.shape)} "
                             f"(chunk starting at row {start}).{hint}")
        if self.n_features is not None and t.shape[1] != self.n_features:
            raise InputError(f"the model was fitted on {self.n_features} features, these rows have "
                             f"{t.shape[1]} (chunk starting at row {start})")
        t = t.to(device=device, dtype=DTYPES[self.dtype])
        if self.nan == "impute":
            if len(self.fill) != t.shape[1]:
                raise InputError(f"fill has {len(self.fill)} values for {t.shape[1]} features")
            missing = torch.isnan(t)
            if missing.any():
                t = torch.where(missing, torch.as_tensor(self.fill, dtype=t.dtype, device=t.device), t)
        return t.contiguous()

    def check_model(self, x, adapter):
        expected = getattr(adapter, "n_features_in_", None)
        if expected is not None and x.shape[1] != expected:
            raise InputError(f"the model expects {expected} features, the rows have {x.shape[1]}")

    def invalid(self, x):
        bad = ~torch.isfinite(x).all(1)
        if bad.any():
            what = "infinite values" if self.nan == "impute" else "NaN or infinite values"
            return bad, f"the row contains {what}"
        return None

    def describe(self, shape):
        return f"{tuple(shape)} (rows, features)"
