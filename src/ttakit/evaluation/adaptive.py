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
from ..policy import AdaptivePolicy, Policy, Rule
from . import metrics


def stage_probs(view_probs: np.ndarray, weights, stage_sizes, merge: Merge | None, views=None) -> list[np.ndarray]:
    """Merged probabilities ``(N, C)`` after each stage: ``view_probs``
    ``(V, N, C)`` are the distinct views' probabilities in stage order,
    ``stage_sizes`` the number of distinct views of each stage; ``views``
    (default: positions) name them for a merge that looks views up."""
    m = merge or Mean()
    outs = torch.from_numpy(np.ascontiguousarray(view_probs, dtype=np.float32))
    acc = m.start(list(range(len(outs))) if views is None else list(views), [float(w) for w in weights], "probs")
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
        (p,) = stage_probs(view_probs, full.weights, [len(full)], policy.merge, full.views)
        return p, np.full(p.shape[0], len(full), np.int64)
    sizes = [len(s.unique()) for s in policy.stages]
    merged = stage_probs(view_probs, full.weights, sizes, policy.merge, full.views)
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


#: margin thresholds of the adaptive versions drawn by :func:`cost_curve` (the top merged probability minus
#: the second; an input goes on while its margin is below the threshold)
CURVE_MARGINS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


def cost_curve(policy: Policy, view_probs: np.ndarray, y, *, margins=CURVE_MARGINS) -> list[dict]:
    """Accuracy and NLL against mean forward passes per input, from the
    probabilities ``(V, N, C)`` of ``policy.unique().views``:

    - ``kind="full"``: the first k distinct views for every input (k = 1..V),
    - ``kind="adaptive"``: adaptive versions with the rule ``margin<t`` after
      every stage, for each ``t`` in ``margins``; the stages are the
      policy's own when it is adaptive, else its first view, then the rest
      (the uncertain inputs get every view),
    - ``kind="policy"``: an adaptive ``policy`` itself, with its own rules.

    Every row merges with the policy's merge (a learned merge is replaced by
    the mean of the views: its weights belong to the full policy). A fixed
    grid of thresholds, not a choice: no row is picked on these labels."""
    y = np.asarray(y)
    merge = policy.merge
    if merge is not None and getattr(merge, "name", "") == "learned":
        merge = None
    full = policy.unique()
    rows = []

    def row(kind, label, pol):
        p, f = simulate(pol, view_probs[:len(pol.unique())])
        rows.append({"kind": kind, "policy": label, "forwards": float(f.mean()), "accuracy": metrics.accuracy(p, y),
                     "nll": metrics.nll(p, y)})

    for k in range(1, len(full) + 1):
        row("full", f"first {k} view(s)", Policy(full.views[:k], full.weights[:k], merge=merge))
    if isinstance(policy, AdaptivePolicy):
        stages = list(policy.stages)
    elif len(full) > 1:
        stages = [Policy(full.views[:1], full.weights[:1]), Policy(full.views[1:], full.weights[1:])]
    else:
        stages = []
    if len(stages) > 1:
        for t in margins:
            rules = [Rule("margin", float(t))] * (len(stages) - 1)
            row("adaptive", f"margin<{t:g} after each of {len(stages) - 1} stage(s)",
                AdaptivePolicy(stages, rules, merge=merge))
    if isinstance(policy, AdaptivePolicy):
        row("policy", policy.spec, policy if merge is policy.merge else policy.with_merge(merge))
    return rows


__all__ = ["stage_probs", "simulate", "cost_curve", "CURVE_MARGINS"]
