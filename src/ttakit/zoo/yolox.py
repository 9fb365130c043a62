"""YOLOX (Megvii, Apache-2.0) exported to ONNX without its decoding: the
input preparation and the decode function that make it a
:class:`ttakit.Detector` model.

The exported graph takes ``(n, 3, S, S)`` BGR pixels 0-255, letterboxed
(resized by ``r = min(S / h, S / w)``, pasted top-left, padded with 114),
and returns ``(n, A, 5 + C)`` rows for the grid cells of strides 8, 16 and
32 (row-major, x fastest): ``dx, dy, log w, log h, objectness, C class
probabilities`` (sigmoids applied). Decoding (YOLOX's ``postprocess``):
``cx = (dx + gx) * s``, ``w = exp(log w) * s``; score = objectness x the
best class probability; boxes above ``score_thr``; class-wise NMS at
``nms_iou``. Boxes are in the letterboxed frame: divide by ``r`` for the
original image.

    >>> x, ratios = letterbox(images, 416)                 # uint8 (n, 416, 416, 3) RGB
    >>> det = ttakit.Detector("yolox_nano.onnx", "identity + hflip", "wbf", data_layout="NHWC",
    ...                       decode=decoder(416), preprocess=bgr_255)
    >>> res = det.run(x)                                    # res.boxes[i] / ratios[i]
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError, ModelOutputError
from ..merge.boxes import nms

STRIDES = (8, 16, 32)
PAD_VALUE = 114


def grids(size: int, strides=STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """The cell offsets ``(A, 2)`` and strides ``(A,)`` of YOLOX's output rows."""
    cells, steps = [], []
    for s in strides:
        n = size // s
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], 1))
        steps.append(np.full(n * n, s))
    return np.concatenate(cells).astype(np.float64), np.concatenate(steps).astype(np.float64)


def decoder(size: int = 416, score_thr: float = 0.001, nms_iou: float = 0.65, max_boxes: int | None = 300):
    """A ``decode`` function for :class:`ttakit.Detector`: raw ``(n, A, 5 +
    C)`` outputs to per-image ``(boxes xyxy, scores, labels)`` in the
    letterboxed frame, after YOLOX's class-wise NMS (highest scores first,
    at most ``max_boxes``)."""
    cells, steps = grids(size)

    def decode(raw) -> list:
        out = raw.detach().cpu().numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
        if out.ndim != 3 or out.shape[1] != len(cells):
            raise ModelOutputError(f"YOLOX at {size} returns (n, {len(cells)}, 5 + classes), got {out.shape}")
        out = out.astype(np.float64)
        records = []
        for row in out:
            xy = (row[:, :2] + cells) * steps[:, None]
            wh = np.exp(row[:, 2:4]) * steps[:, None]
            cls = row[:, 5:].argmax(1)
            score = row[:, 4] * row[np.arange(len(row)), 5 + cls]
            keep = score > score_thr
            boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1)[keep]
            merged = nms(boxes, score[keep], cls[keep], iou_thr=nms_iou)
            k = len(merged) if max_boxes is None else min(len(merged), max_boxes)
            records.append((merged.boxes[:k], merged.scores[:k], merged.labels[:k]))
        return records

    return decode


def letterbox(images, size: int = 416) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 images ``(h, w, 3)`` (a list; sizes may differ) resized by
    ``r = min(size / h, size / w)``, pasted top-left on a ``size x size``
    canvas of 114: ``(n, size, size, 3)`` uint8 and the ratios ``(n,)``."""
    from PIL import Image

    out = np.full((len(images), size, size, 3), PAD_VALUE, np.uint8)
    ratios = np.zeros(len(images))
    for i, img in enumerate(images):
        a = np.asarray(img)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise InputError(f"letterbox takes RGB uint8 images (h, w, 3), got {a.shape} {a.dtype}")
        r = min(size / a.shape[0], size / a.shape[1])
        h, w = int(a.shape[0] * r), int(a.shape[1] * r)
        out[i, :h, :w] = np.asarray(Image.fromarray(a).resize((w, h), Image.BILINEAR))
        ratios[i] = r
    return out, ratios


def bgr_255(x: torch.Tensor) -> torch.Tensor:
    """``preprocess`` for YOLOX: ttakit's RGB in [0, 1] (NCHW) to BGR 0-255."""
    return x.flip(1) * 255.0
