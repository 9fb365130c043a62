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


def merge_prefix(probs: np.ndarray, chosen: list[int], merge: str = "mean") -> np.ndarray:
    """Merged probabilities of the views ``chosen`` (indices into ``probs``,
    shape ``(K, N, C)``; repeats count)."""
    if merge == "gmean":
        z = np.log(np.clip(probs[chosen], _TINY, None)).mean(0)
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)
    return probs[chosen].mean(0)


def greedy_search(probs: np.ndarray, labels: np.ndarray, budget: int = 8, objective: str = "nll",
                  merge: str = "mean", allow_repeats: bool = True) -> list[Step]:
    """Run the search on cached per-candidate probabilities ``(K, N, C)``."""
    if objective not in OBJECTIVES:
        raise InputError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if merge not in ("mean", "gmean"):
        raise InputError("greedy search merges with 'mean' or 'gmean'")
    k_total = probs.shape[0]
    labels = np.asarray(labels, dtype=np.int64)
    stack = probs if merge == "mean" else np.log(np.clip(probs, _TINY, None))
    running = np.zeros(probs.shape[1:], dtype=np.float64)
    steps: list[Step] = []
    chosen: list[int] = []
    for _ in range(budget):
        best = None
        for k in range(k_total):
            if not allow_repeats and k in chosen:
                continue
            acc_sum = running + stack[k]
            n = len(chosen) + 1
            if merge == "mean":
                merged = acc_sum / n
            else:
                z = acc_sum / n
                z = z - z.max(1, keepdims=True)
                merged = np.exp(z)
                merged /= merged.sum(1, keepdims=True)
            s = score(merged, labels, objective)
            if best is None or s[0] < best[1][0] - 1e-12:
                best = (k, s)
        if best is None:
            break
        k, s = best
        chosen.append(k)
        running += stack[k]
        steps.append(Step(k, *s))
    return steps
