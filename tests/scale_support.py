"""What the ttakit.scale tests share: a tiny CNN and PNG bytes."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

N_CLASSES = 5


class TinyCNN(torch.nn.Module):
    """A 3x3 conv of ``width`` channels, ``depth`` more of them, global
    mean pooling and a linear layer to N_CLASSES logits."""

    def __init__(self, width: int = 6, depth: int = 0):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, width, 3, padding=1)
        self.more = torch.nn.Sequential(*[torch.nn.Conv2d(width, width, 3, padding=1) for _ in range(depth)])
        self.fc = torch.nn.Linear(width, N_CLASSES)

    def forward(self, x):
        h = self.more(torch.relu(self.conv(x)))
        return self.fc(h.mean(dim=(2, 3))) * 3.0  # logits spread enough for views to disagree sometimes


def png(arr: np.ndarray) -> bytes:
    """``arr`` (H, W, 3) uint8 encoded as a PNG file."""
    b = io.BytesIO()
    Image.fromarray(arr).save(b, format="PNG")
    return b.getvalue()
