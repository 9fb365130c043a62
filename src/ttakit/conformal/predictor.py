"""Split-conformal prediction sets: calibrate a threshold on held-out
labelled data, then every new input gets the set of labels whose score is
below it. If calibration and test inputs are exchangeable, the set holds the
true label with probability at least ``1 - alpha`` (marginal coverage).

    cp = SplitConformal("aps", alpha=0.1).calibrate(p_cal, y_cal)
    sets = cp.predict_set(p_test)           # (N, C) booleans
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError, NotCalibratedError
from .scores import METHODS, RAPS_K_REG, RAPS_LAMBDA, check_probs, label_scores, score_matrix

#: the fewest calibration inputs (per class, when class-conditional) for alpha=0.1 to be reachable: ceil(1/alpha) - 1
MIN_CALIBRATION = 20


def conformal_quantile(scores, alpha: float) -> float:
    """The ``ceil((n + 1)(1 - alpha))``-th smallest of ``n`` scores (the
    finite-sample-valid quantile); ``inf`` when that exceeds ``n`` (too few
    scores for this ``alpha``: every label is in the set)."""
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    n = len(s)
    k = math.ceil((n + 1) * (1 - alpha))
    return float("inf") if k > n else float(s[max(k, 1) - 1])


class SplitConformal:
    """Split-conformal classifier on probabilities (LAC, APS or RAPS).

    ``class_conditional=True`` calibrates one threshold per class (coverage
    ``1 - alpha`` within every class, at the price of larger sets).
    Defaults give the nominal coverage, also on confident models: APS and
    RAPS are randomised (Romano et al. 2020; the ``seed`` makes it
    repeatable) and sets may be empty, as the methods are defined. With a
    confident model many true-label APS scores are exactly 1.0, so the
    deterministic score (``randomized=False``) puts the threshold at 1.0 and
    over-covers (99.6% at a 90% target on a CIFAR ResNet-56).
    ``allow_empty=False`` always adds the top label: that only adds labels,
    so coverage keeps its guarantee, but it over-covers too.
    """

    def __init__(self, method: str = "aps", alpha: float = 0.1, *, class_conditional: bool = False,
                 lam: float = RAPS_LAMBDA, k_reg: int = RAPS_K_REG, randomized: bool = True,
                 allow_empty: bool = True, seed: int = 0):
        if method not in METHODS:
            raise InputError(f"conformal method must be one of {METHODS}, got {method!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
            raise InputError(f"alpha (the allowed miscoverage) must be in (0, 1), got {alpha!r}")
        self.method, self.alpha, self.class_conditional = method, float(alpha), bool(class_conditional)
        self.lam, self.k_reg, self.randomized, self.allow_empty = float(lam), int(k_reg), bool(randomized), allow_empty
        self.seed = seed
        self.threshold_: float | np.ndarray | None = None
        self.n_calibration_: int = 0

    def __repr__(self) -> str:
        extra = ", class_conditional=True" if self.class_conditional else ""
        return f"SplitConformal({self.method!r}, alpha={self.alpha:g}{extra})"

    def _scores(self, probs, labels=None, rng=None):
        u = rng.random(len(probs)) if (self.randomized and self.method != "lac") else None
        kw = {"lam": self.lam, "k_reg": self.k_reg, "u": u}
        if labels is None:
            return score_matrix(probs, self.method, **kw)
        return label_scores(probs, labels, self.method, **kw)

    def calibrate(self, probs, labels) -> "SplitConformal":
        """Fit the threshold on held-out ``(N, C)`` probabilities and labels
        (never the data the model or the policy was tuned on)."""
        p = check_probs(probs)
        y = np.asarray(labels, dtype=np.int64)
        if len(p) < MIN_CALIBRATION:
            raise InputError(f"conformal calibration needs at least {MIN_CALIBRATION} labelled inputs, got {len(p)}")
        s = self._scores(p, y, np.random.default_rng(self.seed))
        if self.class_conditional:
            t = np.full(p.shape[1], np.inf)
            for c in range(p.shape[1]):
                if (y == c).any():
                    t[c] = conformal_quantile(s[y == c], self.alpha)
            self.threshold_ = t
        else:
            self.threshold_ = conformal_quantile(s, self.alpha)
        self.n_calibration_ = len(p)
        return self

    def predict_set(self, probs) -> np.ndarray:
        """Boolean ``(N, C)``: which labels are in each input's set."""
        if self.threshold_ is None:
            raise NotCalibratedError("call calibrate(probs, labels) on held-out data before predict_set")
        p = check_probs(probs)
        s = self._scores(p, rng=np.random.default_rng(self.seed + 1))
        t = self.threshold_ if np.ndim(self.threshold_) == 0 else np.asarray(self.threshold_)[None, :]
        sets = s <= t
        if not self.allow_empty:
            sets[np.arange(len(p)), p.argmax(1)] = True
        return sets
