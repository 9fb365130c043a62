"""Find the views that help a model, on held-out data, and never do worse
than no TTA on it.

    result = ttakit.tune(model, x_tune, y_tune, candidates="standard", budget=8)
    result.policy.save("policy.yaml")           # views, weights, temperature
    ttakit.Classifier(model, result.policy).predict(x)

What happens:

1. Every candidate view (identity always among them) is run once over the
   tuning data and cached.
2. The tuning data is split (``guard_fraction``, seeded): greedy search runs
   on the *fit* part; each prefix of its ordered result is then scored on the
   *guard* part, with a temperature fitted on the fit part.
3. A prefix counts only if its gain on the guard part is *significant*:
   better guard objective than identity, more guard inputs fixed than
   broken (a tie in guard accuracy gives no TTA), and a paired test below
   ``guard_alpha`` (two-sided, Bonferroni-corrected for the number of
   prefixes tried; default 0.05): a paired t-test on the per-input
   calibrated NLL for ``objective="nll"``, the exact McNemar test for
   ``"accuracy"``. The counting prefix with the best guard objective is
   kept; if none counts, the result is no TTA. On small tuning sets this
   gives up some real gains (they cannot be told from noise there) to keep
   the search from adopting views that hurt.
4. The merge is calibrated: a temperature (``aggregation="mean"``) or
   learned weights and a temperature (``"per_view"``, ``"per_view_class"``),
   kept only if better than the plain merge on the guard part. Final values
   are refitted on all the tuning data and saved with the policy.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, TTAKitWarning
from ..evaluation import mcnemar_exact, metrics
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
from .guard import GUARD_ALPHA, bonferroni, check_guard_alpha, paired_gain_p
from .temperature import apply_temperature, fit_temperature, nll_at, per_input_nll

AGGREGATIONS = ("mean", "per_view", "per_view_class")
#: the guard's paired test for each objective
TESTS = {"nll": "paired t-test on per-input calibrated NLL", "accuracy": "exact McNemar"}
MIN_TUNING = 50
SMALL_TUNING = 1000


@dataclass
class TuneResult:
    policy: Policy                   #: the chosen policy, with its aggregation
    candidates: list[View]
    steps: list[dict]                #: the greedy order with fit and guard scores
    chosen_length: int               #: views kept (0 = fell back to no TTA)
    fell_back: bool
    reason: str
    aggregation: dict
    guard: dict                      #: guard-split metrics of identity and the result
    forward_passes: int
    seconds: float
    n_tune: int
    n_fit: int
    n_guard: int
    cache: PredictionCache | None = field(default=None, repr=False)
    #: with ``max_forwards``: the tuned policy before the budget (every view for every input)
    full_policy: Policy | None = None
    #: with ``max_forwards``: the budgeted choice (mean forwards on the tuning inputs, guard scores)
    adaptive: dict | None = None

    def summary(self) -> str:
        lines = [f"Tuned on {self.n_tune} inputs ({self.n_fit} fit, {self.n_guard} guard); "
                 f"{len(self.candidates)} candidate views, {self.forward_passes} forward passes "
                 f"({self.forward_passes / max(1, self.n_tune):.1f} per tuning input), {self.seconds:.1f} s.",
                 "", "| step | view added | fit objective | guard acc | guard NLL (T from fit) | guard fixed/broken | p |",
                 "|---:|---|---:|---:|---:|---:|---:|"]
        times: dict[str, int] = {}
        for i, s in enumerate(self.steps, 1):
            times[s["view"]] = times.get(s["view"], 0) + 1
            added = s["view"] if times[s["view"]] == 1 else f"{s['view']} again (weight {times[s['view']]})"
            lines.append(f"| {i} | {added} | {s['fit_objective']:.4f} | {s['guard_accuracy']:.2%} | "
                         f"{s['guard_nll']:.4f} | {s['guard_fixed']}/{s['guard_broken']} | {s['guard_p']:.2g} |")
        g = self.guard
        lines += ["", f"Identity on the guard split: accuracy {g['identity_accuracy']:.2%}, "
                      f"NLL {g['identity_nll']:.4f}.",
                  f"Result: {self.reason}", f"Policy: {self.policy.spec}",
                  f"Aggregation: {self.aggregation}"]
        if self.adaptive is not None:
            a = self.adaptive
            lines += ["", f"Budget of {a['max_forwards']:g} forwards per input (full policy: {a['full_forwards']}): "
                          f"{a['mean_forwards']:.3f} mean forwards on the tuning inputs, guard accuracy "
                          f"{a['guard_accuracy']:.2%} (full {a['full_guard_accuracy']:.2%}), guard NLL "
                          f"{a['guard_nll']:.4f} (full {a['full_guard_nll']:.4f}); {a['candidates']} configurations "
                          f"scored, chosen for {a.get('objective', 'nll')}"]
        return "\n".join(lines)


def tune(model, x, y, *, candidates="standard", budget: int = 8, objective: str = "nll",
         merge: str = "mean", aggregation: str = "mean", guard_fraction: float = 0.3, seed: int = 0,
         guard_alpha: float = GUARD_ALPHA, cache: PredictionCache | None = None, max_forwards: float | None = None,
         budget_objective: str | None = None, **classifier_kwargs) -> TuneResult:
    """Search the policy that helps ``model`` on ``(x, y)``; see the module doc.
    ``max_forwards``: a cost budget (mean forward passes per input); when the
    tuned policy has more distinct views, the result is its adaptive version
    that does best on the guard split within the budget
    (:mod:`ttakit.tuning.adaptive`; ``result.full_policy`` keeps the full one),
    judged by ``budget_objective`` (``"nll"`` or ``"accuracy"``; default: ``objective``)."""
    t0 = time.perf_counter()
    y = metrics.as_labels(y, len(x) if hasattr(x, "__len__") else None)
    n = len(y)
    if n < MIN_TUNING:
        raise InputError(f"the tuning split has {n} inputs; at least {MIN_TUNING} are needed "
                         f"(a few thousand to trust differences of a point)")
    if n < SMALL_TUNING:
        half = 1.96 * np.sqrt(0.25 / (n * guard_fraction)) * 100
        warnings.warn(f"the tuning split has only {n} inputs: guard-split accuracies are uncertain by "
                      f"about ±{half:.1f} points, so the chosen policy may not generalise", TTAKitWarning,
                      stacklevel=2)
    if aggregation not in AGGREGATIONS:
        raise InputError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if not 0 < guard_fraction < 1:
        raise InputError(f"guard_fraction must be in (0, 1), got {guard_fraction}")
    check_guard_alpha(guard_alpha)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InputError(f"budget must be a positive integer, got {budget!r}")
    if budget_objective is None:
        budget_objective = objective
    if budget_objective not in ("nll", "accuracy"):
        raise InputError(f"budget_objective must be 'nll' or 'accuracy', got {budget_objective!r}")
    if max_forwards is not None and (isinstance(max_forwards, bool) or not isinstance(max_forwards, (int, float))
                                     or not max_forwards >= 1):
        raise InputError(f"max_forwards must be a number >= 1 (forward passes per input), got {max_forwards!r}")
    pool = candidate_views(candidates)
    cache = cache or PredictionCache(model, x, **classifier_kwargs)
    cache.ensure(pool)
    probs = cache.stack(pool).astype(np.float64)  # (K, N, C)
    if y.max() >= probs.shape[-1]:
        raise InputError(f"labels go up to {y.max()} but the model returns {probs.shape[-1]} classes")

    order = np.random.default_rng(seed).permutation(n)
    n_guard = max(1, int(round(n * guard_fraction)))
    guard_idx, fit_idx = np.sort(order[:n_guard]), np.sort(order[n_guard:])
    p_fit, p_guard = probs[:, fit_idx], probs[:, guard_idx]
    y_fit, y_guard = y[fit_idx], y[guard_idx]

    steps = greedy_search(p_fit, y_fit, budget=budget, objective=objective, merge=merge)
    chosen = [s.index for s in steps]

    def guard_scores(idx: list[int]) -> tuple[float, float, float, np.ndarray, np.ndarray]:
        t = fit_temperature(merge_prefix(p_fit, idx, merge), y_fit)
        merged = merge_prefix(p_guard, idx, merge)
        ok = merged.argmax(1) == y_guard
        acc = float(ok.mean())
        losses = per_input_nll(np.log(np.clip(merged, 1e-12, None)), y_guard, t)
        nll = float(losses.mean())
        obj = nll if objective == "nll" else (1 - acc) + 1e-6 * nll
        return obj, acc, nll, ok, losses

    id_obj, id_acc, id_nll, id_ok, id_losses = guard_scores([0])
    table, best_len, best_obj = [], 0, id_obj
    for L, s in enumerate(steps, 1):
        obj, acc, nll, ok, losses = guard_scores(chosen[:L])
        fixed, broken = int((ok & ~id_ok).sum()), int((id_ok & ~ok).sum())
        # the paired test matches the objective: per-input calibrated NLL, or correct/wrong flags
        # Bonferroni: every prefix is tested on the same guard inputs
        p = (paired_gain_p(id_losses, losses, len(steps)) if objective == "nll"
             else bonferroni(mcnemar_exact(fixed, broken), len(steps)))
        significant = fixed > broken and obj < id_obj - 1e-9 and p < guard_alpha
        table.append({"view": repr(pool[s.index]), "candidate": s.index, "fit_objective": s.objective,
                      "fit_accuracy": s.accuracy, "guard_objective": obj, "guard_accuracy": acc, "guard_nll": nll,
                      "guard_fixed": fixed, "guard_broken": broken, "guard_p": p, "significant": significant})
        if significant and obj < best_obj - 1e-9:
            best_len, best_obj = L, obj
    views = [pool[k] for k in chosen[:best_len]]
    if best_len == 0 or all(v == pool[0] for v in views):
        views, best_len = [pool[0]], 0
        fell_back = True
        beat = [r for r in table if r["guard_objective"] < id_obj - 1e-9]
        reason = ("no prefix of the search beat no TTA on the guard split: using no TTA" if not beat else
                  f"{len(beat)} prefix(es) of the search beat no TTA on the guard objective, but none with a "
                  f"significant gain there ({TESTS[objective]} p < {guard_alpha:g} and more inputs fixed than "
                  "broken): using no TTA")
    else:
        fell_back = False
        row = table[best_len - 1]
        reason = (f"the first {best_len} step(s) of the search ({len(set(views))} distinct views) beat no TTA "
                  f"on the guard split (objective {best_obj:.4f} vs {id_obj:.4f}; accuracy "
                  f"{row['guard_accuracy']:.2%} vs {id_acc:.2%}, {row['guard_fixed']} fixed / "
                  f"{row['guard_broken']} broken, {TESTS[objective]} p = {row['guard_p']:.2g}, Bonferroni-corrected)")
    policy = Policy(views)
    uniq = policy.unique()
    idx = [pool.index(v) for v in uniq.views]
    w = uniq.weights / uniq.weights.sum()

    def mean_merged(p):
        return np.tensordot(w, p[idx], axes=1)

    agg_info: dict
    t_mean_fit = fit_temperature(mean_merged(p_fit), y_fit)
    mean_guard_nll = nll_at(np.log(np.clip(mean_merged(p_guard), 1e-12, None)), y_guard, t_mean_fit)
    use_learned = False
    if aggregation != "mean" and len(idx) > 1:
        learned_fit = agg.fit_weights(p_fit[idx], y_fit, aggregation)
        learned_guard_nll = metrics.nll(agg.apply_weights(learned_fit, p_guard[idx]), y_guard)
        use_learned = learned_guard_nll <= mean_guard_nll
        reason += (f"; learned {aggregation} weights: guard NLL {learned_guard_nll:.4f} vs "
                   f"{mean_guard_nll:.4f} for the calibrated mean, "
                   + ("kept" if use_learned else "not kept"))
    if use_learned:
        fitted = agg.fit_weights(probs[idx], y, aggregation)
        final_merge = LearnedMerge(fitted.weights, fitted.temperature, uniq.views)
    else:
        final_merge = TemperatureScaled(get_merge(merge), fit_temperature(mean_merged(probs), y))
    agg_info = final_merge.to_dict()
    policy = Policy(uniq.views, uniq.weights, source=f"tuned ({objective}, budget {budget})", merge=final_merge,
                    inputs=_contract(cache))
    final_guard = mean_merged(p_guard)
    guard = {"identity_accuracy": id_acc, "identity_nll": id_nll,
             "tuned_accuracy": float((final_guard.argmax(1) == y_guard).mean()),
             "tuned_nll_calibrated": mean_guard_nll}
    full_policy, adaptive = None, None
    if max_forwards is not None and len(uniq) > max_forwards:
        full_policy = policy
        choice = choose_adaptive(policy, probs[idx], y, max_forwards, objective=budget_objective, select=guard_idx)
        full_guard_p, _ = simulate(policy, probs[idx][:, guard_idx])
        policy = choice.policy.with_source(f"tuned ({objective}, budget {budget}, max {max_forwards:g} forwards)")
        adaptive = {"max_forwards": float(max_forwards), "full_forwards": len(uniq), "objective": budget_objective,
                    "mean_forwards": choice.mean_forwards, "guard_accuracy": choice.accuracy,
                    "guard_nll": choice.nll, "full_guard_accuracy": float((full_guard_p.argmax(1) == y_guard).mean()),
                    "full_guard_nll": float(-np.log(np.clip(full_guard_p[np.arange(len(y_guard)), y_guard], 1e-12,
                                                            None)).mean()),
                    "candidates": choice.candidates, "policy": policy.spec}
    return TuneResult(policy, pool, table, best_len, fell_back, reason, agg_info, guard,
                      cache.forward_passes, time.perf_counter() - t0, n, len(fit_idx), len(guard_idx), cache,
                      full_policy, adaptive)


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


__all__ = ["tune", "TuneResult", "AGGREGATIONS", "apply_temperature", "score"]
