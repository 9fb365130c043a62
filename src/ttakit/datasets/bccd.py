"""BCCD: blood-smear microscope images with boxes of red and white blood
cells and platelets (``../shared/data/bccd``, MIT; see its README).

The folder holds ``JPEGImages/*.jpg`` (640x480) and one COCO file per split
(``coco_{train,val,test,trainval}.json``: category ids 1 RBC, 2 WBC,
3 Platelets; ``bbox`` = x, y, w, h in pixels). :func:`load_bccd` reads one
split as pixels, boxes and the COCO dict pycocotools scores against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError

BCCD_SPLITS = ("train", "val", "test", "trainval")
BCCD_CLASSES = ("RBC", "WBC", "Platelets")


@dataclass
class BCCDSplit:
    """One split: ``images`` (N, H, W, 3) uint8 RGB, downscaled by ``scale``;
    per image ``boxes`` (M, 4) xyxy in the *downscaled* pixels and ``labels``
    (M,) 0-based class indices (``category_ids[label]`` is the COCO id);
    ``coco`` the split's COCO dict in the *original* pixels; ``image_ids``
    in the order of ``images``."""

    images: np.ndarray
    boxes: list
    labels: list
    image_ids: list
    coco: dict
    scale: float
    category_ids: tuple = (1, 2, 3)

    def __len__(self) -> int:
        return len(self.images)


def load_bccd(root, split: str = "train", scale: float = 1.0, limit: int | None = None) -> BCCDSplit:
    """Read a BCCD split from ``root`` (the folder with the COCO files),
    images resized by ``scale`` (0.5: 320x240), sorted by image id; the
    first ``limit`` images only when given."""
    from PIL import Image

    if split not in BCCD_SPLITS:
        raise DatasetError(f"BCCD split must be one of {', '.join(BCCD_SPLITS)}, got {split!r}")
    if not 0 < scale <= 1:
        raise DatasetError(f"scale must be in (0, 1], got {scale}")
    root = Path(root)
    ann = root / f"coco_{split}.json"
    if not ann.exists():
        raise DatasetError(f"no {ann}: pass the BCCD folder (../shared/data/bccd, see its README)")
    data = json.loads(ann.read_text())
    images = sorted(data["images"], key=lambda im: im["id"])[:limit]
    keep = {im["id"] for im in images}
    anns = [a for a in data["annotations"] if a["image_id"] in keep]
    coco = {**data, "images": images, "annotations": anns}
    cat_index = {c["id"]: k for k, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    by_image: dict[int, list] = {}
    for a in anns:
        by_image.setdefault(a["image_id"], []).append(a)
    pixels, boxes, labels = [], [], []
    for im in images:
        img = Image.open(root / im["file_name"]).convert("RGB")
        if img.size != (im["width"], im["height"]):
            raise DatasetError(f"{im['file_name']} is {img.size}, its annotation says {im['width']}x{im['height']}")
        if scale != 1:
            img = img.resize((round(im["width"] * scale), round(im["height"] * scale)), Image.BILINEAR)
        pixels.append(np.asarray(img))
        rows = by_image.get(im["id"], [])
        b = np.array([a["bbox"] for a in rows], np.float64).reshape(-1, 4)
        boxes.append(np.column_stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]]) * scale)
        labels.append(np.array([cat_index[a["category_id"]] for a in rows], np.int64))
    if len({p.shape for p in pixels}) > 1:
        raise DatasetError("BCCD images of one split must share one size")
    cats = tuple(c["id"] for c in sorted(data["categories"], key=lambda c: c["id"]))
    return BCCDSplit(np.stack(pixels), boxes, labels, [im["id"] for im in images], coco, scale, cats)
