"""Greedy search over views and merges for detection and segmentation, on a
prediction cache (:mod:`ttakit.tasks.dense_cache`), guarded by the same
cross-fitted fixed-sequence test as classification
(:mod:`ttakit.tuning.guard`).

**The search.** Start from no TTA (identity, with the baseline merge); at
each step add the candidate view and merge (for detection: NMS, soft-NMS,
WBF with its ``iou_thr`` and ``conf_type``) that raise the objective most
on the images it is given (mAP, AP50, mean IoU: corpus metrics, higher is
better); stop at ``budget`` added views or when nothing raises it. Its
path's prefixes are policies: prefix 1 is no TTA, prefix ``L`` the views
and merge of step ``L - 1``.

**The guard.** The tuning images are cut into ``guard_folds`` folds
(seeded); for every fold the search runs on the other folds and each
prefix of its path is scored on the held-out fold, image by image. Dense
objectives are corpus metrics (a mean IoU pools pixels, an AP ranks
detections over images), which a paired test cannot use, so the guard's
per-image loss is minus each image's own score: its mean IoU over the
classes in its ground truth (segmentation), or the AP (or AP50, as the
objective) of that image alone (detection; an image without ground truth
scores 0 and counts as neither better nor worse). The prefixes are then
tested from the longest down by :func:`ttakit.tuning.guard.decide` (one-
sided paired t-test on the cross-fitted per-image losses, each at the full
``guard_alpha``, stopping at the first that fails); the kept prefix must
also improve at least ``min_net_fixed`` more images than it worsens. The
longest prefix that passes gives ``L``; the search is run again on all the
tuning images and its first ``L`` steps are the result. If none passes, the
result is no TTA (``fell_back``), as it is when there are fewer than two
images per fold. What this controls: the chance of keeping
TTA when no prefix of the search truly raises the expected per-image score
is at most ``guard_alpha`` (up to the usual approximation of cross-fitted
tests); the corpus metric usually moves with the per-image scores, but is
not what is tested.

Each (views, merge) trial is computed once for all the images (``run``)
and kept while tuning, so ``run`` should return compact statistics (the
callers of :mod:`ttakit.io.dense_tune` return
:mod:`ttakit.evaluation.dense_subsets` objects).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..policy import Policy
from ..views import identity
from .candidates import candidate_views
from .guard import GUARD_ALPHA, GUARD_FOLDS, MIN_NET_FIXED, PrefixEvidence, check_folds, check_guard_alpha, \
    crossfit_folds, decide

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
    fit_score: float             #: objective of the result on all the tuning images
    fit_baseline: float          #: of no TTA on all the tuning images
    guard_score: float           #: cross-fitted mean per-image score of the result
    guard_baseline: float        #: of no TTA
    fell_back: bool              #: the guard refused the search's policy: the result is no TTA
    steps: list = field(default_factory=list)
    forward_passes: int = 0
    n_tune: int = 0
    folds: int = GUARD_FOLDS
    alpha: float = GUARD_ALPHA
    reason: str = ""
    length: int = 1              #: prefix of the search kept (1 = no TTA)
    evidence: list[PrefixEvidence] = field(default_factory=list, repr=False)
    fold_paths: list = field(default_factory=list, repr=False)

    def summary(self) -> str:
        name, opts = self.merge
        ev = {e.length: e for e in self.evidence}
        lines = [f"objective {self.objective} (higher is better); {self.n_tune} tuning images, {self.folds}-fold "
                 f"cross-fitted guard at {self.alpha:g}; {self.forward_passes} forward passes",
                 f"{'step':<5} {'added view':<28} {'merge':<40} {self.objective + ' (all)':<10} "
                 f"{'cross-fitted':<12} {'p':<8} guard"]
        for k, s in enumerate(self.steps):
            e = ev.get(k + 1)
            xf = "" if e is None else f"{-e.loss:.4f}"
            p = "" if e is None or e.p is None else f"{e.p:.2g}"
            note = "no TTA" if k == 0 else ("kept" if k + 1 == self.length and not self.fell_back else
                                            "" if e is None else e.note)
            lines.append(f"{k:<5} {s['view']:<28} {s['merge']:<40} {s['score']:<10.4f} {xf:<12} {p:<8} {note}")
        lines += [f"guard (mean per-image {self.objective}, cross-fitted): result {self.guard_score:.4f} vs no TTA "
                  f"{self.guard_baseline:.4f}; {self.reason}",
                  f"policy: {self.policy.spec}; merge: {_spec(name, opts)}"]
        return "\n".join(lines)


def _spec(name: str, options: dict) -> str:
    return name if not options else f"{name}({', '.join(f'{k}={v}' for k, v in options.items())})"


class _Trials:
    """``run`` memoised by (views, merge): each trial is computed once for all images."""

    def __init__(self, run: Callable):
        self._run, self._done = run, {}

    def __call__(self, views, merge):
        name, opts = merge
        key = (tuple(repr(v) for v in views), name, tuple(sorted(dict(opts).items())))
        if key not in self._done:
            self._done[key] = self._run(Policy(list(views)), name, dict(opts))
        return self._done[key]


def search(trials: Callable, score: Callable, views: Sequence, merges: Sequence, baseline_merge: tuple,
           budget: int, idx) -> list[dict]:
    """The greedy path on the images ``idx``: step 0 is no TTA; each step
    ``{"views", "merge", "score"}`` (the objective on ``idx``)."""
    best = {"views": [identity()], "merge": (baseline_merge[0], dict(baseline_merge[1])),
            "score": score(trials([identity()], baseline_merge), idx)}
    path = [best]
    for _ in range(budget):
        trial = None
        for v in views:
            if v in best["views"]:
                continue
            cand = best["views"] + [v]
            for name, opts in merges:
                s = score(trials(cand, (name, opts)), idx)
                if trial is None or s > trial["score"] + 1e-12:
                    trial = {"views": cand, "merge": (name, dict(opts)), "score": s}
        if trial is None or trial["score"] <= best["score"] + 1e-12:
            break
        best = trial
        path.append(best)
    return path


def crossfit(trials: Callable, score: Callable, per_image: Callable, views, merges, baseline_merge, budget: int,
             fold: np.ndarray) -> tuple[list, np.ndarray]:
    """Every fold's path (searched on the other folds) and the cross-fitted
    per-image scores ``(budget + 1, N)`` of each prefix length (a path that
    stopped early keeps its last prefix for longer lengths)."""
    n = len(fold)
    scores = np.empty((budget + 1, n))
    paths = []
    for f in range(int(fold.max()) + 1):
        held = np.flatnonzero(fold == f)
        path = search(trials, score, views, merges, baseline_merge, budget, np.flatnonzero(fold != f))
        paths.append(path)
        for length in range(1, budget + 2):
            step = path[min(length, len(path)) - 1]
            scores[length - 1, held] = per_image(trials(step["views"], step["merge"]), held)
    return paths, scores


def _net_improved(scores: np.ndarray, length: int) -> tuple[int, int]:
    d = scores[length - 1] - scores[0]
    d[np.abs(d) <= 1e-12 * (np.abs(scores[0]) + np.abs(scores[length - 1]))] = 0.0
    return int((d > 0).sum()), int((d < 0).sum())


def _steps(path: list[dict]) -> list[dict]:
    return [{"view": "identity" if k == 0 else repr(s["views"][-1]), "merge": _spec(*s["merge"]),
             "score": s["score"]} for k, s in enumerate(path)]


def greedy_dense(run: Callable, score: Callable, n: int, candidates="flips", merges: Sequence = DETECTION_MERGES,
                 baseline_merge: tuple = ("nms", {"iou_thr": 1.0}), budget: int = 3, *,
                 guard_folds: int = GUARD_FOLDS, guard_alpha: float = GUARD_ALPHA, seed: int = 0,
                 objective: str = "map", ensure: Callable | None = None, per_image: Callable | None = None,
                 min_net_fixed: int = MIN_NET_FIXED, guard_fraction=None) -> DenseTuneResult:
    """The guarded search (see the module doc). ``run(policy, merge_name,
    merge_options)`` merges cached outputs for all ``n`` images;
    ``score(result, indices)`` is the objective on those images (higher is
    better); ``per_image(result, indices)`` each image's own score (default:
    ``score`` on that image alone); ``ensure(views)`` (the cache's) runs
    every candidate view once before the search. ``budget``: most views
    added to the original."""
    if guard_fraction is not None:
        raise InputError("guard_fraction is gone: the guard now cross-fits over all the tuning images; "
                         "use guard_folds (the number of folds, default 5)")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InputError(f"budget must be a positive integer, got {budget!r}")
    guard_alpha = check_guard_alpha(guard_alpha)
    guard_folds = check_folds(guard_folds, max(n, 2 * guard_folds if isinstance(guard_folds, int) else 0))
    if per_image is None:
        def per_image(res, idx):
            return np.array([score(res, [i]) for i in idx], np.float64)
    views = candidate_views(candidates)
    if ensure is not None:
        ensure(views)
    trials = _Trials(run)
    if n < 2 * guard_folds:
        path = search(trials, score, views, merges, baseline_merge, budget, np.arange(n))
        return DenseTuneResult(Policy([identity()]), path[0]["merge"], objective, path[0]["score"], path[0]["score"],
                               float("nan"), float("nan"), True, _steps(path), n_tune=n, folds=guard_folds,
                               alpha=guard_alpha, reason=f"{n} tuning images are too few for {guard_folds}-fold "
                               f"cross-fitting (at least {2 * guard_folds}): using no TTA")
    fold = crossfit_folds(n, guard_folds, seed)
    fold_paths, scores = crossfit(trials, score, per_image, views, merges, baseline_merge, budget, fold)
    path = search(trials, score, views, merges, baseline_merge, budget, np.arange(n))

    def describe(length: int) -> str:
        return f"{length - 1} step(s) of the search"

    d = decide(-scores, alpha=guard_alpha, min_net_fixed=min_net_fixed, folds=guard_folds, describe=describe)
    length, fell_back, reason = d.length, d.fell_back, d.reason
    if not fell_back:
        better, worse = _net_improved(scores, length)
        if better - worse < min_net_fixed:
            fell_back, length = True, 1
            reason = (f"the longest tested prefix ({describe(d.length)}) improves {better} images and worsens "
                      f"{worse}: net < {min_net_fixed}; using no TTA")
        else:
            reason += f"; {better} images better, {worse} worse"
    guard_score = float(scores[length - 1].mean())
    length = min(length, len(path))
    if fell_back or length == 1:
        fell_back, length = True, 1
    kept = path[length - 1]
    return DenseTuneResult(Policy(kept["views"]), kept["merge"], objective, kept["score"], path[0]["score"],
                           guard_score if not fell_back else float(scores[0].mean()), float(scores[0].mean()),
                           fell_back, _steps(path), n_tune=n, folds=guard_folds, alpha=guard_alpha, reason=reason,
                           length=length, evidence=d.evidence, fold_paths=fold_paths)


__all__ = ["DETECTION_MERGES", "SEGMENTATION_MERGES", "DenseTuneResult", "greedy_dense", "search", "crossfit"]
