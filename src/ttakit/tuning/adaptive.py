"""Tuning under a cost budget: the stages and thresholds of an adaptive
policy that do best at a mean of at most ``max_forwards`` forward passes
per input, found on cached per-view predictions (no model runs).

The candidates keep the tuned policy's view order (the greedy search's:
most useful first) and its merge: every prefix of it cut into two or three
consecutive stages, each rule measuring ``margin``, ``maxprob`` or
``entropy``, with thresholds on a grid of quantiles of that measure on the
tuning inputs (``THRESHOLD_STEPS`` for two stages, ``THRESHOLD_STEPS_3``
per rule for three). A candidate counts when its mean forwards per input
over all the tuning inputs are at most the budget; among those the best
objective on the ``select`` inputs wins (by default all the tuning inputs in
:func:`ttakit.tune`), ties to the cheaper. Plain prefixes that fit the
budget compete too.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..evaluation.adaptive import simulate, stage_probs
from ..policy import AdaptivePolicy, Policy
from ..policy.adaptive import MEASURES, Rule, measure

#: quantile grid of a two-stage rule's threshold
THRESHOLD_STEPS = 100
#: quantile grid of each rule of a three-stage policy
THRESHOLD_STEPS_3 = 20
#: most stages tried
MAX_STAGES = 3


@dataclass
class AdaptiveChoice:
    policy: Policy                #: the chosen policy (adaptive, or a plain prefix when that is best)
    mean_forwards: float          #: on all the tuning inputs
    objective: float              #: on the select inputs (lower is better)
    accuracy: float               #: on the select inputs
    nll: float                    #: on the select inputs (the merge's own calibration)
    candidates: int               #: configurations scored


def _scores(probs: np.ndarray, y: np.ndarray, objective: str) -> tuple[float, float, float]:
    p = np.clip(probs[np.arange(len(y)), y], 1e-12, None)
    nll = float(-np.log(p).mean())
    acc = float((probs.argmax(1) == y).mean())
    return (nll if objective == "nll" else (1 - acc) + 1e-6 * nll), acc, nll


def _thresholds(values: np.ndarray, name: str, steps: int) -> np.ndarray:
    """Thresholds that send about 0, 1/steps, ..., all of the inputs on."""
    q = np.quantile(values, np.linspace(0, 1, steps + 1))
    eps = 1e-9
    # an input goes on when below (margin, maxprob) or above (entropy) the threshold
    return np.unique(q + eps) if MEASURES[name] == "<" else np.unique(q - eps)


def choose_adaptive(policy: Policy, view_probs: np.ndarray, y: np.ndarray, max_forwards: float, *,
                    objective: str = "nll", select: np.ndarray | None = None) -> AdaptiveChoice:
    """The best adaptive version of ``policy`` at a mean of at most
    ``max_forwards`` forwards per input (see the module doc). ``view_probs``
    ``(V, N, C)`` are the probabilities of ``policy.unique().views``;
    ``select`` (indices) the inputs the objective is measured on (default all)."""
    full = policy.unique()
    views, weights = list(full.views), full.weights
    if view_probs.shape[0] != len(views):
        raise InputError(f"{view_probs.shape[0]} views of predictions for a policy of {len(views)} distinct views")
    if not max_forwards >= 1:
        raise InputError(f"max_forwards must be at least 1 (every input gets one view), got {max_forwards!r}")
    y = np.asarray(y)
    sel = np.arange(len(y)) if select is None else np.asarray(select)
    ys = y[sel]
    best: tuple | None = None
    n_scored = 0

    def consider(cost, make, probs_sel):
        nonlocal best, n_scored
        n_scored += 1
        obj, acc, nll = _scores(probs_sel, ys, objective)
        key = (round(obj, 12), cost)
        if best is None or key < best[0]:
            best = (key, make, cost, obj, acc, nll)

    merge = policy.merge
    for length in range(1, len(views) + 1):
        head = view_probs[:length]
        prefix = Policy(views[:length], weights[:length], merge=merge, inputs=policy.inputs)
        if length <= max_forwards:
            (p,) = stage_probs(head, weights[:length], [length], merge)
            consider(float(length), lambda prefix=prefix: prefix, p[sel])
        for n_stages in range(2, MAX_STAGES + 1):
            for cuts in itertools.combinations(range(1, length), n_stages - 1):
                sizes = np.diff([0, *cuts, length]).tolist()
                if sizes[0] > max_forwards:
                    continue
                merged = stage_probs(head, weights[:length], sizes, merge)
                for name in MEASURES:
                    _search_rules(name, merged, sizes, max_forwards, sel, consider,
                                  lambda rules, sizes=sizes, length=length: _build(views[:length], weights[:length],
                                                                                   sizes, rules, policy))
    if best is None:
        raise InputError(f"no policy fits a budget of {max_forwards} forwards per input")
    _, make, cost, obj, acc, nll = best
    return AdaptiveChoice(make(), cost, obj, acc, nll, n_scored)


def _search_rules(name, merged, sizes, budget, sel, consider, build) -> None:
    m = [np.asarray(measure(p, name)) for p in merged[:-1]]
    less = MEASURES[name] == "<"
    steps = THRESHOLD_STEPS if len(sizes) == 2 else THRESHOLD_STEPS_3
    grids = [_thresholds(v, name, steps) for v in m]
    n = merged[0].shape[0]
    stacked = np.stack(merged)[:, sel]
    for ts in itertools.product(*grids):
        going = np.ones(n, bool)
        stop_at = np.full(n, len(sizes) - 1)
        cost = np.full(n, float(sizes[0]))
        for k, t in enumerate(ts):
            on = (m[k] < t) if less else (m[k] > t)
            stop = going & ~on
            stop_at[stop] = k
            going &= on
            cost[going] += sizes[k + 1]
        mean_cost = float(cost.mean())
        if mean_cost > budget + 1e-12:
            continue
        probs = stacked[stop_at[sel], np.arange(len(sel))]
        consider(mean_cost, lambda ts=ts: build([Rule(name, float(t)) for t in ts]), probs)


def _build(views, weights, sizes, rules, policy: Policy) -> AdaptivePolicy:
    stages, i = [], 0
    for s in sizes:
        stages.append(Policy(views[i:i + s], weights[i:i + s]))
        i += s
    return AdaptivePolicy(stages, rules, merge=policy.merge, inputs=policy.inputs,
                          source=f"adaptive ({len(stages)} stages)")


def forwards_curve(policy: Policy, tune_probs: np.ndarray, y_tune, test_probs: np.ndarray, y_test,
                   budgets, *, objective: str = "nll", select=None) -> list[dict]:
    """Accuracy and NLL on the test inputs against mean forwards per input:
    the plain prefixes of ``policy`` (``kind="full"``: the first k views for
    every input) and, for each budget, the adaptive policy chosen on the
    tuning inputs (``kind="adaptive"``). ``*_probs`` are ``(V, N, C)`` for
    ``policy.unique().views``."""
    full = policy.unique()
    rows = []
    y_test = np.asarray(y_test)
    for k in range(1, len(full) + 1):
        p, f = simulate(Policy(full.views[:k], full.weights[:k], merge=policy.merge), test_probs[:k])
        _, acc, nll = _scores(p, y_test, "nll")
        rows.append({"kind": "full", "budget": float(k), "forwards": float(f.mean()), "accuracy": acc, "nll": nll,
                     "policy": f"first {k} view(s)"})
    for b in budgets:
        c = choose_adaptive(policy, tune_probs, y_tune, b, objective=objective, select=select)
        k = len(c.policy.unique())
        p, f = simulate(c.policy, test_probs[:k])
        _, acc, nll = _scores(p, y_test, "nll")
        rows.append({"kind": "adaptive", "budget": float(b), "forwards": float(f.mean()), "accuracy": acc,
                     "nll": nll, "tune_forwards": c.mean_forwards, "policy": c.policy.spec})
    return rows


__all__ = ["choose_adaptive", "forwards_curve", "AdaptiveChoice", "THRESHOLD_STEPS", "THRESHOLD_STEPS_3"]
