"""Paired evaluation of segmentation and detection: with and without TTA on
the same images, the difference with a bootstrap CI over images, and the
images each change helped or hurt.

- Segmentation: per-class IoU and Dice accumulated over all pixels (mean IoU
  and mean Dice over the classes present), and each image's own mean IoU for
  the per-image counts.
- Detection: COCO mAP@[.5:.95] and AP50 through pycocotools (``ttakit[coco]``)
  on COCO-format ground truth; the CI resamples images and re-runs COCOeval
  on each resample (``n_boot`` of them: a few seconds per hundred on small sets).
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError


# -- segmentation ---------------------------------------------------------------------

def _confusion(pred: np.ndarray, gt: np.ndarray, k: int, ignore_index: int | None) -> np.ndarray:
    keep = np.ones(gt.shape, bool) if ignore_index is None else gt != ignore_index
    p, g = pred[keep].astype(np.int64), gt[keep].astype(np.int64)
    if p.size and (p.min() < 0 or p.max() >= k or g.min() < 0 or g.max() >= k):
        raise InputError(f"labels must be class indices in [0, {k - 1}] (or ignore_index)")
    return np.bincount(g * k + p, minlength=k * k).reshape(k, k)


def _iou_dice(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(conf).astype(np.float64)
    fp, fn = conf.sum(0) - tp, conf.sum(1) - tp
    present = (tp + fn) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (tp + fp + fn)
        dice = 2 * tp / (2 * tp + fp + fn)
    return iou, dice, present


def segmentation_scores(pred, gt, num_classes: int, ignore_index: int | None = None) -> dict:
    """Mean IoU and mean Dice over the classes present in ``gt`` (pixels of
    all images pooled), per-class values, and each image's mean IoU."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise InputError(f"label maps must both be (N, H, W), got {pred.shape} and {gt.shape}")
    total = np.zeros((num_classes, num_classes), np.int64)
    per_image = np.empty(len(gt))
    for i in range(len(gt)):
        conf = _confusion(pred[i], gt[i], num_classes, ignore_index)
        total += conf
        iou, _, present = _iou_dice(conf)
        per_image[i] = float(np.nanmean(np.where(present, iou, np.nan))) if present.any() else np.nan
    iou, dice, present = _iou_dice(total)
    return {"miou": float(np.nanmean(iou[present])), "dice": float(np.nanmean(dice[present])),
            "iou_per_class": iou.tolist(), "dice_per_class": dice.tolist(), "per_image_iou": per_image}


@dataclass
class PairedDense:
    """B against A on the same images: ``difference`` is metric(B) - metric(A)."""

    metric: str
    n: int
    a: float
    b: float
    difference: float
    ci_low: float
    ci_high: float
    improved: int   #: images whose own score rose by more than ``tolerance``
    worsened: int   #: images whose own score fell by more than ``tolerance``

    def as_dict(self) -> dict:
        return asdict(self)


def paired_segmentation(pred_a, pred_b, gt, num_classes: int, ignore_index: int | None = None,
                        level: float = 0.95, n_boot: int = 1000, seed: int = 0, tolerance: float = 0.01,
                        metric: str = "iou", classes=None) -> PairedDense:
    """Mean IoU (``metric="dice"``: mean Dice) of ``pred_b`` minus that of
    ``pred_a`` on the same images, over the classes present, or over
    ``classes`` only (e.g. ``[1]``: a binary task's foreground), with a
    percentile bootstrap CI resampling images (the confusion matrices are
    per image, so each resample is a sum, not a re-run)."""
    pred_a, pred_b, gt = np.asarray(pred_a), np.asarray(pred_b), np.asarray(gt)
    if not (pred_a.shape == pred_b.shape == gt.shape):
        raise InputError(f"label maps must have one shape, got {pred_a.shape}, {pred_b.shape}, {gt.shape}")
    if metric not in ("iou", "dice"):
        raise InputError(f"metric must be 'iou' or 'dice', got {metric!r}")
    chosen = np.ones(num_classes, bool)
    if classes is not None:
        chosen = np.zeros(num_classes, bool)
        bad = [c for c in classes if not 0 <= int(c) < num_classes]
        if bad or not len(classes):
            raise InputError(f"classes must be a non-empty list of indices in [0, {num_classes - 1}], got {classes}")
        chosen[np.asarray(classes, np.int64)] = True
    ca = np.stack([_confusion(pred_a[i], gt[i], num_classes, ignore_index) for i in range(len(gt))])
    cb = np.stack([_confusion(pred_b[i], gt[i], num_classes, ignore_index) for i in range(len(gt))])

    def miou(conf):
        iou, dice, present = _iou_dice(conf)
        present = present & chosen
        return float(np.nanmean((iou if metric == "iou" else dice)[present])) if present.any() else float("nan")

    a, b = miou(ca.sum(0)), miou(cb.sum(0))
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for j in range(n_boot):
        idx = rng.integers(0, len(gt), len(gt))
        diffs[j] = miou(cb[idx].sum(0)) - miou(ca[idx].sum(0))
    lo, hi = np.nanquantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    ia = np.array([miou(c) for c in ca])
    ib = np.array([miou(c) for c in cb])
    name = ("m" if classes is None or len(classes) > 1 else "") + metric
    return PairedDense(name, len(gt), a, b, b - a, float(lo), float(hi),
                       int(np.sum(ib - ia > tolerance)), int(np.sum(ia - ib > tolerance)))


# -- detection -----------------------------------------------------------------------

