"""Merging boxes across views: NMS, soft-NMS (linear, Gaussian) and Weighted
Boxes Fusion, per class, with a minimum number of agreeing views.

Every merge takes the boxes of all views of one image stacked together:
``boxes (N, 4)`` as ``(x1, y1, x2, y2)`` in any one frame (pixels or
normalised; nothing here clips), ``scores (N,)``, ``labels (N,)``, ``views
(N,)`` (which view each box came from, ``0 .. V-1``) and the views'
``weights (V,)``. It returns a :class:`BoxSet`, sorted by score (highest
first), whose ``support`` is the number of distinct views that agree with
each box (for WBF, the views in its cluster; for NMS and soft-NMS, the views
with a box of the same class overlapping it above ``iou_thr``).

Vectorised with NumPy, no loop over boxes:

- NMS: the IoU of every same-class pair (one pass over pair lists), then the
  greedy rule ``keep[i] = no kept box before i overlaps i`` solved as a fixed
  point of a vectorised step (exact: each step fixes at least one more box in
  score order, and the fixed point is unique; in practice 2-6 steps).
- soft-NMS and WBF are sequential by definition (each choice depends on the
  previous ones). They loop over the *rank* of a box within its class, and
  each step treats every class at once (classes sorted by size, so the step
  works on the classes that still have boxes of that rank). WBF first splits
  each class into parts that lie apart along x or y (a fused box never
  reaches across, so parts cannot interact) and loops over the rank within a
  part: as many steps as the largest group of mutually overlapping boxes of
  one class, not the largest class. :func:`wbf_many` fuses several images
  in the same steps (the Detector fuses each chunk of its inputs so).

Equal to ``ensemble_boxes`` (``nms``, ``soft_nms``, ``weighted_boxes_fusion``)
within 1e-5 on randomised cases (tests/test_box_merges.py), except where that
code is wrong, which ttakit does not copy:

- WBF ``conf_type="avg"`` with unequal view weights gives fused confidences
  above 1 (it rescales the mean score by ``min(V, n) / sum(weights)``);
  ttakit divides the weighted score sum by ``max(sum of all view weights,
  sum of the cluster's box weights)``: never above the highest score, and
  identical to ensemble-boxes whenever the weights are equal.
- ``nms``/``soft_nms`` with ``weights`` rescale the caller's score arrays in
  place, so a second call on the same lists applies the weights twice;
  ttakit never modifies its inputs, and weights views by ``w / max(w)``
  (equal weights leave scores unchanged).
- ``soft_nms`` selects with decayed scores but returns the original ones;
  ttakit returns the decayed scores (soft-NMS's re-scoring) unless
  ``rescore=False``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import InputError, PolicyError

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")


@dataclass
class BoxSet:
    """Boxes of one image after a merge, highest score first."""

    boxes: np.ndarray    #: (M, 4) x1, y1, x2, y2
    scores: np.ndarray   #: (M,)
    labels: np.ndarray   #: (M,) int64
    support: np.ndarray  #: (M,) distinct views agreeing with each box

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> "BoxSet":
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))


# -- formats ---------------------------------------------------------------------

def to_xyxy(boxes, fmt: str = "xyxy") -> np.ndarray:
    """Boxes ``(..., 4)`` in ``fmt`` as ``(x1, y1, x2, y2)`` (float64)."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.shape[-1:] != (4,):
        raise InputError(f"boxes must have 4 numbers each, got shape {b.shape}")
    if fmt == "xyxy":
        return b.copy()
    if fmt == "xywh":
        return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:]], -1)
    if fmt == "cxcywh":
        half = b[..., 2:] / 2
        return np.concatenate([b[..., :2] - half, b[..., :2] + half], -1)
    raise InputError(f"unknown box format {fmt!r}; valid: {', '.join(BOX_FORMATS)}")


def from_xyxy(boxes, fmt: str = "xyxy") -> np.ndarray:
    """Inverse of :func:`to_xyxy`."""
    b = np.asarray(boxes, dtype=np.float64)
    if fmt == "xyxy":
        return b.copy()
    if fmt == "xywh":
        return np.concatenate([b[..., :2], b[..., 2:] - b[..., :2]], -1)
    if fmt == "cxcywh":
        return np.concatenate([(b[..., :2] + b[..., 2:]) / 2, b[..., 2:] - b[..., :2]], -1)
    raise InputError(f"unknown box format {fmt!r}; valid: {', '.join(BOX_FORMATS)}")


def pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a[..., :]`` and ``b[..., :]`` elementwise (broadcasting)."""
    ix = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    iy = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.maximum(ix, 0.0) * np.maximum(iy, 0.0)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area_a + area_b - inter)


def stack_views(boxes_list, scores_list, labels_list):
    """Per-view lists (the ``ensemble_boxes`` convention) as stacked arrays
    ``boxes, scores, labels, views``."""
    b = [np.asarray(x, dtype=np.float64).reshape(-1, 4) for x in boxes_list]
    views = np.concatenate([np.full(len(x), i, np.int64) for i, x in enumerate(b)]) if b else np.zeros(0, np.int64)
    return (np.concatenate(b) if b else np.zeros((0, 4)),
            np.concatenate([np.asarray(s, np.float64).reshape(-1) for s in scores_list]) if b else np.zeros(0),
            np.concatenate([np.asarray(l).reshape(-1).astype(np.int64) for l in labels_list]) if b
            else np.zeros(0, np.int64), views)


# -- shared preparation --------------------------------------------------------------

def _prepare(boxes, scores, labels, views, weights):
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    lab = np.asarray(labels).reshape(-1)
    if not (len(b) == len(s) == len(lab)):
        raise InputError(f"{len(b)} boxes, {len(s)} scores and {len(lab)} labels: they must match")
    lab = lab.astype(np.int64)
    v = np.zeros(len(b), np.int64) if views is None else np.asarray(views).reshape(-1).astype(np.int64)
    if len(v) != len(b):
        raise InputError(f"{len(b)} boxes but {len(v)} view indices")
    n_views = int(v.max()) + 1 if len(v) else 1
    w = np.ones(n_views) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(v) and (v.min() < 0 or v.max() >= len(w)):
        raise InputError(f"view indices must be in [0, {len(w)}) for {len(w)} weights")
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise InputError("view weights must be finite, >= 0, and not all 0")
    # ordered corners; zero-area and non-finite boxes carry no evidence
    d = b[:, 2:] - b[:, :2]
    if (d > 0).all() and (d[:, 0] * d[:, 1] > 0).all() and np.isfinite(b).all() and np.isfinite(s).all():
        return b, s, lab, v, w  # the common case: nothing to reorder or drop
    b = np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], 1)
    ok = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) > 0) & np.isfinite(b).all(1) & np.isfinite(s)
    if not ok.all():
        b, s, lab, v = b[ok], s[ok], lab[ok], v[ok]
    return b, s, lab, v, w


#: two parts of a class are apart when one's boxes all end this far (as a fraction of the
#: boxes' coordinate span) before the other's begin along x or y; far above the rounding of
#: a fused box (a weighted mean of its boxes' corners), so no fused box reaches across
PART_GAP = 1e-9
#: coordinates larger than this many coordinate spans: no split into parts (the gap above
#: would no longer exceed rounding)
PART_MAX_OFFSET = 1e6
#: class labels below this are used as they are when splitting into parts (else renumbered)
PART_MAX_GROUPS = 1 << 16


def _spatial_parts(b: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Split each group (class) of boxes into parts that NMS, soft-NMS and WBF
    can process independently: part ids ``0 .. P-1``, one per box.

    Sort a group's boxes by ``x1``; a new part starts where ``x1`` lies beyond
    every earlier box's ``x2`` (by more than :data:`PART_GAP`); then the same
    along y within each part. Parts of a group then occupy disjoint x- or
    y-ranges, and a fused box is a weighted mean of its cluster's corners, so
    it stays inside its part's range: a box of another part overlaps it with
    IoU 0 and can never join it (for ``iou_thr >= 0``). Greedy fusion within
    each part therefore equals greedy fusion over the whole class, with far
    fewer sequential steps (the largest part instead of the largest class);
    likewise a box suppresses or decays only boxes of its own part.
    """
    n = len(b)
    if len(groups) and 0 <= groups.min() and groups.max() < PART_MAX_GROUPS:
        part = groups
    else:
        part = np.unique(groups, return_inverse=True)[1].reshape(-1)
    lo, hi = float(b.min()), float(b.max())
    span = hi - lo
    # no split where the gap would not exceed rounding: coordinates far from 0 for their span, or
    # sort keys (part * 4 + coordinate) so large that their spacing nears the gap
    if (n < 2 or not span > 0 or max(abs(lo), abs(hi)) > PART_MAX_OFFSET * span
            or 4.0 * max(n, PART_MAX_GROUPS) * np.finfo(np.float64).eps > PART_GAP / 4):
        return np.unique(part, return_inverse=True)[1].reshape(-1)
    u = (b - lo) / span  # in [0, 1]; parts are 4 apart in the sort keys below
    new = np.empty(n, bool)
    new[0] = True
    for ax in (0, 1):
        base = part * 4.0
        start = base + u[:, ax]
        order = np.argsort(start)
        ends = np.maximum.accumulate((base + u[:, ax + 2])[order])
        np.greater(start[order][1:], ends[:-1] + PART_GAP, out=new[1:])
        part = np.empty(n, np.int64)
        part[order] = np.cumsum(new) - 1
    return part


