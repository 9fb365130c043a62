"""Paired comparisons: the same inputs (and the same model) with and
without a change, so the noise of retraining cancels out."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p-value: under no effect, each discordant input
    is equally likely to be fixed or broken (a binomial with p = 1/2)."""
    n = fixed + broken
    if n == 0:
        return 1.0
    k = min(fixed, broken)
    # P(X <= k) for X ~ Bin(n, 1/2), in log space for large n
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
            for i in range(k + 1)]
    m = max(logs)
    tail = math.exp(m) * sum(math.exp(v - m) for v in logs)
    return float(min(1.0, 2 * tail))


def t_critical(df: int, level: float = 0.95) -> float:
    """Two-sided Student t critical value."""
    try:
        from scipy import stats

        return float(stats.t.ppf(0.5 + level / 2, df))
    except ImportError:  # pragma: no cover - scipy is optional
        table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
                 9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}
        if level != 0.95:
            raise
        best = min((d for d in table if d >= df), default=None)
        return table[best] if best is not None else 1.96


def bootstrap_ci(values: np.ndarray, level: float = 0.95, n_boot: int = 2000, seed: int = 0):
    """Percentile bootstrap CI of the mean of ``values`` (resampling inputs)."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n = len(values)
    means = np.empty(n_boot)
    for i in range(0, n_boot, 200):
        idx = rng.integers(0, n, size=(min(200, n_boot - i), n))
        means[i:i + len(idx)] = values[idx].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    # interpolating between equal resampled means may leave floating-point dust around zero
    return tuple(0.0 if abs(v) < 1e-12 else float(v) for v in (lo, hi))


@dataclass
class PairedResult:
    """A against B on the same inputs: ``lift`` is accuracy(B) - accuracy(A)."""

    n: int
    accuracy_a: float
    accuracy_b: float
    lift: float
    ci_low: float
    ci_high: float
    fixed: int       #: wrong under A, right under B
    broken: int      #: right under A, wrong under B
    p_value: float   #: exact McNemar

    def as_dict(self) -> dict:
        return asdict(self)


def paired_accuracy(correct_a, correct_b, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> PairedResult:
    """Compare two sets of per-input correctness flags on the same inputs."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise InputError(f"paired comparison needs two flag vectors of one shape, got {a.shape} and {b.shape}")
    diff = b.astype(np.float64) - a.astype(np.float64)
    lo, hi = bootstrap_ci(diff, level, n_boot, seed) if len(diff) else (float("nan"), float("nan"))
    fixed = int((~a & b).sum())
    broken = int((a & ~b).sum())
    return PairedResult(len(a), float(a.mean()), float(b.mean()), float(diff.mean()), lo, hi,
                        fixed, broken, mcnemar_exact(fixed, broken))


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and t-based CI over repeats (e.g. one paired lift per trained model)."""
    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    half = t_critical(len(v) - 1, level) * v.std(ddof=1) / math.sqrt(len(v))
    return m, m - half, m + half


def paired_t_pvalue(values) -> float:
    """Two-sided one-sample t-test p-value of mean(values) = 0."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float("nan")
    sd = v.std(ddof=1)
    if sd == 0:
        # every model moved by the same amount: a t-test has nothing to say
        return 1.0 if v.mean() == 0 else float("nan")
    t = v.mean() / (sd / math.sqrt(len(v)))
    try:
        from scipy import stats

        return float(2 * stats.t.sf(abs(t), len(v) - 1))
    except ImportError:  # pragma: no cover
        return float(math.erfc(abs(t) / math.sqrt(2)))
