"""Find the views that help a model, on held-out data, and never do worse
than no TTA on it.

    result = ttakit.tune(model, x_tune, y_tune, candidates="standard", budget=8)
    result.policy.save("policy.yaml")           # views, weights, temperature
    ttakit.Classifier(model, result.policy).predict(x)

What happens:

1. Every candidate view (identity always among them) is run once over the
   tuning data and cached.
2. The greedy search (:mod:`ttakit.tuning.greedy`) starts from the original
   view and adds, step by step, the candidate that most improves the
   objective (calibrated NLL by default) on the data it is given, up to
   ``budget`` views in all; it stops early when no view improves it.
3. The guard (:mod:`ttakit.tuning.guard`): the tuning inputs are cut into
   ``guard_folds`` folds (stratified by label, seeded); for every fold the
   search runs on the other folds and each prefix of its path is scored on
   the held-out fold (a temperature fitted on the other folds). The
   prefixes are then tested from the longest down (a fixed-sequence test,
   each at the full ``guard_alpha``: a one-sided paired t-test, checked for
   skewness, on the cross-fitted per-input calibrated NLL and the exact one-sided McNemar
   test of the inputs fixed against those broken), and a prefix counts only
   if its cross-fitted predictions also fix at least ``min_net_fixed`` more
   inputs than they break. The longest prefix that passes gives the number
   of views ``L``; the search is run again on all the
   tuning inputs and its first ``L`` views are the result. If none passes,
   the result is no TTA. The chance of keeping TTA when no prefix truly
   helps is at most ``guard_alpha`` (see the guard module for the exact
   statement). With ``adapt=``, the adaptation itself is put to the same
   guard first (adapted no TTA against plain no TTA); the views are
   searched on the adapted model only when it passes.
4. The merge is calibrated: a temperature (``aggregation="mean"``) or
   learned weights and a temperature (``"per_view"``, ``"per_view_class"``),
   kept only if better than the plain merge on the cross-fitted folds.
   Final values are refitted on all the tuning data and saved with the
   policy.
5. With ``max_forwards``, the stages and thresholds of an adaptive version
   (:mod:`ttakit.tuning.adaptive`) are chosen on all the tuning inputs, and
   the same choice made on each fold's other folds is scored on the fold:
   ``result.adaptive`` reports the cross-fitted share of the full policy's
   gain it keeps.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, TTAKitWarning
from ..evaluation import metrics
from ..tasks.cache import PredictionCache
from ..merge import LearnedMerge, TemperatureScaled, get_merge
from ..models import Normalize
from ..policy import Policy
from ..policy.contract import InputContract
from ..views import View
from ..evaluation.adaptive import simulate
from . import aggregation as agg
from .adaptive import choose_adaptive
from .candidates import candidate_views
from .greedy import greedy_search, merge_prefix, score
from .guard import GUARD_ALPHA, GUARD_FOLDS, MIN_NET_FIXED, check_folds, check_guard_alpha, crossfit_folds, decide
from .temperature import apply_temperature, fit_temperature, per_input_nll

AGGREGATIONS = ("mean", "per_view", "per_view_class")
#: the guard's tests for each objective
TESTS = {"nll": "one-sided skew-checked t-test on cross-fitted per-input calibrated NLL and exact McNemar",
         "accuracy": "one-sided skew-checked t-test on cross-fitted calibrated NLL and exact McNemar"}
MIN_TUNING = 50
SMALL_TUNING = 1000
_TINY = 1e-12


@dataclass
class TuneResult:
    policy: Policy                   #: the chosen policy, with its aggregation
    candidates: list[View]
    steps: list[dict]                #: the search's path on all the tuning inputs, with the cross-fitted evidence
    chosen_length: int               #: views kept (1 = fell back to no TTA)
    fell_back: bool
    reason: str
    aggregation: dict
    guard: dict                      #: cross-fitted metrics of no TTA and of the result
    forward_passes: int
    seconds: float
    n_tune: int
    folds: int = GUARD_FOLDS
    cache: PredictionCache | None = field(default=None, repr=False)
    #: with ``max_forwards``: the tuned policy before the budget (every view for every input)
    full_policy: Policy | None = None
    #: with ``max_forwards``: the budgeted choice (mean forwards, cross-fitted scores and gain kept)
    adaptive: dict | None = None
    #: each fold's path (candidate indices, the original view first)
    fold_paths: list[list[int]] = field(default_factory=list, repr=False)
    #: with ``adapt=``: whether the guard kept the adaptation, and its evidence
    adaptation: dict | None = None

    def summary(self) -> str:
        lines = [f"Tuned on {self.n_tune} inputs with {self.folds}-fold cross-fitting; "
                 f"{len(self.candidates)} candidate views, {self.forward_passes} forward passes "
                 f"({self.forward_passes / max(1, self.n_tune):.1f} per tuning input), {self.seconds:.1f} s.",
                 "", "| views | view added | objective (all inputs) | cross-fitted acc | cross-fitted NLL "
                 "| fixed/broken | p (one-sided) | guard |",
                 "|---:|---|---:|---:|---:|---:|---:|---|"]
        times: dict[str, int] = {}
        for s in self.steps:
            times[s["view"]] = times.get(s["view"], 0) + 1
            added = s["view"] if times[s["view"]] == 1 else f"{s['view']} again (weight {times[s['view']]})"
            lines.append(f"| {s['length']} | {added} | {s['fit_objective']:.4f} | {s['guard_accuracy']:.2%} | "
                         f"{s['guard_nll']:.4f} | {s['guard_fixed']}/{s['guard_broken']} | "
                         + ("" if s["guard_p"] is None else f"{s['guard_p']:.2g}") + f" | {s['verdict']} |")
        g = self.guard
        lines += ["", f"No TTA, cross-fitted: accuracy {g['identity_accuracy']:.2%}, "
                      f"calibrated NLL {g['identity_nll']:.4f}.",
                  f"Result: {self.reason}", f"Policy: {self.policy.spec}",
                  *([_adaptation_line(self.adaptation)] if self.adaptation else []),
                  f"Aggregation: {self.aggregation}"]
        if self.adaptive is not None and "guard_accuracy" in self.adaptive:
            a = self.adaptive
            lines += ["", f"Budget of {a['max_forwards']:g} forwards per input (full policy: {a['full_forwards']}): "
                          f"{a['mean_forwards']:.3f} mean forwards on the tuning inputs; cross-fitted: accuracy "
                          f"{a['guard_accuracy']:.2%} (full {a['full_guard_accuracy']:.2%}, no TTA "
                          f"{a['identity_guard_accuracy']:.2%}), {a['guard_forwards']:.3f} forwards; "
                          f"{a['candidates']} configurations scored, chosen for {a['objective']}"]
        return "\n".join(lines)


def _adaptation_line(a: dict) -> str:
    use = f"kept: pass --adapt {a['adapt']} when predicting" if a["kept"] else "not kept: predict without --adapt"
    return (f"Adaptation ({a['adapt']}), no TTA cross-fitted: accuracy {a['accuracy_adapted']:.2%} adapted vs "
            f"{a['accuracy_plain']:.2%} as it is; {use}")


def _check_args(n, aggregation, guard_alpha, budget, budget_objective, max_forwards, guard_folds, guard_fraction):
    if guard_fraction is not None:
        raise InputError("guard_fraction is gone: the guard now cross-fits over all the tuning inputs; "
                         "use guard_folds (the number of folds, default 5)")
    if n < MIN_TUNING:
        raise InputError(f"the tuning split has {n} inputs; at least {MIN_TUNING} are needed "
                         f"(a few thousand to trust differences of a point)")
    if aggregation not in AGGREGATIONS:
        raise InputError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    check_guard_alpha(guard_alpha)
    check_folds(guard_folds, n)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InputError(f"budget must be a positive integer, got {budget!r}")
    if budget_objective not in ("nll", "accuracy"):
        raise InputError(f"budget_objective must be 'nll' or 'accuracy', got {budget_objective!r}")
    if max_forwards is not None and (isinstance(max_forwards, bool) or not isinstance(max_forwards, (int, float))
                                     or not max_forwards >= 1):
        raise InputError(f"max_forwards must be a number >= 1 (forward passes per input), got {max_forwards!r}")


def search_path(probs: np.ndarray, y: np.ndarray, budget: int, objective: str, merge: str) -> tuple[list[int], list]:
    """The greedy path from the original view (candidate 0): ``(indices, steps)``."""
    steps = greedy_search(probs, y, budget=budget - 1, objective=objective, merge=merge, start=[0],
                          stop_early=True) if budget > 1 else []
    return [0] + [s.index for s in steps], steps


def crossfit(probs: np.ndarray, y: np.ndarray, fold: np.ndarray, budget: int, objective: str, merge: str):
    """Every fold's path (searched on the other folds) and, for each prefix
    length 1..budget, the cross-fitted per-input calibrated NLL and
    correct flags: ``(paths, losses (budget, N), correct (budget, N))``.
    A path that stopped early keeps its last prefix for longer lengths."""
    n = len(y)
    losses = np.empty((budget, n))
    correct = np.empty((budget, n), bool)
    paths = []
    for f in range(int(fold.max()) + 1):
        held = fold == f
        fit = ~held
        path, _ = search_path(probs[:, fit], y[fit], budget, objective, merge)
        paths.append(path)
        for length in range(1, budget + 1):
            prefix = path[:length]
            if length > len(path):
                losses[length - 1, held] = losses[length - 2, held]
                correct[length - 1, held] = correct[length - 2, held]
                continue
            t = fit_temperature(merge_prefix(probs[:, fit], prefix, merge), y[fit])
            merged = merge_prefix(probs[:, held], prefix, merge)
            losses[length - 1, held] = per_input_nll(np.log(np.clip(merged, _TINY, None)), y[held], t)
            correct[length - 1, held] = merged.argmax(1) == y[held]
    return paths, losses, correct


def tune(model, x, y, *, candidates="standard", budget: int = 8, objective: str = "nll",
         merge: str = "mean", aggregation: str = "mean", guard_folds: int = GUARD_FOLDS, seed: int = 0,
         guard_alpha: float = GUARD_ALPHA, min_net_fixed: int = MIN_NET_FIXED,
         cache: PredictionCache | None = None, max_forwards: float | None = None,
         budget_objective: str | None = None, guard_fraction=None, **classifier_kwargs) -> TuneResult:
    """Search the policy that helps ``model`` on ``(x, y)``; see the module doc.
    ``budget``: most views in the policy, the original included.
    ``max_forwards``: a cost budget (mean forward passes per input); when the
    tuned policy has more distinct views, the result is its adaptive version
    that does best on the tuning inputs within the budget
    (:mod:`ttakit.tuning.adaptive`; ``result.full_policy`` keeps the full one),
    judged by ``budget_objective`` (``"nll"`` or ``"accuracy"``; default: ``"accuracy"``)."""
    t0 = time.perf_counter()
    y = metrics.as_labels(y, len(x) if hasattr(x, "__len__") else None)
    n = len(y)
    budget_objective = budget_objective or "accuracy"
    _check_args(n, aggregation, guard_alpha, budget, budget_objective, max_forwards, guard_folds, guard_fraction)
    if n < SMALL_TUNING:
        half = 1.96 * np.sqrt(0.25 / n) * 100
        warnings.warn(f"the tuning split has only {n} inputs: accuracies on it are uncertain by about "
                      f"\u00b1{half:.1f} points, so the guard keeps only clear gains", TTAKitWarning, stacklevel=2)
    pool = candidate_views(candidates)
    adaptation = None
    if cache is None and classifier_kwargs.get("adapt") not in (None, "none"):
        cache, adaptation = _guard_adaptation(model, x, y, pool[0], guard_folds, seed, guard_alpha, min_net_fixed,
                                              classifier_kwargs)
    cache = cache or PredictionCache(model, x, **classifier_kwargs)
    cache.ensure(pool)
    probs = cache.stack(pool).astype(np.float64)  # (K, N, C)
    res = tune_cached(probs, y, pool, budget=budget, objective=objective, merge=merge, aggregation=aggregation,
                      guard_folds=guard_folds, seed=seed, guard_alpha=guard_alpha, min_net_fixed=min_net_fixed,
                      max_forwards=max_forwards, budget_objective=budget_objective, inputs=_contract(cache))
    res.forward_passes, res.cache, res.seconds = cache.forward_passes, cache, time.perf_counter() - t0
    if adaptation is not None:
        res.adaptation = adaptation
        res.reason += f"; adaptation {adaptation['adapt']}: {adaptation['reason']}"
    return res


def _guard_adaptation(model, x, y, identity: View, folds: int, seed: int, alpha: float, min_net_fixed: int,
                      classifier_kwargs: dict):
    """Test-time adaptation as a candidate the guard must accept: no TTA on
    the adapted model against no TTA on the model as it is, on the same
    cross-fitted evidence as the views (calibrated NLL with a temperature
    fitted on the other folds; the t-test and McNemar at ``alpha``). Returns
    the cache the search then uses (adapted when kept, else plain) and what
    was decided."""
    plain_kwargs = {k: v for k, v in classifier_kwargs.items() if k != "adapt"}
    plain = PredictionCache(model, x, **plain_kwargs)
    adapted = PredictionCache(model, x, **classifier_kwargs)
    p = []
    for c in (plain, adapted):
        c.ensure([identity])
        p.append(c.stack([identity])[0].astype(np.float64))
    fold = crossfit_folds(len(y), folds, seed, strata=y)
    losses, correct = np.empty((2, len(y))), np.empty((2, len(y)), bool)
    for f in range(folds):
        held, fit = fold == f, fold != f
        for k in range(2):
            t = fit_temperature(p[k][fit], y[fit])
            losses[k, held] = per_input_nll(np.log(np.clip(p[k][held], _TINY, None)), y[held], t)
            correct[k, held] = p[k][held].argmax(1) == y[held]
    d = decide(losses, correct=correct, alpha=alpha, min_net_fixed=min_net_fixed, folds=folds,
               describe=lambda L: "the adapted model")
    kept = not d.fell_back
    e = next((e for e in d.evidence if e.length == 2), None)
    info = {"adapt": str(classifier_kwargs.get("adapt")), "kept": kept,
            "accuracy_plain": float(correct[0].mean()), "accuracy_adapted": float(correct[1].mean()),
            "nll_plain": float(losses[0].mean()), "nll_adapted": float(losses[1].mean()),
            "p": None if e is None else e.p, "p_accuracy": None if e is None else e.p_accuracy,
            "reason": ("kept: the adapted model beats the model as it is on the cross-fitted evidence "
                       f"(accuracy {correct[1].mean():.2%} vs {correct[0].mean():.2%})") if kept else
                      ("not kept: " + d.reason.replace(": using no TTA", "") + "; the views are searched on the "
                       "model as it is, and predictions should not pass --adapt")}
    return (adapted if kept else plain), info


def tune_cached(probs: np.ndarray, y, pool: list[View], *, budget: int = 8, objective: str = "nll",
                merge: str = "mean", aggregation: str = "mean", guard_folds: int = GUARD_FOLDS, seed: int = 0,
                guard_alpha: float = GUARD_ALPHA, min_net_fixed: int = MIN_NET_FIXED,
                max_forwards: float | None = None, budget_objective: str | None = None,
                inputs: InputContract | None = None, crossfit_adaptive: bool = True) -> TuneResult:
    """:func:`tune` on cached per-candidate probabilities ``(K, N, C)`` of the
    views ``pool`` (``pool[0]`` the original view): no model runs. For
    studies that tune many times on parts of one cache (they may skip the
    cross-fitted estimate of an adaptive policy, ``crossfit_adaptive=False``,
    which repeats the budgeted search on every fold, when they measure it on
    held-out data themselves)."""
    t0 = time.perf_counter()
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    budget_objective = budget_objective or "accuracy"
    _check_args(n, aggregation, guard_alpha, budget, budget_objective, max_forwards, guard_folds, None)
    if y.max() >= probs.shape[-1]:
        raise InputError(f"labels go up to {y.max()} but the model returns {probs.shape[-1]} classes")
    fold = crossfit_folds(n, guard_folds, seed, strata=y)
    fold_paths, losses, correct = crossfit(probs, y, fold, budget, objective, merge)
    path, steps = search_path(probs, y, budget, objective, merge)

    def describe(length: int) -> str:
        return "no TTA" if length == 1 else f"the first {length} views"

    decision = decide(losses, correct=correct, objective="accuracy" if objective == "accuracy" else "loss",
                      alpha=guard_alpha, min_net_fixed=min_net_fixed, folds=guard_folds, describe=describe)
    evidence = {e.length: e for e in decision.evidence}
    table = []
    base_ok = correct[0]
    for length in range(1, len(path) + 1):
        e = evidence.get(length)
        fit_obj = steps[length - 2].objective if length > 1 else score(probs[0], y, objective)[0]
        ok = correct[length - 1]
        table.append({"length": length, "view": repr(pool[path[length - 1]]), "candidate": path[length - 1],
                      "fit_objective": fit_obj, "guard_accuracy": float(ok.mean()),
                      "guard_nll": float(losses[length - 1].mean()),
                      "guard_fixed": int((ok & ~base_ok).sum()), "guard_broken": int((base_ok & ~ok).sum()),
                      "guard_p": None if e is None else e.p, "significant": bool(e is not None and e.passed),
                      "verdict": "no TTA" if e is None else ("kept" if length == decision.length else e.note)})
    length = min(decision.length, len(path))
    views = [pool[k] for k in path[:length]]
    fell_back = decision.fell_back or all(v == pool[0] for v in views)
    reason = decision.reason
    if fell_back:
        views = [pool[0]]
        length = 1
    policy = Policy(views)
    uniq = policy.unique()
    idx = [pool.index(v) for v in uniq.views]
    w = uniq.weights / uniq.weights.sum()

    def mean_merged(p):
        return np.tensordot(w, p[idx], axes=1)

    use_learned = False
    if aggregation != "mean" and len(idx) > 1:
        learned, plain = _crossfit_aggregation(probs, y, fold, fold_paths, length, aggregation, losses)
        use_learned = learned <= plain
        reason += (f"; learned {aggregation} weights: cross-fitted NLL {learned:.4f} vs {plain:.4f} for the "
                   "calibrated mean, " + ("kept" if use_learned else "not kept"))
    if use_learned:
        fitted = agg.fit_weights(probs[idx], y, aggregation)
        final_merge = LearnedMerge(fitted.weights, fitted.temperature, uniq.views)
    else:
        final_merge = TemperatureScaled(get_merge(merge), fit_temperature(mean_merged(probs), y))
    agg_info = final_merge.to_dict()
    policy = Policy(uniq.views, uniq.weights, source=f"tuned ({objective}, budget {budget})", merge=final_merge,
                    inputs=inputs)
    guard = {"identity_accuracy": float(correct[0].mean()), "identity_nll": float(losses[0].mean()),
             "tuned_accuracy": float(correct[length - 1].mean()),
             "tuned_nll_calibrated": float(losses[length - 1].mean())}
    full_policy, adaptive = None, None
    if max_forwards is not None and len(uniq) > max_forwards:
        full_policy = policy
        choice = choose_adaptive(policy, probs[idx], y, max_forwards, objective=budget_objective)
        policy = choice.policy.with_source(f"tuned ({objective}, budget {budget}, max {max_forwards:g} forwards)")
        adaptive = (_crossfit_adaptive(pool, probs, y, fold, fold_paths, length, merge, max_forwards,
                                       budget_objective) if crossfit_adaptive else {})
        adaptive.update({"max_forwards": float(max_forwards), "full_forwards": len(uniq),
                         "objective": budget_objective, "mean_forwards": choice.mean_forwards,
                         "candidates": choice.candidates, "policy": policy.spec})
    return TuneResult(policy, pool, table, length, fell_back, reason, agg_info, guard, 0,
                      time.perf_counter() - t0, n, guard_folds, None, full_policy, adaptive, fold_paths)


def _fold_policy(pool, path: list[int], length: int, merge: str, probs: np.ndarray, y: np.ndarray,
                 fit: np.ndarray) -> tuple[Policy, list[int]]:
    """A fold's plain policy of its first ``length`` views, calibrated on its
    fit part, and the candidate indices of its distinct views."""
    ids = path[:length]
    uniq_ids = list(dict.fromkeys(ids))
    weights = np.array([ids.count(k) for k in uniq_ids], float)
    w = weights / weights.sum()
    t = fit_temperature(np.tensordot(w, probs[uniq_ids][:, fit], axes=1), y[fit])
    return Policy([pool[k] for k in uniq_ids], weights, merge=TemperatureScaled(get_merge(merge), t)), uniq_ids


def _crossfit_aggregation(probs, y, fold, fold_paths, length, aggregation, losses) -> tuple[float, float]:
    """Cross-fitted NLL of learned weights and of the calibrated mean for each fold's first ``length`` views."""
    learned = np.empty(len(y))
    for f, path in enumerate(fold_paths):
        held = fold == f
        ids = list(dict.fromkeys(path[:length]))
        if len(ids) < 2:
            learned[held] = losses[min(length, len(path)) - 1, held]
            continue
        m = agg.fit_weights(probs[ids][:, ~held], y[~held], aggregation)
        p = agg.apply_weights(m, probs[ids][:, held])
        learned[held] = -np.log(np.clip(p[np.arange(held.sum()), y[held]], _TINY, None))
    return float(learned.mean()), float(losses[length - 1].mean())


