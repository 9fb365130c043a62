"""Adaptive policies on cached per-view predictions: what each input would
get, and how many forward passes, without running the model again.

:func:`stage_probs` merges the views stage by stage with the policy's merge
(one accumulator over all its distinct views, fed one stage more each time:
the state the classification run holds), and :func:`simulate` applies the
rules: the same results as :class:`~ttakit.Classifier` running the policy
(up to float rounding of probabilities vs logits).
"""

from __future__ import annotations

import numpy as np
import torch

from ..merge import Mean, Merge, normalise
from ..policy import AdaptivePolicy, Policy


def stage_probs(view_probs: np.ndarray, weights, stage_sizes, merge: Merge | None) -> list[np.ndarray]:
    """Merged probabilities ``(N, C)`` after each stage: ``view_probs``
    ``(V, N, C)`` are the distinct views' probabilities in stage order,
    ``stage_sizes`` the number of distinct views of each stage."""
    m = merge or Mean()
    outs = torch.from_numpy(np.ascontiguousarray(view_probs, dtype=np.float32))
    acc = m.start(list(range(len(outs))), [float(w) for w in weights], "probs")
    res, i = [], 0
    for size in stage_sizes:
        for _ in range(size):
            acc.add(i, outs[i])
            i += 1
        scores = acc.result()
        res.append((scores if m.normalised else normalise(scores)).numpy().astype(np.float64))
    return res


def simulate(policy: Policy, view_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(probs (N, C), forwards (N,))`` of ``policy`` (adaptive or plain)
    from ``view_probs`` ``(V, N, C)``, the probabilities of
    ``policy.unique().views`` in that order."""
    full = policy.unique()
    if not isinstance(policy, AdaptivePolicy):
        (p,) = stage_probs(view_probs, full.weights, [len(full)], policy.merge)
        return p, np.full(p.shape[0], len(full), np.int64)
    sizes = [len(s.unique()) for s in policy.stages]
    merged = stage_probs(view_probs, full.weights, sizes, policy.merge)
    probs = merged[-1].copy()
    forwards = np.full(probs.shape[0], sum(sizes), np.int64)
    going = np.ones(probs.shape[0], bool)
    spent = 0
    for k, rule in enumerate(policy.rules):
        spent += sizes[k]
        stop = going & ~np.asarray(rule.uncertain(merged[k]))
        probs[stop] = merged[k][stop]
        forwards[stop] = spent
        going &= ~stop
    return probs, forwards


__all__ = ["stage_probs", "simulate"]
