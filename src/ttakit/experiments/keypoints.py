"""Keypoint TTA on a real model and real images: MediaPipe Pose (BlazePose,
33 landmarks mapped to COCO's 17) on the COCO val2017 people with labelled
keypoints in ``../shared/data/coco-val2017-mini`` (68 people in 32 images).

Top-down, as a user with a single-person pose model would run it: each
ground-truth person box, enlarged by ``cfg.expand`` about its centre and
clipped to the image, is cropped and given to
:class:`ttakit.KeypointDetector` wrapping the per-image callable
:class:`ttakit.zoo.mediapipe.PoseKeypoints`, with COCO's left/right
``flip_pairs`` so that the mirrored view's left wrist counts as a right one.
Points come back in the crop and are shifted into the image. A person whose
merged confidence is 0 (no view found a pose) gets no prediction.

Scores: OKS AP by pycocotools (``iouType="keypoints"``) with a bootstrap
CI over images; each person's own OKS (0 when not found) and PCK (labelled
keypoints within ``cfg.pck_alpha`` x the longer side of the box), paired
against no TTA with a bootstrap CI over images and the people helped or
hurt. The set is small: intervals are wide.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..evaluation.dense import coco_map, load_coco_ground_truth, paired_detection, paired_keypoints
from .report import write_summary

#: (name, policy, weight_by_confidence); the first is the baseline. (A plain mean,
#: ``weight_by_confidence=False``, would average in the zeros of a view that found no pose.)
ARMS = [
    ("no TTA", "identity", True),
    ("hflip, confidence-weighted mean", "identity + hflip", True),
    ("hflip x zoom-out", "hflips * scale(0.8, 1)", True),
]


@dataclass
class KeypointsConfig:
    shared: str = "../shared"
    limit: int | None = None
    n_boot: int = 1000
    expand: float = 1.25
    pck_alpha: float = 0.1
    out: str = "results/keypoints"


def person_crops(data: dict, folder: Path, expand: float, limit: int | None = None):
    """The people with at least one labelled keypoint (sorted by image and
    annotation id), each as ``(annotation, crop uint8 RGB, (x0, y0))``."""
    from PIL import Image

    people = sorted((a for a in data["annotations"] if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd")),
                    key=lambda a: (a["image_id"], a["id"]))[:limit]
    files = {im["id"]: im["file_name"] for im in data["images"]}
    cache: dict[int, np.ndarray] = {}
    out = []
    for a in people:
        if a["image_id"] not in cache:
            cache = {a["image_id"]: np.array(Image.open(folder / files[a["image_id"]]).convert("RGB"))}
        img = cache[a["image_id"]]
        x, y, w, h = a["bbox"]
        cx, cy, hw, hh = x + w / 2, y + h / 2, w * expand / 2, h * expand / 2
        x0, y0 = max(0, int(np.floor(cx - hw))), max(0, int(np.floor(cy - hh)))
        x1, y1 = min(img.shape[1], int(np.ceil(cx + hw))), min(img.shape[0], int(np.ceil(cy + hh)))
        out.append((a, np.ascontiguousarray(img[y0:y1, x0:x1]), (x0, y0)))
    return out


def run(cfg: KeypointsConfig, log=print) -> dict:
    from ..tasks.keypoints import KeypointDetector
    from ..zoo.mediapipe import COCO_FLIP_PAIRS, MEDIAPIPE_VERSION, PoseKeypoints, import_mediapipe

    import_mediapipe()
    load0 = os.getloadavg()[0]
    ann = Path(cfg.shared) / "data" / "coco-val2017-mini" / "person_keypoints_val2017_mini79.json"
    if not ann.exists():
        raise InputError(f"needs {ann} (see data/coco-val2017-mini/README.md)")
    data = json.loads(ann.read_text())
    people = person_crops(data, ann.parent / "val2017", cfg.expand, cfg.limit)
    anns = [a for a, _, _ in people]
    ids = sorted({a["image_id"] for a in anns})
    gt = load_coco_ground_truth({**data, "images": [im for im in data["images"] if im["id"] in set(ids)],
                                 "annotations": [a for a in data["annotations"] if a["image_id"] in set(ids)]})
    model = PoseKeypoints(model_complexity=1)
    kds = {name: KeypointDetector(model, policy, flip_pairs=COCO_FLIP_PAIRS, weight_by_confidence=wbc,
                                  data_layout="NHWC") for name, policy, wbc in ARMS}
    kds[ARMS[0][0]].run(people[0][1][None])  # build the MediaPipe graph before timing
    points = {name: np.full((len(people), 17, 2), np.nan) for name in kds}
    conf = {name: np.zeros((len(people), 17)) for name in kds}
    seconds = dict.fromkeys(kds, 0.0)
    for i, (_, crop, (x0, y0)) in enumerate(people):
        for name, kd in kds.items():
            t0 = time.perf_counter()
            res = kd.run(crop[None])
            seconds[name] += time.perf_counter() - t0
            points[name][i] = res.points[0] + np.array([x0, y0])
            conf[name][i] = res.confidence[0]
    gt_kp = np.array([np.reshape(a["keypoints"], (17, 3)) for a in anns], np.float64)
    areas = np.array([a["area"] for a in anns])
    boxes = np.array([a["bbox"] for a in anns])
    groups = np.array([a["image_id"] for a in anns])
    dets, arms = {}, []
    base = ARMS[0][0]
    for name, policy, wbc in ARMS:
        found = conf[name].mean(1) > 0
        pts = np.where(found[:, None, None], points[name], np.nan)
        points[name] = pts
        # (a point no view saw with any confidence stays NaN for OKS/PCK, a miss; pycocotools needs numbers)
        dets[name] = [{"image_id": a["image_id"], "category_id": a["category_id"],
                       "score": float(conf[name][i].mean()),
                       "keypoints": np.column_stack([np.nan_to_num(pts[i], nan=-1e4), np.ones(17)]).ravel().tolist()}
                      for i, a in enumerate(anns) if found[i]]
        m = coco_map(gt, dets[name], ids, iou_type="keypoints")
        r = {"arm": name, "policy": policy, "weight_by_confidence": wbc, "views": len(kds[name].run_policy),
             "oks_ap": m["map"], "oks_ap50": m["ap50"], "found": int(found.sum()),
             "ms_per_person": 1000 * seconds[name] / len(people)}
        if name != base:
            r["paired_oks_ap"] = paired_detection(gt, dets[base], dets[name], n_boot=min(cfg.n_boot, 200),
                                                  iou_type="keypoints").as_dict()
            r["paired_oks"] = paired_keypoints(points[base], pts, gt_kp, areas, boxes, groups, "oks",
                                               n_boot=cfg.n_boot).as_dict()
            r["paired_pck"] = paired_keypoints(points[base], pts, gt_kp, areas, boxes, groups, "pck",
                                               alpha=cfg.pck_alpha, n_boot=cfg.n_boot).as_dict()
        arms.append(r)
        log(f"{name}: OKS AP {m['map']:.4f}, AP50 {m['ap50']:.4f}, found {r['found']}/{len(people)}, "
            f"{r['ms_per_person']:.1f} ms/person")
    from ..evaluation.dense import keypoint_oks, keypoint_pck

    for r in arms:
        r["mean_oks"] = float(np.mean(keypoint_oks(points[r["arm"]], gt_kp, areas)))
        r["mean_pck"] = float(np.mean(keypoint_pck(points[r["arm"]], gt_kp, boxes, cfg.pck_alpha)))
    return {"config": cfg.__dict__, "load_average": [load0, os.getloadavg()[0]], "model": f"MediaPipe {MEDIAPIPE_VERSION} Pose (BlazePose full, "
            "model_complexity=1, static_image_mode=True)", "n_people": len(people), "n_images": len(ids),
            "arms": arms}


def render(summary: dict) -> str:
    cfg = summary["config"]
    base = summary["arms"][0]
    lines = [
        f"# Keypoint TTA: MediaPipe Pose on COCO val2017 persons ({summary['n_people']} people)", "",
        f"`ttakit reproduce keypoints`: {summary['model']} through `ttakit.KeypointDetector` (the per-image "
        "callable `ttakit.zoo.mediapipe.PoseKeypoints`, BlazePose's 33 landmarks mapped to COCO's 17, "
        "visibility as confidence, `flip_pairs=COCO_FLIP_PAIRS`) on the "
        f"{summary['n_people']} people with labelled keypoints in {summary['n_images']} images of "
        "`data/coco-val2017-mini`, each cropped from its ground-truth box enlarged "
        f"{cfg['expand']:g}x about its centre (top-down; so every person is \"detected\" and OKS AP measures "
        "the points and their ranking by mean confidence). *OKS AP*: pycocotools (`iouType=\"keypoints\"`), "
        "people without a found pose have no prediction. *OKS*, *PCK*: each person's own OKS against its ground "
        f"truth (0 when not found) and the share of its labelled keypoints within {cfg['pck_alpha']:g} x the "
        "longer side of its box, averaged over people. *Difference*: paired against no TTA on the same people, "
        f"95% bootstrap CI over images ({cfg['n_boot']} resamples; {min(cfg['n_boot'], 200)} for OKS AP); "
        "*helped/hurt*: images (OKS AP) or people (OKS, PCK) whose own score rose/fell by more than 0.01.", "",
        "**The set is small** (these are all the people with keypoints in the subset): a difference of a few "
        "points is within the noise, as the intervals show.", "",
        "| arm | views | found | OKS AP | AP50 | OKS AP difference [95% CI] | helped/hurt (images) | mean OKS | "
        "OKS difference [95% CI] | helped/hurt | PCK | PCK difference [95% CI] | helped/hurt | ms/person |",
        "|---|---:|---:|---:|---:|---|---|---:|---|---|---:|---|---|---:|"]

    def cell(p):
        if p is None:
            return ["(baseline)", ""]
        return [f"{p['difference']:+.4f} [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]",
                f"{p['improved']}/{p['worsened']}"]

    for r in summary["arms"]:
        c = cell(r.get("paired_oks_ap")) + cell(r.get("paired_oks")) + cell(r.get("paired_pck"))
        lines.append(f"| {r['arm']} (`{r['policy']}`) | {r['views']} | {r['found']}/{summary['n_people']} | "
                     f"{r['oks_ap']:.4f} | {r['oks_ap50']:.4f} | {c[0]} | {c[1]} | {r['mean_oks']:.4f} | {c[2]} | "
                     f"{c[3]} | {r['mean_pck']:.4f} | {c[4]} | {c[5]} | {r['ms_per_person']:.1f} |")
    tta = summary["arms"][1:]
    best = max(tta, key=lambda r: r["oks_ap"])
    sure = [r["arm"] for r in tta if r["paired_oks_ap"]["ci_low"] > 0 or r["paired_oks_ap"]["ci_high"] < 0]
    lines += ["", f"Without TTA: OKS AP {base['oks_ap']:.3f}, {base['found']} of {summary['n_people']} people "
                  "found (the model README's decoding check: about 0.23, 42 of 68). "
                  f"Best TTA arm: {best['arm']}, OKS AP {100 * (best['oks_ap'] - base['oks_ap']):+.1f} points at "
                  f"{best['ms_per_person'] / base['ms_per_person']:.1f}x the time. "
                  + (f"OKS AP differences the CI tells from zero: {', '.join(sure)}." if sure else
                     "No OKS AP difference here can be told from zero on this few people.")]
    load = summary.get("load_average")
    lines += ["", "Time: wall time per person of `KeypointDetector.run` on its crop, the arms run person by person "
                  "in turn on a 2-core machine shared with other jobs"
              + ("" if not load else f" (1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end)")
              + ": absolute times are inflated by the load, the ratios less so."]
    oks_up = [r for r in tta if r["paired_oks"]["ci_low"] > 0]
    if oks_up:
        lines += ["", "Mean per-person OKS (a person not found counts 0) rises with CI above zero for "
                      + ", ".join(f"{r['arm']} ({r['paired_oks']['difference']:+.3f})" for r in oks_up)
                      + "; these arms also find a pose for more people, where a mirrored or zoomed-out view "
                      "succeeds and the plain crop does not (people found: "
                      + ", ".join(f"{r['arm']} {r['found']}" for r in summary["arms"]) + ")."]
    lines += ["", f"(The model README does not state its crop margin; this run enlarges each box "
                  f"{cfg['expand']:g}x. The people found match its figure; OKS AP is "
                  f"{base['oks_ap']:.3f} against its about 0.23.)"]
    return "\n".join(lines) + "\n"


def write(summary: dict, out) -> Path:
    return write_summary(summary, render(summary), out, "keypoints")
