"""The tuning panel's dense cases: does dense tuning (views and merges,
with the cross-fitted guard of :mod:`ttakit.tuning.dense`) keep the gain
and never lose, on random splits of a pool of images?

As for the classification cases, every candidate view runs once over the
pool and is kept on disk (the cache folder of the panel); each split draws
``n_tune`` images at random, runs :func:`~ttakit.tuning.dense.greedy_dense`
on them (budget 3 added views, 5-fold cross-fitted guard; merged results
come from the cached views, each set of views (in the pool's order) and
merge merged and matched once for the whole pool) and scores the tuned (views, merge) on the rest of the
pool. *Oracle*: the same greedy search run on the held-out images
themselves, the best held-out score of its prefixes. Scores are in points
(mean IoU or mAP x 100); a split is a loss when it is worse than no TTA by
more than 0.2 points of that metric.

- ``segmentation``: a small U-Net (width 8) trained here on ISBI 2012 EM
  slices 0-19 (800 steps of 8 random 64x64 crops under random dihedral
  views, seeded; about a CPU minute), on the 160 128x128 tiles of slices
  20-29 (``../shared/data/isbi2012-membrane``); candidates: the D4 views;
  merges: mean, gmean, max, vote; objective: mean IoU (membrane and
  interior); 80 tuning tiles, 80 held out. Tiles of one slice are not
  independent (a split puts tiles of the same slice on both sides).
- ``detection``: YOLOX-nano (ONNX, COCO) on the 170 Penn-Fudan street
  images (persons; ``../shared/data/penn-fudan``, ``../shared/models/yolox-
  nano``), letterboxed to 416; candidates: hflip, vflip, scale 0.83 and
  1.2; merges: NMS, soft-NMS, WBF (4 settings); no TTA is the model's own
  boxes; objective: COCO mAP@[.5:.95]; 100 tuning images, 70 held out.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..policy import Policy
from ..tuning.candidates import candidate_views
from ..tuning.dense import DETECTION_MERGES, SEGMENTATION_MERGES, greedy_dense, search
from ..views import identity

DENSE_CASES = ("segmentation", "detection")
#: splits worse than no TTA by more than this many points of the case's metric (x 100) count as losses
DENSE_LOSS_POINTS = 0.2
SEG_TRAIN = {"steps": 800, "batch_size": 8, "crop": 64, "width": 8}
SEG_TILE = 128
DET_SIZE = 416


@dataclass
class DenseCase:
    """A pool of images with its cached views: ``run(views, merge)`` scores any
    (views, merge) on any subset (memoised over the whole panel run)."""

    name: str
    metric: str
    candidates: str
    merges: tuple
    baseline_merge: tuple
    n_tune: int
    merged: object          #: (policy, merge name, options) -> subsets object over the pool
    n: int
    description: str
    build_seconds: float = 0.0

    def __post_init__(self):
        self._done = {}
        self._order = {repr(v): k for k, v in enumerate(candidate_views(self.candidates))}

    def run(self, policy, name, options):
        """The subsets object of ``policy``'s views merged in the pool's order
        (so a set of views is merged once whatever order the search added
        them in; merges depend on the order only through ties)."""
        views = sorted(policy.views, key=lambda v: self._order[repr(v)])
        key = (tuple(repr(v) for v in views), name, tuple(sorted(options.items())))
        if key not in self._done:
            self._done[key] = self.merged(Policy(views), name, options)
        return self._done[key]


def _path(folder, cfg, name: str) -> Path:
    return Path(folder) / f"{name}-s{cfg.seed}.npz"


def _load(path: Path, cache, views) -> bool:
    if not path.exists():
        return False
    z = dict(np.load(path, allow_pickle=False))
    if list(z["views"]) != [repr(v) for v in views]:
        return False
    cache.restore(z, views)
    return True


def segmentation_case(cfg, folder, log=print) -> DenseCase:
    import torch

    from ..datasets import load_isbi_membrane
    from ..evaluation.dense_subsets import SegmentationSubsets
    from ..tasks.dense_cache import SegmentationCache
    from ..zoo.unet import UNet, train_unet
    from .trained import cached_model, shared_folder, weights_folder

    t0 = time.perf_counter()
    root = shared_folder(cfg.shared, "data", "isbi2012-membrane")
    images, masks = load_isbi_membrane(root, range(20, 30))
    t = SEG_TILE
    tiles = images.reshape(10, 512 // t, t, 512 // t, t).transpose(0, 1, 3, 2, 4).reshape(-1, t, t)
    gts = masks.reshape(10, 512 // t, t, 512 // t, t).transpose(0, 1, 3, 2, 4).reshape(-1, t, t)
    x = tiles[:, None].astype(np.float32) / 255
    tag = "-".join(f"{k}{v}" for k, v in SEG_TRAIN.items())
    weights = weights_folder(None) / f"panel-isbi-unet-{tag}-seed{cfg.seed}.pt"

    def train():
        tx, ty = load_isbi_membrane(root, range(20))
        torch.set_num_threads(1)
        log(f"segmentation: training a U-Net on ISBI slices 0-19 ({tag}, seed {cfg.seed})")
        model, tl = train_unet(tx, ty, seed=cfg.seed, **SEG_TRAIN)
        return model, {"train": tl.as_dict()}

    model, _, _ = cached_model(weights, lambda: UNet(SEG_TRAIN["width"]), train, log)
    views = candidate_views("d4")
    cache = SegmentationCache(model, x, output="logits", batch_size=32)
    path = _path(folder, cfg, "segmentation-isbi-d4")
    if not _load(path, cache, views):
        cache.ensure(views)
        np.savez(path, **cache.export())
        log(f"segmentation: {len(views)} views x {len(x)} tiles in {time.perf_counter() - t0:.0f} s")
        cache = SegmentationCache(model, x, output="logits", batch_size=32)
        _load(path, cache, views)  # the panel always scores the stored (float16) maps

    def merged(policy, name, options):
        return SegmentationSubsets(cache.run(policy, name), gts, 2)

    return DenseCase("segmentation", "mean IoU", "d4", SEGMENTATION_MERGES, ("mean", {}), 80, merged, len(x),
                     "U-Net on ISBI 2012 EM tiles (160 of 128x128 from slices 20-29)",
                     time.perf_counter() - t0)


def detection_case(cfg, folder, log=print) -> DenseCase:
    from PIL import Image

    from ..evaluation.dense import coco_detections, load_coco_ground_truth
    from ..evaluation.dense_subsets import DetectionSubsets
    from ..tasks.dense_cache import DetectionCache
    from ..zoo.yolox import bgr_255, decoder, letterbox
    from .trained import shared_folder

    t0 = time.perf_counter()
    root = shared_folder(cfg.shared, "data", "penn-fudan")
    model = shared_folder(cfg.shared, "models", "yolox-nano") / "yolox_nano.onnx"
    data = json.loads((root / "coco_instances.json").read_text())
    images = sorted(data["images"], key=lambda im: im["id"])
    ids = [im["id"] for im in images]
    gt = load_coco_ground_truth(data)
    views = candidate_views("hflip, vflip, scale(0.83, 1.2)")
    cache = DetectionCache(str(model), None, data_layout="NHWC", decode=decoder(DET_SIZE), preprocess=bgr_255,
                           batch_size=16)
    path = _path(folder, cfg, "detection-pennfudan")
    ratios = None
    if not _load(path, cache, views):
        pixels = [np.asarray(Image.open(root / im["file_name"]).convert("RGB")) for im in images]
        cache.data, ratios = letterbox(pixels, DET_SIZE)
        cache.ensure(views)
        np.savez(path, ratios=ratios, **cache.export(keep=lambda labels: labels == 0))  # persons only
        log(f"detection: {len(views)} views x {len(ids)} images in {time.perf_counter() - t0:.0f} s")
        cache = DetectionCache(str(model), None, data_layout="NHWC", decode=decoder(DET_SIZE), preprocess=bgr_255)
        _load(path, cache, views)
    ratios = np.load(path)["ratios"]

    def merged(policy, name, options):
        res = cache.run(policy, name, options)
        dets = coco_detections(ids, [b / r for b, r in zip(res.boxes, ratios)], res.scores, res.labels, [1])
        return DetectionSubsets(gt, dets, ids, "map")

    return DenseCase("detection", "mAP", "hflip, vflip, scale(0.83, 1.2)", DETECTION_MERGES,
                     ("nms", {"iou_thr": 1.0}), 100, merged, len(ids),
                     "YOLOX-nano on Penn-Fudan (170 images, persons)", time.perf_counter() - t0)


def dense_case(name: str, cfg, folder, log=print) -> DenseCase:
    """The case ``name`` of the panel config ``cfg`` (``shared``, ``seed``), its
    views cached in ``folder``."""
    if name == "segmentation":
        return segmentation_case(cfg, folder, log)
    if name == "detection":
        return detection_case(cfg, folder, log)
    raise InputError(f"unknown dense panel case {name!r}; cases: {', '.join(DENSE_CASES)}")


def run_dense_split(case: DenseCase, split_seed: int, budget: int = 3) -> dict:
    """One random split: tune on ``case.n_tune`` images, score on the rest (points)."""
    perm = np.random.default_rng(split_seed).permutation(case.n)
    t, h = np.sort(perm[:case.n_tune]), np.sort(perm[case.n_tune:])
    res = greedy_dense(case.run, lambda r, idx: r.score(t[idx]), len(t), case.candidates, case.merges,
                       case.baseline_merge, budget, seed=split_seed, objective=case.metric,
                       per_image=lambda r, idx: r.per_image(t[idx]))
    ident = case.run(Policy([identity()]), *case.baseline_merge).score(h)
    tuned = case.run(res.policy, res.merge[0], res.merge[1]).score(h)

    def trials(views, merge):
        return case.run(Policy(list(views)), merge[0], dict(merge[1]))

    path = search(trials, lambda r, idx: r.score(idx), candidate_views(case.candidates), case.merges,
                  case.baseline_merge, budget, h)
    return {"seed": split_seed, "n_tune": len(t), "n_held": len(h), "identity": 100 * ident, "tuned": 100 * tuned,
            "oracle": 100 * max(p["score"] for p in path), "fell_back": bool(res.fell_back),
            "policy": res.policy.spec, "merge": list(res.merge), "views": len(res.policy.unique())}


def summarise_dense(case: DenseCase, rows: list[dict]) -> dict:
    ident = np.array([r["identity"] for r in rows])
    kept = np.array([r["tuned"] for r in rows]) - ident
    oracle = np.array([r["oracle"] for r in rows]) - ident
    return {"case": case.name, "description": case.description, "metric": case.metric, "n_tune": case.n_tune,
            "n_held": rows[0]["n_held"], "splits": len(rows), "identity": float(ident.mean()),
            "oracle_gain": float(oracle.mean()), "kept_gain": float(kept.mean()), "kept_worst": float(kept.min()),
            "share": float(kept.mean() / oracle.mean()) if oracle.mean() > 0 else float("nan"),
            "losses": int((kept < -DENSE_LOSS_POINTS - 1e-9).sum()),
            "fall_back_rate": float(np.mean([r["fell_back"] for r in rows])),
            "mean_views": float(np.mean([r["views"] for r in rows])), "build_seconds": case.build_seconds}


def run_dense(name: str, cfg, folder, log=print) -> dict:
    case = dense_case(name, cfg, folder, log)
    t0 = time.perf_counter()
    rows = [run_dense_split(case, 1000 * (cfg.seed + 1) + s) for s in range(cfg.splits)]
    s = summarise_dense(case, rows)
    s["seconds"], s["rows"] = time.perf_counter() - t0, rows
    log(f"{s['case']:>12} n={s['n_tune']:<4} {s['metric']} {s['identity']:.2f}  oracle {s['oracle_gain']:+.2f}  "
        f"kept {s['kept_gain']:+.2f} (worst {s['kept_worst']:+.2f})  share {s['share']:.0%}  losses "
        f"{s['losses']}/{s['splits']}  fell back {s['fall_back_rate']:.0%}  ({s['seconds']:.0f} s)")
    return s


def render_dense(cases: list[dict]) -> list[str]:
    """The dense cases' section of the panel's report (Markdown lines)."""
    lines = ["", "## Detection and segmentation", "",
             "`greedy_dense` (views and merges, budget 3, the 5-fold cross-fitted guard on per-image scores; "
             "`ttakit tune --task detect|segment`) on random splits of a pool whose views were run once. Scores "
             "in points of each case's metric (x 100); *losses*: splits worse than no TTA by more than "
             f"{DENSE_LOSS_POINTS} points of it.", "",
             "| case | metric | tuning images | held out | splits | no TTA | oracle gain | kept gain (mean) "
             "| worst split | share of oracle | losses | fell back |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cases:
        share = "n/a" if not np.isfinite(c["share"]) else f"{c['share']:.0%}"
        lines.append(f"| {c['case']}: {c['description']} | {c['metric']} | {c['n_tune']} | {c['n_held']} | "
                     f"{c['splits']} | {c['identity']:.2f} | {c['oracle_gain']:+.2f} | {c['kept_gain']:+.2f} | "
                     f"{c['kept_worst']:+.2f} | {share} | {c['losses']} | {c['fall_back_rate']:.0%} |")
    return lines


__all__ = ["DENSE_CASES", "DENSE_LOSS_POINTS", "DenseCase", "dense_case", "run_dense_split", "summarise_dense",
           "run_dense", "render_dense"]
