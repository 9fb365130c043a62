"""Paired evaluation of segmentation, detection and keypoints: with and
without TTA on the same images, the difference with a bootstrap CI over
images, and the images (or people) each change helped or hurt.

- Segmentation: per-class IoU and Dice accumulated over all pixels (mean IoU
  and mean Dice over the classes present), and each image's own mean IoU for
  the per-image counts.
- Detection: COCO mAP@[.5:.95] and AP50 through pycocotools (``ttakit[coco]``)
  on COCO-format ground truth; the CI resamples images and re-runs COCOeval
  on each resample (``n_boot`` of them: a few seconds per hundred on small sets).
- Keypoints: each person's OKS (COCO's object keypoint similarity, the
  formula of pycocotools' ``computeOks`` against that person's own ground
  truth) and PCK (share of labelled keypoints within ``alpha`` x the longer
  side of the person's box), averaged over people; the CI resamples images
  (all people of an image together). OKS AP itself: ``coco_map(...,
  iou_type="keypoints")`` and ``paired_detection(..., iou_type="keypoints")``.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..errors import InputError, require


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


def _label_maps(maps, name: str) -> list[np.ndarray]:
    """``(N, H, W)`` label maps, or a sequence of ``(H, W)`` maps of any sizes."""
    out = [np.asarray(m) for m in maps]
    if any(m.ndim != 2 for m in out):
        raise InputError(f"{name} must be label maps (N, H, W) or a list of (H, W) maps")
    return out


def _confusions(preds, gts, k: int, ignore_index: int | None, names=("pred", "gt")) -> np.ndarray:
    """``(N, k, k)`` confusion matrices, one per image (images may differ in size)."""
    preds, gts = _label_maps(preds, names[0]), _label_maps(gts, names[1])
    if len(preds) != len(gts) or any(p.shape != g.shape for p, g in zip(preds, gts)):
        raise InputError(f"{names[0]} and {names[1]} must hold the same number of label maps, each of the "
                         f"same shape as its ground truth; got {len(preds)} and {len(gts)} maps")
    return np.stack([_confusion(p, g, k, ignore_index) for p, g in zip(preds, gts)]) if gts else \
        np.zeros((0, k, k), np.int64)


SEG_METRICS = ("iou", "dice")


def _class_score(conf: np.ndarray, metric: str, classes) -> float:
    """Mean IoU or Dice over ``classes`` (default: the classes present in the ground truth)."""
    iou, dice, present = _iou_dice(conf)
    vals = iou if metric == "iou" else dice
    keep = present if classes is None else np.isin(np.arange(len(vals)), classes) & present
    return float(np.nanmean(vals[keep])) if keep.any() else float("nan")


def segmentation_scores(pred, gt, num_classes: int, ignore_index: int | None = None) -> dict:
    """Mean IoU and mean Dice over the classes present in ``gt`` (pixels of
    all images pooled), per-class values, and each image's mean IoU.
    ``pred`` and ``gt`` are ``(N, H, W)`` label maps or lists of ``(H, W)``
    maps (images of different sizes)."""
    per = _confusions(pred, gt, num_classes, ignore_index)
    if not len(per):
        raise InputError("no label maps to score")
    per_image = np.array([_class_score(c, "iou", None) for c in per])
    iou, dice, present = _iou_dice(per.sum(0))
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
    improved: int   #: images (or instances) whose own score rose by more than ``tolerance``
    worsened: int   #: images (or instances) whose own score fell by more than ``tolerance``
    #: each image's own score under A and under B (for a report's galleries; not in :meth:`as_dict`)
    per_image: tuple | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("per_image")
        return d


def paired_segmentation(pred_a, pred_b, gt, num_classes: int, ignore_index: int | None = None,
                        level: float = 0.95, n_boot: int = 1000, seed: int = 0, tolerance: float = 0.01,
                        metric: str = "iou", classes=None) -> PairedDense:
    """Mean IoU (``metric="iou"``) or mean Dice (``"dice"``) of ``pred_b``
    minus that of ``pred_a`` on the same images, with a percentile bootstrap
    CI resampling images (the confusion matrices are per image, so each
    resample is a sum, not a re-run). ``classes``: the class indices to
    average over (default: those present in ``gt``; ``[1]`` scores the
    foreground of a binary task alone). Label maps may be ``(N, H, W)`` or
    lists of ``(H, W)`` maps of different sizes."""
    if metric not in SEG_METRICS:
        raise InputError(f"metric must be one of {', '.join(SEG_METRICS)}, got {metric!r}")
    if classes is not None and (not len(classes) or any(not 0 <= int(c) < num_classes for c in classes)):
        raise InputError(f"classes must be a non-empty list of indices in [0, {num_classes - 1}], got {classes}")
    ca = _confusions(pred_a, gt, num_classes, ignore_index, ("pred_a", "gt"))
    cb = _confusions(pred_b, gt, num_classes, ignore_index, ("pred_b", "gt"))
    if not len(ca):
        raise InputError("no label maps to compare")

    def score(conf):
        return _class_score(conf, metric, classes)

    a, b = score(ca.sum(0)), score(cb.sum(0))
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for j in range(n_boot):
        idx = rng.integers(0, len(ca), len(ca))
        diffs[j] = score(cb[idx].sum(0)) - score(ca[idx].sum(0))
    lo, hi = np.nanquantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    ia = np.array([score(c) for c in ca])
    ib = np.array([score(c) for c in cb])
    name = ("m" + metric) if classes is None else f"{metric}[{','.join(str(int(c)) for c in np.ravel(classes))}]"
    return PairedDense(name, len(ca), a, b, b - a, float(lo), float(hi),
                       int(np.sum(ib - ia > tolerance)), int(np.sum(ia - ib > tolerance)), (ia, ib))


# -- detection -----------------------------------------------------------------------

def _coco():
    what = "COCO metrics (and reading COCO annotations)"
    return require("pycocotools.coco", "coco", what).COCO, require("pycocotools.cocoeval", "coco", what).COCOeval


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


COCO_IOU_TYPES = ("bbox", "segm", "keypoints")


def coco_map(ground_truth, detections: list[dict], image_ids=None, iou_type: str = "bbox") -> dict:
    """``{"map": AP@[.5:.95], "ap50": AP@.5}`` of ``detections`` on the images
    ``image_ids`` (default: all images of the ground truth). ``iou_type``:
    ``"bbox"``, ``"segm"`` or ``"keypoints"`` (OKS AP of person keypoint
    records: ``keypoints`` as 17 x (x, y, v), ``score``)."""
    if iou_type not in COCO_IOU_TYPES:
        raise InputError(f"iou_type must be one of {', '.join(COCO_IOU_TYPES)}, got {iou_type!r}")
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
                     n_boot: int = 200, seed: int = 0, iou_type: str = "bbox") -> PairedDense:
    """mAP of ``dets_b`` minus that of ``dets_a``, with a bootstrap CI over
    images (a resample repeats images, as if each copy were a new image).
    ``iou_type="keypoints"`` compares OKS AP instead (metric ``"oks_ap"``)."""
    r = paired_coco(ground_truth, dets_a, dets_b, iou_type=iou_type, level=level, n_boot=n_boot, seed=seed)["map"]
    return replace(r, metric={"bbox": "map", "segm": "segm_map", "keypoints": "oks_ap"}[iou_type])


def paired_coco(ground_truth, dets_a: list[dict], dets_b: list[dict], iou_type: str = "bbox", level: float = 0.95,
                n_boot: int = 200, seed: int = 0, tolerance: float = 0.01) -> dict[str, PairedDense]:
    """``{"map": ..., "ap50": ...}``: each metric of ``dets_b`` minus that of
    ``dets_a`` (COCOeval ``iou_type``), with one bootstrap over images for
    both (a resample repeats images, as if each copy were a new image), and
    the images whose own metric rose / fell by more than ``tolerance``.

    COCOeval matches detections to ground truth per image and category, so
    each side is matched once (``COCOeval.evaluate``) and a resample, or one
    image's own mAP, only re-accumulates the matched images it picks: the
    same numbers as re-running COCOeval on the resampled set, at a fraction
    of the cost."""
    if iou_type not in COCO_IOU_TYPES:
        raise InputError(f"iou_type must be one of {', '.join(COCO_IOU_TYPES)}, got {iou_type!r}")
    gt = ground_truth if hasattr(ground_truth, "getImgIds") else load_coco_ground_truth(ground_truth)
    ids = sorted(gt.getImgIds())
    ev_a, ev_b = _matched(gt, dets_a, ids, iou_type), _matched(gt, dets_b, ids, iou_type)
    everything = np.arange(len(ids))
    ma, mb = _aps_of(ev_a, everything), _aps_of(ev_b, everything)
    rng = np.random.default_rng(seed)
    diffs = {k: np.empty(n_boot) for k in ma}
    for j in range(n_boot):
        pick = rng.integers(0, len(ids), len(ids))
        ra, rb = _aps_of(ev_a, pick), _aps_of(ev_b, pick)
        for k in diffs:
            diffs[k][j] = rb[k] - ra[k]
    per_a = [_aps_of(ev_a, [i]) for i in everything]
    per_b = [_aps_of(ev_b, [i]) for i in everything]
    out = {}
    for k in ma:
        lo, hi = np.quantile(diffs[k], [(1 - level) / 2, (1 + level) / 2]) if n_boot else (np.nan, np.nan)
        pa, pb = np.array([p[k] for p in per_a]), np.array([p[k] for p in per_b])
        out[k] = PairedDense(k, len(ids), ma[k], mb[k], mb[k] - ma[k], float(lo), float(hi),
                             int(np.sum(pb - pa > tolerance)), int(np.sum(pa - pb > tolerance)), (pa, pb))
    return out


def _matched(gt, dets: list[dict], ids: list, iou_type: str = "bbox"):
    """A COCOeval that has matched ``dets`` on the images ``ids`` (None without detections)."""
    _, COCOeval = _coco()
    dets = [d for d in dets if d["image_id"] in set(ids)]
    if not dets:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), iou_type)
        ev.params.imgIds = list(ids)
        ev.evaluate()
    return ev


def _aps_of(ev, positions) -> dict[str, float]:
    """``{"map": AP@[.5:.95], "ap50": AP@.5}`` (all areas; the most
    detections: 100 boxes, 20 people) of the matched images at
    ``positions`` of ``ev``'s image list, repeats counted as new images;
    0 where COCO has nothing to score, as :func:`coco_map`."""
    if ev is None:
        return {"map": 0.0, "ap50": 0.0}
    pe = ev._paramsEval
    n_img, n_area = len(pe.imgIds), len(pe.areaRng)
    area = pe.areaRngLbl.index("all")
    sub = copy.copy(ev)
    sub.params, sub._paramsEval = copy.copy(ev.params), copy.copy(pe)
    sub.params.imgIds = sub._paramsEval.imgIds = list(range(len(positions)))
    # accumulate only what the two APs read: the "all" area range (read at offset 0), the most detections
    sub.params.areaRng, sub.params.areaRngLbl, sub.params.maxDets = [pe.areaRng[area]], ["all"], [pe.maxDets[-1]]
    sub.evalImgs = [None] * (len(pe.catIds) * n_area * len(positions))
    for k in range(len(pe.catIds)):
        for j, i in enumerate(positions):
            sub.evalImgs[k * n_area * len(positions) + j] = \
                ev.evalImgs[k * n_area * n_img + area * n_img + int(i)]
    with contextlib.redirect_stdout(io.StringIO()):
        sub.accumulate()
    prec = sub.eval["precision"][:, :, :, 0, 0]
    at50 = prec[np.isclose(pe.iouThrs, 0.5)]

    def mean(p):
        valid = p[p > -1]
        return float(max(valid.mean(), 0.0)) if valid.size else 0.0

    return {"map": mean(prec), "ap50": mean(at50)}


def _map_of(ev, positions) -> float:
    """AP@[.5:.95] of the matched images at ``positions`` (see :func:`_aps_of`)."""
    return _aps_of(ev, positions)["map"]


# -- keypoints -----------------------------------------------------------------------

#: COCO's per-keypoint OKS constants (pycocotools ``COCOeval.Params.kpt_oks_sigmas``), COCO order
COCO_KEYPOINT_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87,
                                 .89, .89]) / 10.0
KEYPOINT_METRICS = ("oks", "pck")


def _keypoint_arrays(pred, gt):
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if gt.ndim != 3 or gt.shape[-1] != 3:
        raise InputError(f"ground-truth keypoints must be (people, P, 3) as x, y, v; got {gt.shape}")
    if pred.ndim != 3 or pred.shape[:2] != gt.shape[:2] or pred.shape[-1] < 2:
        raise InputError(f"predicted keypoints must be (people, P, 2 or 3) matching the ground truth "
                         f"{gt.shape[:2]}; got {pred.shape}")
    return pred[..., :2], gt


def keypoint_oks(pred, gt, areas, sigmas=None) -> np.ndarray:
    """Each person's OKS between its predicted points ``(people, P, 2+)``
    and its ground truth ``(people, P, 3)`` (``x, y, v``; only ``v > 0``
    counts) with the ground truth's ``areas``: the mean over labelled
    keypoints of ``exp(-d^2 / (2 area (2 sigma)^2))``, as pycocotools. A
    point that is NaN (not found) scores 0; a person with no labelled
    keypoint is NaN."""
    pred, gt = _keypoint_arrays(pred, gt)
    sig = COCO_KEYPOINT_SIGMAS if sigmas is None else np.asarray(sigmas, np.float64)
    if sig.shape != (gt.shape[1],):
        raise InputError(f"need one sigma per keypoint ({gt.shape[1]}), got {sig.shape}")
    areas = np.asarray(areas, np.float64).reshape(-1)
    d2 = ((pred - gt[..., :2]) ** 2).sum(-1)
    e = d2 / ((2 * sig) ** 2) / (areas[:, None] + np.spacing(1)) / 2
    sim = np.where(np.isfinite(e), np.exp(-np.where(np.isfinite(e), e, 0)), 0.0)
    vis = gt[..., 2] > 0
    n = vis.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sim * vis).sum(1) / n, np.nan)


def keypoint_pck(pred, gt, boxes, alpha: float = 0.1) -> np.ndarray:
    """Each person's PCK: the share of labelled keypoints (``v > 0``) whose
    predicted point lies within ``alpha`` x the longer side of the person's
    box (``x, y, w, h``); NaN points are misses."""
    pred, gt = _keypoint_arrays(pred, gt)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    thr = alpha * np.maximum(boxes[:, 2], boxes[:, 3])
    d = np.sqrt(((pred - gt[..., :2]) ** 2).sum(-1))
    hit = np.where(np.isfinite(d), d <= thr[:, None], False)
    vis = gt[..., 2] > 0
    n = vis.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (hit & vis).sum(1) / n, np.nan)


def paired_keypoints(pred_a, pred_b, gt, areas, boxes, groups=None, metric: str = "oks", alpha: float = 0.1,
                     level: float = 0.95, n_boot: int = 1000, seed: int = 0, tolerance: float = 0.01) -> PairedDense:
    """Mean per-person OKS (``metric="oks"``) or PCK (``"pck"``) of
    ``pred_b`` minus that of ``pred_a`` on the same people, with a
    percentile bootstrap CI resampling ``groups`` (each person's image id:
    the people of one image stay together; default: every person alone),
    and the people whose own score rose or fell by more than ``tolerance``."""
    if metric not in KEYPOINT_METRICS:
        raise InputError(f"metric must be one of {', '.join(KEYPOINT_METRICS)}, got {metric!r}")

    def score(pred):
        return keypoint_oks(pred, gt, areas) if metric == "oks" else keypoint_pck(pred, gt, boxes, alpha)

    sa, sb = score(pred_a), score(pred_b)
    keep = np.isfinite(sa) & np.isfinite(sb)
    if not keep.any():
        raise InputError("no person with a labelled keypoint to compare")
    g = np.arange(len(sa)) if groups is None else np.asarray(groups).reshape(-1)
    if len(g) != len(sa):
        raise InputError(f"groups must name one group per person ({len(sa)}), got {len(g)}")
    sa, sb, g = sa[keep], sb[keep], g[keep]
    _, gi = np.unique(g, return_inverse=True)
    k = gi.max() + 1
    # per group: sums of the scores and the count, so a resample is a weighted sum
    ca, cb, cn = (np.bincount(gi, sa, k), np.bincount(gi, sb, k), np.bincount(gi, minlength=k).astype(float))
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, k, k), minlength=k) for _ in range(n_boot)]).astype(float)
    n = counts @ cn
    diffs = (counts @ cb - counts @ ca) / np.where(n > 0, n, np.nan)
    lo, hi = np.nanquantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    a, b = float(sa.mean()), float(sb.mean())
    return PairedDense(metric if metric == "oks" else f"pck@{alpha:g}", int(keep.sum()), a, b, b - a, float(lo),
                       float(hi), int(np.sum(sb - sa > tolerance)), int(np.sum(sa - sb > tolerance)))
