"""Preprocessing that runs after augmentation, on the model's device."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InputError


class Normalize:
    """``(x - mean) / std`` per channel, on NCHW batches in ``[0, 1]``."""

    def __init__(self, mean: Sequence[float] | float, std: Sequence[float] | float):
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if (self.std <= 0).any():
            raise InputError(f"Normalize std must be positive, got {std}")
        self._cache: dict = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        if key not in self._cache:
            self._cache[key] = (self.mean.to(x.device, x.dtype), self.std.to(x.device, x.dtype))
        mean, std = self._cache[key]
        if mean.shape[1] not in (1, x.shape[1]):
            raise InputError(f"Normalize has {mean.shape[1]} channels, input has {x.shape[1]}")
        return (x - mean) / std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"