def _coco():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise InputError("COCO metrics need pycocotools: pip install 'ttakit[coco]'") from None
    return COCO, COCOeval


def load_coco_ground_truth(annotations):
    """A pycocotools ``COCO`` object from a path or an already-loaded dict."""
    COCO, _ = _coco()
    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(annotations, dict):
            gt = COCO()
            gt.dataset = annotations
            gt.createIndex()
            return gt
        return COCO(str(annotations))


def coco_detections(image_ids, boxes, scores, labels, category_ids=None, box_format: str = "xyxy") -> list[dict]:
    """COCO result records (``bbox`` as x, y, w, h in pixels) from per-image
    arrays; ``category_ids[label]`` maps a model's label to a COCO category."""
    out = []
    for img, b, s, lab in zip(image_ids, boxes, scores, labels):
        b = np.asarray(b, np.float64).reshape(-1, 4)
        if box_format == "xyxy":
            b = np.column_stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]])
        elif box_format != "xywh":
            raise InputError(f"box_format must be 'xyxy' or 'xywh', got {box_format!r}")
        for bb, ss, ll in zip(b, np.asarray(s).ravel(), np.asarray(lab).ravel()):
            cat = int(category_ids[int(ll)]) if category_ids is not None else int(ll)
            out.append({"image_id": int(img), "category_id": cat, "bbox": [float(v) for v in bb],
                        "score": float(ss)})
    return out


def coco_map(ground_truth, detections: list[dict], image_ids=None) -> dict:
    """``{"map": AP@[.5:.95], "ap50": AP@.5}`` of ``detections`` on the images
    ``image_ids`` (default: all images of the ground truth)."""
    _, COCOeval = _coco()
    gt = ground_truth if hasattr(ground_truth, "getImgIds") else load_coco_ground_truth(ground_truth)
    ids = list(gt.getImgIds()) if image_ids is None else [int(i) for i in image_ids]
    dets = [d for d in detections if d["image_id"] in set(ids)]
    if not dets:
        return {"map": 0.0, "ap50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map": float(max(ev.stats[0], 0.0)), "ap50": float(max(ev.stats[1], 0.0))}


def paired_detection(ground_truth, dets_a: list[dict], dets_b: list[dict], level: float = 0.95,
                     n_boot: int = 200, seed: int = 0) -> PairedDense:
    """mAP of ``dets_b`` minus that of ``dets_a``, with a bootstrap CI over
    images (a resample repeats images, as if each copy were a new image).

    COCOeval matches detections to ground truth per image and category, so
    each side is matched once (``COCOeval.evaluate``) and a resample, or one
    image's own mAP, only re-accumulates the matched images it picks: the
    same numbers as re-running COCOeval on the resampled set, at a fraction
    of the cost."""
    gt = ground_truth if hasattr(ground_truth, "getImgIds") else load_coco_ground_truth(ground_truth)
    ids = sorted(gt.getImgIds())
    ev_a, ev_b = _matched(gt, dets_a, ids), _matched(gt, dets_b, ids)
    everything = np.arange(len(ids))
    a, b = _map_of(ev_a, everything), _map_of(ev_b, everything)
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for j in range(n_boot):
        pick = rng.integers(0, len(ids), len(ids))
        diffs[j] = _map_of(ev_b, pick) - _map_of(ev_a, pick)
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    per_a = np.array([_map_of(ev_a, [i]) for i in everything])
    per_b = np.array([_map_of(ev_b, [i]) for i in everything])
    return PairedDense("map", len(ids), a, b, b - a, float(lo), float(hi),
                       int(np.sum(per_b - per_a > 0.01)), int(np.sum(per_a - per_b > 0.01)))


def _matched(gt, dets: list[dict], ids: list):
    """A COCOeval that has matched ``dets`` on the images ``ids`` (None without detections)."""
    _, COCOeval = _coco()
    dets = [d for d in dets if d["image_id"] in set(ids)]
    if not dets:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.params.imgIds = list(ids)
        ev.evaluate()
    return ev


def _map_of(ev, positions) -> float:
    """AP@[.5:.95] (all areas, 100 detections) of the matched images at
    ``positions`` of ``ev``'s image list, repeats counted as new images;
    0 where COCO has nothing to score, as :func:`coco_map`."""
    if ev is None:
        return 0.0
    pe = ev._paramsEval
    n_img, n_area = len(pe.imgIds), len(pe.areaRng)
    area = pe.areaRngLbl.index("all")
    sub = copy.copy(ev)
    sub.params, sub._paramsEval = copy.copy(ev.params), copy.copy(pe)
    sub.params.imgIds = sub._paramsEval.imgIds = list(range(len(positions)))
    # accumulate only what AP@[.5:.95] reads: the "all" area range (read at offset 0), 100 detections
    sub.params.areaRng, sub.params.areaRngLbl, sub.params.maxDets = [pe.areaRng[area]], ["all"], [100]
    sub.evalImgs = [None] * (len(pe.catIds) * n_area * len(positions))
    for k in range(len(pe.catIds)):
        for j, i in enumerate(positions):
            sub.evalImgs[k * n_area * len(positions) + j] = \
                ev.evalImgs[k * n_area * n_img + area * n_img + int(i)]
    with contextlib.redirect_stdout(io.StringIO()):
        sub.accumulate()
    prec = sub.eval["precision"][:, :, :, 0, 0]
    valid = prec[prec > -1]
    return float(max(valid.mean(), 0.0)) if valid.size else 0.0
