"""A small U-Net (Ronneberger et al. 2015) for binary segmentation of
greyscale images, trained by ttakit on the ISBI 2012 EM membranes.

Input ``(n, 1, H, W)`` pixels in [0, 1] (H and W multiples of
``2 ** depth``); output ``(n, 1, H, W)`` membrane logits: a binary
foreground map that :class:`ttakit.Segmenter` turns into two classes
(0 interior, 1 membrane). Padded 3x3 convolutions, batch norm, max-pooling
down, bilinear upsampling with skip concatenation up.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .training import d4_array, train_steps, TrainLog


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """``width`` channels at full resolution, doubled at each of ``depth``
    poolings (width 8, depth 3: 8-16-32-64, 0.12 M parameters; width 16: 0.49 M)."""

    def __init__(self, width: int = 16, depth: int = 3, in_channels: int = 1):
        super().__init__()
        chans = [width * 2 ** i for i in range(depth + 1)]
        self.depth = depth
        self.down = nn.ModuleList([_block(in_channels, chans[0])] +
                                  [_block(chans[i], chans[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([_block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = 2 ** self.depth
        if x.shape[-1] % step or x.shape[-2] % step:
            raise InputError(f"U-Net inputs must be multiples of {step} pixels, got {tuple(x.shape[-2:])}")
        x = (x - 0.5) / 0.25
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)


def unet_loss(model: UNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice of the membrane class."""
    logits = model(x)
    bce = F.binary_cross_entropy_with_logits(logits, y)
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    return bce + dice


def train_unet(images: np.ndarray, masks: np.ndarray, steps: int = 600, batch_size: int = 8, crop: int = 128,
               width: int = 16, depth: int = 3, lr: float = 2e-3, seed: int = 0, max_seconds: float | None = None,
               log=None) -> tuple[UNet, TrainLog]:
    """Train a :class:`UNet` on ``images`` (N, H, W) uint8 and ``masks``
    (N, H, W) (1 = foreground): each step takes ``batch_size`` random
    ``crop`` x ``crop`` patches, each under a random dihedral view (cells
    have no up or left), seeded by ``seed`` (weights and batches)."""
    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim != 3 or images.shape != masks.shape:
        raise InputError(f"images and masks must both be (N, H, W), got {images.shape} and {masks.shape}")
    if crop > min(images.shape[1:]) or crop % 2 ** depth:
        raise InputError(f"crop must be a multiple of {2 ** depth} no larger than the images, got {crop}")
    torch.manual_seed(seed)
    model = UNet(width, depth)
    n, h, w = images.shape

    def batch(rng):
        xs, ys = [], []
        for _ in range(batch_size):
            i, r, c = rng.integers(n), rng.integers(h - crop + 1), rng.integers(w - crop + 1)
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            xs.append(d4_array(images[i, r:r + crop, c:c + crop], k, flip))
            ys.append(d4_array(masks[i, r:r + crop, c:c + crop], k, flip))
        x = torch.from_numpy(np.stack(xs)[:, None].astype(np.float32) / 255)
        return x, torch.from_numpy(np.stack(ys)[:, None].astype(np.float32))

    return model, train_steps(model, batch, unet_loss, steps, lr=lr, seed=seed, max_seconds=max_seconds, log=log)
