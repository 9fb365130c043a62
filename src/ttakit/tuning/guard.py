"""The guard's significance rule, shared by image and row tuning.

A prefix of the greedy search is kept only if its gain over no TTA on the
guard split is significant: a two-sided paired test on per-input losses,
Bonferroni-corrected for the number of prefixes tested on the same guard
inputs, below ``guard_alpha``.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..errors import InputError
from ..evaluation import paired_t_pvalue

#: default significance level of the guard's paired test (two-sided, Bonferroni over prefixes)
GUARD_ALPHA = 0.05


def check_guard_alpha(guard_alpha) -> float:
    """``guard_alpha`` as a float, or an error that names it."""
    if isinstance(guard_alpha, bool) or not isinstance(guard_alpha, numbers.Real) or not 0 < guard_alpha <= 1:
        raise InputError(f"guard_alpha must be a significance level in (0, 1], got {guard_alpha!r}")
    return float(guard_alpha)


def bonferroni(p: float, tests: int) -> float:
    """``p`` corrected for ``tests`` tests on the same inputs; an undefined
    p-value (NaN) counts as 1: never significant."""
    return 1.0 if p != p else min(1.0, p * tests)


def paired_gain_p(identity_losses, losses, tests: int) -> float:
    """Bonferroni-corrected two-sided paired t-test p-value of the per-input
    loss differences (no TTA minus the candidate)."""
    return bonferroni(paired_t_pvalue(np.asarray(identity_losses, float) - np.asarray(losses, float)), tests)
