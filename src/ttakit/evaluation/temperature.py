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
                    bounds: tuple[float, float] = (0.05, 20.0), iters: int = 60, start: float = 1.0) -> float:
    """The T in ``bounds`` minimising the NLL of ``softmax(log p / T)``.

    The NLL is convex in ``b = 1/T``; its derivative is
    ``mean(E_softmax(b z)[z] - z_label)``, increasing in ``b``, and its
    second derivative the mean variance of ``z``: Newton's method from
    ``1/start`` with a bracket that bisects whenever a step leaves it
    converges in a few passes over the data."""
    logp = _as_log_probs(probs, log)
    labels = np.asarray(labels, dtype=np.int64)
    z = logp - logp.max(1, keepdims=True)
    z = np.maximum(z, math.log(_TINY))
    zy = z[np.arange(len(labels)), labels]
    lo, hi = 1.0 / bounds[1], 1.0 / bounds[0]
    b = min(max(1.0 / start, lo), hi)
    for _ in range(iters):
        w = np.exp(b * z)
        w /= w.sum(1, keepdims=True)
        wz = w * z
        ez = wz.sum(1)
        g = float(ez.mean() - zy.mean())
        h = float((wz * z).sum(1).mean() - (ez * ez).mean())
        if g > 0:
            hi = b
        else:
            lo = b
        if (g > 0 and b <= 1.0 / bounds[1]) or (g < 0 and b >= 1.0 / bounds[0]):
            break  # the optimum is at a bound
        nb = b - g / h if h > 1e-300 else (lo + hi) / 2
        if not lo < nb < hi:
            nb = (lo + hi) / 2 if hi > lo else b
        done = abs(nb - b) <= 1e-9 * b
        b = nb
        if done or hi - lo <= 1e-12 * b:
            break
    return float(1.0 / min(max(b, 1.0 / bounds[1]), 1.0 / bounds[0]))


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
