"""Segmentation TTA on real models and real images, one section per model
and data set; ``ttakit reproduce segmentation`` runs them and writes one
report.

Sections (:data:`SECTIONS`, name -> (run, render)): each ``run(cfg, log)``
returns a JSON-able dict (with ``"section"``: its name) and may write
figures into ``cfg.out``; each ``render(section)`` returns its markdown.
:func:`run` collects the sections named in ``cfg.sections``, :func:`render`
joins their markdown under one title. A new section is a pair of functions
added to :data:`SECTIONS`.

``mediapipe``: MediaPipe's selfie segmentation (general model) on the 170
Penn-Fudan street images, person vs background, used as a user would: the
per-image callable :class:`ttakit.zoo.mediapipe.SelfieSegmentation`
through :class:`ttakit.Segmenter`. Every arm runs on every image in turn
(interleaved, so a busy machine slows all arms alike); person IoU and Dice
pool the pixels of all images, each TTA arm is paired with no TTA on the
same images (bootstrap CI over images; images whose own IoU rose or fell by
more than 0.01).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..evaluation.dense import paired_segmentation, segmentation_scores
from .report import write_summary

#: (name, policy) of the MediaPipe section; the first is the baseline
MEDIAPIPE_ARMS = [
    ("no TTA", "identity"),
    ("hflip", "identity + hflip"),
    ("scales 0.8, 1, 1.25", "scale(0.8, 1, 1.25)"),
    ("hflip x scales", "hflips * scale(0.8, 1, 1.25)"),
]
FIGURE = "segmentation-uncertainty.png"


@dataclass
class SegmentationConfig:
    shared: str = "../shared"
    limit: int | None = None
    n_boot: int = 1000
    sections: tuple = ("mediapipe",)
    out: str = "results/segmentation"


def penn_fudan(root: Path, limit: int | None = None):
    """``(stems, images, person masks)``: RGB ``uint8`` images and 0/1 masks
    (any pedestrian) of ``data/penn-fudan``, sorted by file name."""
    from PIL import Image

    folder = root / "data" / "penn-fudan"
    files = sorted((folder / "JPEGImages").glob("*.jpg"))[:limit]
    if not files:
        raise InputError(f"no Penn-Fudan images under {folder / 'JPEGImages'} (see its README)")
    images = [np.array(Image.open(f).convert("RGB")) for f in files]
    masks = [(np.asarray(Image.open(folder / "PedMasks" / f"{f.stem}_mask.png")) > 0).astype(np.int64)
             for f in files]
    return [f.stem for f in files], images, masks


def run_mediapipe(cfg: SegmentationConfig, log=print) -> dict:
    from ..tasks.segmentation import Segmenter
    from ..zoo.mediapipe import MEDIAPIPE_VERSION, SelfieSegmentation, import_mediapipe

    import_mediapipe()
    load0 = os.getloadavg()[0]
    stems, images, masks = penn_fudan(Path(cfg.shared), cfg.limit)
    model = SelfieSegmentation(model_selection=0)
    timed = {name: _Timed(model) for name, _ in MEDIAPIPE_ARMS}  # the model's own share of each arm's time
    segs = {name: Segmenter(timed[name], policy, "mean", data_layout="NHWC", output="probs") for name, policy in MEDIAPIPE_ARMS}
    segs["no TTA"].run(images[0][None])  # build the MediaPipe graph before timing
    timed["no TTA"].seconds = 0.0
    labels = {name: [] for name in segs}
    seconds = dict.fromkeys(segs, 0.0)
    wrong_var = {name: [0.0, 0, 0.0, 0] for name in segs}  # variance sum/count on wrong, right pixels
    for i, (img, gt) in enumerate(zip(images, masks)):
        for name, seg in segs.items():
            t0 = time.perf_counter()
            res = seg.run(img[None])
            seconds[name] += time.perf_counter() - t0
            lab = res.labels[0]
            labels[name].append(lab)
            wrong = lab != gt
            acc = wrong_var[name]
            acc[0] += float(res.variance[0][wrong].sum())
            acc[1] += int(wrong.sum())
            acc[2] += float(res.variance[0][~wrong].sum())
            acc[3] += int((~wrong).sum())
        if (i + 1) % 50 == 0:
            log(f"  {i + 1}/{len(images)} images")
    arms = []
    base = MEDIAPIPE_ARMS[0][0]
    for name, policy in MEDIAPIPE_ARMS:
        s = segmentation_scores(labels[name], masks, 2)
        acc = wrong_var[name]
        r = {"arm": name, "policy": policy, "views": len(segs[name].run_policy),
             "person_iou": s["iou_per_class"][1], "person_dice": s["dice_per_class"][1], "miou": s["miou"],
             "ms_per_image": 1000 * seconds[name] / len(images),
             "model_ms_per_image": 1000 * timed[name].seconds / len(images),
             "variance_wrong": acc[0] / max(acc[1], 1), "variance_right": acc[2] / max(acc[3], 1)}
        if name != base:
            r["paired_iou"] = paired_segmentation(labels[base], labels[name], masks, 2, metric="iou", classes=[1],
                                                  n_boot=cfg.n_boot).as_dict()
            r["paired_dice"] = paired_segmentation(labels[base], labels[name], masks, 2, metric="dice",
                                                   classes=[1], n_boot=cfg.n_boot).as_dict()
        arms.append(r)
        log(f"{name}: person IoU {r['person_iou']:.4f}, Dice {r['person_dice']:.4f}, "
            f"{r['ms_per_image']:.1f} ms/image")
    fig = _figure(cfg, stems, images, masks, labels, segs, log)
    return {"load_average": [load0, os.getloadavg()[0]], "section": "mediapipe", "model": f"MediaPipe {MEDIAPIPE_VERSION} selfie segmentation, general "
            "(model_selection=0)", "data": "data/penn-fudan", "n_images": len(images),
            "n_boot": cfg.n_boot, "arms": arms, "figure": fig}


class _Timed:
    """A model callable that adds up the seconds spent inside it."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, batch):
        t0 = time.perf_counter()
        try:
            return self.fn(batch)
        finally:
            self.seconds += time.perf_counter() - t0


