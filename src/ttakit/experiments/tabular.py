"""The tabular study: does tuned, guarded row TTA help scikit-learn models?

For every data set x model family, repeated stratified k-fold: fit
``TTAClassifier``/``TTARegressor`` on the training folds (views tuned on a
held-out part of them), then score the test fold with and without TTA (the
same fitted estimator: ``estimator_`` alone is no TTA; views are kept only
when their gain on the guard rows is significant at ``guard_alpha``, see
:mod:`ttakit.tuning.rows`). Each cell reports
the paired difference (TTA - no TTA) of each metric with a t-interval over
the folds, how often the guard fell back, and every cell is reported,
including those where TTA hurts.

Offline data only, from installed packages (no download at run time):

- scikit-learn's bundled sets (BSD-3): breast_cancer, wine, iris, digits
  (classification), diabetes (regression);
- palmerpenguins (CC0, Horst, Hill & Gorman 2020): penguin species from the
  four body measurements (classification), body mass from the other three
  and the island (regression);
- vega_datasets' local copies (BSD-3; data public): seattle_weather (the
  weather type from precipitation, temperatures and wind, classification)
  and cars (miles per gallon from the engine and body figures, regression).

Call ``run({"datasets": [...], "models": [...], "folds": 5, "repeats": 2, "guard_alpha": 0.05})``
or ``ttakit reproduce tabular``.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import InputError
from ..evaluation.paired import mean_ci
from ..evaluation.rows import classification_scores, regression_scores
from ..tuning.guard import GUARD_ALPHA

CLASSIFICATION = ("breast_cancer", "wine", "iris", "digits", "penguins_species", "seattle_weather")
REGRESSION = ("diabetes", "penguins_mass", "cars_mpg")
PACKAGES = {"penguins_species": "palmerpenguins", "penguins_mass": "palmerpenguins",
            "seattle_weather": "vega_datasets", "cars_mpg": "vega_datasets"}
MODELS = ("logistic", "forest", "hgb", "knn")
DEFAULTS = {"datasets": CLASSIFICATION + REGRESSION, "models": MODELS, "folds": 3, "repeats": 1,
            "n_copies": 4, "seed": 0,
            "guard_alpha": GUARD_ALPHA}


def load(name: str):
    """``(X, y)`` of a data set: float64 features, labels or targets."""
    if name not in CLASSIFICATION + REGRESSION:
        raise InputError(f"unknown data set {name!r}; offline ones: {', '.join(CLASSIFICATION + REGRESSION)}")
    if name in PACKAGES:
        try:
            return _LOADERS[name]()
        except ImportError:
            raise InputError(f"the {name} data set ships with the {PACKAGES[name]} package: "
                             f"pip install {PACKAGES[name]} (or 'ttakit[study]')") from None
    from sklearn import datasets

    return getattr(datasets, f"load_{name}")(return_X_y=True)


def _penguins(target: str):
    import palmerpenguins

    df = palmerpenguins.load_penguins()
    measures = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    if target == "species":
        df = df.dropna(subset=measures)
        return df[measures].to_numpy(np.float64), df["species"].astype(str).to_numpy()
    df = df.dropna(subset=measures + ["island"])
    island = df["island"].astype("category").cat.codes.to_numpy(np.float64)[:, None]
    return np.hstack([df[measures[:3]].to_numpy(np.float64), island]), df["body_mass_g"].to_numpy(np.float64)


def _seattle_weather():
    from vega_datasets import local_data

    df = local_data.seattle_weather()
    cols = ["precipitation", "temp_max", "temp_min", "wind"]
    return df[cols].to_numpy(np.float64), df["weather"].astype(str).to_numpy()


def _cars():
    from vega_datasets import local_data

    df = local_data.cars()
    cols = ["Cylinders", "Displacement", "Horsepower", "Weight_in_lbs", "Acceleration"]
    df = df.dropna(subset=cols + ["Miles_per_Gallon"])
    x = np.hstack([df[cols].to_numpy(np.float64), df["Year"].dt.year.to_numpy(np.float64)[:, None]])
    return x, df["Miles_per_Gallon"].to_numpy(np.float64)


_LOADERS = {"penguins_species": lambda: _penguins("species"), "penguins_mass": lambda: _penguins("mass"),
            "seattle_weather": _seattle_weather, "cars_mpg": _cars}


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
                make_model(family, regression, seed), n_copies=cfg["n_copies"], guard_alpha=cfg["guard_alpha"],
                random_state=seed)
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


def run(config: dict | None = None, log=None) -> dict:
    """Every cell of the study (see the module doc) and a Markdown table."""
    cfg = {**DEFAULTS, **(config or {})}
    cells = []
    for d in cfg["datasets"]:
        for m in cfg["models"]:
            cells.append(run_cell(d, m, cfg))
            if log is not None:
                log(f"{d} x {m}: {cells[-1]['seconds']:.0f} s, fell back in {cells[-1]['fell_back']}/"
                    f"{cells[-1]['folds']} folds")
    return summarise(cfg, cells)


EPS = 1e-6  # differences below this are rounding (no TTA through the run loop vs the estimator)

#: the metric each row of the summary leads with, and whether lower is better
HEADLINE = {"classification": ("log_loss", True), "regression": ("rmse", True)}


def summarise(cfg: dict, cells: list[dict]) -> dict:
    """The table of every cell and a one-paragraph verdict (counts of cells
    whose CI lies wholly on one side of zero)."""
    lines = ["| data set | model | metric | TTA - no TTA (95% CI over folds) | fell back |", "|---|---|---|---|---:|"]
    for c in cells:
        for k in ("accuracy", "log_loss", "auc", "brier", "rmse", "mae"):
            if k in c:
                d = c[k]
                lines.append(f"| {c['dataset']} | {c['model']} | {k} | {d['difference']:+.4f} "
                             f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] | {c['fell_back']}/{c['folds']} |")
    better = worse = same = 0
    for c in cells:
        k, lower = HEADLINE[c["task"]]
        d = c[k]
        below, above = d["ci_high"] < -EPS, d["ci_low"] > EPS  # rounding noise is no difference
        if (below and lower) or (above and not lower):
            better += 1
        elif below or above:
            worse += 1
        else:
            same += 1
    folds = sum(c["folds"] for c in cells)
    fell = sum(c["fell_back"] for c in cells)
    verdict = (f"Of {len(cells)} cells (data set x model family), guarded row TTA improved the headline metric "
               f"(log-loss for classification, RMSE for regression) with a 95% CI excluding zero in {better}, "
               f"made it worse in {worse}, and was indistinguishable from no TTA in {same}; the guard fell back "
               f"to no TTA in {fell} of {folds} folds.")
    ref = next((c for c in cells if c["dataset"] == "breast_cancer" and c["model"] == "hgb" and "auc" in c), None)
    if ref is not None:
        a = ref["auc"]
        verdict += (f" The closest setting to the one public figure (Kozodoi: LightGBM with feature noise, +0.0024 "
                    f"AUC) is gradient boosting on breast_cancer: {a['difference']:+.4f} AUC "
                    f"[{a['ci_low']:+.4f}, {a['ci_high']:+.4f}].")
    return {"config": cfg, "cells": cells, "table": "\n".join(lines), "verdict": verdict}


def write_report(result: dict, out) -> "Path":
    """``report.md`` and ``results.json`` under ``out``."""
    import json
    from pathlib import Path

    from ..files import write_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = result["config"]
    text = "\n".join([
        "# Does test-time augmentation help tabular models?", "",
        f"`ttakit reproduce tabular` with {cfg['folds']}-fold cross-validation x {cfg['repeats']} repeat(s), "
        f"{cfg['n_copies']} copies per view, seed {cfg['seed']}. In each fold `TTAClassifier`/`TTARegressor` "
        "tunes its views on the training folds (each row predicted by a clone fitted without it), guarded: views "
        "are kept only when their gain "
        "over no TTA passes the cross-fitted guard (fixed-sequence one-sided paired t-tests on the per-row loss over the "
        f"prefixes of the search, guard_alpha {cfg.get('guard_alpha', GUARD_ALPHA):g}), else no TTA; the "
        "test fold is scored with and without TTA by the same fitted estimator, so each figure is a paired "
        "difference, with a t-interval over folds.", "",
        result["verdict"], "", result["table"], ""])
    write_atomic(out / "report.md", text)
    write_atomic(out / "results.json", json.dumps(result, indent=1, default=float) + "\n")
    return out / "report.md"
