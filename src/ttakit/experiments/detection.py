"""Detection TTA on a real model and real images: YOLOX-nano (ONNX, COCO)
on the 158 COCO val2017 images of ``../shared/data/coco-val2017-mini`` and
on the 170 street images of ``../shared/data/penn-fudan`` (persons only:
the model's person class against the data set's person boxes).

Every arm runs the same ONNX model through :class:`ttakit.Detector` with the
YOLOX decode of :mod:`ttakit.zoo.yolox` on the same letterboxed images; boxes
are scored with pycocotools (mAP@[.5:.95], AP50) against the COCO-format
annotations, and each TTA arm is compared with no TTA on the same images
(paired: one bootstrap over images for both metrics, and the images whose
own mAP rose or fell by more than 0.01). Time per image is the wall time of
the whole run of that arm (the model and the merge).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..evaluation.dense import coco_detections, coco_map, load_coco_ground_truth, paired_coco
from .report import write_summary

#: (name, policy, merge, merge options) on COCO
ARMS = [
    ("no TTA", "identity", "nms", {"iou_thr": 0.65}),
    ("hflip, NMS", "identity + hflip", "nms", {"iou_thr": 0.65}),
    ("hflip, soft-NMS (Gaussian)", "identity + hflip", "soft_nms", {"method": "gaussian", "sigma": 0.5}),
    ("hflip, WBF iou 0.55 avg", "identity + hflip", "wbf", {"iou_thr": 0.55, "conf_type": "avg"}),
    ("hflip, WBF iou 0.65 max", "identity + hflip", "wbf", {"iou_thr": 0.65, "conf_type": "max"}),
    ("hflip x scale(0.83, 1), WBF", "hflips * scale(0.83, 1)", "wbf", {"iou_thr": 0.55, "conf_type": "avg"}),
]
#: Penn-Fudan: the same, with WBF's iou_thr and conf_type swept, and multi-scale with each merge
PENN_FUDAN_ARMS = ARMS[:3] + [
    (f"hflip, WBF iou {iou} {conf}", "identity + hflip", "wbf", {"iou_thr": iou, "conf_type": conf})
    for conf in ("avg", "max") for iou in (0.55, 0.65, 0.75)] + [
    ("scales 0.83/1/1.2, NMS", "identity + scale(0.83, 1.2)", "nms", {"iou_thr": 0.65}),
    ("scales 0.83/1/1.2, soft-NMS", "identity + scale(0.83, 1.2)", "soft_nms", {"method": "gaussian", "sigma": 0.5}),
    ("scales 0.83/1/1.2, WBF iou 0.65 max", "identity + scale(0.83, 1.2)", "wbf", {"iou_thr": 0.65, "conf_type": "max"}),
    ("hflip x scale(0.83, 1), soft-NMS", "hflips * scale(0.83, 1)", "soft_nms", {"method": "gaussian", "sigma": 0.5}),
    ("hflip x scale(0.83, 1), WBF iou 0.65 max", "hflips * scale(0.83, 1)", "wbf",
     {"iou_thr": 0.65, "conf_type": "max"}),
]

#: name -> (folder under data/, annotation file, image folder, title, arms, category ids of the model's labels
#: (None: the file's categories in order; labels past the list are left out))
DATASETS = {
    "coco": ("coco-val2017-mini", "instances_val2017_mini.json", "val2017",
             "COCO val2017 (158-image subset), 80 classes", ARMS, None),
    "penn-fudan": ("penn-fudan", "coco_instances.json", ".", "Penn-Fudan pedestrians (170 images), persons only",
                   PENN_FUDAN_ARMS, [1]),
}


@dataclass
class DetectionConfig:
    shared: str = "../shared"
    size: int = 416
    limit: int | None = None
    n_boot: int = 100
    out: str = "results/detection"
    datasets: tuple = ("coco", "penn-fudan")


def run(cfg: DetectionConfig, log=print) -> dict:
    root = Path(cfg.shared)
    model = root / "models" / "yolox-nano" / "yolox_nano.onnx"
    if not model.exists():
        raise InputError(f"needs {model} (see its README)")
    unknown = [d for d in cfg.datasets if d not in DATASETS]
    if unknown:
        raise InputError(f"unknown data set {unknown[0]!r}; known: {', '.join(DATASETS)}")
    return {"config": {**cfg.__dict__, "datasets": list(cfg.datasets)},
            "datasets": [run_dataset(cfg, name, model, log) for name in cfg.datasets]}


def run_dataset(cfg: DetectionConfig, name: str, model: Path, log=print) -> dict:
    from PIL import Image

    from ..tasks.detection import Detector
    from ..zoo.yolox import bgr_255, decoder, letterbox

    folder, ann_name, image_dir, title, arms, category_ids = DATASETS[name]
    ann = Path(cfg.shared) / "data" / folder / ann_name
    if not ann.exists():
        raise InputError(f"needs {ann} (see its README)")
    data = json.loads(ann.read_text())
    images = sorted(data["images"], key=lambda im: im["id"])[:cfg.limit]
    ids = [im["id"] for im in images]
    gt = load_coco_ground_truth({**data, "images": images,
                                 "annotations": [a for a in data["annotations"] if a["image_id"] in set(ids)]})
    if category_ids is None:
        category_ids = [c["id"] for c in data["categories"]]  # the usual 80-class order (README)
    pixels = [np.asarray(Image.open(ann.parent / image_dir / im["file_name"]).convert("RGB")) for im in images]
    x, ratios = letterbox(pixels, cfg.size)
    results, dets = [], {}
    for arm, policy, merge, options in arms:
        det = Detector(str(model), policy, merge, merge_options=options, data_layout="NHWC",
                       decode=decoder(cfg.size), preprocess=bgr_255, batch_size=16)
        t0 = time.perf_counter()
        res = det.run(x)
        seconds = time.perf_counter() - t0
        keep = [lab < len(category_ids) for lab in res.labels]  # the labels the data set has
        boxes = [b[k] / r for b, k, r in zip(res.boxes, keep, ratios)]
        dets[arm] = coco_detections(ids, boxes, [s[k] for s, k in zip(res.scores, keep)],
                                    [lab[k] for lab, k in zip(res.labels, keep)], category_ids)
        m = coco_map(gt, dets[arm])
        results.append({"arm": arm, "policy": policy, "merge": merge, "options": options, **m,
                        "ms_per_image": 1000 * seconds / len(ids), "views": len(det.run_policy)})
        log(f"{name} {arm}: mAP {m['map']:.4f}, AP50 {m['ap50']:.4f}, {results[-1]['ms_per_image']:.0f} ms/image")
    base = arms[0][0]
    for r in results[1:]:
        p = paired_coco(gt, dets[base], dets[r["arm"]], n_boot=cfg.n_boot)
        r["paired"] = p["map"].as_dict()
        r["paired_ap50"] = p["ap50"].as_dict()
    return {"dataset": name, "title": title, "n_images": len(ids), "arms": results}


def render(summary: dict) -> str:
    cfg = summary["config"]
    lines = [
        "# Detection TTA: YOLOX-nano on COCO val2017 and Penn-Fudan", "",
        f"`ttakit reproduce detection`: YOLOX-nano ONNX (COCO-trained; neither data set was used to train it) "
        f"through `ttakit.Detector` with `ttakit.zoo.yolox`'s decode, images letterboxed to {cfg['size']}; "
        "mAP@[.5:.95] and AP50 by pycocotools. *Difference*: paired against no TTA on the same images, 95% "
        f"bootstrap CI over images ({cfg['n_boot']} resamples, one for both metrics); *helped/hurt*: images "
        "whose own mAP rose/fell by more than 0.01. Time: wall time of each arm's whole run (model and merge) "
        "on 2 CPU cores shared with other jobs, so ratios are rough."]
    if summary.get("note"):
        lines += ["", summary["note"]]
    for ds in summary["datasets"]:
        lines += ["", f"## {ds['title']}", ""] + _table(ds)
    lines += ["", "Published for comparison: YOLOv5's TTA (flips and 3 scales) 50.4 -> 51.6 mAP (+1.2 points) at "
                  "about 3.6x the time; the WBF paper finds WBF better than NMS for merging TTA and ensembles."]
    return "\n".join(lines) + "\n"


def _table(ds: dict) -> list[str]:
    base = ds["arms"][0]
    lines = [f"{ds['n_images']} images.", "",
             "| arm | views | mAP | AP50 | mAP difference [95% CI] | AP50 difference [95% CI] | helped/hurt "
             "| ms/image | time vs no TTA |",
             "|---|---:|---:|---:|---|---|---|---:|---:|"]
    for r in ds["arms"]:
        p, q = r.get("paired"), r.get("paired_ap50")
        diff = "(baseline)" if p is None else f"{p['difference']:+.4f} [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]"
        diff50 = "" if q is None else f"{q['difference']:+.4f} [{q['ci_low']:+.4f}, {q['ci_high']:+.4f}]"
        hh = "" if p is None else f"{p['improved']}/{p['worsened']}"
        lines.append(f"| {r['arm']} | {r['views']} | {r['map']:.4f} | {r['ap50']:.4f} | {diff} | {diff50} | {hh} | "
                     f"{r['ms_per_image']:.0f} | {r['ms_per_image'] / base['ms_per_image']:.2f}x |")
    arms = ds["arms"][1:]
    best = max(arms, key=lambda r: r["map"])
    flat = [r["arm"] for r in arms if r["paired"]["ci_low"] <= 0 <= r["paired"]["ci_high"]]
    worse = [r["arm"] for r in arms if r["paired"]["ci_high"] < 0]
    lines += ["", f"Best: {best['arm']}, {100 * best['paired']['difference']:+.1f} mAP points at "
                  f"{best['ms_per_image'] / base['ms_per_image']:.1f}x the time of no TTA. "
                  f"No difference that the CI can tell from zero: {', '.join(flat) or 'none'}. "
                  f"Worse than no TTA (CI below zero): {', '.join(worse) or 'none'}. " + _wbf_sentence(arms)]
    return lines


def map_table(arms: list[dict]) -> list[str]:
    """Markdown rows (header first) of detection arms, each paired against ``arms[0]``."""
    base = arms[0]
    key = "cpu_ms_per_image" if "cpu_ms_per_image" in base else "ms_per_image"
    unit = "CPU ms" if key == "cpu_ms_per_image" else "ms"
    lines = [f"| arm | views | mAP | AP50 | mAP difference [95% CI] | helped/hurt | {unit}/image | "
             f"{unit.replace(' ms', ' time').replace('ms', 'time')} vs no TTA |",
             "|---|---:|---:|---:|---|---|---:|---:|"]
    for r in arms:
        p = r.get("paired")
        diff = "(baseline)" if p is None else f"{p['difference']:+.4f} [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]"
        hh = "" if p is None else f"{p['improved']}/{p['worsened']}"
        lines.append(f"| {r['arm']} | {r['views']} | {r['map']:.4f} | {r['ap50']:.4f} | {diff} | {hh} | "
                     f"{r[key]:.0f} | {r[key] / base[key]:.2f}x |")
    return lines


def _wbf_sentence(arms: list[dict]) -> str:
    hflip = [r for r in arms if r["policy"] == "identity + hflip"]
    wbf = max((r for r in hflip if r["merge"] == "wbf"), key=lambda r: r["map"], default=None)
    other = max((r for r in hflip if r["merge"] != "wbf"), key=lambda r: r["map"], default=None)
    if wbf is None or other is None:
        return ""
    verb = "beats" if wbf["map"] > other["map"] + 0.002 else "does not beat"
    return (f"Here the best WBF ({wbf['arm']}, mAP {wbf['map']:.4f}) {verb} the best of NMS and soft-NMS "
            f"({other['arm']}, {other['map']:.4f}) on this model's flip TTA here.")


def write(summary: dict, out) -> Path:
    return write_summary(summary, render(summary), out, "detection")
