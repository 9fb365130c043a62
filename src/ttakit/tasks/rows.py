"""Running row views over tabular rows with any prediction function.

:func:`run_rows` is the loop :mod:`ttakit.sklearn`, ``ttakit evaluate`` and
``ttakit predict`` on tables share: the rows (already encoded as numbers,
see :class:`~ttakit.views.rows.FeatureStats`) go through the one run loop
(:func:`ttakit.engine.run`) in chunks of ``chunk_rows``, and all the views'
copies of a chunk reach ``fn`` in **one** call of ``copies x chunk_rows``
rows, decoded back to a DataFrame first when ``decoder`` is given.

A policy of no view but identity (no TTA, e.g. after the guard fell back)
does not go through the loop: :func:`direct_output` calls the model once on
the rows and returns its own output, bit for bit (the loop keeps
probabilities as float32, which would flip near-ties).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .. import engine
from ..errors import InputError, ModelError, TTAKitError
from ..merge import Mean
from ..models import CallableModel, ModelAdapter
from ..policy import Policy
from ..views import identity
from .classification import ClassificationTask
from .front import row_inputs
from .linear_rows import shortcut_proba
from .regression import RegressionTask

#: rows the model receives per call (copies x chunk rows), unless chunk_rows is given
MODEL_ROWS = 65536


def run_rows(task, fn: Callable | ModelAdapter, rows: np.ndarray, views: Sequence, weights: Sequence[float], *,
             decoder=None, nan: str = "raise", fill=None, chunk_rows: int | None = None):
    """``task``'s result for ``rows`` ``(N, F)`` under ``views``/``weights``,
    calling ``fn`` on the copies: a function of arrays (e.g. an estimator's
    ``predict_proba``, fed float64), or a model adapter
    (:func:`ttakit.models.as_model` of a torch or Keras model, fed float32)."""
    views = list(views)
    chunk = chunk_rows or max(1, MODEL_ROWS // len(views))
    if isinstance(fn, ModelAdapter):
        if decoder is not None:
            raise InputError("a model adapter takes numeric rows: encode categories as codes (no decoder)")
        adapter = fn
    else:
        adapter = CallableModel((lambda a: fn(decoder(a))) if decoder is not None else fn)
    inputs = row_inputs(adapter, rows.shape[1], nan=nan, fill=fill, chunk_rows=chunk)
    return engine.run(task, adapter, rows, views, list(weights), inputs=inputs, batch_size=chunk * len(views))


def is_plain(views: Sequence) -> bool:
    """True when ``views`` are identity only: the model sees the rows as they are."""
    plain = identity()
    return all(v == plain for v in views)


def direct_output(fn: Callable, rows: np.ndarray, *, decoder=None, nan: str = "raise", fill=None, original=None):
    """``fn``'s own output on ``rows`` (no TTA): missing values imputed with
    ``fill`` when ``nan="impute"``, then one call with ``original`` (the rows
    as the caller gave them) when nothing was imputed, else with the rows
    (decoded when ``decoder`` is given). None when a row is still not finite:
    the run loop then fails it as the task's ``on_error`` says."""
    if nan == "impute" and fill is not None:
        missing = np.isnan(rows)
        if missing.any():
            rows = np.where(missing, np.asarray(fill, dtype=np.float64)[None, :], rows)
            original = None
    if not np.isfinite(rows).all():
        return None
    x = original if original is not None else (decoder(rows) if decoder is not None else rows)
    try:
        return fn(x)
    except TTAKitError:
        raise
    except Exception as e:  # the estimator's own failure on these rows, as the run loop reports it
        raise ModelError(f"the model raised on {len(rows)} row(s) (no TTA): {type(e).__name__}: {e}") from e


@dataclass
class RowPrediction:
    """Merged predictions of a fitted model on rows: ``probs`` ``(N, C)`` and
    the model's ``classes`` for a classifier, ``pred`` and ``std`` (the
    copies' spread) for a regressor."""

    task: str
    pred: np.ndarray                  #: (N,) class labels (classification) or predicted values
    probs: np.ndarray | None = None   #: (N, C) merged probabilities (classification)
    classes: np.ndarray | None = None
    std: np.ndarray | None = None     #: (N,) or (N, T) spread across copies (regression)
    seconds: float = 0.0
    forward_passes: int = 0


def model_task(model) -> str:
    """``"classification"`` for a fitted model with ``predict_proba`` and
    ``classes_``, ``"regression"`` for one with ``predict`` only."""
    if hasattr(model, "predict_proba") and hasattr(model, "classes_"):
        return "classification"
    if hasattr(model, "classes_"):
        raise InputError(f"{type(model).__name__} is a classifier without predict_proba: row TTA averages "
                         "probabilities (e.g. SVC(probability=True), or wrap it in CalibratedClassifierCV)")
    if hasattr(model, "predict"):
        return "regression"
    raise InputError(f"{type(model).__name__} has neither predict_proba nor predict")


def predict_rows(model, rows: np.ndarray, policy: Policy | None, *, decoder=None, merge: str = "mean",
                 nan: str = "raise", fill=None, chunk_rows: int | None = None) -> RowPrediction:
    """A fitted scikit-learn-style ``model``'s merged prediction on encoded
    ``rows`` under ``policy`` (None: no TTA, the model alone)."""
    task = model_task(model)
    policy = Policy([identity()]) if policy is None else policy.unique()
    views, weights = policy.views, policy.weights
    opts = dict(decoder=decoder, nan=nan, fill=fill, chunk_rows=chunk_rows)
    if is_plain(views):  # no TTA: the model's own output, bit for bit
        t0 = time.perf_counter()
        out = direct_output(model.predict_proba if task == "classification" else model.predict, rows,
                            decoder=decoder, nan=nan, fill=fill)
        if out is not None:
            seconds = time.perf_counter() - t0
            if task == "classification":
                classes = np.asarray(model.classes_)
                return RowPrediction(task, classes[np.asarray(out).argmax(1)], np.asarray(out), classes,
                                     seconds=seconds, forward_passes=len(rows))
            pred = np.asarray(out)
            return RowPrediction(task, pred, std=np.zeros(pred.shape), seconds=seconds, forward_passes=len(rows))
    if task == "classification":
        probs_only = ClassificationTask(Mean(), output="probs", spread=False)
        t0, counted = time.perf_counter(), []

        def loop(r):
            res = run_rows(probs_only, model.predict_proba, r, views, weights, **opts)
            counted.append(res.forward_passes)
            p = res.probs.astype(np.float64)
            return p / p.sum(1, keepdims=True)

        fast = shortcut_proba(model, rows, views, weights, loop) if decoder is None else None
        probs = loop(rows) if fast is None else fast
        classes = np.asarray(model.classes_)
        # forward passes: model inputs evaluated, a copy through the shortcut counting as one
        forwards = sum(counted) if fast is None else len(views) * len(rows)
        return RowPrediction(task, classes[probs.argmax(1)], probs, classes, seconds=time.perf_counter() - t0,
                             forward_passes=forwards)
    res = run_rows(RegressionTask(merge), model.predict, rows, views, weights, **opts)
    return RowPrediction(task, res.pred, std=res.std, seconds=res.seconds, forward_passes=res.forward_passes)


__all__ = ["run_rows", "predict_rows", "model_task", "RowPrediction", "MODEL_ROWS", "is_plain", "direct_output"]
