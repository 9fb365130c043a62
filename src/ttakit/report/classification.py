"""The HTML page of a classification evaluation
(:class:`~ttakit.evaluation.EvaluationReport`): the verdict, the paired
table, the plots, the per-class lift, and galleries of the inputs TTA fixed
and broke and of the most uncertain ones, each with its true label, the
label without and with TTA and every view's vote."""

from __future__ import annotations

from pathlib import Path

from ..evaluation.formatting import points
from ..evaluation.plots import ece_of
from .draw import class_name, thumbnail
from .page import Page, esc, image, markdown_table, table
from .svg import bars

GALLERIES = (("fixed", "Inputs TTA fixed", "wrong without TTA, right with it; the largest gains of the true class's "
              "probability first"),
             ("broken", "Inputs TTA broke", "right without TTA, wrong with it; the largest losses first"),
             ("uncertain", "Most uncertain inputs", "by the spread across views: the standard deviation over the "
              "views of the probability of the label TTA gives"))


def tone(lift_low: float, lift_high: float) -> str:
    return "good" if lift_low > 0 else "bad" if lift_high < 0 else "neutral"


def write_classification(report, out, x=None, layout: str = "NHWC") -> Path:
    """``index.html`` (and its thumbnails under ``img/``) for ``report`` in
    the folder ``out`` (beside what :meth:`EvaluationReport.save` wrote).
    ``x``: the evaluated inputs in ``layout`` (NHWC or NCHW), for the
    galleries; without them the galleries list the inputs by position."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = report.classes
    p = report.paired
    page = Page("TTA evaluation")
    page.text(f"Policy {report.policy} against baseline {report.baseline} on {report.n} labelled inputs.")
    page.verdict(f"{report.verdict()}; {p.fixed} predictions fixed, {p.broken} broken "
                 f"(exact McNemar p = {p.p_value:.3g})", tone(p.ci_low, p.ci_high))
    page.heading("Paired comparison").raw(markdown_table(report.to_markdown()))
    page.text("Lift: paired accuracy change on the same inputs; 95% CI by bootstrapping the inputs.", "note")
    _plots(page, report)
    _per_class(page, report, names)
    _galleries(page, report, out, x, layout, names)
    _views(page, report)
    return page.write(out)


def _plots(page: Page, report) -> None:
    page.heading("Plots")
    if report.plots:
        page.raw('<div class="plots">' + "".join(image(f, f.removesuffix(".png").replace("_", " "))
                                                 for f in report.plots) + "</div>")
    else:
        page.text("No plots: they need matplotlib (pip install 'ttakit[plots]').", "note")
    if len(report.prefix_curve) < 2:
        page.text("The policy has one distinct view: there is no curve of views to draw.", "note")
    rows = []
    for name, bins in report.reliability.items():
        rows.append([f"{name} (ECE {ece_of(bins):.2%})"] + [str(n) for _, _, n in bins])
    if rows:
        k = len(next(iter(report.reliability.values())))
        header = ["inputs per confidence bin"] + [f"{i / k:.2f}-{(i + 1) / k:.2f}" for i in range(k)]
        page.raw("<details><summary>Reliability: inputs per bin and ECE</summary>" + table(header, rows)
                 + "</details>")


def _per_class(page: Page, report, names) -> None:
    if not report.per_class:
        return
    page.heading("Per-class lift")
    labels = [f"{class_name(names, r['class'])} (n={r['n']})" for r in report.per_class]
    values = [(r["policy_accuracy"] - r["baseline_accuracy"]) * 100 for r in report.per_class]
    page.raw(bars(labels, values, " pt", "accuracy with TTA minus without, percentage points"))


def _thumb(x, layout: str, index: int, folder: Path) -> str:
    name = f"img/input_{index}.png"
    path = folder / name
    if not path.exists():
        img = x[index]
        im, _ = thumbnail(img if layout.upper() == "NHWC" else img.transpose(1, 2, 0))
        im.save(path, optimize=False, compress_level=1)
    return name


def _card(item: dict, names, views: list[str], src: str | None) -> str:
    true = item["label"]

    def said(lab, conf) -> str:
        cls = "ok" if lab == true else "wrong"
        return f'<span class="{cls}">{esc(class_name(names, lab))}</span> {conf:.2f}'

    votes = ", ".join(f'<span title="{esc(v)}">{esc(class_name(names, lab))}</span>'
                      for v, lab in zip(views, item["votes"]))
    pic = image(src, f"input {item['index']}") if src else ""
    return (f'<div class="card">{pic}<div>#{item["index"]} true: <b>{esc(class_name(names, true))}</b></div>'
            f'<div>no TTA: {said(item["baseline"], item["baseline_confidence"])}</div>'
            f'<div>TTA: {said(item["policy"], item["policy_confidence"])}</div>'
            f'<div class="votes">votes: {votes}</div><div class="votes">spread {item["spread"]:.3f}</div></div>')


def _galleries(page: Page, report, out: Path, x, layout: str, names) -> None:
    ex = report.examples or {}
    if x is not None:
        (out / "img").mkdir(exist_ok=True)
    for key, title, what in GALLERIES:
        items = ex.get(key) or []
        page.heading(f"{title} ({len(items)} shown)")
        page.text(what + ". Hover a vote for its view.", "note")
        if not items:
            page.text("None.", "note")
            continue
        cards = [_card(it, names, ex.get("views", []), _thumb(x, layout, it["index"], out) if x is not None
                       else None) for it in items]
        page.raw('<div class="gallery">' + "".join(cards) + "</div>")


def _views(page: Page, report) -> None:
    if not report.prefix_curve:
        return
    page.heading("As views are added")
    rows = [[c["views"], c["view"], f"{c['accuracy']:.2%}", f"{c['nll']:.4f}", f"{points(c['lift'])} pt"]
            for c in report.prefix_curve]
    page.raw(table(["views", "last view added", "accuracy", "NLL", "lift"], rows))


__all__ = ["write_classification", "GALLERIES"]