def _figure(cfg, stems, images, masks, labels, segs, log) -> dict | None:
    """One image's merged person probability and per-pixel variance and
    agreement under the largest policy: the image whose own IoU that
    policy changed the most."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no figure")
        return None
    name = MEDIAPIPE_ARMS[-1][0]
    base = MEDIAPIPE_ARMS[0][0]

    def iou(lab, gt):
        return ((lab == 1) & (gt == 1)).sum() / max(((lab == 1) | (gt == 1)).sum(), 1)

    change = [iou(b, g) - iou(a, g) for a, b, g in zip(labels[base], labels[name], masks)]
    i = int(np.argmax(np.abs(change)))
    res = segs[name].run(images[i][None])
    panels = [(images[i], "image", None), (masks[i], "ground truth (person)", "gray"),
              (res.probs[0, 1], f"merged P(person), {name}", "magma"),
              (np.sqrt(res.variance[0]), "std over views of P(label)", "viridis"),
              (res.agreement[0], "share of views agreeing", "viridis")]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for ax, (img, title, cmap) in zip(axes, panels):
        shown = ax.imshow(img, cmap=cmap, vmin=None if cmap is None else 0, vmax=None if cmap is None else
                          (1 if "std" not in title else None))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        if cmap not in (None, "gray"):
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
    fig.suptitle(f"Penn-Fudan {stems[i]}: person IoU {iou(labels[base][i], masks[i]):.3f} without TTA, "
                 f"{iou(labels[name][i], masks[i]):.3f} with {name}", fontsize=10)
    fig.tight_layout()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / FIGURE, dpi=80)
    plt.close(fig)
    return {"file": FIGURE, "image": stems[i], "arm": name, "iou_without": float(iou(labels[base][i], masks[i])),
            "iou_with": float(iou(labels[name][i], masks[i]))}


def _load_sentence(sec: dict) -> str:
    load = sec.get("load_average")
    where = "" if not load else f" (1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end)"
    return (f"The 2-core machine was shared with other jobs{where}: absolute times are inflated by the load, the "
            "ratios less so, as the arms ran image by image in turn.")


def render_mediapipe(sec: dict) -> str:
    base = sec["arms"][0]
    lines = [
        f"## MediaPipe selfie segmentation on Penn-Fudan ({sec['n_images']} images)", "",
        f"{sec['model']} through `ttakit.Segmenter` (the per-image callable "
        "`ttakit.zoo.mediapipe.SelfieSegmentation`, `data_layout=\"NHWC\"`, merge `mean` of the person "
        f"probabilities, label = the larger class) on every image of `{sec['data']}`; the ground truth is every "
        "annotated pedestrian's mask (person vs background; the data set leaves some small or occluded people "
        "in the background unannotated, so finding them counts against the model). The model was trained for "
        "selfies and video calls, not street scenes. Person IoU and Dice pool the pixels of all images. "
        f"*Difference*: paired against no TTA on the same images, 95% bootstrap CI over images "
        f"({sec['n_boot']} resamples); *helped/hurt*: images whose own person IoU (or Dice) rose/fell by more "
        "than 0.01. Time: wall time per image of `Segmenter.run` (MediaPipe itself plus ttakit's views and "
        "merge; in brackets the time inside the MediaPipe callable), all arms interleaved image by image on a "
        "shared 2-core CPU.", "",
        "| arm | views | person IoU | IoU difference [95% CI] | helped/hurt | person Dice | "
        "Dice difference [95% CI] | helped/hurt | ms/image (in MediaPipe) | time vs no TTA |",
        "|---|---:|---:|---|---|---:|---|---|---:|---:|"]
    for r in sec["arms"]:
        cells = []
        for key in ("paired_iou", "paired_dice"):
            p = r.get(key)
            cells += (["(baseline)", ""] if p is None else
                      [f"{p['difference']:+.4f} [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]",
                       f"{p['improved']}/{p['worsened']}"])
        lines.append(f"| {r['arm']} (`{r['policy']}`) | {r['views']} | {r['person_iou']:.4f} | {cells[0]} | "
                     f"{cells[1]} | {r['person_dice']:.4f} | {cells[2]} | {cells[3]} | "
                     f"{r['ms_per_image']:.1f} ({r['model_ms_per_image']:.1f}) | "
                     f"{r['ms_per_image'] / base['ms_per_image']:.2f}x |")
    tta = sec["arms"][1:]
    best = max(tta, key=lambda r: r["person_iou"])
    up = [r["arm"] for r in tta if r["paired_iou"]["ci_low"] > 0]
    down = [r["arm"] for r in tta if r["paired_iou"]["ci_high"] < 0]
    flat = [r["arm"] for r in tta if r["arm"] not in up + down]
    lines += ["", f"Without TTA the person IoU is {base['person_iou']:.3f} (the model README's decoding check: "
                  f"about 0.688). Best arm: {best['arm']}, {100 * best['paired_iou']['difference']:+.1f} IoU points "
                  f"at {best['ms_per_image'] / base['ms_per_image']:.1f}x the time. "
                  f"TTA helps (CI above zero): {', '.join(up) or 'none'}; hurts (CI below zero): "
                  f"{', '.join(down) or 'none'}; no difference the CI can tell from zero: {', '.join(flat) or 'none'}."]
    lines += ["", "Time outside MediaPipe (ttakit's views, de-augmentation, merge and uncertainty maps, and the "
                  "uint8 round trip of the wrapper) per image: "
              + ", ".join(f"{r['arm']} {r['ms_per_image'] - r['model_ms_per_image']:.0f} ms" for r in sec["arms"])
              + ". With a model this fast (a 256x256 input whatever the image size) it is most of the cost: "
                "flips are exact copies, but each scale view resamples the full-size image and brings its "
                "probabilities back by bilinear resampling with a coverage mask. " + _load_sentence(sec)]
    lines += ["", "Uncertainty: the mean per-pixel variance over views of the chosen label's probability on "
                  "pixels the merged mask gets wrong vs right: " +
              "; ".join(f"{r['arm']} {r['variance_wrong']:.4f} vs {r['variance_right']:.4f} "
                        f"({r['variance_wrong'] / max(r['variance_right'], 1e-12):.0f}x)" for r in tta) + "."]
    fig = sec.get("figure")
    if fig:
        lines += ["", f"![per-pixel uncertainty]({fig['file']})", "",
                  f"*Figure*: image {fig['image']}, the one whose own person IoU the {fig['arm']} arm changed "
                  f"most ({fig['iou_without']:.3f} without TTA, {fig['iou_with']:.3f} with it): merged person "
                  "probability, the standard deviation over views of the merged label's probability "
                  "(`SegmentationResult.variance`), and the share of views whose top class is the merged "
                  "label (`agreement`)."]
    return "\n".join(lines) + "\n"


#: section name -> (run(cfg, log) -> dict, render(dict) -> markdown)
SECTIONS = {"mediapipe": (run_mediapipe, render_mediapipe)}


def run(cfg: SegmentationConfig, log=print) -> dict:
    unknown = [s for s in cfg.sections if s not in SECTIONS]
    if unknown:
        raise InputError(f"unknown segmentation section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    sections = []
    for name in cfg.sections:
        log(f"section {name}")
        sections.append(SECTIONS[name][0](cfg, log))
    return {"config": dict(cfg.__dict__, sections=list(cfg.sections)), "sections": sections}


def render(summary: dict) -> str:
    parts = ["# Segmentation TTA on real models", "",
             "`ttakit reproduce segmentation`: one section per model and data set.", ""]
    for sec in summary["sections"]:
        parts.append(SECTIONS[sec["section"]][1](sec))
    return "\n".join(parts)


def write(summary: dict, out) -> Path:
    return write_summary(summary, render(summary), out, "segmentation")
