"""Comparison of policies over one or more models, paired against a baseline,
rendered as a table, Markdown and a PNG plot."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..evaluation import metrics, paired


@dataclass
class Arm:
    """One policy evaluated on every model: per model, probabilities of the
    test set and the forward passes per image it cost."""

    name: str
    spec: str
    forwards_per_image: float
    probs: list[np.ndarray] = field(default_factory=list)


@dataclass
class Comparison:
    """Paired results of several arms against ``arms[0]`` (the baseline)."""

    arms: list[Arm]
    labels: np.ndarray
    models: list[str]

    def rows(self) -> list[dict]:
        base = self.arms[0]
        out = []
        for arm in self.arms:
            accs = [metrics.accuracy(p, self.labels) for p in arm.probs]
            nlls = [metrics.nll(p, self.labels) for p in arm.probs]
            eces = [metrics.ece(p, self.labels) for p in arm.probs]
            per_model = [paired.paired_accuracy(b.argmax(1) == self.labels, p.argmax(1) == self.labels)
                         for b, p in zip(base.probs, arm.probs)]
            lifts = [r.lift for r in per_model]
            if len(lifts) >= 2:
                lift, lo, hi = paired.mean_ci(lifts)
                p_value = paired.paired_t_pvalue(lifts)
                test = "paired t over models"
            else:
                r = per_model[0]
                lift, lo, hi, p_value, test = r.lift, r.ci_low, r.ci_high, r.p_value, "McNemar exact"
            out.append({
                "policy": arm.name,
                "spec": arm.spec,
                "accuracy_mean": float(np.mean(accs)),
                "accuracy_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
                "accuracy_per_model": accs,
                "nll_mean": float(np.mean(nlls)),
                "ece_mean": float(np.mean(eces)),
                "lift": lift, "lift_ci_low": lo, "lift_ci_high": hi,
                "fixed_mean": float(np.mean([r.fixed for r in per_model])),
                "broken_mean": float(np.mean([r.broken for r in per_model])),
                "p_value": p_value, "test": test,
                "mcnemar_p_per_model": [r.p_value for r in per_model],
                "forwards_per_image": arm.forwards_per_image,
            })
        return out

    # -- rendering ----------------------------------------------------------
    def table(self, rows=None) -> str:
        rows = rows or self.rows()
        r = len(self.models)
        head = ["policy", "accuracy" + (" (mean ± std)" if r > 1 else ""), "NLL", "lift vs no TTA [95% CI]",
                "fixed/broken" + (" per model" if r > 1 else ""), "p", "fwd/img"]
        lines = [head]
        for i, row in enumerate(rows):
            acc = f"{row['accuracy_mean']:.2%}" + (f" ± {row['accuracy_std']:.2%}" if r > 1 else "")
            if i == 0:
                lift, fb, p = "(baseline)", "", ""
            else:
                lift = f"{row['lift'] * 100:+.2f} pt [{_pt(row['lift_ci_low'])}, {_pt(row['lift_ci_high'])}]"
                fb = f"{row['fixed_mean']:.0f}/{row['broken_mean']:.0f}"
                p = _p(row["p_value"])
            fwd = f"{row['forwards_per_image']:g}"
            lines.append([row["policy"], acc, f"{row['nll_mean']:.4f}", lift, fb, p, fwd])
        return _markdown(lines)

    def to_json(self, path: Path, extra: dict | None = None) -> None:
        data = {"models": self.models, "n_test": int(len(self.labels)), "rows": self.rows(), **(extra or {})}
        Path(path).write_text(json.dumps(data, indent=2, default=_json_default) + "\n")

    def plot(self, path: Path, title: str) -> Path | None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        rows = self.rows()
        fig, ax = plt.subplots(figsize=(max(6.0, 1.25 * len(rows)), 4.2))
        xs = np.arange(len(rows))
        per_model = np.array([row["accuracy_per_model"] for row in rows]) * 100  # (arms, models)
        for m in range(per_model.shape[1]):
            ax.plot(xs, per_model[:, m], "-o", color="tab:blue", alpha=0.35, lw=1, ms=3,
                    label="one trained model" if m == 0 else None)
        ax.plot(xs, per_model.mean(1), "-s", color="black", lw=2, ms=6, label="mean over models")
        ax.set_xticks(xs, [row["policy"] for row in rows], rotation=25, ha="right", fontsize=8)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return Path(path)


def _pt(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 100:+.2f}"


def _p(v: float) -> str:
    if v is None or math.isnan(v):
        return "n/a"
    return "<1e-4" if v < 1e-4 else f"{v:.3g}"


def _markdown(lines: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in lines) for i in range(len(lines[0]))]
    fmt = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(lines[0]), sep] + [fmt(r) for r in lines[1:]])


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def write_summary(summary: dict, markdown: str, out, stem: str) -> Path:
    """``out/stem.json`` (the summary) and ``out/stem.md`` (its report); the path of the report."""
    from ..files import write_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"{stem}.json", json.dumps(summary, indent=1) + "\n")
    write_atomic(out / f"{stem}.md", markdown)
    return out / f"{stem}.md"
