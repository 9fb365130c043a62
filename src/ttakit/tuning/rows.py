"""The guarded greedy search for row views, for any loss.

Image tuning (:func:`ttakit.tuning.tune`) scores views by calibrated NLL on
class probabilities. Rows also need regression, so here the candidates are
given as their merged predictions ``(K, N, ...)`` (index 0 is no TTA; a
candidate is usually one family at one strength, its seeded copies already
averaged) and the loss is any ``loss(pred, y) -> float`` (lower is better):
log-loss for classifiers, mean squared error for regressors.

The same guard as for images: the tuning rows are split (seeded); greedy
search adds, step by step, the candidate whose mean with those chosen so far
lowers the loss most on the *fit* part; every prefix is then scored on the
*guard* part, and the best prefix is kept only if it beats no TTA there by
more than ``margin`` (relative). Otherwise the result is no TTA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

_TINY = 1e-12


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-probability of the true class (``y`` class indices)."""
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], _TINY, None)).mean())


def squared_error(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error (over rows and targets)."""
    return float(np.mean((pred - y) ** 2))


@dataclass
class GuardedSearch:
    """What :func:`guarded_greedy` chose, and why."""

    chosen: list[int]            #: candidate indices, repeats count (empty when fell back)
    fell_back: bool
    reason: str
    identity_guard: float        #: loss of no TTA on the guard split
    best_guard: float            #: loss of the result on the guard split
    steps: list[dict] = field(default_factory=list)
    n_fit: int = 0
    n_guard: int = 0


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


def guarded_greedy(preds: np.ndarray, y: np.ndarray, loss: Callable[[np.ndarray, np.ndarray], float], *,
                   budget: int = 3, guard_fraction: float = 0.3, seed: int = 0, margin: float = 1e-3,
                   strata: np.ndarray | None = None, names: list[str] | None = None) -> GuardedSearch:
    """Choose candidates (see the module doc). ``preds[0]`` must be no TTA."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InputError(f"budget must be a positive integer, got {budget!r}")
    preds = np.asarray(preds, dtype=np.float64)
    k_total, n = preds.shape[0], preds.shape[1]
    fit, guard = split(n, guard_fraction, seed, strata)
    if len(fit) == 0 or len(guard) == 0:
        return GuardedSearch([], True, f"{n} tuning rows are too few to split: using no TTA", float("nan"),
                             float("nan"))
    p_fit, p_guard, y_fit, y_guard = preds[:, fit], preds[:, guard], y[fit], y[guard]
    running = np.zeros(p_fit.shape[1:])
    chosen: list[int] = []
    for _ in range(budget):
        scores = [loss((running + p_fit[k]) / (len(chosen) + 1), y_fit) for k in range(k_total)]
        k = int(np.argmin(scores))
        chosen.append(k)
        running += p_fit[k]
    id_guard = loss(p_guard[0], y_guard)
    best_len, best = 0, id_guard
    steps = []
    for length in range(1, len(chosen) + 1):
        g = loss(p_guard[chosen[:length]].mean(0), y_guard)
        steps.append({"candidate": names[chosen[length - 1]] if names else chosen[length - 1], "guard_loss": g})
        if g < best - margin * abs(id_guard) - _TINY:
            best_len, best = length, g
    picked = chosen[:best_len]
    if best_len == 0 or all(k == 0 for k in picked):
        return GuardedSearch([], True, f"nothing beat no TTA on the guard split (loss {id_guard:.5g}): using no TTA",
                             id_guard, id_guard, steps, len(fit), len(guard))
    return GuardedSearch(picked, False, f"{best_len} step(s) beat no TTA on the guard split "
                                        f"(loss {best:.5g} vs {id_guard:.5g})",
                         id_guard, best, steps, len(fit), len(guard))
