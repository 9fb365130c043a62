"""The PNG plots of an evaluation report (matplotlib, the ``plots`` extra).

:func:`write_plots` draws what the report has data for and returns the
file names written: the lift as views are added (two views or more; integer
ticks), accuracy and NLL against forward passes per input, and the
reliability diagram with each curve's ECE and the inputs per confidence bin.
Without matplotlib it writes nothing, warns once naming the extra, and the
report links no plot.
"""

from __future__ import annotations

import warnings

from ..errors import TTAKitWarning

PLOTS_MISSING = "matplotlib is not installed, so the report has no plots: pip install 'ttakit[plots]'"


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None (with one warning) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn(PLOTS_MISSING, TTAKitWarning, stacklevel=3)
        return None
    return plt


def write_plots(report, folder) -> list[str]:
    """The plots of ``report`` (an :class:`~ttakit.evaluation.EvaluationReport`)
    written into ``folder``; their file names."""
    plt = pyplot()
    if plt is None:
        return []
    written = []
    if len(report.prefix_curve) > 1:
        written.append(_lift_vs_views(plt, report.prefix_curve, folder))
    if report.forwards_curve:
        written.append(_forwards_curve(plt, report.forwards_curve, folder))
    if report.reliability:
        written.append(_reliability(plt, report.reliability, folder))
    return written


def _save(plt, fig, folder, name: str) -> str:
    fig.savefig(folder / name, dpi=100)
    plt.close(fig)
    return name


def _lift_vs_views(plt, curve: list[dict], folder) -> str:
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 3.8))
    ks = [c["views"] for c in curve]
    ax.axhline(0, color="grey", lw=1)
    a = ax.plot(ks, [c["lift"] * 100 for c in curve], "-o", label="accuracy lift (points)")
    ax.set_xlabel("distinct views")
    ax.set_ylabel("lift vs baseline (points)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(min(ks) - 0.3, max(ks) + 0.3)
    ax2 = ax.twinx()
    b = ax2.plot(ks, [c["nll"] for c in curve], "--s", color="tab:orange", label="NLL")
    ax2.set_ylabel("NLL")
    ax.set_title("Lift as views are added", fontsize=10)
    # below the axes: a legend inside would cover the last views' points
    fig.legend(a + b, [h.get_label() for h in a + b], loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _save(plt, fig, folder, "lift_vs_views.png")


def _forwards_curve(plt, rows: list[dict], folder) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.9))
    styles = {"full": ("-o", "all inputs, first k views"), "adaptive": ("--s", "adaptive (margin grid)"),
              "policy": ("*", "this adaptive policy")}
    handles = {}
    for ax, key, label in ((axes[0], "accuracy", "accuracy (%)"), (axes[1], "nll", "NLL")):
        for kind, (style, name) in styles.items():
            pts = sorted((r["forwards"], r[key] * (100 if key == "accuracy" else 1))
                         for r in rows if r["kind"] == kind)
            if pts:
                handles[name], = ax.plot(*zip(*pts), style, ms=9 if kind == "policy" else 4, label=name)
        ax.set_xlabel("forward passes per input (mean)")
        ax.set_ylabel(label)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles), fontsize=8,
               frameon=False)
    fig.suptitle("Accuracy and NLL against cost", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _save(plt, fig, folder, "forwards_curve.png")


def _reliability(plt, reliability: dict, folder) -> str:
    import numpy as np

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 5.6), sharex=True, gridspec_kw={"height_ratios": (3, 1.2)})
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":")
    names = list(reliability)
    width = 1 / 15 / (len(names) + 1)
    for j, name in enumerate(names):
        bins = reliability[name]
        pts = [(c, a) for c, a, n in bins if n > 0]
        if pts:
            ax.plot(*zip(*pts), "-o", ms=3, label=f"{name} (ECE {ece_of(bins):.2%})")
        edges = np.linspace(0, 1, len(bins) + 1)
        hist.bar(edges[:-1] + (j + 0.5) * width, [n for _, _, n in bins], width=width, align="edge", label=name)
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability (top-class confidence, 15 equal bins)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    hist.set_yscale("log")
    hist.set_ylabel("inputs per bin")
    hist.set_xlabel("confidence")
    hist.set_xlim(0, 1)
    fig.tight_layout()
    return _save(plt, fig, folder, "reliability.png")


def ece_of(bins) -> float:
    """The expected calibration error from reliability bins ``(confidence, accuracy, count)``."""
    total = sum(n for _, _, n in bins)
    return sum(n * abs(a - c) for c, a, n in bins if n > 0) / total if total else float("nan")


__all__ = ["PLOTS_MISSING", "pyplot", "write_plots", "ece_of"]
