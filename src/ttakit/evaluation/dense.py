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
                        level: float = 0.95, n_boot: int = 1000, seed: int = 0, tolerance: float = 0.01) -> PairedDense:
    """Mean IoU of ``pred_b`` minus that of ``pred_a`` on the same images, with a
    percentile bootstrap CI resampling images (the confusion matrices are
    per image, so each resample is a sum, not a re-run)."""
    pred_a, pred_b, gt = np.asarray(pred_a), np.asarray(pred_b), np.asarray(gt)
    if not (pred_a.shape == pred_b.shape == gt.shape):
        raise InputError(f"label maps must have one shape, got {pred_a.shape}, {pred_b.shape}, {gt.shape}")
    ca = np.stack([_confusion(pred_a[i], gt[i], num_classes, ignore_index) for i in range(len(gt))])
    cb = np.stack([_confusion(pred_b[i], gt[i], num_classes, ignore_index) for i in range(len(gt))])

    def miou(conf):
        iou, _, present = _iou_dice(conf)
        return float(np.nanmean(iou[present])) if present.any() else float("nan")

    a, b = miou(ca.sum(0)), miou(cb.sum(0))
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for j in range(n_boot):
        idx = rng.integers(0, len(gt), len(gt))
        diffs[j] = miou(cb[idx].sum(0)) - miou(ca[idx].sum(0))
    lo, hi = np.nanquantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    ia = np.array([miou(c) for c in ca])
    ib = np.array([miou(c) for c in cb])
    return PairedDense("miou", len(gt), a, b, b - a, float(lo), float(hi),
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


def coco_map(ground_truth, detections: list[dict], image_ids=None, iou_type: str = "bbox") -> dict:
    """``{"map": AP@[.5:.95], "ap50": AP@.5}`` of ``detections`` on the images
    ``image_ids`` (default: all images of the ground truth); ``iou_type`` is
    pycocotools' ``bbox``, ``segm`` or ``keypoints`` (OKS)."""
    _, COCOeval = _coco()
    gt = ground_truth if hasattr(ground_truth, "getImgIds") else load_coco_ground_truth(ground_truth)
    ids = list(gt.getImgIds()) if image_ids is None else [int(i) for i in image_ids]
    dets = [d for d in detections if d["image_id"] in set(ids)]
    if not dets:
        return {"map": 0.0, "ap50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, iou_type)
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map": float(max(ev.stats[0], 0.0)), "ap50": float(max(ev.stats[1], 0.0))}


def paired_detection(ground_truth, dets_a: list[dict], dets_b: list[dict], level: float = 0.95,
                     n_boot: int = 200, seed: int = 0) -> PairedDense:
    """mAP of ``dets_b`` minus that of ``dets_a``, with a bootstrap CI over
    images (a resample repeats images: each copy gets a new image id)."""
    return paired_coco(ground_truth, dets_a, dets_b, level=level, n_boot=n_boot, seed=seed)["map"]


def paired_coco(ground_truth, dets_a: list[dict], dets_b: list[dict], iou_type: str = "bbox", level: float = 0.95,
                n_boot: int = 200, seed: int = 0, tolerance: float = 0.01) -> dict[str, PairedDense]:
    """``{"map": ..., "ap50": ...}``: each metric of ``dets_b`` minus that of
    ``dets_a`` (COCOeval ``iou_type``), with one bootstrap over images for
    both (a resample repeats images: each copy gets a new image id), and the
    images whose own metric rose / fell by more than ``tolerance``."""
    gt = ground_truth if hasattr(ground_truth, "getImgIds") else load_coco_ground_truth(ground_truth)
    ids = sorted(gt.getImgIds())
    ma, mb = coco_map(gt, dets_a, ids, iou_type), coco_map(gt, dets_b, ids, iou_type)
    by_img_a, by_img_b = _by_image(dets_a), _by_image(dets_b)
    rng = np.random.default_rng(seed)
    diffs = {k: np.empty(n_boot) for k in ma}
    for j in range(n_boot):
        pick = rng.choice(ids, len(ids))
        g, da, db = _resampled(gt, pick, by_img_a, by_img_b)
        ra, rb = coco_map(g, da, iou_type=iou_type), coco_map(g, db, iou_type=iou_type)
        for k in diffs:
            diffs[k][j] = rb[k] - ra[k]
    per_a = [coco_map(gt, dets_a, [i], iou_type) for i in ids]
    per_b = [coco_map(gt, dets_b, [i], iou_type) for i in ids]
    out = {}
    for k in ma:
        lo, hi = np.quantile(diffs[k], [(1 - level) / 2, (1 + level) / 2]) if n_boot else (np.nan, np.nan)
        pa, pb = np.array([p[k] for p in per_a]), np.array([p[k] for p in per_b])
        out[k] = PairedDense(k, len(ids), ma[k], mb[k], mb[k] - ma[k], float(lo), float(hi),
                             int(np.sum(pb - pa > tolerance)), int(np.sum(pa - pb > tolerance)))
    return out


def _by_image(dets):
    out: dict[int, list] = {}
    for d in dets:
        out.setdefault(int(d["image_id"]), []).append(d)
    return out


def _resampled(gt, pick, by_a, by_b):
    images, anns, da, db = [], [], [], []
    for new_id, old in enumerate(pick, 1):
        img = dict(gt.imgs[int(old)], id=new_id)
        images.append(img)
        for a in gt.imgToAnns.get(int(old), []):
            anns.append(dict(a, id=len(anns) + 1, image_id=new_id))
        da += [dict(d, image_id=new_id) for d in by_a.get(int(old), [])]
        db += [dict(d, image_id=new_id) for d in by_b.get(int(old), [])]
    g = load_coco_ground_truth({"images": images, "annotations": anns,
                                "categories": list(gt.cats.values())})
    return g, da, db
