"""The small CIFAR-10 CNN of ttakit's founding tutorial, in Keras 3 and in PyTorch.

Architecture (input 32x32x3, pixels scaled to [0, 1]):

    Conv2D 32 3x3 same, ReLU, he_uniform -> BatchNorm -> MaxPool 2
    Conv2D 64 3x3 same, ReLU, he_uniform -> BatchNorm -> MaxPool 2
    Flatten -> Dense 128 ReLU he_uniform -> BatchNorm -> Dense 10 softmax

545,546 trainable parameters (plus 448 BatchNorm moving statistics).

Both builders output class *probabilities* (softmax). The PyTorch version
flattens in NHWC order, as Keras does, so dense weights line up between the
two (a Keras ``(in, out)`` kernel is the transpose of the torch weight).
"""

from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, require

__all__ = [
    "TUTORIAL_CNN_PARAMS",
    "TutorialCNN",
    "train_tutorial_cnn_torch",
    "tutorial_cnn_keras",
    "tutorial_cnn_torch",
]

TUTORIAL_CNN_PARAMS = 545_546  # trainable parameters

# Keras BatchNormalization defaults: epsilon=1e-3, momentum=0.99 (moving =
# 0.99 * moving + 0.01 * batch), i.e. torch momentum 0.01.
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


def tutorial_cnn_keras(seed: Optional[int] = None):
    """The tutorial CNN as a compiled Keras 3 ``Sequential`` (NHWC input (32, 32, 3)).

    Compiled as in the tutorial: Adam, categorical cross-entropy, accuracy.
    Keras is imported here, not at module import; ``KERAS_BACKEND`` defaults
    to ``torch`` if unset. ``seed`` seeds Keras' weight initialisers.
    """
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = require("keras", "keras", "the tutorial CNN in Keras")
    layers = keras.layers

    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(shape=(32, 32, 3)),
            layers.Conv2D(32, (3, 3), padding="same", activation="relu", kernel_initializer="he_uniform"),
            layers.BatchNormalization(),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), padding="same", activation="relu", kernel_initializer="he_uniform"),
            layers.BatchNormalization(),
            layers.MaxPooling2D((2, 2)),
            layers.Flatten(),
            layers.Dense(128, activation="relu", kernel_initializer="he_uniform"),
            layers.BatchNormalization(),
            layers.Dense(10, activation="softmax"),
        ],
        name="tutorial_cnn",
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def _he_uniform_(weight: torch.Tensor) -> None:
    """Keras he_uniform: U(-sqrt(6 / fan_in), sqrt(6 / fan_in))."""
    fan_in = weight[0].numel()  # in_channels * kh * kw, or in_features
    limit = math.sqrt(6.0 / fan_in)
    nn.init.uniform_(weight, -limit, limit)


def _glorot_uniform_(weight: torch.Tensor) -> None:
    """Keras glorot_uniform (the Dense default): U(-sqrt(6 / (fan_in + fan_out)), ...)."""
    fan_out, fan_in = weight.shape[0], weight[0].numel()
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    nn.init.uniform_(weight, -limit, limit)


class TutorialCNN(nn.Module):
    """PyTorch twin of the tutorial's Keras CNN. NCHW float input in [0, 1]; outputs probabilities."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.fc1 = nn.Linear(8 * 8 * 64, 128)
        self.bn3 = nn.BatchNorm1d(128, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.fc2 = nn.Linear(128, num_classes)
        for layer in (self.conv1, self.conv2, self.fc1):
            _he_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        _glorot_uniform_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-softmax scores (used for a numerically stable training loss)."""
        x = F.max_pool2d(self.bn1(F.relu(self.conv1(x))), 2)
        x = F.max_pool2d(self.bn2(F.relu(self.conv2(x))), 2)
        x = x.permute(0, 2, 3, 1).flatten(1)  # NHWC order, like keras Flatten
        x = self.bn3(F.relu(self.fc1(x)))
        return self.fc2(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.logits(x), dim=1)


def tutorial_cnn_torch(num_classes: int = 10) -> TutorialCNN:
    """The tutorial CNN in PyTorch (NCHW input, float in [0, 1]; softmax output)."""
    return TutorialCNN(num_classes=num_classes)


def train_tutorial_cnn_torch(
    model: nn.Module,
    images_uint8_nhwc: np.ndarray,
    labels: np.ndarray,
    epochs: int = 3,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> nn.Module:
    """Train ``model`` with Adam (lr 1e-3) and cross-entropy; return it in eval mode.

    ``images_uint8_nhwc`` is ``(N, 32, 32, 3)`` uint8 (scaled to [0, 1] here),
    ``labels`` integer class ids. The data is reshuffled every epoch with a
    generator seeded by ``seed``. The loss is the negative log of the
    model's softmax output (computed from ``model.logits`` when the model has
    it, which is the same quantity without the round trip through exp/log).
    """
    images = np.asarray(images_uint8_nhwc)
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8:
        raise InputError(f"expected uint8 images of shape (N, 32, 32, 3), got {images.dtype}{images.shape}")
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if y_all.shape != (images.shape[0],):
        raise InputError(f"labels must have shape ({images.shape[0]},), got {tuple(y_all.shape)}")
    x_all = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # uint8 NCHW view
    n = x_all.shape[0]
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    log_probs = getattr(model, "logits", None)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * math.ceil(n / batch_size), desc="train tutorial CNN", unit="batch")
    model.train()
    try:
        for epoch in range(epochs):
            order = torch.randperm(n, generator=gen)
            seen, correct, total_loss = 0, 0, 0.0
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                if idx.numel() < 2:  # BatchNorm cannot train on a single sample
                    continue
                x = x_all[idx].float().div_(255.0)
                y = y_all[idx]
                if log_probs is not None:
                    lp = F.log_softmax(log_probs(x), dim=1)
                else:
                    lp = torch.log(model(x).clamp_min(1e-7))
                loss = F.nll_loss(lp, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                seen += y.numel()
                total_loss += loss.item() * y.numel()
                correct += int((lp.argmax(1) == y).sum())
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
    finally:
        if bar is not None:
            bar.close()
    return model.eval()
