"""The guard: cross-fitted evidence along the search's path, tested in a
fixed sequence. Shared by image, row and dense tuning.

Why. A single fit/guard split lets the guard's test see only the guard
part (300 of 1,000 tuning images by default before), where a real
+1-point gain is rarely significant; and a Bonferroni correction over all
the prefixes of the search divides the error level by the budget again.
Both threw real gains away. Here:

1. **Cross-fitting.** The tuning inputs are cut into ``folds`` (stratified
   by label when given, seeded). For every fold the search runs on the
   other folds and its path (the ordered views it adds; every prefix is a
   policy) is scored on the held-out fold. Each input is thus scored by a
   search that never saw it, and the guard's test sees all N inputs:
   for every prefix length ``L`` a cross-fitted per-input loss, and, for
   classifiers, a correct/wrong flag.
2. **A fixed-sequence test along the path.** Hypothesis ``H_L``: *the
   search's first L views do not lower the expected per-input loss below
   no TTA's* (the path starts with the original view, so ``L = 1`` is no
   TTA). They are tested one after the other from the longest prefix down,
   ``L = budget, budget - 1, ..., 2``, each at the full level ``alpha``
   (one-sided paired t-test on the per-input loss differences, which must
   also reject with Johnson's skewness correction, :func:`one_sided_t_p`),
   and testing
   stops at the first ``H_L`` not rejected. The order is fixed before the
   data are seen, so the chance of rejecting any true ``H_L`` is at most
   ``alpha`` (the family-wise error rate; Westfall & Krishen 2001): no
   level is divided among prefixes. Longest first because that is where
   the evidence is strongest: the search adds a view only while it
   improves its objective, and a one-view step (``L = 2``) is the smallest
   and noisiest gain on the path (tested first, it stopped the sequence on
   real +4-point gains). A prefix whose predictions equal no TTA's on
   every input is no hypothesis and is passed over.
3. **Accuracy and loss together; evidence one input cannot supply.** For
   classifiers a prefix counts only if, besides the loss test, its
   cross-fitted predictions fix more inputs than they break by the exact
   one-sided McNemar test at ``alpha`` too, and by at least
   ``min_net_fixed`` (default 3). A calibrated NLL can improve while
   accuracy falls (averaged shifted views on 8x8 digits do that); requiring
   both rejections keeps the error level (an intersection of tests) and
   ties the guard to accuracy. For rows (no decisions) at least
   ``min_net_fixed`` rows must gain.
4. **The choice.** The longest prefix that passes (the first hypothesis
   of the sequence that is rejected; the shorter ones are tested on to be
   reported): the search is run again on all the tuning inputs and its
   first ``L`` views are the result (the evidence is about the *procedure*
   "search, keep L views", measured on inputs it did not see). If none
   passes, the result is no TTA. On the tuning panel the longest passing
   prefix kept more of the available gain than the one with the lowest
   cross-fitted loss (84% against 81% of the oracle gain on ResNet-20 at
   1,000 tuning images): differences between passing prefixes are within
   noise, and more views average more.

What it controls, stated honestly: the probability that the guard keeps
TTA when no prefix length of the search truly improves the expected
per-input loss is at most ``alpha`` (5% by default), up to the usual
approximation of cross-fitted tests (the fold searches share training
inputs, which the t-test ignores). It does not promise that every kept
policy gains on every future split: it bounds how often a useless or
harmful search is kept.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

#: significance level of the guard's fixed-sequence test (one-sided, at each step of the path)
GUARD_ALPHA = 0.05
#: number of cross-fitting folds
GUARD_FOLDS = 5
#: a kept prefix must fix at least this many more inputs than it breaks (classifiers)
MIN_NET_FIXED = 3


def check_guard_alpha(guard_alpha) -> float:
    """``guard_alpha`` as a float, or an error that names it."""
    if isinstance(guard_alpha, bool) or not isinstance(guard_alpha, numbers.Real) or not 0 < guard_alpha <= 1:
        raise InputError(f"guard_alpha must be a significance level in (0, 1], got {guard_alpha!r}")
    return float(guard_alpha)


def check_folds(folds, n: int) -> int:
    """``folds`` as an int in [2, n], or an error that names it."""
    if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) or folds < 2:
        raise InputError(f"guard_folds must be an integer >= 2, got {folds!r}")
    if n < 2 * folds:
        raise InputError(f"{n} tuning inputs are too few for {folds} cross-fitting folds (need at least {2 * folds})")
    return int(folds)


def _t_sf(t: float, df: int) -> float:
    try:
        from scipy import stats

        return float(stats.t.sf(t, df))
    except ImportError:  # pragma: no cover - scipy is an extra
        return float(0.5 * math.erfc(t / math.sqrt(2)))


def one_sided_t_p(diffs) -> float:
    """One-sided p-value that ``mean(diffs) > 0`` (``diffs``: per-input loss
    of no TTA minus the candidate's): the larger of the paired t-test's and
    Johnson's skewness-corrected t-test's (Johnson 1978, JASA 73:536: the t
    statistic with the Cornish-Fisher correction for the sample's third
    moment, ``t = (m + mu3 / (6 s^2 n) + mu3 m^2 / (3 s^4)) / (s / sqrt(n))``,
    Student's t with ``n - 1`` degrees of freedom), so a gain counts only
    when both see it.

    Why: per-input loss differences are skewed, and each test errs on one
    side. With a few large *losses* among many small gains (a view that
    breaks a few inputs badly) and a true mean of zero, the plain one-sided
    t-test rejects 11-18% of the time at the 5% level (simulated, n =
    100-1,000; the correction brings that to 0.1-12%). With a few large
    *gains* the plain test is the careful one (2-4%) and the corrected one
    reaches 5%: taken alone it kept row noise that lost 2.3% held-out MSE on
    the project's trap data. The larger p-value is at most either level.
    NaN-free: differences that are all equal give 0 when positive, else 1."""
    v = np.asarray(diffs, dtype=np.float64)
    n = len(v)
    if n < 3:
        return 1.0
    mean, sd = v.mean(), v.std(ddof=1)
    if sd == 0 or not np.isfinite(sd):
        return 0.0 if mean > 0 else 1.0
    mu3 = n * float(((v - mean) ** 3).sum()) / ((n - 1) * (n - 2))
    se = sd / math.sqrt(n)
    t_plain = mean / se
    t_johnson = (mean + mu3 / (6 * sd * sd * n) + mu3 * mean * mean / (3 * sd ** 4)) / se
    return max(_t_sf(t_plain, n - 1), _t_sf(t_johnson, n - 1))


def mcnemar_one_sided(fixed: int, broken: int) -> float:
    """Exact one-sided McNemar p-value that fixes outnumber breaks:
    ``P(X >= fixed)`` for ``X ~ Binomial(fixed + broken, 1/2)``."""
    n = fixed + broken
    if n == 0:
        return 1.0
    return float(sum(math.comb(n, k) for k in range(fixed, n + 1)) / 2.0 ** n)


def crossfit_folds(n: int, folds: int, seed: int, strata=None) -> np.ndarray:
    """Fold index (0..folds-1) of each of ``n`` inputs, seeded; stratified
    by ``strata`` (labels) when given, so each fold has every class in
    proportion."""
    rng = np.random.default_rng(seed)
    out = np.empty(n, dtype=np.int64)
    if strata is None:
        perm = rng.permutation(n)
        out[perm] = np.arange(n) % folds
        return out
    strata = np.asarray(strata)
    start = 0
    for s in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == s))
        out[idx] = (np.arange(len(idx)) + start) % folds
        start += len(idx)
    return out


@dataclass
class PrefixEvidence:
    """The cross-fitted evidence for the first ``length`` views of the path."""

    length: int
    loss: float                 #: mean cross-fitted per-input loss
    gain: float                 #: no TTA's mean loss minus this one (positive = better)
    p: float | None             #: one-sided t-test of the gain, skew-checked (None: no hypothesis, equal to no TTA)
    fixed: int | None = None    #: inputs wrong without TTA and right with it (classifiers)
    broken: int | None = None
    accuracy: float | None = None
    p_accuracy: float | None = None  #: one-sided exact McNemar of fixed against broken (classifiers)
    tested: bool = False        #: reached by the fixed sequence
    passed: bool = False
    note: str = ""


@dataclass
class GuardDecision:
    """What the guard decided from the cross-fitted evidence."""

    length: int                  #: prefix length kept (1 = no TTA)
    fell_back: bool
    reason: str
    evidence: list[PrefixEvidence] = field(default_factory=list)
    identity_loss: float = float("nan")
    identity_accuracy: float | None = None
    folds: int = GUARD_FOLDS
    alpha: float = GUARD_ALPHA


def decide(losses: np.ndarray, *, correct: np.ndarray | None = None, objective: str = "loss",
           alpha: float = GUARD_ALPHA, min_net_fixed: int = MIN_NET_FIXED, margin: float = 0.0,
           accuracy_alpha: float | None = None,
           folds: int = GUARD_FOLDS, describe: Callable[[int], str] | None = None) -> GuardDecision:
    """The fixed-sequence decision from cross-fitted evidence.

    ``losses``: ``(L, N)`` per-input cross-fitted losses of the path's
    prefixes of length 1..L (row 0 is no TTA). ``correct``: ``(L, N)``
    correct/wrong flags for classifiers, else None (then the exact
    one-sided McNemar test at ``accuracy_alpha``, default ``alpha``, must
    pass too). ``objective`` is kept for the record. ``margin``: a relative
    loss gain the mean must also exceed (rows)."""
    losses = np.asarray(losses, dtype=np.float64)
    base = losses[0]
    base_loss = float(base.mean())
    base_ok = None if correct is None else np.asarray(correct, bool)[0]
    ev: list[PrefixEvidence] = []
    stopped = False
    for L in range(len(losses), 1, -1):
        d = base - losses[L - 1]
        d[np.abs(d) <= 1e-12 * (np.abs(base) + np.abs(losses[L - 1]))] = 0.0  # rounding of equal predictions
        e = PrefixEvidence(L, float(losses[L - 1].mean()), float(d.mean()), one_sided_t_p(d))
        if correct is not None:
            ok = np.asarray(correct[L - 1], bool)
            e.fixed, e.broken = int((ok & ~base_ok).sum()), int((base_ok & ~ok).sum())
            e.accuracy = float(ok.mean())
            e.p_accuracy = mcnemar_one_sided(e.fixed, e.broken)
        ev.append(e)
        if stopped:
            continue
        if not np.any(d) and (correct is None or e.fixed == e.broken == 0):
            e.note, e.p = "same predictions as no TTA: not a hypothesis, passed over", None
            continue
        e.tested = True
        reasons = []
        if not e.p < alpha:
            reasons.append(f"loss test p = {e.p:.2g} >= {alpha:g}")
        if not e.gain > 0:
            reasons.append("no mean gain")
        if margin and not e.gain > margin * abs(base_loss):
            reasons.append(f"gain below the margin ({margin:g} of the loss)")
        if correct is not None and e.fixed - e.broken < min_net_fixed:
            reasons.append(f"{e.fixed} fixed / {e.broken} broken: net < {min_net_fixed}")
        if correct is None and int((d > 0).sum()) < min_net_fixed:
            reasons.append(f"only {int((d > 0).sum())} input(s) gain: fewer than {min_net_fixed}")
        a_acc = alpha if accuracy_alpha is None else accuracy_alpha
        if e.p_accuracy is not None and not e.p_accuracy < a_acc:
            reasons.append(f"McNemar p = {e.p_accuracy:.2g} >= {a_acc:g}")
        e.passed = not reasons
        e.note = "passed" if e.passed else "; ".join(reasons) + ": the sequence stops here"
        stopped = not e.passed
    passed = [e for e in ev if e.passed]
    ev.sort(key=lambda e: e.length)
    name = describe or (lambda L: f"the first {L} views")
    if not passed:
        tried = [e for e in ev if e.tested]
        reason = ("no prefix of the search differs from no TTA" if not tried else
                  f"the first tested prefix ({name(tried[-1].length)}, the longest) did not show a gain on the "
                  f"cross-fitted evidence ({tried[-1].note.split(': the sequence')[0]}): using no TTA")
        return GuardDecision(1, True, reason, ev, base_loss, None if base_ok is None else float(base_ok.mean()),
                             folds, alpha)
    best = max(passed, key=lambda e: e.length)
    acc = "" if best.accuracy is None else (f"; accuracy {best.accuracy:.2%} vs {float(base_ok.mean()):.2%}, "
                                            f"{best.fixed} fixed / {best.broken} broken")
    reason = (f"{len(passed)} prefix(es) passed the fixed-sequence test at {alpha:g} on {folds}-fold cross-fitted "
              f"evidence; kept {name(best.length)} (cross-fitted loss {best.loss:.4f} vs {base_loss:.4f} without "
              f"TTA, one-sided p = {best.p:.2g}{acc})")
    return GuardDecision(best.length, False, reason, ev, base_loss,
                         None if base_ok is None else float(base_ok.mean()), folds, alpha)


__all__ = ["GUARD_ALPHA", "GUARD_FOLDS", "MIN_NET_FIXED", "check_guard_alpha", "check_folds", "one_sided_t_p",
           "mcnemar_one_sided", "crossfit_folds", "PrefixEvidence", "GuardDecision", "decide"]
