"""How good are the sets? Coverage (share of sets holding the true label),
mean set size, coverage by set size and by class; and the same measured over
repeated random calibration/test splits, for several predictors of the same
inputs (e.g. no TTA against a TTA policy) on the *same* splits."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .predictor import SplitConformal

#: set-size groups of the size-stratified coverage
SIZE_BINS = ((0, 0), (1, 1), (2, 2), (3, 3), (4, 5), (6, None))  # 0: an empty set (randomised APS/RAPS)


def _check_sets(sets, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(sets, dtype=bool)
    y = np.asarray(labels, dtype=np.int64)
    if s.ndim != 2 or y.shape != (s.shape[0],):
        raise InputError(f"sets must be (N, C) booleans with one label per row; got {s.shape} and {y.shape}")
    return s, y


def coverage_by_size(hits, sizes, n_classes: int) -> list[dict]:
    """Coverage among the inputs whose set has each size (grouped as in
    :data:`SIZE_BINS`): a conditional check that marginal coverage hides."""
    hits, sizes = np.asarray(hits, dtype=bool), np.asarray(sizes)
    rows = []
    for lo, hi in SIZE_BINS:
        m = (sizes >= lo) & (sizes <= (hi if hi is not None else n_classes))
        name = str(lo) if hi == lo else (f"{lo}-{hi}" if hi else f"{lo}+")
        rows.append({"size": name, "n": int(m.sum()), "coverage": float(hits[m].mean()) if m.any() else float("nan")})
    return rows


def set_metrics(sets, labels) -> dict:
    """Coverage, mean set size, coverage by set size and the worst class's coverage."""
    s, y = _check_sets(sets, labels)
    hit = s[np.arange(len(y)), y]
    size = s.sum(1)
    per_class = [float(hit[y == c].mean()) for c in range(s.shape[1]) if (y == c).any()]
    return {"coverage": float(hit.mean()), "mean_size": float(size.mean()),
            "by_size": coverage_by_size(hit, size, s.shape[1]),
            "worst_class_coverage": float(min(per_class)) if per_class else float("nan")}


def repeated_splits(probs: dict, labels, *, method: str = "aps", alpha: float = 0.1, splits: int = 20,
                    calibration_fraction: float = 0.5, seed: int = 0, **conformal_kwargs) -> dict:
    """Calibrate on a random part, measure on the rest, ``splits`` times.

    ``probs`` maps a name to ``(N, C)`` probabilities of the same ``N``
    inputs (in the same order); every name sees the same splits. Returns,
    per name: per-split coverage and mean size, their mean / sd / min / max,
    and coverage by set size pooled over the splits."""
    y = np.asarray(labels, dtype=np.int64)
    if not probs:
        raise InputError("give at least one named set of probabilities")
    if not 0 < calibration_fraction < 1:
        raise InputError(f"calibration_fraction must be in (0, 1), got {calibration_fraction}")
    n = len(y)
    for name, p in probs.items():
        if np.shape(p)[0] != n:
            raise InputError(f"{name!r}: {np.shape(p)[0]} predictions for {n} labels")
    n_cal = int(round(n * calibration_fraction))
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(n) for _ in range(splits)]
    out = {}
    for name, p in probs.items():
        p = np.asarray(p, dtype=np.float64)
        cov, size, worst, hits, sizes = [], [], [], [], []
        for order in orders:
            cal, test = order[:n_cal], order[n_cal:]
            cp = SplitConformal(method, alpha, **conformal_kwargs).calibrate(p[cal], y[cal])
            sets = cp.predict_set(p[test])
            m = set_metrics(sets, y[test])
            cov.append(m["coverage"])
            size.append(m["mean_size"])
            worst.append(m["worst_class_coverage"])
            hits.append(sets[np.arange(len(test)), y[test]])
            sizes.append(sets.sum(1))
        out[name] = {"coverage": _summary(cov), "mean_size": _summary(size), "worst_class_coverage": _summary(worst),
                     "by_size": coverage_by_size(np.concatenate(hits), np.concatenate(sizes), p.shape[1]), "per_split": {"coverage": cov, "mean_size": size}}
    return {"method": method, "alpha": alpha, "splits": splits, "n_calibration": n_cal, "n_test": n - n_cal,
            "conformal": {k: v for k, v in conformal_kwargs.items()}, "results": out}


def _summary(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}