def _class_blocks(labels: np.ndarray, key: np.ndarray):
    """Order by class, then by ``key`` descending. Returns ``order`` and, per
    sorted box, the end of its class block."""
    order = np.lexsort((-key, labels))
    ls = labels[order]
    _, first, counts = np.unique(ls, return_index=True, return_counts=True)
    end = np.repeat(first + counts, counts)
    return order, end


def _pairs(end: np.ndarray):
    """All index pairs ``i < j`` within each class block (sorted order)."""
    n = len(end)
    after = end - np.arange(n) - 1
    total = int(after.sum())
    i = np.repeat(np.arange(n), after)
    offs = np.arange(total) - np.repeat(np.cumsum(after) - after, after)
    return i, i + 1 + offs


def _padded(labels: np.ndarray, key: np.ndarray):
    """Per class (largest class first) the box indices by ``key`` descending,
    padded with -1: ``(C, M)``, and the class sizes."""
    order, end = _class_blocks(labels, key)
    ls = labels[order]
    uniq, first, counts = np.unique(ls, return_index=True, return_counts=True)
    rank = np.empty(len(uniq), np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(len(uniq))
    cls = np.repeat(np.arange(len(uniq)), counts)
    pos = np.arange(len(order)) - np.repeat(first, counts)
    grid = np.full((len(uniq), int(counts.max()) if len(counts) else 0), -1, np.int64)
    grid[rank[cls], pos] = order
    return grid, np.sort(counts)[::-1]


def _support_from_pairs(keep_idx, i, j, edge, views, n):
    """Distinct views among each kept box and the boxes it overlaps."""
    a = np.concatenate([i[edge], j[edge], keep_idx])
    b = np.concatenate([j[edge], i[edge], keep_idx])
    kept = np.zeros(n, bool)
    kept[keep_idx] = True
    sel = kept[a]
    nv = int(views.max()) + 1 if len(views) else 1
    seen = np.zeros((n, nv), bool)  # which views each box meets
    seen[a[sel], views[b[sel]]] = True
    return seen[keep_idx].sum(1)


def _overlap_groups(b, lab, iou_thr):
    """Groups within which every pair of boxes with IoU above ``iou_thr`` lies:
    the parts of each class (:func:`_spatial_parts`) for ``iou_thr >= 0``."""
    return _spatial_parts(b, lab) if iou_thr >= 0 else lab


def _finish(boxes, scores, labels, support, min_views) -> BoxSet:
    ok = support >= min_views
    boxes, scores, labels, support = boxes[ok], scores[ok], labels[ok], support[ok]
    order = np.argsort(-scores, kind="stable")
    return BoxSet(boxes[order], scores[order], labels[order].astype(np.int64), support[order].astype(np.int64))


def _check_thr(name, v, lo=0.0, hi=1.0):
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise PolicyError(f"{name} must be a number, got {v!r}") from None
    if not lo <= f <= hi:
        raise PolicyError(f"{name} must be in [{lo}, {hi}], got {v!r}")
    return f


# -- NMS ----------------------------------------------------------------------------

def nms(boxes, scores, labels, views=None, weights=None, *, iou_thr: float = 0.5, min_views: int = 1) -> BoxSet:
    """Greedy non-maximum suppression per class: a box is kept unless a kept
    box of the same class with a higher score overlaps it with IoU above
    ``iou_thr``. Scores are multiplied by ``weights[view] / max(weights)``."""
    b, s, lab, v, w = _prepare(boxes, scores, labels, views, weights)
    if len(b) == 0:
        return BoxSet.empty()
    s = s * (w / w.max())[v]
    order, end = _class_blocks(_overlap_groups(b, lab, iou_thr), s)
    bs = b[order]
    i, j = _pairs(end)
    edge = pair_iou(bs[i], bs[j]) > iou_thr
    ei, ej = i[edge], j[edge]
    n = len(bs)
    keep = np.ones(n, bool)
    while True:  # fixed point of keep[j] = not any(keep[i] for edges i -> j): exact greedy NMS
        new = np.ones(n, bool)
        new[ej[keep[ei]]] = False
        if np.array_equal(new, keep):
            break
        keep = new
    kept = np.flatnonzero(keep)
    support = _support_from_pairs(kept, i, j, edge, v[order], n)
    return _finish(bs[kept], s[order][kept], lab[order][kept], support, min_views)


# -- soft-NMS -------------------------------------------------------------------------

def soft_nms(boxes, scores, labels, views=None, weights=None, *, method: str = "gaussian", iou_thr: float = 0.5,
             sigma: float = 0.5, score_thr: float = 0.001, min_views: int = 1, rescore: bool = True) -> BoxSet:
    """Soft-NMS (Bodla et al. 2017) per class: repeatedly take the box with
    the highest current score and decay the others of its class by
    ``1 - IoU`` where IoU > ``iou_thr`` (``method="linear"``) or by
    ``exp(-IoU^2 / sigma)`` (``"gaussian"``); keep boxes whose final score is
    above ``score_thr``. Returns the decayed scores (``rescore=False``: the
    original ones, as ensemble-boxes does)."""
    if method not in ("linear", "gaussian"):
        raise PolicyError(f"soft-NMS method must be 'linear' or 'gaussian', got {method!r}")
    if not float(sigma) > 0:
        raise PolicyError(f"soft-NMS sigma must be > 0, got {sigma!r}")
    b, s, lab, v, w = _prepare(boxes, scores, labels, views, weights)
    if len(b) == 0:
        return BoxSet.empty()
    s = s * (w / w.max())[v]
    grid, counts = _padded(_spatial_parts(b, lab), s)  # a box decays only those it overlaps
    c, m = grid.shape
    valid = grid >= 0
    g = np.where(valid, grid, 0)
    bx = b[g]                                   # (C, M, 4)
    cur = np.where(valid, s[g], 0.0)            # current (decayed) scores; padding is never picked (done)
    done = ~valid
    rows = np.arange(c)
    for step in range(m):
        k = int((counts > step).sum())  # classes with more than `step` boxes (largest first)
        r = rows[:k]
        masked = np.where(done[:k], -np.inf, cur[:k])
        pick = masked.argmax(1)
        done[r, pick] = True
        iou = pair_iou(bx[r, pick][:, None, :], bx[:k])
        if method == "linear":
            decay = np.where(iou > iou_thr, 1.0 - iou, 1.0)
        else:
            decay = np.exp(-(iou * iou) / sigma)
        upd = ~done[:k]
        cur[:k] = np.where(upd, cur[:k] * decay, cur[:k])
    keep = valid & (cur > score_thr)
    idx = grid[keep]
    final = cur[keep] if rescore else s[idx]
    support = _support_soft(idx, b, lab, v, iou_thr)
    return _finish(b[idx], final, lab[idx], support, min_views)


def _support_soft(idx, b, lab, v, iou_thr):
    """Distinct views with a box of the same class overlapping each kept box."""
    order, end = _class_blocks(_overlap_groups(b, lab, iou_thr), np.zeros(len(lab)))
    i, j = _pairs(end)
    edge = pair_iou(b[order][i], b[order][j]) > iou_thr
    pos = np.empty(len(order), np.int64)
    pos[order] = np.arange(len(order))
    return _support_from_pairs(pos[idx], i, j, edge, v[order], len(order))


# -- Weighted Boxes Fusion ---------------------------------------------------------------

#: cluster slots per part WBF starts with (doubled as needed)
WBF_SLOTS = 16


def _part_layout(part: np.ndarray, key: np.ndarray):
    """Boxes by rank within their part (``key`` descending, ties in input
    order), rank-major: ``order`` lists rank 0 of every part, then rank 1 of
    every part that has one, ... with parts always in the same order (largest
    first), so the parts still having a box of rank ``r`` are the first
    ``active[r]`` of that order. Returns ``order``, ``active``, the row (part,
    largest first) of each entry of ``order``, and the part count."""
    n = len(key)
    by_key = np.argsort(-key)  # an unstable sort is several times faster; ties are rare
    ks = key[by_key]
    if (ks[1:] == ks[:-1]).any():
        by_key = np.argsort(-key, kind="stable")
    counts = np.bincount(part)
    n_parts = len(counts)
    by_size = np.argsort(-counts, kind="stable")
    row = np.empty(n_parts, np.int64)
    row[by_size] = np.arange(n_parts)
    r = row[part[by_key]]
    # group by row keeping the key order (a stable radix sort on small integers)
    grouped = np.argsort(r.astype(np.int16) if n_parts <= np.iinfo(np.int16).max else r, kind="stable")
    order, r = by_key[grouped], r[grouped]
    sizes = counts[by_size]
    first = np.cumsum(sizes) - sizes
    rank = np.arange(n) - first[r]
    # rank-major: the parts with a box of rank k are rows 0 .. active[k]-1
    active = np.searchsorted(-sizes, -np.arange(int(sizes[0])), side="left")
    pos = (np.cumsum(active) - active)[rank] + r
    out, out_row = np.empty_like(order), np.empty_like(r)
    out[pos], out_row[pos] = order, r
    return out, active, out_row, n_parts


def wbf(boxes, scores, labels, views=None, weights=None, *, iou_thr: float = 0.55, skip_box_thr: float = 0.0,
        conf_type: str = "avg", allows_overflow: bool = False, min_views: int = 1,
        compat: bool = False) -> BoxSet:
    """Weighted Boxes Fusion (Solovyev et al. 2021) per class.

    Boxes are taken by weighted score (``score * weight``), highest first;
    each joins the fused box of its class it overlaps most if that IoU is
    above ``iou_thr`` (else starts a cluster); fused coordinates are the
    score-weighted mean of the cluster's boxes. Confidence (``conf_type``):
    ``avg`` the weighted score sum over the total view weight, ``max`` the
    highest weighted score over the largest weight, ``box_and_model_avg``
    the cluster's weighted mean score times the share of view weight present,
    ``absent_model_aware_avg`` the weighted score sum over the cluster's box
    weights plus the absent views' weights. ``compat=True`` reproduces
    ensemble-boxes' ``avg`` (which exceeds 1 with unequal weights).

    Greedy assignment is sequential within a class; boxes of a class that lie
    apart (:func:`_spatial_parts`) cannot interact, so the loop runs over the
    rank within such a part, every part at once: as many steps as the largest
    part has boxes. :func:`wbf_many` fuses several images in the same steps."""
    return wbf_many([(boxes, scores, labels, views)], weights, iou_thr=iou_thr, skip_box_thr=skip_box_thr,
                    conf_type=conf_type, allows_overflow=allows_overflow, min_views=min_views, compat=compat)[0]


def wbf_many(images, weights=None, *, iou_thr: float = 0.55, skip_box_thr: float = 0.0, conf_type: str = "avg",
             allows_overflow: bool = False, min_views: int = 1, compat: bool = False) -> list[BoxSet]:
    """:func:`wbf` of each image of ``images`` (a sequence of ``(boxes,
    scores, labels, views)`` or ``(boxes, scores, labels)``, all with the
    views' ``weights``), equal to calling it image by image, in one pass:
    the parts of every image's classes are fused in the same steps, so the
    loop runs as many steps as the largest part of any image has boxes
    instead of the sum over images. Many images are fused in runs of at
    most :data:`WBF_BATCH_BOXES` boxes (an image with more is a run alone)."""
    if conf_type not in CONF_TYPES:
        raise PolicyError(f"unknown WBF conf_type {conf_type!r}; valid: {', '.join(CONF_TYPES)}")
    iou_thr = _check_thr("iou_thr", iou_thr)
    opts = dict(iou_thr=iou_thr, skip_box_thr=skip_box_thr, conf_type=conf_type, allows_overflow=allows_overflow,
                min_views=min_views, compat=compat)
    out, run, size = [], [], 0
    for image in images:
        boxes, scores, labels, *views = image
        prepared = _prepare(boxes, scores, labels, views[0] if views else None, weights)
        if run and size + len(prepared[0]) > WBF_BATCH_BOXES:
            out += _wbf_images(run, **opts)
            run, size = [], 0
        run.append(prepared)
        size += len(prepared[0])
    return out + (_wbf_images(run, **opts) if run else [])


#: boxes :func:`wbf_many` fuses in one pass at most (more images make each step's arrays
#: larger than the caches without saving further steps)
WBF_BATCH_BOXES = 1 << 16


def _wbf_images(prepared, *, iou_thr, skip_box_thr, conf_type, allows_overflow, min_views, compat):
    """WBF of prepared images (:func:`_prepare`'s ``b, s, lab, v, w`` each)."""
    n_img = len(prepared)
    b, s, lab, v = (np.concatenate([p[i] for p in prepared]) for i in range(4))
    img = np.repeat(np.arange(n_img), [len(p[0]) for p in prepared])
    n_views = np.array([len(p[4]) for p in prepared])
    w_img = np.zeros((n_img, int(n_views.max())))  # each image's view weights, padded with 0
    for i, p in enumerate(prepared):
        w_img[i, :len(p[4])] = p[4]
    w_box = w_img[img, v]
    ws = s * w_box
    # a box of weighted score 0 moves no fused box (ensemble-boxes: NaN coordinates)
    keep = (s >= skip_box_thr) & (ws > 0)
    if not keep.all():
        b, lab, v, img, w_box, ws = b[keep], lab[keep], v[keep], img[keep], w_box[keep], ws[keep]
    if len(b) == 0:
        return [BoxSet.empty() for _ in range(n_img)]
    if lab.min() >= 0 and lab.max() < PART_MAX_GROUPS:
        classes, lab_idx = np.arange(int(lab.max()) + 1), lab
    else:
        classes, lab_idx = np.unique(lab, return_inverse=True)
    group = img * len(classes) + lab_idx.reshape(-1)  # one group per (image, class)
    order, member, sums, cluster_group = _greedy_fusion(b, ws, group, iou_thr)
    n_cl = len(sums)
    conf = sums[:, 4]
    c_img = cluster_group // len(classes)
    vo = v[order]
    wsum = np.bincount(member, weights=w_box[order], minlength=n_cl)
    cnt = np.bincount(member, minlength=n_cl)
    vmask = np.zeros((n_cl, w_img.shape[1]), bool)
    vmask[member, vo] = True
    total = w_img.sum(1)[c_img]
    with np.errstate(divide="ignore", invalid="ignore"):
        if conf_type == "avg":
            if allows_overflow:
                score = conf / total
            elif compat:
                score = conf / cnt * np.minimum(n_views[c_img], cnt) / total
            else:
                score = conf / np.maximum(total, wsum)
        elif conf_type == "max":
            cmax = np.zeros(n_cl)
            np.maximum.at(cmax, member, ws[order])
            score = cmax / w_img.max(1)[c_img]
        else:
            present = (vmask * w_img[c_img]).sum(1)
            if conf_type == "box_and_model_avg":
                score = conf / wsum * present / total
            else:
                score = conf / (wsum + total - present)
    fused = sums[:, 5:9]
    fused[:, :2] *= -1.0
    support = vmask.sum(-1)
    ok = support >= min_views
    # each image's clusters by score, highest first (ties in cluster order, as a stable sort)
    by = np.flatnonzero(ok)
    by = by[np.lexsort((-score[by], c_img[by]))]
    ends = np.searchsorted(c_img[by], np.arange(1, n_img + 1))
    labels = classes[cluster_group % len(classes)].astype(np.int64)
    return [BoxSet(fused[k], score[k], labels[k], support[k].astype(np.int64)) for k in np.split(by, ends[:-1])]


def _greedy_fusion(b, ws, group, iou_thr):
    """The greedy clustering of WBF within each group of boxes. Returns the
    boxes' processing ``order``, the cluster of each box of ``order``, per
    cluster its sums (score-weighted corners and score sum, 0:5) and fused
    box (5:9, x1 and y1 negated), and its group."""
    order, active, row, c = _part_layout(_spatial_parts(b, group), ws)
    m = len(active)
    # the boxes in the loop's order (one step's boxes are contiguous), one row per coordinate:
    # corners as (-x1, -y1, x2, y2) (one minimum gives both ends of an intersection; negation and
    # adding a negated number are exact, so every value is the same as with x2 - x1), area, and
    # what each adds to its cluster's sums
    pb = b[order]
    neg = (pb * np.array([-1.0, -1.0, 1.0, 1.0])).T
    corners = np.ascontiguousarray(neg)[:, :, None]
    area = ((pb[:, 2] - pb[:, 0]) * (pb[:, 3] - pb[:, 1]))[:, None]
    add = np.empty((5, len(order)))
    np.multiply(ws[order], neg, out=add[:4])
    add[4] = ws[order]
    # per cluster slot (part, k), one plane per number (contiguous along the clusters of a part):
    # score-weighted corner sums and score sum (0:5), fused box (5:9), both with x1 and y1
    # negated, and its area (9). Empty slots are zero boxes: IoU 0 with any box. Room for `cap`
    # clusters per part; when a part needs more, the parts still active get a grid twice as
    # wide and the others keep theirs (`done`: first part, grid)
    cap = min(m, WBF_SLOTS)
    grid = np.zeros((10, c, cap))
    flat = grid.reshape(10, c * cap)
    done = []
    slot = np.zeros(len(order), np.int64)  # the cluster (slot within its part) each box joined
    ncl = np.ones(c, np.int64)             # clusters per part so far (rank 0 founds one)
    rows = np.arange(c)
    base = rows * cap
    # the slot after a part's clusters reads as IoU just above iou_thr: argmax picks it (a new
    # cluster) exactly when no cluster overlaps the box by more than iou_thr
    sentinel = np.nextafter(iou_thr, np.inf)
    # `most` clusters in a part at step `seen` (then at most one more per step): the IoU is
    # computed over the first `most + step - seen + 1` slots only
    o, check, most, seen = 0, cap, 1, 0
    for step, k in enumerate(active.tolist()):
        e = o + k
        if step:
            if step >= check:  # a part may have run out of slots (each step adds one cluster at most)
                most, seen = int(ncl[:k].max()), step
                if most >= cap:
                    grown = np.zeros((10, k, min(2 * cap, m)))
                    grown[:, :, :cap] = grid[:, :k]
                    done.append((k, grid[:, k:]))
                    grid, cap = grown, grown.shape[2]
                    flat, base = grid.reshape(10, k * cap), rows[:k] * cap
                check = step + cap - most
            f = grid[:, :k, :min(cap, most + step - seen + 1)]  # the clusters so far, and an empty slot
            ends = np.minimum(f[5:9], corners[:, o:e])
            wh = ends[2:] + ends[:2]
            np.maximum(wh, 0.0, out=wh)
            iou = wh[0] * wh[1]
            union = f[9] + area[o:e]
            union -= iou
            iou /= union
            nk = ncl[:k]
            iou[rows[:k], nk] = sentinel
            t = iou.argmax(1)
            nk += t == nk
            slot[o:e] = t
            at = base[:k] + t  # a new cluster is an empty slot joined
        else:
            at = base
        r = flat[:, at]
        r[:5] += add[:, o:e]
        np.divide(r[:4], r[4], out=r[5:9])
        np.multiply(r[7] + r[5], r[8] + r[6], out=r[9])
        flat[:, at] = r
        o = e
    # the clusters in (part, slot) order, from the grids of the parts that finished early and the last
    done.append((0, grid))
    sums = np.concatenate([g.transpose(1, 2, 0)[np.arange(g.shape[2]) < ncl[first:first + g.shape[1], None]]
                           for first, g in sorted(done, key=lambda d: d[0])])
    first_cluster = np.cumsum(ncl) - ncl
    part_group = np.empty(c, group.dtype)
    part_group[row] = group[order]
    return order, first_cluster[row] + slot, sums, np.repeat(part_group, ncl)


# -- merge values for the Detector ---------------------------------------------------------

class BoxMerge(abc.ABC):
    """A box merge as a value (prints, compares) with its parameters."""

    name: ClassVar[str] = "boxes"

    def __init__(self, **params):
        self._params = params

    def params(self) -> dict[str, Any]:
        return dict(self._params)

    @abc.abstractmethod
    def __call__(self, boxes, scores, labels, views, weights) -> BoxSet:
        """Merge the stacked boxes of one image's views."""

    def many(self, images, weights) -> list[BoxSet]:
        """Merge each image of ``images`` (a sequence of ``(boxes, scores,
        labels, views)``), as calling the merge on each in turn does."""
        return [self(*image, weights) for image in images]

    def __repr__(self):
        inner = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"{self.name}({inner})"

    def __eq__(self, other):
        return type(self) is type(other) and self._params == other._params

    def __hash__(self):
        return hash((self.name, tuple(sorted(self._params.items()))))


class NMS(BoxMerge):
    name = "nms"

    def __init__(self, iou_thr: float = 0.5, min_views: int = 1):
        super().__init__(iou_thr=_check_thr("iou_thr", iou_thr), min_views=_check_views(min_views))

    def __call__(self, boxes, scores, labels, views, weights):
        return nms(boxes, scores, labels, views, weights, **self._params)


class SoftNMS(BoxMerge):
    name = "soft_nms"

    def __init__(self, method: str = "gaussian", iou_thr: float = 0.5, sigma: float = 0.5,
                 score_thr: float = 0.001, min_views: int = 1):
        if method not in ("linear", "gaussian"):
            raise PolicyError(f"soft-NMS method must be 'linear' or 'gaussian', got {method!r}")
        if not isinstance(sigma, (int, float)) or not sigma > 0:
            raise PolicyError(f"soft-NMS sigma must be > 0, got {sigma!r}")
        super().__init__(method=method, iou_thr=_check_thr("iou_thr", iou_thr), sigma=float(sigma),
                         score_thr=_check_thr("score_thr", score_thr), min_views=_check_views(min_views))

    def __call__(self, boxes, scores, labels, views, weights):
        return soft_nms(boxes, scores, labels, views, weights, **self._params)


class WBF(BoxMerge):
    name = "wbf"

    def __init__(self, iou_thr: float = 0.55, skip_box_thr: float = 0.0, conf_type: str = "avg",
                 min_views: int = 1):
        if conf_type not in CONF_TYPES:
            raise PolicyError(f"unknown WBF conf_type {conf_type!r}; valid: {', '.join(CONF_TYPES)}")
        super().__init__(iou_thr=_check_thr("iou_thr", iou_thr), skip_box_thr=_check_thr("skip_box_thr", skip_box_thr),
                         conf_type=conf_type, min_views=_check_views(min_views))

    def __call__(self, boxes, scores, labels, views, weights):
        return wbf(boxes, scores, labels, views, weights, **self._params)

    def many(self, images, weights):
        return wbf_many(images, weights, **self._params)


def _check_views(m):
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise PolicyError(f"min_views must be an integer >= 1, got {m!r}")
    return int(m)


BOX_MERGES = {"nms": NMS, "soft_nms": SoftNMS, "softnms": SoftNMS, "wbf": WBF}


def get_box_merge(merge, **params) -> BoxMerge:
    """A box merge from its name (``"nms"``, ``"soft_nms"``, ``"wbf"``) and
    parameters, or itself."""
    if isinstance(merge, BoxMerge):
        if params:
            raise PolicyError("give parameters either in the merge object or as arguments, not both")
        return merge
    if not isinstance(merge, str) or merge.lower() not in BOX_MERGES:
        raise PolicyError(f"unknown box merge {merge!r}; valid: nms, soft_nms, wbf")
    try:
        return BOX_MERGES[merge.lower()](**params)
    except TypeError as e:
        raise PolicyError(f"bad parameters for box merge {merge!r}: {e}") from None
