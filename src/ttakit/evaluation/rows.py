"""Scores for tabular predictions and paired comparisons against no TTA.

Classification: accuracy, log-loss, AUC (binary; one-vs-rest macro average
for more classes), Brier (:func:`brier_score`: scikit-learn's
``brier_score_loss``, the mean squared error of the positive class's
probability for two classes, the mean over rows of the summed squared
errors over the classes for more). Regression: RMSE, MAE, and the coverage of an
interval. :func:`paired_rows` compares two predictions on the same rows
(usually no TTA as ``a``, TTA as ``b``): a paired bootstrap CI of the
difference of every per-row loss, and fixed/broken counts (rows wrong under
``a`` and right under ``b``, and the reverse; for regression, rows whose
absolute error shrank or grew).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..tasks.rows import RowPrediction, predict_rows
from ..views.base import short_repr
from .metrics import accuracy, as_labels, check_probs_and_labels, nll
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


#: how the report defines Brier (printed under it)
BRIER_DEFINITION = ("Brier is scikit-learn's brier_score_loss: for two classes the mean of (p - y)^2 over rows, "
                    "p the probability of the second class and y 1 when it is the label; for more classes the mean "
                    "over rows of the sum over classes of (p_c - y_c)^2 (twice the two-class value there)")


def brier_rows(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per row: the Brier score of :func:`brier_score` (its mean over rows)."""
    onehot = np.eye(probs.shape[1])[labels]
    per_row = ((probs - onehot) ** 2).sum(1)
    return per_row / 2 if probs.shape[1] == 2 else per_row


def brier_score(probs, labels) -> float:
    """Brier score, as scikit-learn's ``brier_score_loss``: for two classes
    the mean squared error of the second class's probability; for more, the
    mean over rows of the squared errors summed over the classes."""
    probs, labels = check_probs_and_labels(probs, labels)
    return float(brier_rows(probs, labels).mean())


def classification_scores(probs, labels) -> dict[str, float]:
    """``accuracy``, ``log_loss``, ``auc``, ``brier`` of probabilities ``(N, C)``."""
    labels = as_labels(labels)
    return {"accuracy": accuracy(probs, labels), "log_loss": nll(probs, labels), "auc": auc(probs, labels),
            "brier": brier_score(probs, labels)}


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
        losses = {
            "accuracy": cb.astype(float) - ca.astype(float),
            "log_loss": -np.log(np.clip(pb[rows, y], 1e-12, None)) + np.log(np.clip(pa[rows, y], 1e-12, None)),
            "brier": brier_rows(pb, y) - brier_rows(pa, y),
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


#: the interval level of the regression coverage in :func:`evaluate_rows`
COVERAGE_LEVEL = 0.9


@dataclass
class RowReport:
    """What :func:`evaluate_rows` measured: the scores without and with TTA
    on the same rows, and their paired comparison (:func:`paired_rows`)."""

    task: str
    n: int
    baseline: dict             #: scores without TTA
    tta: dict                  #: scores with TTA
    paired: dict               #: :func:`paired_rows` of baseline (a) against TTA (b)
    views: int                 #: distinct views of the policy
    seconds: dict = field(default_factory=dict)
    policy: str = ""
    #: per row, for a report: ``change`` (positive: better with TTA), ``change_name``, and ``columns``
    #: (target and predictions by name) (:func:`row_changes`; not in :meth:`to_dict`)
    rows: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {"task": self.task, "n": self.n, "views": self.views, "policy": self.policy,
                "no_tta": self.baseline, "tta": self.tta, "paired": self.paired, "seconds": self.seconds}

    def to_markdown(self) -> str:
        """The scores side by side, each paired difference with its CI, and
        the fixed/broken (improved/worsened) counts."""
        p = self.paired
        lines = [f"{self.task}, {self.n} rows, TTA with {self.views} distinct views"
                 + (f" ({self.policy})" if self.policy else ""), "",
                 "| metric | no TTA | TTA | TTA - no TTA | 95% CI |", "|---|---|---|---|---|"]
        paired_of = {"accuracy": "accuracy", "log_loss": "log_loss", "brier": "brier", "rmse": None,
                     "mae": "absolute_error"}
        for name in self.tta:
            a, b = self.baseline.get(name, float("nan")), self.tta[name]
            d = p.get(paired_of.get(name) or "", None)
            diff = f"{b - a:+.4f}" if np.isfinite(a) and np.isfinite(b) else "n/a"
            ci = f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]" if d else "n/a"
            lines.append(f"| {name} | {a:.4f} | {b:.4f} | {diff} | {ci} |")
        if self.task == "regression":
            d = p["squared_error"]
            lines.append(f"| squared error (mean) | | | {d['difference']:+.4g} | "
                         f"[{d['ci_low']:+.4g}, {d['ci_high']:+.4g}] |")
            lines += ["", f"rows improved: {p['improved']}, worsened: {p['worsened']} (absolute error); "
                          f"coverage is the share of targets inside the {COVERAGE_LEVEL:.0%} interval of the "
                          "copies' spread (it knows only what the augmentation moves)"]
        else:
            lines += ["", f"fixed: {p['fixed']}, broken: {p['broken']} (exact McNemar p = {p['p_value']:.3g}); "
                          "negative log-loss and Brier differences are improvements. " + BRIER_DEFINITION]
        return "\n".join(lines) + "\n"


