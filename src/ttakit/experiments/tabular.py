"""The tabular study: does tuned, guarded row TTA help scikit-learn models?

For every data set x model family, repeated stratified k-fold: fit
``TTAClassifier``/``TTARegressor`` on the training folds (views tuned on a
held-out part of them), then score the test fold with and without TTA (the
same fitted estimator: ``estimator_`` alone is no TTA). Each cell reports
the paired difference (TTA - no TTA) of each metric with a t-interval over
the folds, how often the guard fell back, and every cell is reported,
including those where TTA hurts.

Offline data only: the data sets bundled with scikit-learn. Call
``run({"datasets": [...], "models": [...], "folds": 3, "repeats": 1})``;
the defaults run in a few minutes on one core.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import InputError
from ..evaluation.paired import mean_ci
from ..evaluation.rows import classification_scores, regression_scores

CLASSIFICATION = ("breast_cancer", "wine", "iris", "digits")
REGRESSION = ("diabetes",)
MODELS = ("logistic", "forest", "hgb", "knn")
DEFAULTS = {"datasets": CLASSIFICATION + REGRESSION, "models": MODELS, "folds": 3, "repeats": 1,
            "n_copies": 4, "seed": 0}


def load(name: str):
    from sklearn import datasets

    loader = getattr(datasets, f"load_{name}", None)
    if name not in CLASSIFICATION + REGRESSION or loader is None:
        raise InputError(f"unknown data set {name!r}; offline ones: {', '.join(CLASSIFICATION + REGRESSION)}")
    return loader(return_X_y=True)


def make_model(family: str, regression: bool, seed: int):
    from sklearn import ensemble, linear_model, neighbors
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if family == "logistic":
        est = linear_model.Ridge() if regression else linear_model.LogisticRegression(max_iter=2000)
    elif family == "forest":
        cls = ensemble.RandomForestRegressor if regression else ensemble.RandomForestClassifier
        est = cls(n_estimators=100, random_state=seed)
    elif family == "hgb":
        cls = ensemble.HistGradientBoostingRegressor if regression else ensemble.HistGradientBoostingClassifier
        est = cls(max_iter=100, random_state=seed)
    elif family == "knn":
        est = neighbors.KNeighborsRegressor() if regression else neighbors.KNeighborsClassifier()
    else:
        raise InputError(f"unknown model family {family!r}; valid: {', '.join(MODELS)}")
    return make_pipeline(StandardScaler(), est)


def run_cell(dataset: str, family: str, cfg: dict) -> dict:
    """One data set x model family over repeated k-fold."""
    from sklearn.model_selection import KFold, StratifiedKFold

    from ..sklearn import TTAClassifier, TTARegressor

    x, y = load(dataset)
    regression = dataset in REGRESSION
    diffs: dict[str, list[float]] = {}
    fell_back = 0
    t0 = time.perf_counter()
    for r in range(cfg["repeats"]):
        seed = cfg["seed"] + r
        split = (KFold if regression else StratifiedKFold)(cfg["folds"], shuffle=True, random_state=seed)
        for train, test in split.split(x, y):
            meta = (TTARegressor if regression else TTAClassifier)(
                make_model(family, regression, seed), n_copies=cfg["n_copies"], random_state=seed)
            meta.fit(x[train], y[train])
            fell_back += bool(meta.fell_back_)
            if regression:
                base = regression_scores(meta.estimator_.predict(x[test]), y[test])
                tta = regression_scores(meta.predict(x[test]), y[test])
            else:
                labels = np.searchsorted(meta.classes_, y[test])
                base = classification_scores(meta.estimator_.predict_proba(x[test]), labels)
                tta = classification_scores(meta.predict_proba(x[test]), labels)
            for k in base:
                diffs.setdefault(k, []).append(tta[k] - base[k])
    cell = {"dataset": dataset, "model": family, "task": "regression" if regression else "classification",
            "folds": len(next(iter(diffs.values()))), "fell_back": fell_back, "seconds": time.perf_counter() - t0}
    for k, v in diffs.items():
        m, lo, hi = mean_ci(v)
        cell[k] = {"difference": m, "ci_low": lo, "ci_high": hi}
    return cell


def run(config: dict | None = None) -> dict:
    """Every cell of the study (see the module doc) and a Markdown table."""
    cfg = {**DEFAULTS, **(config or {})}
    cells = [run_cell(d, m, cfg) for d in cfg["datasets"] for m in cfg["models"]]
    lines = ["| data set | model | metric | TTA - no TTA (95% CI over folds) | fell back |", "|---|---|---|---|---:|"]
    for c in cells:
        for k in ("accuracy", "log_loss", "auc", "brier", "rmse", "mae"):
            if k in c:
                d = c[k]
                lines.append(f"| {c['dataset']} | {c['model']} | {k} | {d['difference']:+.4f} "
                             f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] | {c['fell_back']}/{c['folds']} |")
    return {"config": cfg, "cells": cells, "table": "\n".join(lines)}