def _crossfit_adaptive(pool, probs, y, fold, fold_paths, length, merge, max_forwards, objective) -> dict:
    """The adaptive choice made on each fold's other folds, scored on the
    fold: cross-fitted accuracy, NLL and forwards of the budgeted policy, of
    the full policy and of no TTA, and the share of the full policy's
    accuracy gain kept, with a bootstrap interval over inputs."""
    n = len(y)
    ok_ad, ok_full, nll_ad, fwd = np.empty(n, bool), np.empty(n, bool), np.empty(n), np.empty(n)
    for f, path in enumerate(fold_paths):
        held, fit = fold == f, fold != f
        full, ids = _fold_policy(pool, path, min(length, len(path)), merge, probs, y, fit)
        pol = (choose_adaptive(full, probs[ids][:, fit], y[fit], max_forwards, objective=objective).policy
               if len(ids) > max_forwards else full)
        k = len(pol.unique())
        p_ad, f_ad = simulate(pol, probs[ids[:k]][:, held])
        p_full, _ = simulate(full, probs[ids][:, held])
        ok_ad[held] = p_ad.argmax(1) == y[held]
        ok_full[held] = p_full.argmax(1) == y[held]
        nll_ad[held] = -np.log(np.clip(p_ad[np.arange(held.sum()), y[held]], _TINY, None))
        fwd[held] = f_ad
    ok_id = probs[0].argmax(1) == y
    kept, lo, hi = gain_kept(ok_ad, ok_full, ok_id)
    return {"guard_accuracy": float(ok_ad.mean()), "guard_nll": float(nll_ad.mean()),
            "guard_forwards": float(fwd.mean()), "full_guard_accuracy": float(ok_full.mean()),
            "identity_guard_accuracy": float(ok_id.mean()), "gain_kept": kept, "gain_kept_ci": [lo, hi]}


