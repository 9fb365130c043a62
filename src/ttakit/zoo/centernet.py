"""A small CenterNet-style detector (Zhou et al. 2019, "Objects as
Points"), trained by ttakit on BCCD blood cells.

Input ``(n, 3, H, W)`` RGB in [0, 1], H and W multiples of 16. Output
``(n, C + 4, H / 4, W / 4)``: per class a centre heatmap (logits), then
``log(w / 4)``, ``log(h / 4)`` and the centre's sub-cell offset ``dx, dy``.
:func:`decoder` turns it into per-image boxes (xyxy pixels of the input),
scores and labels for :class:`ttakit.Detector`:

    >>> det = ttakit.Detector(model, "d4", "wbf", decode=decoder())
    >>> res = det.run(images)          # (n, 3, H, W) float in [0, 1]

Backbone: four stride-2 stages (16-32-64-128 channels, two 3x3 convolutions
each), a top-down path back to stride 4 with lateral 1x1 connections, and
three small heads.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, ModelOutputError
from .training import d4_array, train_steps, TrainLog

STRIDE = 4
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CenterNet(nn.Module):
    """``width`` channels at stride 2, doubled per stage (width 16: 0.49 M
    parameters); ``num_classes`` heatmaps."""

    def __init__(self, num_classes: int = 3, width: int = 16, neck: int = 64):
        super().__init__()
        chans = [width * 2 ** i for i in range(4)]
        self.stages = nn.ModuleList([nn.Sequential(_conv(cin, cout, 2), _conv(cout, cout))
                                     for cin, cout in zip([3] + chans[:-1], chans)])
        self.lateral = nn.ModuleList([nn.Conv2d(c, neck, 1) for c in chans[1:]])
        self.smooth = nn.ModuleList([_conv(neck, neck) for _ in range(2)])
        self.heads = nn.ModuleList([nn.Sequential(_conv(neck, neck), nn.Conv2d(neck, k, 1))
                                    for k in (num_classes, 2, 2)])
        nn.init.constant_(self.heads[0][-1].bias, -2.19)  # prior 0.1, as CenterNet
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise InputError(f"CenterNet inputs must be multiples of 16 pixels, got {tuple(x.shape[-2:])}")
        x = (x - self.mean) / self.std
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        y = self.lateral[2](feats[3])
        for lat, smooth, f in zip((self.lateral[1], self.lateral[0]), self.smooth, (feats[2], feats[1])):
            y = smooth(F.interpolate(y, scale_factor=2, mode="nearest") + lat(f))
        return torch.cat([head(y) for head in self.heads], 1)


def decoder(num_classes: int = 3, top_k: int = 100, score_thr: float = 0.01):
    """The decode function for :class:`ttakit.Detector`: heatmap peaks (a
    3x3 max-pool keeps local maxima, CenterNet's NMS), the ``top_k`` best
    over all classes above ``score_thr``, each a box from its size and
    offset, in pixels of the model's input."""

    def decode(raw) -> list[dict]:
        raw = torch.as_tensor(raw)
        if raw.ndim != 4 or raw.shape[1] != num_classes + 4:
            raise ModelOutputError(f"CenterNet outputs must be (n, {num_classes + 4}, h, w), got {tuple(raw.shape)}")
        heat = torch.sigmoid(raw[:, :num_classes].float())
        peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat)
        n, _, h, w = heat.shape
        scores, idx = peaks.reshape(n, -1).topk(min(top_k, peaks[0].numel()), dim=1)
        cls, cell = idx // (h * w), idx % (h * w)
        ys, xs = (cell // w).float(), (cell % w).float()
        reg = raw[:, num_classes:].float().reshape(n, 4, -1)
        pick = lambda j: reg[:, j].gather(1, cell)  # noqa: E731
        bw, bh = pick(0).clamp(-6, 6).exp() * STRIDE, pick(1).clamp(-6, 6).exp() * STRIDE
        cx, cy = (xs + pick(2)) * STRIDE, (ys + pick(3)) * STRIDE
        boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
        keep = scores > score_thr
        return [{"boxes": boxes[k][keep[k]], "scores": scores[k][keep[k]], "labels": cls[k][keep[k]]}
                for k in range(n)]

    return decode


def targets(boxes: np.ndarray, labels: np.ndarray, size: tuple[int, int], num_classes: int) -> tuple:
    """Training targets of one image at stride 4: ``heat`` (C, h, w) with an
    elliptical Gaussian per box (sigma a sixth of its size, as TTFNet), and
    per box its centre cell, ``log(w/4), log(h/4), dx, dy``."""
    h, w = size[0] // STRIDE, size[1] // STRIDE
    heat = np.zeros((num_classes, h, w), np.float32)
    b = np.asarray(boxes, np.float64).reshape(-1, 4) / STRIDE
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    bw, bh = np.maximum(b[:, 2] - b[:, 0], 1e-3), np.maximum(b[:, 3] - b[:, 1], 1e-3)
    ix, iy = np.clip(cx.astype(np.int64), 0, w - 1), np.clip(cy.astype(np.int64), 0, h - 1)
    ys, xs = np.arange(h)[:, None], np.arange(w)[None, :]
    for k in range(len(b)):
        sx, sy = max(bw[k] / 6, 0.5), max(bh[k] / 6, 0.5)
        g = np.exp(-((xs - ix[k]) ** 2 / (2 * sx * sx) + (ys - iy[k]) ** 2 / (2 * sy * sy)))
        np.maximum(heat[labels[k]], g, out=heat[labels[k]])
    reg = np.stack([np.log(bw), np.log(bh), cx - ix, cy - iy], 1).astype(np.float32)
    return heat, iy * w + ix, reg


def centernet_loss(model: CenterNet, x: torch.Tensor, heat: torch.Tensor, cells: list, regs: list) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on the heatmaps plus L1 on the
    sizes (weight 0.1 of log-size, 1 of offset) at the box centres."""
    out = model(x)
    c = heat.shape[1]
    p = torch.sigmoid(out[:, :c]).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1).float()
    focal = -(pos * (1 - p) ** 2 * p.log() + (1 - pos) * (1 - heat) ** 4 * p ** 2 * (1 - p).log()).sum()
    n_pos = pos.sum().clamp_min(1)
    reg_loss = out.new_zeros(())
    for k, (cell, reg) in enumerate(zip(cells, regs)):
        if len(cell):
            pred = out[k, c:].reshape(4, -1)[:, cell].T
            err = (pred - reg).abs()
            reg_loss = reg_loss + (0.1 * err[:, :2].sum() + err[:, 2:].sum())
    return (focal + reg_loss) / n_pos


def _d4_boxes(boxes: np.ndarray, size: tuple[int, int], k: int, flip: bool) -> np.ndarray:
    """Boxes (xyxy) of an ``(h, w)`` image under :func:`d4_array` (``k``
    counter-clockwise quarter turns, then a left-right mirror)."""
    h, w = size
    b = boxes.copy()
    for _ in range(k):  # np.rot90 (counter-clockwise): (x, y) -> (y, w - x); the new image is (w, h)
        b = np.column_stack([b[:, 1], w - b[:, 2], b[:, 3], w - b[:, 0]])
        h, w = w, h
    if flip:
        b = np.column_stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]])
    return b


def train_centernet(images: np.ndarray, boxes: list, labels: list, num_classes: int = 3, steps: int = 1000,
                    batch_size: int = 8, width: int = 16, lr: float = 2e-3, seed: int = 0,
                    max_seconds: float | None = None, log=None) -> tuple[CenterNet, TrainLog]:
    """Train a :class:`CenterNet` on ``images`` (N, H, W, 3) uint8 with
    per-image ``boxes`` (xyxy pixels) and ``labels``: each step a batch of
    ``batch_size`` images, all under one random quarter turn (so they share
    a shape) and each mirrored at random (cells have no up or left), with
    random brightness/contrast jitter; seeded by ``seed``."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(boxes) or len(boxes) != len(labels):
        raise InputError(f"images must be (N, H, W, 3) with one boxes and labels entry each, got {images.shape}, "
                         f"{len(boxes)} and {len(labels)}")
    torch.manual_seed(seed)
    model = CenterNet(num_classes, width)
    n, h, w = images.shape[:3]

    def batch(rng):
        k = int(rng.integers(4))
        xs, heats, cells, regs = [], [], [], []
        for i in rng.choice(n, batch_size, replace=n < batch_size):
            flip = bool(rng.integers(2))
            img = d4_array(np.moveaxis(images[i], -1, 0), k, flip).astype(np.float32) / 255
            img = np.clip((img - 0.5) * rng.uniform(0.8, 1.2) + 0.5 + rng.uniform(-0.1, 0.1), 0, 1)
            b = _d4_boxes(np.asarray(boxes[i], np.float64).reshape(-1, 4), (h, w), k, flip)
            heat, cell, reg = targets(b, labels[i], img.shape[1:], num_classes)
            xs.append(img)
            heats.append(heat)
            cells.append(torch.from_numpy(cell))
            regs.append(torch.from_numpy(reg))
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(heats)), cells, regs

    return model, train_steps(model, batch, centernet_loss, steps, lr=lr, seed=seed, max_seconds=max_seconds,
                              log=log)
