"""Detection TTA where orientation does not matter: a small CenterNet
trained by ttakit on BCCD's train split, evaluated on its test split
(``../shared/data/bccd``) with no TTA, flips and D4, each merged by NMS,
soft-NMS and WBF.

The detector (:mod:`ttakit.zoo.centernet`) sees the 640x480 images
downscaled to 320x240 (training and test alike) and is trained under random
flips and quarter turns; it is evaluated as a user would: the
``torch.nn.Module`` with its decode function through :class:`ttakit.Detector`.
Boxes are scaled back to the original pixels and scored by pycocotools
(mAP@[.5:.95], AP50) against the split's COCO file; each TTA arm is paired
against no TTA (a bootstrap CI over images; images whose own mAP rose/fell
by more than 0.01). Time per image is the wall time of the whole run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..files import write_atomic
from .detection import map_table
from .trained import (cached_model, shared_folder, summary_head, timed, timing_note, training_words, verdict,
                      warm_up, weights_folder)

NMS = ("nms", {"iou_thr": 0.5})
SOFT = ("soft_nms", {"method": "gaussian", "sigma": 0.5})
WBF = ("wbf", {"iou_thr": 0.55, "conf_type": "avg"})
#: (name, policy, merge, merge options)
ARMS = [("no TTA", "identity", *NMS)] + [
    (f"{label}, {m_label}", policy, merge, options)
    for label, policy in (("flips", "flips"), ("D4", "d4"))
    for m_label, (merge, options) in (("NMS", NMS), ("soft-NMS", SOFT), ("WBF", WBF))]


@dataclass
class BloodCellsConfig:
    shared: str = "../shared"
    cache: str | None = None          #: folder of the trained weights (default ~/.cache/ttakit/trained)
    scale: float = 0.5
    steps: int = 800
    batch_size: int = 8
    width: int = 16
    seed: int = 0
    max_minutes: float = 14.0         #: training stops here even if the steps are not done
    threads: int = 1
    train_limit: int | None = None    #: first N training images only (quick runs)
    test_limit: int | None = None     #: first N test images only (quick runs)
    n_boot: int = 100
    out: str = "results/blood-cells"

    @classmethod
    def quick(cls, **kw) -> "BloodCellsConfig":
        """A seconds-long run for tests: a few steps on a few images."""
        return cls(**{"steps": 3, "batch_size": 2, "width": 4, "train_limit": 4, "test_limit": 3, "n_boot": 5, **kw})


def weights_path(cfg: BloodCellsConfig) -> Path:
    limit = "" if cfg.train_limit is None else f"-n{cfg.train_limit}"
    return weights_folder(cfg.cache) / (f"bccd-centernet-w{cfg.width}-x{cfg.scale:g}-b{cfg.batch_size}-"
                                        f"steps{cfg.steps}{limit}-seed{cfg.seed}.pt")


def run(cfg: BloodCellsConfig, log=print) -> dict:
    from ..datasets import load_bccd
    from ..evaluation.dense import coco_detections, coco_map, load_coco_ground_truth, paired_detection
    from ..tasks.detection import Detector
    from ..zoo.centernet import CenterNet, decoder, train_centernet

    root = shared_folder(cfg.shared, "data", "bccd")
    torch.set_num_threads(cfg.threads)

    def train():
        tr = load_bccd(root, "train", cfg.scale, cfg.train_limit)
        log(f"training a CenterNet (width {cfg.width}) on {len(tr)} BCCD training images at "
            f"{tr.images.shape[2]}x{tr.images.shape[1]} for {cfg.steps} steps, {cfg.threads} thread(s)")
        model, tl = train_centernet(tr.images, tr.boxes, tr.labels, steps=cfg.steps, batch_size=cfg.batch_size,
                                    width=cfg.width, seed=cfg.seed, max_seconds=60 * cfg.max_minutes, log=log)
        return model, {"train": tl.as_dict(), "train_images": len(tr)}

    model, note, fresh = cached_model(weights_path(cfg), lambda: CenterNet(3, cfg.width), train, log)
    test = load_bccd(root, "test", cfg.scale, cfg.test_limit)
    gt = load_coco_ground_truth(test.coco)
    x = np.moveaxis(test.images, -1, 1).astype(np.float32) / 255
    warm_up(model, x)
    results, dets = [], {}
    for name, policy, merge, options in ARMS:
        det = Detector(model, policy, merge, merge_options=options, decode=decoder(3), batch_size=8)
        res, times = timed(lambda: det.run(x), len(test))
        boxes = [b / cfg.scale for b in res.boxes]
        dets[name] = coco_detections(test.image_ids, boxes, res.scores, res.labels, test.category_ids)
        m = coco_map(gt, dets[name])
        results.append({"arm": name, "policy": policy, "merge": merge, "options": options, **m,
                        "views": len(det.run_policy), **times})
        log(f"{name}: mAP {m['map']:.4f}, AP50 {m['ap50']:.4f}, {results[-1]['cpu_ms_per_image']:.0f} CPU ms/image")
    base = ARMS[0][0]
    for r in results[1:]:
        r["paired"] = paired_detection(gt, dets[base], dets[r["arm"]], n_boot=cfg.n_boot, seed=cfg.seed).as_dict()
    return {**summary_head(cfg, weights_path(cfg), fresh, note), "n_images": len(test), "arms": results}


def render(summary: dict) -> str:
    cfg, tr = summary["config"], summary["training"].get("train", {})
    lines = [
        "# Detection TTA where orientation does not matter: a CenterNet on BCCD blood cells", "",
        f"`ttakit reproduce blood-cells`: a small CenterNet (width {cfg['width']}, stride 4) trained by ttakit on "
        f"the {summary['training'].get('train_images', '?')} images of BCCD's train split, downscaled by "
        f"{cfg['scale']:g} to 320x240 (batches of {cfg['batch_size']} images, each under a random flip/quarter "
        f"turn, seed {cfg['seed']}; {training_words(cfg, tr)}), evaluated through `ttakit.Detector` on the "
        f"{summary['n_images']} images of the test split; boxes scaled back to 640x480 and scored by pycocotools "
        "(mAP@[.5:.95], AP50) against `coco_test.json`. *Difference*: paired against no TTA on the same images, "
        f"95% bootstrap CI over images ({cfg['n_boot']} resamples); *helped/hurt*: images whose own mAP "
        "rose/fell by more than 0.01. Merges: NMS IoU 0.5, soft-NMS Gaussian sigma 0.5, WBF IoU 0.55 `avg`.", "",
        *map_table(summary["arms"])]
    lines += ["", verdict(summary["arms"], "map", "mAP@[.5:.95]"), "", timing_note(summary)]
    return "\n".join(lines) + "\n"


def write(summary: dict, out) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "blood-cells.json", json.dumps(summary, indent=1) + "\n")
    write_atomic(out / "blood-cells.md", render(summary))
    return out / "blood-cells.md"
