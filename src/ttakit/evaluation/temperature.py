"""Temperature scaling: one number T that makes ``softmax(log p / T)``
calibrated on held-out labels (Guo et al. 2017)."""

from __future__ import annotations

import math

import numpy as np

_TINY = 1e-12


def _as_log_probs(probs_or_logp: np.ndarray, log: bool) -> np.ndarray:
    a = np.asarray(probs_or_logp, dtype=np.float64)
    return a if log else np.log(np.clip(a, _TINY, None))


def per_input_nll(logp: np.ndarray, labels: np.ndarray, temperature: float) -> np.ndarray:
    """Each input's NLL of ``softmax(logp / temperature)``."""
    z = logp / temperature
    z = z - z.max(1, keepdims=True)
    lse = np.log(np.exp(z).sum(1))
    return lse - z[np.arange(len(labels)), labels]


def nll_at(logp: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    return float(per_input_nll(logp, labels, temperature).mean())


def fit_temperature(probs: np.ndarray, labels: np.ndarray, *, log: bool = False,
                    bounds: tuple[float, float] = (0.05, 20.0), iters: int = 60) -> float:
    """The T in ``bounds`` minimising the NLL of ``softmax(log p / T)``.

    The NLL is convex in ``1/T``, so a golden-section search over ``log T``
    finds the optimum."""
    logp = _as_log_probs(probs, log)
    labels = np.asarray(labels, dtype=np.int64)
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    g = (math.sqrt(5) - 1) / 2
    a, b = lo + (1 - g) * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll_at(logp, labels, math.exp(a)), nll_at(logp, labels, math.exp(b))
    for _ in range(iters):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = lo + (1 - g) * (hi - lo)
            fa = nll_at(logp, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll_at(logp, labels, math.exp(b))
    return float(math.exp((lo + hi) / 2))


def apply_temperature(probs: np.ndarray, temperature: float, *, log: bool = False) -> np.ndarray:
    z = _as_log_probs(probs, log) / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def calibrated_nll(probs: np.ndarray, labels: np.ndarray, *, log: bool = False) -> tuple[float, float]:
    """``(NLL after the best temperature, that temperature)``."""
    logp = _as_log_probs(probs, log)
    t = fit_temperature(logp, labels, log=True)
    return nll_at(logp, np.asarray(labels, dtype=np.int64), t), t
