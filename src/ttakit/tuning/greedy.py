"""Greedy policy search (Lyzhov et al., "Greedy Policy Search", UAI 2020).

Start from nothing; at each step add the candidate view that most improves
the objective of the merged prediction on the tuning data; stop at the
budget. Views may be picked again (a repeat raises its weight). The result
is an ordered list whose every prefix is a usable policy.

The default objective is the *calibrated* NLL: the NLL after the best
temperature for that merged prediction, since averaged TTA predictions are
under-confident and raw NLL would favour sharp but wrong views.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .temperature import calibrated_nll

OBJECTIVES = ("nll", "accuracy")
_TINY = 1e-12


@dataclass
class Step:
    index: int          #: which candidate was added
    objective: float    #: objective of the prefix ending here (lower is better)
    accuracy: float
    nll: float          #: calibrated NLL
    temperature: float


def score(merged: np.ndarray, labels: np.ndarray, objective: str) -> tuple[float, float, float, float]:
    """``(objective, accuracy, calibrated nll, temperature)``; lower objective is better."""
    acc = float((merged.argmax(1) == labels).mean())
    nll, t = calibrated_nll(merged, labels)
    if objective == "nll":
        return nll, acc, nll, t
    # accuracy first; calibrated NLL breaks ties
    return (1.0 - acc) + 1e-6 * nll, acc, nll, t


def score_all(merged: np.ndarray, labels: np.ndarray, objective: str, start_temperature: float = 1.0,
              newton_steps: int = 4) -> np.ndarray:
    """The objective of each of ``K`` merged predictions ``(K, N, C)`` at
    once (lower is better): the calibrated NLL by a few vectorised Newton
    steps on ``1/T`` from ``1/start_temperature`` (the search's current
    temperature, close to every candidate's own), or, for ``"accuracy"``,
    the error plus 1e-6 of that NLL. :func:`score` gives the exact values of
    the candidate chosen."""
    labels = np.asarray(labels, dtype=np.int64)
    z = np.log(np.clip(merged, _TINY, None), dtype=np.float32)  # float32: a ranking, twice the speed
    z -= z.max(2, keepdims=True)
    n = z.shape[1]
    zy = z[:, np.arange(n), labels]                                   # (K, N)
    b = np.full((z.shape[0], 1, 1), 1.0 / start_temperature, dtype=np.float32)
    lo, hi = 1 / 20.0, 1 / 0.05
    for _ in range(newton_steps):
        w = np.exp(b * z)
        w /= w.sum(2, keepdims=True)
        wz = w * z
        ez = wz.sum(2)
        g = ez.mean(1) - zy.mean(1)
        h = np.maximum((wz * z).sum(2).mean(1) - (ez * ez).mean(1), 1e-12)
        b = np.clip(b - (g / h)[:, None, None], lo, hi).astype(np.float32)
    bz = b * z
    nll = (np.log(np.exp(bz).sum(2)) - b[:, :, 0] * zy).mean(1, dtype=np.float64)
    if objective == "nll":
        return nll
    acc = (merged.argmax(2) == labels).mean(1)
    return (1.0 - acc) + 1e-6 * nll


def merge_prefix(probs: np.ndarray, chosen: list[int], merge: str = "mean") -> np.ndarray:
    """Merged probabilities of the views ``chosen`` (indices into ``probs``,
    shape ``(K, N, C)``; repeats count)."""
    if merge == "gmean":
        z = np.log(np.clip(probs[chosen], _TINY, None)).mean(0)
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)
    return probs[chosen].mean(0)


def _merged(total: np.ndarray, n: int, merge: str) -> np.ndarray:
    """The merge of ``n`` views from the running sum of their probabilities
    (``"mean"``) or log-probabilities (``"gmean"``)."""
    if merge == "mean":
        return total / n
    z = total / n
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def greedy_search(probs: np.ndarray, labels: np.ndarray, budget: int = 8, objective: str = "nll",
                  merge: str = "mean", allow_repeats: bool = True, start: list[int] | None = None,
                  stop_early: bool = False) -> list[Step]:
    """Run the search on cached per-candidate probabilities ``(K, N, C)``.
    ``start``: candidates already in the policy (the tuner starts from the
    original view); the steps returned are the views added to them.
    ``stop_early``: stop when no candidate improves the objective of the
    views chosen so far (a repeat that only re-weights counts as a view)."""
    if objective not in OBJECTIVES:
        raise InputError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if merge not in ("mean", "gmean"):
        raise InputError("greedy search merges with 'mean' or 'gmean'")
    k_total = probs.shape[0]
    labels = np.asarray(labels, dtype=np.int64)
    stack = probs if merge == "mean" else np.log(np.clip(probs, _TINY, None))
    running = np.zeros(probs.shape[1:], dtype=np.float64)
    steps: list[Step] = []
    chosen: list[int] = list(start or [])
    for k in chosen:
        running += stack[k]
    current, temperature = np.inf, 1.0
    if chosen:
        first = score(_merged(running, len(chosen), merge), labels, objective)
        current, temperature = first[0], first[3]
    for _ in range(budget):
        allowed = [k for k in range(k_total) if allow_repeats or k not in chosen]
        if not allowed:
            break
        m = len(chosen) + 1
        if merge == "mean":
            merged = (running[None] + stack[allowed]) / m
        else:
            zz = (running[None] + stack[allowed]) / m
            zz = zz - zz.max(2, keepdims=True)
            merged = np.exp(zz)
            merged /= merged.sum(2, keepdims=True)
        objs = score_all(merged, labels, objective, temperature)
        j = int(np.argmin(objs))  # the first of equal objectives: the candidates' order breaks ties
        k = allowed[j]
        s = score(merged[j], labels, objective)
        if stop_early and chosen and s[0] >= current - 1e-12:
            break
        current, temperature = s[0], s[3]
        chosen.append(k)
        running += stack[k]
        steps.append(Step(k, *s))
    return steps
