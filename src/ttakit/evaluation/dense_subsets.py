"""Dense metrics of any subset of a fixed set of images, and each image's
own score, from one pass over the predictions: what dense tuning needs to
score many (views, merge) trials on many image subsets (the search's folds)
without re-matching boxes or re-counting pixels.

- :class:`SegmentationSubsets`: per-image confusion matrices; a subset's
  mean IoU pools its images' pixels (as :func:`~ttakit.evaluation.dense.
  segmentation_scores`), an image's own score is its mean IoU over the
  classes in its ground truth.
- :class:`DetectionSubsets`: detections matched once by COCOeval; a
  subset's mAP (or AP50) re-accumulates its matched images (as
  :func:`~ttakit.evaluation.dense.coco_map` on those images), an image's own
  score is the AP of that image alone (0 where COCO has nothing to score:
  an image without ground truth scores 0 whatever is detected on it).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .dense import _aps_of, _class_score, _confusions, _iou_dice, _matched


class SegmentationSubsets:
    """Mean IoU of subsets of ``preds`` against ``gts`` (label maps, one per image)."""

    def __init__(self, preds, gts, num_classes: int, ignore_index: int | None = None):
        self.confusions = _confusions(preds, gts, num_classes, ignore_index)
        self._own: np.ndarray | None = None

    def score(self, idx) -> float:
        iou, _, present = _iou_dice(self.confusions[np.asarray(idx, np.int64)].sum(0))
        return float(np.nanmean(iou[present])) if present.any() else 0.0

    def per_image(self, idx) -> np.ndarray:
        if self._own is None:
            self._own = np.array([_class_score(c, "iou", None) for c in self.confusions], np.float64)
            self._own[~np.isfinite(self._own)] = 0.0
        return self._own[np.asarray(idx, np.int64)]


class DetectionSubsets:
    """mAP (``metric="map"``) or AP50 (``"ap50"``) of subsets of the images
    ``image_ids`` (positions in that list), detections ``dets`` (COCO
    records) matched once against ``ground_truth`` (a pycocotools COCO)."""

    def __init__(self, ground_truth, dets: list[dict], image_ids, metric: str = "map"):
        ids = np.asarray([int(i) for i in image_ids], np.int64)
        if len(np.unique(ids)) != len(ids):
            raise InputError("image_ids must not repeat an image")
        self.metric = metric
        self.ev = _matched(ground_truth, dets, ids.tolist())
        self._pos = np.searchsorted(np.sort(ids), ids)  # COCOeval keeps its images sorted by id
        self._own: np.ndarray | None = None

    def score(self, idx) -> float:
        return _aps_of(self.ev, self._pos[np.asarray(idx, np.int64)])[self.metric]

    def per_image(self, idx) -> np.ndarray:
        if self._own is None:
            self._own = np.array([_aps_of(self.ev, [p])[self.metric] for p in self._pos], np.float64)
        return self._own[np.asarray(idx, np.int64)]


__all__ = ["SegmentationSubsets", "DetectionSubsets"]
