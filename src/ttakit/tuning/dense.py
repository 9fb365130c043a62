"""Greedy search over views and merges for detection and segmentation, on a
prediction cache (:mod:`ttakit.tasks.dense_cache`): every candidate view is
run once per image, and each (views, merge) trial is a merge of cached
outputs scored on the fit part of the data (mAP, AP50, mean IoU: higher is
better).

Start from no TTA (identity, with the baseline merge); at each step add the
candidate view and merge (for detection: NMS, soft-NMS, WBF with its
``iou_thr`` and ``conf_type``) that raise the objective most; stop at the
budget or when nothing raises it. Then the guard: the found policy must
score at least as well as no TTA on the held-back guard images, else the
result falls back to no TTA (``fell_back``), as in classification tuning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..policy import Policy
from ..views import identity
from .candidates import candidate_views

#: detection merges tried by default: (name, options)
DETECTION_MERGES: tuple = (
    ("nms", {"iou_thr": 0.65}),
    ("soft_nms", {"method": "gaussian", "sigma": 0.5}),
    ("wbf", {"iou_thr": 0.55, "conf_type": "avg"}),
    ("wbf", {"iou_thr": 0.55, "conf_type": "max"}),
    ("wbf", {"iou_thr": 0.7, "conf_type": "avg"}),
    ("wbf", {"iou_thr": 0.7, "conf_type": "max"}),
)
#: segmentation merges tried by default
SEGMENTATION_MERGES: tuple = (("mean", {}), ("gmean", {}), ("max", {}), ("vote", {}))


@dataclass
class DenseTuneResult:
    """What :func:`greedy_dense` found."""

    policy: Policy
    merge: tuple                 #: (name, options)
    objective: str
    fit_score: float             #: objective of the result on the fit images
    fit_baseline: float          #: of no TTA on the fit images
    guard_score: float           #: of the search's policy on the guard images
    guard_baseline: float        #: of no TTA on the guard images
    fell_back: bool              #: the guard refused the search's policy: the result is no TTA
    steps: list = field(default_factory=list)
    forward_passes: int = 0
    n_fit: int = 0
    n_guard: int = 0

    def summary(self) -> str:
        name, opts = self.merge
        lines = [f"objective {self.objective} (higher is better); {self.n_fit} fit / {self.n_guard} guard images; "
                 f"{self.forward_passes} forward passes",
                 f"{'step':<5} {'added view':<28} {'merge':<40} {self.objective}"]
        for k, s in enumerate(self.steps):
            lines.append(f"{k:<5} {s['view']:<28} {s['merge']:<40} {s['score']:.4f}")
        verdict = ("the guard images did not confirm it: falling back to no TTA" if self.fell_back
                   else "kept: at least as good as no TTA on the guard images")
        lines += [f"guard: search's policy {self.guard_score:.4f} vs no TTA {self.guard_baseline:.4f}; {verdict}",
                  f"policy: {self.policy.spec}; "
                  f"merge: {_spec(name, opts)}"]
        return "\n".join(lines)


def _spec(name: str, options: dict) -> str:
    return name if not options else f"{name}({', '.join(f'{k}={v}' for k, v in options.items())})"


def split(n: int, guard_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded fit / guard indices of ``n`` items (each part non-empty when n >= 2)."""
    if not 0 <= guard_fraction < 1:
        raise InputError(f"guard_fraction must be in [0, 1), got {guard_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    g = int(round(n * guard_fraction))
    if guard_fraction > 0 and n >= 2:
        g = min(max(g, 1), n - 1)
    return np.sort(perm[g:]), np.sort(perm[:g])


def greedy_dense(run: Callable, score: Callable, n: int, candidates="flips", merges: Sequence = DETECTION_MERGES,
                 baseline_merge: tuple = ("nms", {"iou_thr": 1.0}), budget: int = 3, guard_fraction: float = 0.3,
                 seed: int = 0, objective: str = "map", ensure: Callable | None = None) -> DenseTuneResult:
    """The search. ``run(policy, merge_name, merge_options)`` merges cached
    outputs for all ``n`` images; ``score(result, indices)`` is the
    objective on those images (higher is better); ``ensure(views)`` (the
    cache's) runs every candidate view once before the search."""
    views = candidate_views(candidates)
    if ensure is not None:
        ensure(views)
    fit, guard = split(n, guard_fraction, seed)
    base = run(Policy([identity()]), *baseline_merge)
    best = (score(base, fit), [identity()], baseline_merge)
    fit_baseline = best[0]
    steps = [{"view": "identity", "merge": _spec(*baseline_merge), "score": best[0]}]
    for _ in range(budget):
        trial = None
        for v in views:
            if v in best[1]:
                continue
            pol = Policy(best[1] + [v])
            for name, opts in merges:
                s = score(run(pol, name, opts), fit)
                if trial is None or s > trial[0] + 1e-12:
                    trial = (s, best[1] + [v], (name, dict(opts)))
        if trial is None or trial[0] <= best[0] + 1e-12:
            break
        best = trial
        steps.append({"view": repr(trial[1][-1]), "merge": _spec(*trial[2]), "score": trial[0]})
    policy, merge = Policy(best[1]), best[2]
    if len(guard):
        g_base = score(base, guard)
        g_best = score(run(policy, *merge), guard) if len(best[1]) > 1 else g_base
    else:
        g_base = g_best = float("nan")
    fell_back = bool(len(guard)) and g_best < g_base
    if fell_back:
        policy, merge = Policy([identity()]), baseline_merge
    return DenseTuneResult(policy, merge, objective, best[0] if not fell_back else fit_baseline, fit_baseline,
                           g_best, g_base, fell_back, steps, n_fit=len(fit), n_guard=len(guard))


__all__ = ["DETECTION_MERGES", "SEGMENTATION_MERGES", "DenseTuneResult", "split", "greedy_dense"]
