"""Scores for tabular predictions and paired comparisons against no TTA.

Classification: accuracy, log-loss, AUC (binary; one-vs-rest macro average
for more classes), Brier. Regression: RMSE, MAE, and the coverage of an
interval. :func:`paired_rows` compares two predictions on the same rows
(usually no TTA as ``a``, TTA as ``b``): a paired bootstrap CI of the
difference of every per-row loss, and fixed/broken counts (rows wrong under
``a`` and right under ``b``, and the reverse; for regression, rows whose
absolute error shrank or grew).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .metrics import accuracy, as_labels, brier, check_probs_and_labels, nll
from .paired import bootstrap_ci, mcnemar_exact


def auc(probs, labels) -> float:
    """Area under the ROC curve: binary (the second column's score), or the
    macro average of one-vs-rest AUCs. Ties count one half. NaN when a class
    has no positives or no negatives."""
    probs, labels = check_probs_and_labels(probs, labels)
    classes = [1] if probs.shape[1] == 2 else range(probs.shape[1])
    values = [binary_auc(probs[:, c], labels == c) for c in classes]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def binary_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC of ``score`` for the boolean ``positive``."""
    score = np.asarray(score, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):  # average ranks of ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty(len(s))
    r[order] = ranks
    return float((r[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_scores(probs, labels) -> dict[str, float]:
    """``accuracy``, ``log_loss``, ``auc``, ``brier`` of probabilities ``(N, C)``."""
    labels = as_labels(labels)
    return {"accuracy": accuracy(probs, labels), "log_loss": nll(probs, labels), "auc": auc(probs, labels),
            "brier": brier(probs, labels)}


def _check_regression(pred, y) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if pred.shape != y.shape or pred.ndim not in (1, 2):
        raise InputError(f"predictions {pred.shape} and targets {y.shape} must have one shape, (N,) or (N, T)")
    return pred, y


def interval_coverage(y, low, high) -> float:
    """Share of targets inside ``[low, high]``."""
    y, low = _check_regression(low, y)[::-1]
    high = np.asarray(high, dtype=np.float64)
    return float(((y >= low) & (y <= high)).mean())


def regression_scores(pred, y, std=None, level: float = 0.9) -> dict[str, float]:
    """``rmse``, ``mae``, and with ``std`` the ``coverage`` of ``pred ± z std``
    at ``level`` (the share of targets inside)."""
    pred, y = _check_regression(pred, y)
    err = pred - y
    out = {"rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err)))}
    if std is not None:
        from statistics import NormalDist

        z = NormalDist().inv_cdf(0.5 + level / 2)
        std = np.asarray(std, dtype=np.float64)
        out["coverage"] = interval_coverage(y, pred - z * std, pred + z * std)
    return out


def paired_rows(a, b, y, *, task: str = "classification", level: float = 0.95, n_boot: int = 2000,
                seed: int = 0) -> dict:
    """Compare predictions ``a`` (no TTA) and ``b`` (TTA) on the same rows.

    For classification (``a``, ``b`` probabilities): the accuracy lift, the
    log-loss and Brier differences (``b - a``: negative is better), each with
    a paired bootstrap CI over rows, fixed/broken counts and the exact
    McNemar p-value. For regression: the squared- and absolute-error
    differences with CIs, and improved/worsened row counts.
    """
    if task == "classification":
        y = as_labels(y)
        pa, y = check_probs_and_labels(a, y)
        pb, _ = check_probs_and_labels(b, y)
        if pa.shape != pb.shape:
            raise InputError(f"paired predictions must have one shape, got {pa.shape} and {pb.shape}")
        rows = np.arange(len(y))
        ca, cb = pa.argmax(1) == y, pb.argmax(1) == y
        onehot = np.eye(pa.shape[1])[y]
        losses = {
            "accuracy": cb.astype(float) - ca.astype(float),
            "log_loss": -np.log(np.clip(pb[rows, y], 1e-12, None)) + np.log(np.clip(pa[rows, y], 1e-12, None)),
            "brier": ((pb - onehot) ** 2).sum(1) - ((pa - onehot) ** 2).sum(1),
        }
        fixed, broken = int((~ca & cb).sum()), int((ca & ~cb).sum())
        extra = {"fixed": fixed, "broken": broken, "p_value": mcnemar_exact(fixed, broken)}
    elif task == "regression":
        pa, y = _check_regression(a, y)
        pb, _ = _check_regression(b, y)
        ea, eb = np.abs(pa - y), np.abs(pb - y)
        if ea.ndim == 2:
            ea, eb = ea.mean(1), eb.mean(1)
        losses = {"squared_error": eb ** 2 - ea ** 2, "absolute_error": eb - ea}
        extra = {"improved": int((eb < ea).sum()), "worsened": int((eb > ea).sum())}
    else:
        raise InputError(f"task must be 'classification' or 'regression', got {task!r}")
    out: dict = {"n": len(y)}
    for name, d in losses.items():
        lo, hi = bootstrap_ci(d, level, n_boot, seed) if len(d) else (float("nan"), float("nan"))
        out[name] = {"difference": float(d.mean()) if len(d) else float("nan"), "ci_low": lo, "ci_high": hi}
    out.update(extra)
    return out
