"""The guarded greedy search for row views, for any loss.

Image tuning (:func:`ttakit.tuning.tune`) scores views by calibrated NLL on
class probabilities. Rows also need regression, so here the candidates are
given as their merged predictions ``(K, N, ...)`` (index 0 is no TTA; a
candidate is usually one family at one strength, its seeded copies already
averaged) and the loss is any per-row ``loss(pred, y) -> (N,)`` (lower is
better): log-loss for classifiers, squared error for regressors.

The same guard as for images (:mod:`ttakit.tuning.guard`): the tuning rows
are cut into ``guard_folds`` folds (stratified by ``strata``, seeded); for
every fold, greedy search adds, step by step, the candidate whose mean with
those chosen so far lowers the mean loss most on the other folds, and each
prefix of its path is scored on the held-out fold. The prefixes are tested
in a fixed sequence from the longest down (one-sided paired t-test, skew-checked, on the
cross-fitted per-row losses at ``guard_alpha``, stopping at the first that
fails), and a prefix must also beat no TTA's mean loss by more than
``margin`` (relative). Among those that pass, the lowest cross-fitted loss
gives the number of candidates ``L``; the search is run again on all the
tuning rows and its first ``L`` candidates are the result. If none passes,
the result is no TTA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..views.rows import FeatureStats
from .guard import GUARD_ALPHA, GUARD_FOLDS, check_guard_alpha, crossfit_folds, decide

_TINY = 1e-12


def log_loss(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per row: the negative log-probability of the true class (``y`` class indices)."""
    return -np.log(np.clip(probs[np.arange(len(y)), y], _TINY, None))


def squared_error(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per row: the squared error (mean over targets when there are several)."""
    err = (np.asarray(pred, np.float64) - y) ** 2
    return err.reshape(len(err), -1).mean(1)


# -- the candidates (which view families are tried) --------------------------------------------------------
def auto_families(stats: FeatureStats) -> list[str]:
    """The row view families tried by default (``views="auto"``): noise,
    jitter and dropout; categorical resampling when there are categorical
    features; and, when there are both numeric and integer features, noise
    on each group alone (``row_noise_numeric``, ``row_noise_integer``), so
    that the search can give the groups different strengths."""
    names = ["row_noise", "row_jitter", "feature_dropout"]
    if stats.mask("categorical").any():
        names.append("category_resample")
    if stats.mask("numeric").any() and stats.mask("integer").any():
        names += ["row_noise_numeric", "row_noise_integer"]
    return names


# -- the guarded search ---------------------------------------------------------------------------------------
@dataclass
class GuardedSearch:
    """What :func:`guarded_greedy` chose, and why."""

    chosen: list[int]            #: candidate indices, repeats count (empty when fell back)
    fell_back: bool
    reason: str
    identity_guard: float        #: cross-fitted mean loss of no TTA
    best_guard: float            #: cross-fitted mean loss of the result
    steps: list[dict] = field(default_factory=list)
    n_rows: int = 0
    folds: int = GUARD_FOLDS
    guard_alpha: float = GUARD_ALPHA


def split(n: int, guard_fraction: float, seed: int, strata: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(fit_idx, guard_idx)``, seeded, stratified by ``strata`` when given."""
    if not 0 < guard_fraction < 1:
        raise InputError(f"guard_fraction must be in (0, 1), got {guard_fraction}")
    rng = np.random.default_rng(seed)
    if strata is None:
        order = rng.permutation(n)
        k = max(1, int(round(n * guard_fraction)))
        return np.sort(order[k:]), np.sort(order[:k])
    guard = []
    for s in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == s))
        guard.extend(idx[:int(round(len(idx) * guard_fraction))])
    guard = np.sort(np.asarray(guard, dtype=np.int64))
    return np.setdiff1d(np.arange(n), guard), guard


def _path(preds: np.ndarray, y, loss, budget: int) -> list[int]:
    running = np.zeros(preds.shape[1:])
    chosen: list[int] = []
    for _ in range(budget):
        scores = [float(np.mean(loss((running + preds[k]) / (len(chosen) + 1), y))) for k in range(len(preds))]
        k = int(np.argmin(scores))
        chosen.append(k)
        running += preds[k]
    return chosen


def guarded_greedy(preds: np.ndarray, y: np.ndarray, loss: Callable[[np.ndarray, np.ndarray], np.ndarray], *,
                   budget: int = 3, guard_folds: int = GUARD_FOLDS, seed: int = 0, margin: float = 1e-3,
                   guard_alpha: float = GUARD_ALPHA, strata: np.ndarray | None = None,
                   names: list[str] | None = None) -> GuardedSearch:
    """Choose candidates (see the module doc). ``preds[0]`` must be no TTA;
    ``loss`` returns one loss per row."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InputError(f"budget must be a positive integer, got {budget!r}")
    guard_alpha = check_guard_alpha(guard_alpha)
    preds = np.asarray(preds, dtype=np.float64)
    y = np.asarray(y)
    n = preds.shape[1]
    if n < 2 * guard_folds:
        return GuardedSearch([], True, f"{n} tuning rows are too few for {guard_folds}-fold cross-fitting: "
                                       "using no TTA", float("nan"), float("nan"), n_rows=n, folds=guard_folds,
                             guard_alpha=guard_alpha)
    usable = strata is not None and np.unique(strata, return_counts=True)[1].min() >= guard_folds
    fold = crossfit_folds(n, guard_folds, seed, strata if usable else None)
    losses = np.empty((budget + 1, n))
    losses[0] = loss(preds[0], y)
    for f in range(guard_folds):
        held = fold == f
        path = _path(preds[:, ~held], y[~held], loss, budget)
        running = np.zeros(preds[:, held].shape[1:])
        for length, k in enumerate(path, 1):
            running += preds[k][held]
            losses[length, held] = loss(running / length, y[held])
    chosen = _path(preds, y, loss, budget)

    def describe(length: int) -> str:
        return f"{length - 1} step(s) of the search"

    d = decide(losses, alpha=guard_alpha, margin=margin, folds=guard_folds, describe=describe)
    steps = [{"candidate": names[k] if names else k, "guard_loss": float(losses[i].mean()),
              "guard_p": next((e.p for e in d.evidence if e.length == i + 1 and e.tested), None),
              "significant": any(e.passed for e in d.evidence if e.length == i + 1)}
             for i, k in enumerate(chosen, 1)]
    picked = chosen[:d.length - 1]
    if d.fell_back or all(k == 0 for k in picked):
        return GuardedSearch([], True, f"{d.reason} (cross-fitted loss {d.identity_loss:.5g})", d.identity_loss,
                             d.identity_loss, steps, n, guard_folds, guard_alpha)
    return GuardedSearch(picked, False, d.reason, d.identity_loss, float(losses[d.length - 1].mean()), steps, n,
                         guard_folds, guard_alpha)
