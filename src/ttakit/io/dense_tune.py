"""Tune a policy and a merge for detection or segmentation on image files:
what ``ttakit tune --task detect|segment`` does but parsing options.

The images are read and fitted once; a prediction cache
(:mod:`ttakit.tasks.dense_cache`) runs every candidate view once per image,
and :func:`ttakit.tuning.dense.greedy_dense` compares views and merges on
the cached outputs (mAP or AP50 against COCO boxes; mean IoU against label
maps), guarded by the cross-fitted fixed-sequence test (per-image AP or
mean IoU as the guard's evidence), with the fallback to no TTA.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..tuning.guard import GUARD_ALPHA, GUARD_FOLDS
from ..tuning.dense import DETECTION_MERGES, SEGMENTATION_MERGES, DenseTuneResult, greedy_dense
from .dense import fit_images, labels_back, read_files
from .dense_eval import IGNORE, NO_MERGE, _ground_truth, _read_coco, coco_images, mask_pairs, parse_merge_spec, \
    read_mask
from .images import MAX_PIXELS

#: objectives of detection tuning (COCO AP@[.5:.95] or AP@.5)
DETECTION_OBJECTIVES = ("map", "ap50")


def _score(subsets, idx) -> float:
    return subsets.score(idx)


def _per_image(subsets, idx):
    return subsets.per_image(idx)


def tune_detection_files(model, folder, annotations, candidates="flips", merges=DETECTION_MERGES, *,
                         size: tuple[int, int], fit: str = "letterbox", pad_value: int = 0, objective: str = "map",
                         budget: int = 3, guard_folds: int = GUARD_FOLDS, guard_alpha: float = GUARD_ALPHA,
                         seed: int = 0, category_ids=None,
                         baseline_merge: str = NO_MERGE, mode: str = "RGB", max_pixels: int = MAX_PIXELS,
                         limit: int | None = None, **detector_options) -> DenseTuneResult:
    """Greedy search of views and box merges on the images of the COCO file
    ``annotations`` found in ``folder`` (labels as in
    :func:`~ttakit.io.dense_eval.evaluate_detection_files`)."""
    from ..evaluation.dense_subsets import DetectionSubsets
    from ..tasks.dense_cache import DetectionCache
    from .dense import DensePredictions, detection_records

    if objective not in DETECTION_OBJECTIVES:
        raise InputError(f"objective must be one of {', '.join(DETECTION_OBJECTIVES)}, got {objective!r}")
    data, listed = coco_images(annotations, folder)
    arrays, images, paths, _, _ = _read_coco(data, listed, mode, max_pixels, limit)
    cats = list(category_ids) if category_ids is not None else sorted(c["id"] for c in data["categories"])
    f = fit_images(arrays, size, fit, pad_value)
    cache = DetectionCache(model, f.x, data_layout="NHWC", on_error="mark", **detector_options)
    ids = np.array([im["id"] for im in images])
    gt = _ground_truth(data, list(ids))

    def run(policy, name, options):
        res = cache.run(policy, name, options)
        pred = DensePredictions("detect", paths, list(ids), f.sizes,
                                [{"boxes": b / np.r_[s, s], "scores": sc, "labels": lab}
                                 for b, s, sc, lab in zip(res.boxes, f.scales, res.scores, res.labels)], [])
        return DetectionSubsets(gt, detection_records(pred, cats), ids, objective)

    res = greedy_dense(run, _score, len(ids), candidates, merges, parse_merge_spec(baseline_merge), budget,
                       guard_folds=guard_folds, guard_alpha=guard_alpha, seed=seed, objective=objective,
                       ensure=cache.ensure, per_image=_per_image)
    res.forward_passes = cache.forward_passes
    return res


def tune_segmentation_files(model, images, masks, candidates="flips", merges=SEGMENTATION_MERGES, *,
                            size: tuple[int, int], fit: str = "stretch", pad_value: int = 0, budget: int = 3,
                            guard_folds: int = GUARD_FOLDS, guard_alpha: float = GUARD_ALPHA, seed: int = 0,
                            mask_suffix: str = "",
                            binary_masks: bool = False, mode: str = "RGB", max_pixels: int = MAX_PIXELS,
                            limit: int | None = None, max_bytes: int | None = None,
                            **segmenter_options) -> DenseTuneResult:
    """Greedy search of views and class merges on mean IoU (each image at its
    own resolution) against the label maps in ``masks``; the cache of
    per-view score maps is bounded by ``max_bytes``."""
    from ..evaluation.dense_subsets import SegmentationSubsets
    from ..tasks.dense_cache import SEGMENTATION_CACHE_BYTES, SegmentationCache

    imgs, mask_paths, _ = mask_pairs(images, masks, mask_suffix)
    imgs, mask_paths = imgs[:limit], mask_paths[:limit]
    arrays, good, _ = read_files(imgs, mode, max_pixels)
    keep = set(good)
    gts = [read_mask(m, binary_masks) for p, m in zip(imgs, mask_paths) if str(p) in keep]
    f = fit_images(arrays, size, fit, pad_value)
    cache = SegmentationCache(model, f.x, data_layout="NHWC", on_error="mark",
                              max_bytes=max_bytes or SEGMENTATION_CACHE_BYTES, **segmenter_options)
    k = max(int(g.max()) for g in gts) + 1

    def run(policy, name, options):
        labels = cache.run(policy, name)
        preds = [labels_back(labels[i], f.sizes[i], f.scales[i], fit) for i in range(len(gts))]
        kk = max(k, max(int(p.max()) for p in preds) + 1)
        return SegmentationSubsets(preds, gts, kk, IGNORE)

    res = greedy_dense(run, _score, len(gts), candidates, merges, ("mean", {}), budget, guard_folds=guard_folds,
                       guard_alpha=guard_alpha, seed=seed, objective="miou", ensure=cache.ensure,
                       per_image=_per_image)
    res.forward_passes = cache.forward_passes
    return res


__all__ = ["DETECTION_OBJECTIVES", "tune_detection_files", "tune_segmentation_files"]