def gain_kept(ok_cheap, ok_full, ok_base, *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """``(share, low, high)``: the share of the full policy's accuracy gain
    over the base that the cheap policy keeps, ``(acc_cheap - acc_base) /
    (acc_full - acc_base)``, with a 95% percentile bootstrap interval over
    inputs (NaN when the full policy gains nothing)."""
    a, b, c = (np.asarray(v, np.float64) for v in (ok_cheap, ok_full, ok_base))
    g = b.mean() - c.mean()
    if not g > 0:
        return float("nan"), float("nan"), float("nan")
    share = float((a.mean() - c.mean()) / g)
    rng = np.random.default_rng(seed)
    n = len(a)
    vals = []
    for i in range(0, n_boot, 200):
        idx = rng.integers(0, n, size=(min(200, n_boot - i), n))
        num, den = (a[idx] - c[idx]).mean(1), (b[idx] - c[idx]).mean(1)
        vals.append(np.where(den > 0, num / np.where(den > 0, den, 1), np.nan))
    v = np.concatenate(vals)
    v = v[np.isfinite(v)]
    lo, hi = (np.quantile(v, [0.025, 0.975]) if len(v) else (np.nan, np.nan))
    return share, float(lo), float(hi)


def _contract(cache: PredictionCache) -> InputContract:
    """What the tuned predictions depend on besides the views and the merge."""
    params = cache.classifier_params
    pre = params.get("preprocess")
    if pre is not None and not isinstance(pre, Normalize):
        warnings.warn("the preprocess used for tuning is not a ttakit.Normalize, so it cannot be saved with the "
                      "policy: pass the same preprocess= whenever you use this policy", TTAKitWarning, stacklevel=3)
    norm = isinstance(pre, Normalize)
    classes = params.get("classes")
    return InputContract(mean=pre.mean_values if norm else None, std=pre.std_values if norm else None,
                         model_layout=params.get("model_layout"), output=cache.output_kind,
                         classes=None if classes is None else tuple(classes))


__all__ = ["tune", "TuneResult", "AGGREGATIONS", "apply_temperature", "score", "gain_kept", "crossfit", "search_path", "tune_cached"]