def _scores(pred: RowPrediction, y, task: str, labels=None) -> dict:
    if task == "classification":
        return classification_scores(pred.probs, labels)
    return regression_scores(pred.pred, y, pred.std, COVERAGE_LEVEL)


def class_indices(y, classes) -> np.ndarray:
    """Labels ``y`` as indices into the model's ``classes``; a label the
    model does not know is an error naming it."""
    y = np.asarray(y)
    classes = np.asarray(classes)
    try:
        known = np.isin(y, classes)
    except TypeError:
        known = np.array([v in set(classes.tolist()) for v in y.tolist()])
    if not known.all():
        unknown = list(dict.fromkeys(y[~known].tolist()))[:5]
        raise InputError(f"labels {', '.join(short_repr(v) for v in unknown)} are not classes of the model (its "
                         f"classes: {', '.join(short_repr(v) for v in classes.tolist()[:10])})")
    order = np.argsort(classes, kind="stable")
    return order[np.searchsorted(classes[order], y)]


def evaluate_rows(model, rows: np.ndarray, y, policy, *, decoder=None, merge: str = "mean", nan: str = "raise",
                  fill=None, chunk_rows: int | None = None, level: float = 0.95, n_boot: int = 2000,
                  seed: int = 0) -> RowReport:
    """Score a fitted model on encoded ``rows`` with targets ``y``, without
    TTA and with ``policy``, and compare them pairwise (see :func:`paired_rows`)."""
    opts = dict(decoder=decoder, merge=merge, nan=nan, fill=fill, chunk_rows=chunk_rows)
    base = predict_rows(model, rows, None, **opts)
    tta = predict_rows(model, rows, policy, **opts)
    task = base.task
    if task == "classification":
        labels = class_indices(y, base.classes)
        a, b, target = base.probs, tta.probs, labels
    else:
        labels = None
        a, b, target = base.pred, tta.pred, np.asarray(y, dtype=np.float64)
    scores_a = _scores(base, target, task, labels)
    scores_b = _scores(tta, target, task, labels)
    if task == "regression":
        scores_a.pop("coverage", None)
    paired = paired_rows(a, b, target, task=task, level=level, n_boot=n_boot, seed=seed)
    return RowReport(task, len(rows), scores_a, scores_b, paired, len(policy.unique()),
                     {"no_tta": base.seconds, "tta": tta.seconds}, policy.source or "",
                     row_changes(task, a, b, target, y, base.classes))


def row_changes(task: str, a, b, target, y, classes=None) -> dict:
    """Each row's change with TTA, positive when better: the true class's
    probability gained (classification) or the absolute error lost
    (regression, the mean over targets); and the columns a report lists."""
    if task == "classification":
        rows = np.arange(len(target))
        names = np.asarray(classes) if classes is not None else np.arange(a.shape[1])
        return {"change": b[rows, target] - a[rows, target], "change_name": "true class's probability gained",
                "columns": {"target": np.asarray(y), "no TTA": names[a.argmax(1)], "TTA": names[b.argmax(1)],
                            "p(true) no TTA": a[rows, target], "p(true) TTA": b[rows, target]}}
    ea, eb = np.abs(a - target), np.abs(b - target)
    cols = {"target": target, "no TTA": a, "TTA": b} if np.ndim(a) == 1 else {}
    if np.ndim(a) == 2:
        ea, eb = ea.mean(1), eb.mean(1)
    return {"change": ea - eb, "change_name": "absolute error reduction", "columns": cols}
