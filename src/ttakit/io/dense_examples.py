"""The images a dense evaluation report shows (:mod:`ttakit.report.dense`):
those TTA helped and hurt most by their own score, and the most uncertain
by how much the views disagree. Each example carries the image (uint8, its
own size), what the baseline and the policy predicted and the ground truth,
in the image's own pixels."""

from __future__ import annotations

import numpy as np

#: images per gallery (helped, hurt, most uncertain)
GALLERY = 6
KINDS = ("helped", "hurt", "uncertain", "examples")


def pick(per_image, uncertainty=None, k: int = GALLERY, tolerance: float = 0.01) -> dict[str, list[int]]:
    """Positions of the images whose own score rose (``helped``) and fell
    (``hurt``) most by more than ``tolerance``, and with the largest
    ``uncertainty`` above zero (``uncertain``); ``per_image`` is ``(scores
    without, scores with)``. When none qualifies, the first ``k`` images
    (``examples``)."""
    out: dict[str, list[int]] = {}
    if per_image is not None:
        d = np.asarray(per_image[1], np.float64) - np.asarray(per_image[0], np.float64)
        d = np.where(np.isfinite(d), d, 0.0)
        out["helped"] = [int(i) for i in np.argsort(-d, kind="stable") if d[i] > tolerance][:k]
        out["hurt"] = [int(i) for i in np.argsort(d, kind="stable") if d[i] < -tolerance][:k]
    if uncertainty is not None and len(uncertainty):
        u = np.nan_to_num(np.asarray(uncertainty, np.float64), nan=-1.0)
        out["uncertain"] = [int(i) for i in np.argsort(-u, kind="stable") if u[i] > 0][:k]
    n = len(per_image[0]) if per_image is not None else (len(uncertainty) if uncertainty is not None else 0)
    if not any(out.values()) and n:
        # nothing changed and the views agree: still show what the model and TTA predict
        out["examples"] = list(range(min(k, n)))
    return out


def gather(picks: dict[str, list[int]], make, per_image=None, uncertainty=None) -> dict[str, list[dict]]:
    """``{kind: [make(position) + its scores and uncertainty]}``; an image
    in several galleries is made once."""
    made: dict[int, dict] = {}
    out = {}
    for kind in KINDS:
        items = []
        for i in picks.get(kind, []):
            if i not in made:
                ex = make(i)
                if per_image is not None:
                    ex["scores"] = (float(per_image[0][i]), float(per_image[1][i]))
                if uncertainty is not None:
                    ex["uncertainty"] = float(uncertainty[i])
                made[i] = ex
            items.append(made[i])
        out[kind] = items
    return out


def box_disagreement(scores, support, views: int, min_score: float) -> float:
    """The share of missing votes among an image's boxes of at least
    ``min_score``: ``mean(1 - support / views)`` (0 without such boxes)."""
    s = np.asarray(scores, np.float64).reshape(-1)
    keep = s >= min_score
    if not keep.any() or views < 2:
        return 0.0
    return float(np.mean(1 - np.asarray(support, np.float64).reshape(-1)[keep] / views))


def values_back(values: np.ndarray, size: tuple[int, int], scale, fit: str) -> np.ndarray:
    """A float map of the fitted input brought back to the image's own
    ``size = (h, w)`` (bilinear), as :func:`~ttakit.io.dense.labels_back` does labels."""
    from PIL import Image

    h, w = size
    v = np.asarray(values, np.float32)
    if fit == "letterbox":
        v = v[:max(1, int(h * scale[1])), :max(1, int(w * scale[0]))]
    if v.shape == (h, w):
        return v
    return np.asarray(Image.fromarray(v, mode="F").resize((w, h), Image.BILINEAR))


def coco_truth(data: dict, image_id: int, cats: list | None = None) -> dict:
    """An image's ground truth from a COCO dict: ``boxes`` (xyxy), ``labels``
    (the position of the category in ``cats``; categories not listed are
    left out) and ``keypoints`` (one ``(P, 3)`` array per person that has them)."""
    boxes, labels, points = [], [], []
    for a in data["annotations"]:
        if a.get("image_id") != image_id:
            continue
        if cats is not None and "bbox" in a and a.get("category_id") in cats:
            x, y, w, h = a["bbox"]
            boxes.append((x, y, x + w, y + h))
            labels.append(cats.index(a["category_id"]))
        if a.get("keypoints") and a.get("num_keypoints", 1):
            points.append(np.asarray(a["keypoints"], np.float64).reshape(-1, 3))
    return {"boxes": np.asarray(boxes, np.float64).reshape(-1, 4), "labels": np.asarray(labels, np.int64),
            "keypoints": points}


__all__ = ["GALLERY", "KINDS", "pick", "gather", "box_disagreement", "values_back", "coco_truth"]
