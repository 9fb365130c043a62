"""The guarded greedy search for row views, for any loss.

Image tuning (:func:`ttakit.tuning.tune`) scores views by calibrated NLL on
class probabilities. Rows also need regression, so here the candidates are
given as their merged predictions ``(K, N, ...)`` (index 0 is no TTA; a
candidate is usually one family at one strength, its seeded copies already
averaged) and the loss is any per-row ``loss(pred, y) -> (N,)`` (lower is
better): log-loss for classifiers, squared error for regressors.

The same guard as for images (:mod:`ttakit.tuning.guard`): the tuning rows
are split (seeded); greedy search adds, step by step, the candidate whose
mean with those chosen so far lowers the mean loss most on the *fit* part;
every prefix is then scored on the *guard* part. A prefix counts only if its
gain there is *significant*: mean guard loss below no TTA's by more than
``margin`` (relative) and a two-sided paired t-test on the per-row guard
losses below ``guard_alpha``, Bonferroni-corrected for the number of prefixes
tried. The counting prefix with the lowest guard loss is kept; if none
counts (a tie included), the result is no TTA. On small tuning sets this
gives up some real gains (they cannot be told from noise there) to keep the
search from adopting views that hurt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..views.rows import FeatureStats
from .guard import GUARD_ALPHA, check_guard_alpha, paired_gain_p

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
    identity_guard: float        #: mean loss of no TTA on the guard split
    best_guard: float            #: mean loss of the result on the guard split
    steps: list[dict] = field(default_factory=list)
    n_fit: int = 0
    n_guard: int = 0
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


def guarded_greedy(preds: np.ndarray, y: np.ndarray, loss: Callable[[np.ndarray, np.ndarray], np.ndarray], *,
                   budget: int = 3, guard_fraction: float = 0.3, seed: int = 0, margin: float = 1e-3,
                   guard_alpha: float = GUARD_ALPHA, strata: np.ndarray | None = None,
                   names: list[str] | None = None) -> GuardedSearch:
    """Choose candidates (see the module doc). ``preds[0]`` must be no TTA;
    ``loss`` returns one loss per row."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InputError(f"budget must be a positive integer, got {budget!r}")
    guard_alpha = check_guard_alpha(guard_alpha)
    preds = np.asarray(preds, dtype=np.float64)
    k_total, n = preds.shape[0], preds.shape[1]
    fit, guard = split(n, guard_fraction, seed, strata)
    if len(fit) == 0 or len(guard) == 0:
        return GuardedSearch([], True, f"{n} tuning rows are too few to split: using no TTA", float("nan"),
                             float("nan"), guard_alpha=guard_alpha)
    p_fit, p_guard, y_fit, y_guard = preds[:, fit], preds[:, guard], y[fit], y[guard]
    running = np.zeros(p_fit.shape[1:])
    chosen: list[int] = []
    for _ in range(budget):
        scores = [float(np.mean(loss((running + p_fit[k]) / (len(chosen) + 1), y_fit))) for k in range(k_total)]
        k = int(np.argmin(scores))
        chosen.append(k)
        running += p_fit[k]
    id_losses = loss(p_guard[0], y_guard)
    id_guard = float(np.mean(id_losses))
    best_len, best = 0, id_guard
    steps = []
    for length in range(1, len(chosen) + 1):
        losses = loss(p_guard[chosen[:length]].mean(0), y_guard)
        g = float(np.mean(losses))
        p = paired_gain_p(id_losses, losses, len(chosen))  # Bonferroni over the prefixes tried
        significant = g < id_guard - margin * abs(id_guard) - _TINY and p < guard_alpha
        steps.append({"candidate": names[chosen[length - 1]] if names else chosen[length - 1], "guard_loss": g,
                      "guard_p": p, "significant": bool(significant)})
        if significant and g < best:
            best_len, best = length, g
    picked = chosen[:best_len]
    if best_len == 0 or all(k == 0 for k in picked):
        beat = sum(s["guard_loss"] < id_guard - _TINY for s in steps)
        reason = ("nothing beat no TTA on the guard split" if not beat else
                  f"{beat} prefix(es) of the search beat no TTA on the guard split, but none significantly "
                  f"(paired t-test on per-row loss p < {guard_alpha:g}, Bonferroni-corrected)")
        return GuardedSearch([], True, f"{reason} (loss {id_guard:.5g}): using no TTA", id_guard, id_guard, steps,
                             len(fit), len(guard), guard_alpha)
    p = steps[best_len - 1]["guard_p"]
    return GuardedSearch(picked, False, f"{best_len} step(s) beat no TTA on the guard split "
                                        f"(loss {best:.5g} vs {id_guard:.5g}; paired t-test on per-row loss "
                                        f"p = {p:.2g}, Bonferroni-corrected)",
                         id_guard, best, steps, len(fit), len(guard), guard_alpha)
