"""``ttakit.evaluate``: does this policy help this model on these labels?

One pass per distinct view (through the prediction cache), then: accuracy,
top-k, NLL, ECE, Brier for the policy and the baseline (no TTA by default);
the paired lift with a bootstrap CI; predictions fixed and broken, overall
and per class; an exact McNemar test; forward passes per input and
throughput; the lift as views are added; a reliability diagram; accuracy
and NLL against forward passes per input (prefixes and adaptive versions of
the policy). An adaptive policy is scored as its stages run: the rules
decide, on the cached outputs, which inputs go on.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..merge import get_merge
from ..policy import AdaptivePolicy, Policy
from . import metrics
from .adaptive import cost_curve, simulate
from .formatting import ci, points, signed
from .plots import ece_of, write_plots
from ..tasks.cache import PredictionCache
from ..tasks.classification import contracted_options
from .paired import PairedResult, paired_accuracy
from .temperature import apply_temperature, fit_temperature


@dataclass
class EvaluationReport:
    policy: str
    baseline: str
    n: int
    n_classes: int
    policy_metrics: dict
    baseline_metrics: dict
    paired: PairedResult
    per_class: list[dict]
    forwards_per_input: float
    baseline_forwards_per_input: float
    throughput: float            #: inputs per second under the policy (model + views + merge)
    baseline_throughput: float
    prefix_curve: list[dict]     #: metrics as the policy's distinct views are added in order
    reliability: dict = field(repr=False, default_factory=dict)
    classes: list[str] | None = field(repr=False, default=None)
    #: when the policy carries a temperature or learned weights: no TTA and the plain policy, each with a
    #: temperature of its own (the fair comparison); empty otherwise
    fair_baselines: list[dict] = field(default_factory=list)
    calibration_note: str = ""
    #: accuracy and NLL against mean forwards per input: prefixes of the policy's views, adaptive versions
    #: (a grid of margin thresholds) and an adaptive policy itself (:func:`~ttakit.evaluation.adaptive.cost_curve`)
    forwards_curve: list[dict] = field(default_factory=list)
    #: an adaptive policy: how many inputs stopped after each number of forward passes ({forwards: inputs})
    forwards_histogram: dict = field(default_factory=dict)
    #: seconds the policy's views took to compute: throughput is shown only when it is long enough to time
    timed_seconds: float = 0.0
    #: the inputs TTA fixed and broke and the most uncertain ones (:func:`examples`)
    examples: dict = field(default_factory=dict)
    #: the plot files :meth:`save` wrote (the Markdown links these only)
    plots: list[str] = field(default_factory=list)
    #: with test-time adaptation (``adapt=``): the adapted baseline and policy, each paired against itself
    #: without adaptation (:class:`~ttakit.evaluation.paired.PairedResult` fields and ``what``); the
    #: headline then compares the adapted policy with the adapted baseline
    adaptation: list[dict] = field(default_factory=list)
    adapt: str = ""

    @property
    def helps(self) -> bool:
        """True when the lift's 95% CI is above zero."""
        return self.paired.ci_low > 0

    def verdict(self) -> str:
        p = self.paired
        lift = f"{points(p.lift)} points {ci(p.ci_low, p.ci_high)}"
        if p.ci_low > 0:
            return f"TTA helps: {lift}"
        if p.ci_high < 0:
            return f"TTA hurts: {lift}; use no TTA or tune a policy (ttakit tune)"
        return f"no clear effect: {lift} (the CI includes 0)"

    def throughputs(self) -> tuple[str, str]:
        """Baseline and policy inputs per second as printed: "n/a" when the views took under
        :data:`MIN_TIMED_SECONDS` to compute (too short to time)."""
        if not self.timed_seconds >= MIN_TIMED_SECONDS:
            why = f"n/a (under {MIN_TIMED_SECONDS:g} s to time)"
            return why, why
        return (f"{self.baseline_throughput:.0f}",
                f"{self.throughput:.0f}{' (estimated)' if self.forwards_histogram else ''}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["paired"] = self.paired.as_dict()
        d["verdict"] = self.verdict()
        return d

    def to_markdown(self) -> str:
        pm, bm, p = self.policy_metrics, self.baseline_metrics, self.paired
        keys = [k for k in ("accuracy", "top5", "nll", "ece", "brier") if k in pm]
        rows = ["| metric | baseline | policy | change |", "|---|---:|---:|---:|"]
        for k in keys:
            pct = k in ("accuracy", "top5", "ece")
            f = (lambda v: f"{v:.2%}") if pct else (lambda v: f"{v:.4f}")
            ch = (pm[k] - bm[k]) * (100 if pct else 1)
            rows.append(f"| {k} | {f(bm[k])} | {f(pm[k])} | {signed(ch)}{' pt' if pct else ''} |")
        rows.append(f"| forward passes per input | {self.baseline_forwards_per_input:g} | "
                    f"{self.forwards_per_input:g} | |")
        rows.append("| throughput (inputs/s) | {} | {} | |".format(*self.throughputs()))
        classes = self.classes or [str(i) for i in range(self.n_classes)]
        pc = ["| class | n | baseline acc | policy acc | fixed | broken |", "|---|---:|---:|---:|---:|---:|"]
        for row in self.per_class:
            pc.append(f"| {classes[row['class']]} | {row['n']} | {row['baseline_accuracy']:.2%} | "
                      f"{row['policy_accuracy']:.2%} | {row['fixed']} | {row['broken']} |")
        curve = ["| views | last view added | accuracy | NLL | lift |", "|---:|---|---:|---:|---:|"]
        for c in self.prefix_curve:
            curve.append(f"| {c['views']} | {c['view']} | {c['accuracy']:.2%} | {c['nll']:.4f} | "
                         f"{points(c['lift'])} pt |")
        return "\n".join([
            "# TTA evaluation", "",
            f"Policy `{self.policy}` against baseline `{self.baseline}` on {self.n} labelled inputs.", "",
            f"**{self.verdict()}**; {p.fixed} predictions fixed, {p.broken} broken "
            f"(exact McNemar p = {p.p_value:.3g}).", "",
            *rows, "",
            "Lift: paired accuracy change on the same inputs; 95% CI by bootstrapping the inputs.", "",
            *self._fair_markdown(),
            *self._adaptation_markdown(),
            "## As views are added", "",
            "Distinct views of the policy in order, merged by their mean (learned weights, if any, apply "
            "to the full policy only).", *self._curve_note(), "",
            *curve, "", *self._plot_link("lift against views", "lift_vs_views.png"),
            *self._forwards_markdown(),
            "## Calibration", "", *self._calibration_markdown(),
            "## Per class", "", *pc, "",
        ])

    def _adaptation_markdown(self) -> list[str]:
        if not self.adaptation:
            return []
        lines = ["## Test-time adaptation", "",
                 f"Both sides above ran with adapt={self.adapt!r}. Each against itself without adaptation, "
                 "on the same inputs (lift: paired accuracy change, 95% bootstrap CI):", "",
                 "| comparison | accuracy without | with | lift | 95% CI | fixed | broken | McNemar p |",
                 "|---|---:|---:|---:|---|---:|---:|---:|"]
        for r in self.adaptation:
            lines.append(f"| {r['what']} | {r['accuracy_a']:.2%} | {r['accuracy_b']:.2%} | "
                         f"{r['lift'] * 100:+.2f} pt | [{r['ci_low'] * 100:+.2f}, {r['ci_high'] * 100:+.2f}] | "
                         f"{r['fixed']} | {r['broken']} | {r['p_value']:.3g} |")
        return lines + [""]

    def _curve_note(self) -> list[str]:
        """Say why the last row of the views table and the headline differ, when they do."""
        if not self.prefix_curve:
            return []
        last, head = self.prefix_curve[-1]["accuracy"], self.policy_metrics["accuracy"]
        if abs(last - head) < 0.5 / max(1, self.n):
            return [" The last row is the headline policy's accuracy (a temperature never changes it)."]
        return [f" The last row ({last:.2%}) differs from the headline ({head:.2%}) because the headline uses the "
                "policy's own aggregation (learned weights or another merge), the rows the plain mean."]

    def _forwards_markdown(self) -> list[str]:
        if not self.forwards_curve:
            return []
        lines = ["## Cost: accuracy against forward passes", ""]
        if self.forwards_histogram:
            spread = ", ".join(f"{n} inputs at {k}" for k, n in sorted(self.forwards_histogram.items(),
                                                                        key=lambda kv: float(kv[0])))
            lines += [f"The adaptive policy ran {self.forwards_per_input:.3f} forward passes per input on average "
                      f"({spread}); its throughput above is estimated as the measured cost of one view times "
                      "that mean (every view was computed once for this report).", ""]
        lines += ["*full*: the first k distinct views for every input; *adaptive*: an input goes on to the next "
                  "stage while the margin (top probability minus the second) of its merged prediction is below "
                  "the threshold, on a fixed grid of thresholds (none picked on these labels). Stages: the "
                  "policy's own when it is adaptive, else its first view, then the rest. Every row uses the "
                  "policy's merge (a learned merge: the mean of the views).", "",
                  "| kind | policy | forwards/input | accuracy | NLL |", "|---|---|---:|---:|---:|"]
        for r in self.forwards_curve:
            lines.append(f"| {r['kind']} | `{r['policy']}` | {r['forwards']:.3f} | {r['accuracy']:.2%} | "
                         f"{r['nll']:.4f} |")
        return lines + ["", *self._plot_link("accuracy and NLL against forwards per input", "forwards_curve.png")]

    def _plot_link(self, text: str, name: str) -> list[str]:
        return [f"![{text}]({name})", ""] if name in self.plots else []

    def _calibration_markdown(self) -> list[str]:
        lines = [", ".join(f"ECE of the {name}: {ece_of(bins):.2%}" for name, bins in self.reliability.items())
                 + " (top-class confidence, 15 equal-width bins).", ""]
        return lines + self._plot_link("reliability diagram", "reliability.png")

    def _fair_markdown(self) -> list[str]:
        if not self.fair_baselines:
            return []
        rows = ["## Fair baselines", "",
                "The policy carries its own calibration (a temperature, or learned weights and a temperature), "
                "which lowers NLL and ECE without changing what TTA does. A temperature T divides the merged "
                "log-probabilities (softmax(log p / T)): T > 1 softens over-confident predictions, T < 1 "
                "sharpens the under-confident average of several views. It never changes the top class, so "
                f"accuracy is unaffected; learned weights can. So that the comparison is fair, no TTA and the "
                f"plain policy (mean of its views) get a temperature of their own: {self.calibration_note}", "",
                "| predictor | temperature | accuracy | NLL | ECE | forwards |", "|---|---:|---:|---:|---:|---:|"]
        for r in self.fair_baselines:
            rows.append(f"| {r['name']} | {r['temperature']} | {r['accuracy']:.2%} | {r['nll']:.4f} | "
                        f"{r['ece']:.2%} | {r['forwards']:g} |")
        return rows + [""]

    def save(self, folder) -> Path:
        """Write report.md, report.json and the PNG plots (with the ``plots`` extra) to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.plots = write_plots(self, folder)
        (folder / "report.md").write_text(self.to_markdown())
        (folder / "report.json").write_text(json.dumps(self.to_dict(), indent=2, default=float) + "\n")
        return folder


#: the shortest computation whose throughput the report prints
MIN_TIMED_SECONDS = 0.5
#: inputs per gallery (fixed, broken, most uncertain)
GALLERY = 12

#: merges that calibrate (a temperature, learned weights): they get calibrated baselines beside them
CALIBRATED_MERGES = ("temperature_scaled", "learned")


def _fair_baselines(model, cache, pol, base, y, p_pol, calibration, classifier_kwargs,
                    pol_forwards: float) -> tuple[list[dict], str]:
    plain = Policy(pol.unique().views, pol.unique().weights)
    candidates = [("no TTA", base, len(base.unique())), ("plain policy (mean of its views)", plain, len(plain))]
    rows = []
    if calibration is not None:
        x_cal, y_cal = calibration
        y_cal = metrics.as_labels(y_cal, len(x_cal) if hasattr(x_cal, "__len__") else None)
        params = {k: v for k, v in cache.classifier_params.items() if k not in ("model", "policy")}
        cal = PredictionCache(model, x_cal, **params)
        note = f"each T fitted on the {len(y_cal)} calibration inputs given (the tuning data)."
        for name, p, fw in candidates:
            t = fit_temperature(cal.predict(p, "mean"), y_cal)
            probs = apply_temperature(cache.predict(p, "mean"), t)
            rows.append(_fair_row(f"{name} + temperature", f"{t:.3f}", probs, y, fw))
    else:
        note = ("no calibration data was given, so each T is cross-fitted: fitted on one half of these inputs, "
                "applied to the other, and the other way round (to fit them on the tuning data: --calibrate-on "
                "tune on the command line, calibration=(x_tune, y_tune) in Python).")
        half = np.random.default_rng(0).permutation(len(y)) < len(y) // 2
        for name, p, fw in candidates:
            raw = cache.predict(p, "mean")
            probs = np.empty_like(raw)
            ts = []
            for fit_part in (half, ~half):
                t = fit_temperature(raw[fit_part], y[fit_part])
                probs[~fit_part] = apply_temperature(raw[~fit_part], t)
                ts.append(t)
            rows.append(_fair_row(f"{name} + temperature", f"{ts[0]:.3f} / {ts[1]:.3f}", probs, y, fw))
    rows.insert(0, _fair_row(f"policy as tuned ({pol.merge!r})", "its own", p_pol, y, pol_forwards))
    return rows, note


def _fair_row(name, temperature, probs, y, forwards) -> dict:
    return {"name": name, "temperature": temperature, "forwards": float(forwards), **metrics.summary(probs, y)}


def _metrics(probs, y) -> dict:
    d = metrics.summary(probs, y)
    if probs.shape[1] > 5:
        d["top5"] = metrics.top_k_accuracy(probs, y, 5)
    return d


def examples(view_probs: np.ndarray, p_base: np.ndarray, p_pol: np.ndarray, y: np.ndarray, view_names: list,
             k: int = GALLERY) -> dict:
    """The inputs of the report's galleries: up to ``k`` that TTA fixed (wrong
    without, right with), ``k`` it broke, and the ``k`` most uncertain by the
    spread across views (the standard deviation over views of the probability
    of the policy's label). Fixed and broken inputs come in order of how far
    the true class's probability moved. Each: the input's position, its true
    label, the label and confidence without and with TTA, each view's label
    (its vote) and the spread."""
    rows = np.arange(len(y))
    lab_b, lab_p = p_base.argmax(1), p_pol.argmax(1)
    votes = view_probs.argmax(2)                                   # (V, N)
    spread = view_probs[:, rows, lab_p].std(0)                     # (N,)
    moved = p_pol[rows, y] - p_base[rows, y]

    def item(i) -> dict:
        return {"index": int(i), "label": int(y[i]), "baseline": int(lab_b[i]), "policy": int(lab_p[i]),
                "baseline_confidence": float(p_base[i, lab_b[i]]), "policy_confidence": float(p_pol[i, lab_p[i]]),
                "votes": votes[:, i].tolist(), "spread": float(spread[i])}

    fixed = np.flatnonzero((lab_b != y) & (lab_p == y))
    broken = np.flatnonzero((lab_b == y) & (lab_p != y))
    return {"views": list(view_names),
            "fixed": [item(i) for i in fixed[np.argsort(-moved[fixed], kind="stable")][:k]],
            "broken": [item(i) for i in broken[np.argsort(moved[broken], kind="stable")][:k]],
            "uncertain": [item(i) for i in np.argsort(-spread, kind="stable")[:k]]}


def evaluate(model, x, y, policy, *, baseline="identity", merge=None, classes=None, cache=None,
             out=None, calibration=None, **classifier_kwargs) -> EvaluationReport:
    """Evaluate ``policy`` against ``baseline`` (default no TTA) on ``(x, y)``.

    ``merge=None`` uses the policy's own aggregation when it has one.
    ``out`` writes the Markdown report and plots there. When the policy
    carries a temperature or learned weights, the report adds no TTA and the
    plain policy, each temperature-scaled on ``calibration=(x_tune, y_tune)``
    (the data the policy was tuned on) or, without it, cross-fitted on two
    halves of ``(x, y)``."""
    y = metrics.as_labels(y, len(x) if hasattr(x, "__len__") else None)
    pol = Policy.coerce(policy)
    base = Policy.coerce(baseline)
    if cache is None:
        # a tuned policy's normalisation, layout, output kind and classes apply to the baseline too
        opts = contracted_options(pol, classes=classes, **classifier_kwargs)
        classes = opts.pop("classes")
        cache = PredictionCache(model, x, **opts)
    t0 = time.perf_counter()
    cache.ensure(pol)
    t_policy = time.perf_counter() - t0
    t0 = time.perf_counter()
    base_views = base.unique().views
    shared = all(v in cache for v in base_views)
    cache.ensure(base_views)
    t_base = time.perf_counter() - t0
    if shared:  # the baseline's views were computed with the policy's: their share of that time
        t_base = t_policy * len(base_views) / len(pol.unique())
    uniq = pol.unique()
    histogram = {}
    if isinstance(pol, AdaptivePolicy):
        # what each input gets when the stages run: the views' outputs are all cached, the rules decide
        p_pol, fwd = simulate(pol if merge is None else pol.with_merge(get_merge(merge)), cache.stack(uniq.views))
        forwards = float(fwd.mean())
        histogram = {str(int(k)): int(n) for k, n in zip(*np.unique(fwd, return_counts=True))}
    else:
        p_pol, forwards = cache.predict(pol, merge), float(len(uniq))
    p_base = cache.predict(base, None)
    n_classes = p_pol.shape[1]
    if y.max() >= n_classes:
        raise InputError(f"labels go up to {y.max()} but the model returns {n_classes} classes")
    ok_b, ok_p = p_base.argmax(1) == y, p_pol.argmax(1) == y
    per_class = []
    for c in range(n_classes):
        m = y == c
        if m.any():
            per_class.append({"class": c, "n": int(m.sum()), "baseline_accuracy": float(ok_b[m].mean()),
                              "policy_accuracy": float(ok_p[m].mean()), "fixed": int((~ok_b[m] & ok_p[m]).sum()),
                              "broken": int((ok_b[m] & ~ok_p[m]).sum())})
    curve = []
    base_acc = float(ok_b.mean())
    for k in range(1, len(uniq) + 1):
        sub = Policy(uniq.views[:k], uniq.weights[:k])
        pk = cache.predict(sub, "mean")
        acc = metrics.accuracy(pk, y)
        curve.append({"views": k, "view": repr(uniq.views[k - 1]), "accuracy": acc,
                      "nll": metrics.nll(pk, y), "lift": acc - base_acc})
    report = EvaluationReport(
        policy=pol.spec, baseline=base.spec, n=len(y), n_classes=n_classes,
        policy_metrics=_metrics(p_pol, y), baseline_metrics=_metrics(p_base, y),
        paired=paired_accuracy(ok_b, ok_p), per_class=per_class,
        forwards_per_input=forwards, baseline_forwards_per_input=float(len(base.unique())),
        throughput=len(y) * len(uniq) / (t_policy * forwards) if t_policy > 0 else float("nan"),
        baseline_throughput=len(y) / t_base if t_base > 0 else float("nan"),
        prefix_curve=curve,
        reliability={"baseline": metrics.reliability(p_base, y), "policy": metrics.reliability(p_pol, y)},
        classes=list(classes) if classes is not None else None,
        forwards_histogram=histogram, timed_seconds=t_policy,
        examples=examples(cache.stack(uniq.views), p_base, p_pol, y, [repr(v) for v in uniq.views]),
    )
    if len(uniq) > 1:
        curve_policy = pol if merge is None else pol.with_merge(get_merge(merge))
        report.forwards_curve = cost_curve(curve_policy, cache.stack(uniq.views), y)
    if merge is None and pol.merge is not None and getattr(pol.merge, "name", "") in CALIBRATED_MERGES:
        report.fair_baselines, report.calibration_note = _fair_baselines(
            model, cache, pol, base, y, p_pol, calibration, classifier_kwargs, forwards)
    adapt = classifier_kwargs.get("adapt")
    if adapt is not None and adapt != "none":
        report.adapt = adapt if isinstance(adapt, str) else adapt.name
        report.adaptation = _adaptation_pairs(model, x, y, pol, base, merge, classes, classifier_kwargs,
                                              p_base, p_pol)
    if out is not None:
        report.save(out)
    return report


def _adaptation_pairs(model, x, y, pol, base, merge, classes, classifier_kwargs, p_base, p_pol) -> list[dict]:
    """The adapted baseline and policy, each paired against itself without adaptation."""
    plain_kwargs = {k: v for k, v in classifier_kwargs.items() if k != "adapt"}
    opts = contracted_options(pol, classes=classes, **plain_kwargs)
    opts.pop("classes")
    plain = PredictionCache(model, x, **opts)
    rows = [("baseline + adaptation vs baseline", plain.predict(base, None), p_base)]
    if not isinstance(pol, AdaptivePolicy):
        rows.append(("policy + adaptation vs policy", plain.predict(pol, merge), p_pol))
    return [{"what": what, **paired_accuracy(a.argmax(1) == y, b.argmax(1) == y).as_dict()} for what, a, b in rows]
