"""Detection TTA on a real model and real images: YOLOX-nano (ONNX, COCO)
on the 158 COCO val2017 images of ``../shared/data/coco-val2017-mini``.

Every arm runs the same ONNX model through :class:`ttakit.Detector` with the
YOLOX decode of :mod:`ttakit.zoo.yolox` on the same letterboxed images; boxes
are scored with pycocotools (mAP@[.5:.95], AP50) against the original COCO
annotations, and each TTA arm is compared with no TTA on the same images
(paired: a bootstrap CI over images, and the images whose own mAP rose or
fell by more than 0.01). Time per image is the wall time of the whole run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..evaluation.dense import coco_detections, coco_map, load_coco_ground_truth, paired_detection
from .report import write_summary

#: (name, policy, merge, merge options)
ARMS = [
    ("no TTA", "identity", "nms", {"iou_thr": 0.65}),
    ("hflip, NMS", "identity + hflip", "nms", {"iou_thr": 0.65}),
    ("hflip, soft-NMS (Gaussian)", "identity + hflip", "soft_nms", {"method": "gaussian", "sigma": 0.5}),
    ("hflip, WBF iou 0.55 avg", "identity + hflip", "wbf", {"iou_thr": 0.55, "conf_type": "avg"}),
    ("hflip, WBF iou 0.65 max", "identity + hflip", "wbf", {"iou_thr": 0.65, "conf_type": "max"}),
    ("hflip x scale(0.83, 1), WBF", "hflips * scale(0.83, 1)", "wbf", {"iou_thr": 0.55, "conf_type": "avg"}),
]


@dataclass
class DetectionConfig:
    shared: str = "../shared"
    size: int = 416
    limit: int | None = None
    n_boot: int = 100
    out: str = "results/detection"


def run(cfg: DetectionConfig, log=print) -> dict:
    from ..tasks.detection import Detector
    from PIL import Image

    from ..zoo.yolox import bgr_255, decoder, letterbox

    root = Path(cfg.shared)
    model = root / "models" / "yolox-nano" / "yolox_nano.onnx"
    ann = root / "data" / "coco-val2017-mini" / "instances_val2017_mini.json"
    if not (model.exists() and ann.exists()):
        raise InputError(f"needs {model} and {ann} (see their READMEs)")
    data = json.loads(ann.read_text())
    images = sorted(data["images"], key=lambda im: im["id"])[:cfg.limit]
    ids = [im["id"] for im in images]
    gt = load_coco_ground_truth({**data, "images": images,
                                 "annotations": [a for a in data["annotations"] if a["image_id"] in set(ids)]})
    category_ids = [c["id"] for c in data["categories"]]  # the usual 80-class order (README)
    pixels = [np.asarray(Image.open(ann.parent / "val2017" / im["file_name"]).convert("RGB")) for im in images]
    x, ratios = letterbox(pixels, cfg.size)
    results, dets = [], {}
    for name, policy, merge, options in ARMS:
        det = Detector(str(model), policy, merge, merge_options=options, data_layout="NHWC",
                              decode=decoder(cfg.size), preprocess=bgr_255, batch_size=16)
        t0 = time.perf_counter()
        res = det.run(x)
        seconds = time.perf_counter() - t0
        boxes = [b / r for b, r in zip(res.boxes, ratios)]
        dets[name] = coco_detections(ids, boxes, res.scores, res.labels, category_ids)
        m = coco_map(gt, dets[name])
        results.append({"arm": name, "policy": policy, "merge": merge, "options": options, **m,
                        "ms_per_image": 1000 * seconds / len(ids), "views": len(det.run_policy)})
        log(f"{name}: mAP {m['map']:.4f}, AP50 {m['ap50']:.4f}, {results[-1]['ms_per_image']:.0f} ms/image")
    base = ARMS[0][0]
    for r in results[1:]:
        p = paired_detection(gt, dets[base], dets[r["arm"]], n_boot=cfg.n_boot)
        r["paired"] = p.as_dict()
    return {"config": cfg.__dict__, "n_images": len(ids), "arms": results}


def render(summary: dict) -> str:
    base = summary["arms"][0]
    lines = [
        "# Detection TTA: YOLOX-nano on COCO val2017 (158-image subset)", "",
        f"`ttakit reproduce detection`: {summary['n_images']} images of `data/coco-val2017-mini`, letterboxed "
        f"to {summary['config']['size']}, YOLOX-nano ONNX (COCO-trained, these are validation images) through "
        "`ttakit.Detector` with `ttakit.zoo.yolox`'s decode; mAP@[.5:.95] and AP50 by pycocotools. *Difference*: "
        f"paired against no TTA on the same images, 95% bootstrap CI over images ({summary['config']['n_boot']} "
        "resamples); *helped/hurt*: images whose own mAP rose/fell by more than 0.01.", "",
        *map_table(summary["arms"])]
    arms = summary["arms"][1:]
    best = max(arms, key=lambda r: r["map"])
    flat = [r["arm"] for r in arms if r["paired"]["ci_low"] <= 0 <= r["paired"]["ci_high"]]
    lines += ["", f"Best: {best['arm']}, {100 * best['paired']['difference']:+.1f} mAP points at "
                  f"{best['ms_per_image'] / base['ms_per_image']:.1f}x the time of no TTA. "
                  f"No difference that the CI can tell from zero: {', '.join(flat) or 'none'}. "
                  "Published for comparison: YOLOv5's TTA (flips and 3 scales) 50.4 -> 51.6 mAP (+1.2 points) at "
                  "about 3.6x the time; the WBF paper finds WBF better than NMS for merging TTA and ensembles. "
                  + _wbf_sentence(arms)]
    return "\n".join(lines) + "\n"


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
            f"({other['arm']}, {other['map']:.4f}) on this one model's flip TTA.")


def write(summary: dict, out) -> Path:
    return write_summary(summary, render(summary), out, "detection")
