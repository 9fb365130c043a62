"""Segmentation TTA where orientation does not matter: a small U-Net
trained by ttakit on ISBI 2012 EM slices 0-19, evaluated on slices 20-29
(``../shared/data/isbi2012-membrane``) with no TTA, flips and D4.

The U-Net (:mod:`ttakit.zoo.unet`) is trained on random 128x128 crops of
the full-resolution slices under random dihedral views, then evaluated as a
user would: the ``torch.nn.Module`` through :class:`ttakit.Segmenter` (mean
of the views' membrane probabilities) on the whole 512x512 held-out slices.
Scores are the membrane class's IoU and Dice (pixels of all held-out
slices pooled), each arm paired against no TTA with a bootstrap CI over
slices and the slices whose own score rose/fell by more than 0.005.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..files import write_atomic
from .trained import (cached_model, shared_folder, summary_head, timed, timing_note, training_words, verdict,
                      warm_up, weights_folder)

#: (name, policy)
ARMS = [("no TTA", "identity"), ("hflip", "hflips"), ("flips", "flips"), ("D4", "d4")]
TRAIN_SLICES = range(0, 20)
TEST_SLICES = range(20, 30)
TOLERANCE = 0.005


@dataclass
class MembranesConfig:
    shared: str = "../shared"
    cache: str | None = None          #: folder of the trained weights (default ~/.cache/ttakit/trained)
    steps: int = 1000
    batch_size: int = 8
    crop: int = 128
    width: int = 8
    seed: int = 0
    max_minutes: float = 14.0         #: training stops here even if the steps are not done
    threads: int = 1
    test_limit: int | None = None     #: first N held-out slices only (quick runs)
    n_boot: int = 1000
    out: str = "results/membranes"

    @classmethod
    def quick(cls, **kw) -> "MembranesConfig":
        """A seconds-long run for tests: a few steps, a narrow net, 2 slices."""
        return cls(**{"steps": 4, "batch_size": 2, "crop": 64, "width": 4, "test_limit": 2, "n_boot": 50, **kw})


def weights_path(cfg: MembranesConfig) -> Path:
    return weights_folder(cfg.cache) / (f"isbi-unet-w{cfg.width}-crop{cfg.crop}-b{cfg.batch_size}-"
                                        f"steps{cfg.steps}-seed{cfg.seed}.pt")


def run(cfg: MembranesConfig, log=print) -> dict:
    from ..datasets import load_isbi_membrane
    from ..evaluation.dense import paired_segmentation, segmentation_scores
    from ..tasks.segmentation import Segmenter
    from ..zoo.unet import UNet, train_unet

    root = shared_folder(cfg.shared, "data", "isbi2012-membrane")
    torch.set_num_threads(cfg.threads)

    def train():
        x, y = load_isbi_membrane(root, TRAIN_SLICES)
        log(f"training a U-Net (width {cfg.width}) on slices 0-19 for {cfg.steps} steps, {cfg.threads} thread(s)")
        model, tl = train_unet(x, y, steps=cfg.steps, batch_size=cfg.batch_size, crop=cfg.crop, width=cfg.width,
                               seed=cfg.seed, max_seconds=60 * cfg.max_minutes, log=log)
        return model, {"train": tl.as_dict(), "slices": "0-19"}

    model, note, fresh = cached_model(weights_path(cfg), lambda: UNet(cfg.width), train, log)
    test = list(TEST_SLICES)[:cfg.test_limit]
    images, masks = load_isbi_membrane(root, test)
    x = images[:, None].astype(np.float32) / 255
    preds, results = {}, []
    warm_up(model, x)
    for name, policy in ARMS:
        seg = Segmenter(model, policy, "mean", output="logits", classes=["interior", "membrane"], labels_only=True,
                        uncertainty=False, batch_size=2)
        res, times = timed(lambda: seg.run(x), len(test))
        preds[name] = res.labels
        s = segmentation_scores(res.labels, masks, 2)
        results.append({"arm": name, "policy": policy, "views": len(seg.run_policy),
                        "iou": s["iou_per_class"][1], "dice": s["dice_per_class"][1], "miou": s["miou"],
                        **times})
        log(f"{name}: membrane IoU {results[-1]['iou']:.4f}, Dice {results[-1]['dice']:.4f}, "
            f"{results[-1]['cpu_ms_per_image']:.0f} CPU ms/image")
    base = ARMS[0][0]
    for r in results[1:]:
        r["paired"] = {m: paired_segmentation(preds[base], preds[r["arm"]], masks, 2, n_boot=cfg.n_boot, seed=cfg.seed,
                                              tolerance=TOLERANCE, metric=m, classes=[1]).as_dict()
                       for m in ("iou", "dice")}
    return {**summary_head(cfg, weights_path(cfg), fresh, note), "test_slices": test, "n_images": len(test),
            "arms": results}


def render(summary: dict) -> str:
    cfg, tr = summary["config"], summary["training"].get("train", {})
    base = summary["arms"][0]
    lines = [
        "# Segmentation TTA where orientation does not matter: a U-Net on ISBI 2012 EM membranes", "",
        f"`ttakit reproduce membranes`: a U-Net (width {cfg['width']}, depth 3) trained by ttakit on slices 0-19 "
        f"of `data/isbi2012-membrane` (batches of {cfg['batch_size']} random {cfg['crop']}x{cfg['crop']} crops at "
        f"full resolution, each under a random flip/quarter turn, seed {cfg['seed']}; {training_words(cfg, tr)}), "
        "evaluated through `ttakit.Segmenter` (mean of the views' probabilities) on the "
        f"{summary['n_images']} whole 512x512 held-out slices {_span(summary['test_slices'])}. Scores: the "
        "membrane class's IoU and Dice, pixels of all held-out slices pooled. *Difference*: paired against no "
        f"TTA on the same slices, 95% bootstrap CI over slices ({cfg['n_boot']} resamples); *helped/hurt*: "
        f"slices whose own score rose/fell by more than {TOLERANCE}.", "",
        "| arm | views | membrane IoU | IoU difference [95% CI] | helped/hurt | Dice | Dice difference [95% CI] "
        "| CPU ms/image | CPU time vs no TTA |",
        "|---|---:|---:|---|---|---:|---|---:|---:|"]
    for r in summary["arms"]:
        p = r.get("paired")
        iou_d = "(baseline)" if p is None else _diff(p["iou"])
        dice_d = "(baseline)" if p is None else _diff(p["dice"])
        hh = "" if p is None else f"{p['iou']['improved']}/{p['iou']['worsened']}"
        lines.append(f"| {r['arm']} | {r['views']} | {r['iou']:.4f} | {iou_d} | {hh} | {r['dice']:.4f} | {dice_d} | "
                     f"{_cpu(r):.0f} | {_cpu(r) / _cpu(base):.1f}x |")
    lines += ["", verdict(summary["arms"], "iou", "membrane IoU"), "", timing_note(summary)]
    return "\n".join(lines) + "\n"


def _diff(p: dict) -> str:
    return f"{p['difference']:+.4f} [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]"


def _span(slices: list) -> str:
    return f"{slices[0]}-{slices[-1]}" if len(slices) > 1 else str(slices[0])


def _cpu(r: dict) -> float:
    return r.get("cpu_ms_per_image", r["ms_per_image"])


def write(summary: dict, out) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "membranes.json", json.dumps(summary, indent=1) + "\n")
    write_atomic(out / "membranes.md", render(summary))
    return out / "membranes.md"
