"""The HTML page of a detection, segmentation or keypoint evaluation
(:class:`~ttakit.io.dense_eval.DenseReport`: the report arrives from above,
its fields read by name), and the drawn predictions of ``ttakit predict
--task ... --draw DIR``.

Galleries: the images TTA helped and hurt most by their own score (AP of
their boxes or keypoints, mean IoU of their mask) and the most uncertain
(detection: the share of missing view votes among the boxes drawn;
segmentation: the mean per-pixel variance across views; keypoints: the
mean distance of the views' points from the merged point). Detection shows
no TTA | TTA | ground truth with boxes drawn; segmentation the image with
its true mask, the two predicted masks and the per-pixel variance map;
keypoints the points and skeletons.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..evaluation.formatting import signed
from .classification import tone
from .draw import draw_boxes, draw_keypoints, heatmap, overlay_mask, thumbnail
from .page import Page, esc, image, markdown_table
from .svg import bars

TITLES = {"helped": ("Images TTA helped", "their own score rose most"),
          "hurt": ("Images TTA hurt", "their own score fell most"),
          "uncertain": ("Most uncertain images", "where the views disagree most"),
          "examples": ("Examples", "no image's score changed and the views agree: the first images")}
SCORE = {"detect": "AP", "segment": "mean IoU", "keypoints": "OKS AP"}
UNCERTAINTY = {"detect": "missing view votes per box", "segment": "mean per-pixel variance",
               "keypoints": "mean point spread (px)"}


def write_dense(report, out) -> Path:
    """``index.html`` and its images (``img/``) for a dense ``report`` in ``out``."""
    out = Path(out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    page = Page(f"TTA evaluation: {report.task}")
    page.text(f"{report.n_images} images; policy {report.policy} merged by {report.merge} against baseline "
              f"{report.baseline} ({report.baseline_merge}).")
    first = next(iter(report.paired.values()), None)
    if first is not None:
        page.verdict(f"{first['metric']}: {first['a']:.4f} without TTA, {first['b']:.4f} with; difference "
                     f"{signed(first['difference'], 4)} [{signed(first['ci_low'], 4)}, {signed(first['ci_high'], 4)}]"
                     f" (95% CI over images); images helped: {first['improved']}, hurt: {first['worsened']}",
                     tone(first["ci_low"], first["ci_high"]))
    page.heading("Paired comparison").raw(markdown_table(report.to_markdown()))
    if report.task == "segment":
        _class_iou(page, report)
    seen: dict[int, str] = {}
    for kind, (title, what) in TITLES.items():
        items = report.examples.get(kind, [])
        page.heading(f"{title} ({len(items)} shown)")
        page.text(f"{what}; score: each image's own {SCORE[report.task]}; uncertainty: "
                  f"{UNCERTAINTY[report.task]}.", "note")
        if not items:
            page.text("None.", "note")
            continue
        cards = []
        for ex in items:
            if id(ex) not in seen:
                seen[id(ex)] = _card(report, ex, out, len(seen))
            cards.append(seen[id(ex)])
        page.raw('<div class="gallery">' + "".join(cards) + "</div>")
    return page.write(out)


def _class_iou(page: Page, report) -> None:
    per = report.settings.get("iou_per_class") or {}
    a, b = per.get("baseline"), per.get("policy")
    if not a or not b:
        return
    keep = [k for k in range(len(a)) if np.isfinite(a[k]) and np.isfinite(b[k])]
    names = report.names
    labels = [str(names[k]) if names and k < len(names) else f"class {k}" for k in keep]
    page.heading("Per-class IoU change")
    page.raw(bars(labels, [(b[k] - a[k]) * 100 for k in keep], " pt", "IoU with TTA minus without, points"))


def _panels(report, ex) -> list[tuple[str, object]]:
    """The drawn images of one example: ``[(caption, PIL image)]``."""
    base, f = thumbnail(ex["image"], large=300)
    lw = 2
    if report.task == "detect":
        panels = []
        for cap, o in (("no TTA", ex["baseline"]), ("TTA", ex["policy"]),
                       ("ground truth", ex["truth"])):
            panels.append((cap, draw_boxes(base.copy(), o["boxes"], o["labels"], o.get("scores"), report.names,
                                           f, width=lw)[0]))
        return panels
    if report.task == "segment":
        panels = [("ground truth", overlay_mask(base.copy(), ex["truth"], names=report.names)),
                  ("no TTA", overlay_mask(base.copy(), ex["baseline"], names=report.names)),
                  ("TTA", overlay_mask(base.copy(), ex["policy"], names=report.names))]
        if "variance" in ex:
            panels.append(("variance across views", heatmap(ex["variance"], base.size)))
        return panels
    truth = base.copy()
    for person in ex["truth"]["keypoints"]:
        draw_keypoints(truth, person[:, :2], person[:, 2], f, colour_of=1, min_confidence=0.5)
    return [("no TTA", draw_keypoints(base.copy(), ex["baseline"]["points"], scale=f)),
            ("TTA", draw_keypoints(base.copy(), ex["policy"]["points"], scale=f)), ("ground truth", truth)]


def _card(report, ex, out: Path, number: int) -> str:
    figs = []
    for j, (cap, im) in enumerate(_panels(report, ex)):
        name = f"img/{report.task}_{number}_{j}.png"
        im.save(out / name, compress_level=1)
        alt = f"{cap}: {Path(ex['path']).name}"
        figs.append(f"<figure>{image(name, alt)}<figcaption>{esc(cap)}</figcaption></figure>")
    a, b = ex.get("scores", (float("nan"), float("nan")))
    extra = f"; uncertainty {ex['uncertainty']:.3g}" if "uncertainty" in ex else ""
    return (f'<div class="card {"xwide" if len(figs) > 3 else "wide"}" style="--w:{240 * len(figs)}px">'
            f'<div class="row">{"".join(figs)}</div><div>{esc(Path(ex["path"]).name)}: {SCORE[report.task]} '
            f"{a:.3f} &rarr; {b:.3f}{esc(extra)}</div></div>")


def draw_predictions(pred, out, names=None) -> list[Path]:
    """Each image of ``pred`` (a :class:`~ttakit.io.dense.DensePredictions`)
    with its predictions drawn at its own size, as ``out/<stem>.png``: boxes
    with class names and scores, label maps as coloured overlays, keypoints
    and skeletons. ``names``: class names by label. Returns the files written."""
    from PIL import Image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for path, o in zip(pred.paths, pred.outputs):
        with Image.open(path) as src:
            im = src.convert("RGB")
        side = max(im.size)
        if pred.task == "detect":
            draw_boxes(im, o["boxes"], o["labels"], o["scores"], names, width=max(2, side // 320),
                       font_size=max(11, side // 60))
        elif pred.task == "segment":
            im = overlay_mask(im, o, names=names)
        else:
            draw_keypoints(im, o["points"], radius=max(3, side // 150))
        stem = Path(path).stem
        name = f"{stem}.png" if f"{stem}.png" not in used else f"{stem}.{len(used)}.png"
        used.add(name)
        im.save(out / name)
        written.append(out / name)
    return written


__all__ = ["write_dense", "draw_predictions", "TITLES"]
