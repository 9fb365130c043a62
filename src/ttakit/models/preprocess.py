"""Preprocessing that runs after augmentation, on the model's device."""

from __future__ import annotations

from collections.abc import Sequence

import warnings

import torch

from ..errors import InputError, TTAKitWarning


class Normalize:
    """``(x - mean) / std`` per channel, on NCHW batches in ``[0, 1]``."""

    def __init__(self, mean: Sequence[float] | float, std: Sequence[float] | float):
        try:
            self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
            self.std = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        except (TypeError, ValueError, RuntimeError):
            raise InputError(f"Normalize mean and std must be numbers, got {mean!r} and {std!r}") from None
        if not (torch.isfinite(self.mean).all() and torch.isfinite(self.std).all()):
            raise InputError(f"Normalize mean and std must be finite, got {mean!r} and {std!r}")
        if (self.std <= 0).any():
            raise InputError(f"Normalize std must be positive, got {std}")
        if (self.mean.abs() > 1.5).any() or (self.std > 1.5).any():
            warnings.warn(f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}) looks "
                          "like the 0-255 scale, but ttakit scales uint8 images to [0, 1] before preprocess: "
                          "divide mean and std by 255", TTAKitWarning, stacklevel=2)
        self._cache: dict = {}

    @property
    def mean_values(self) -> tuple[float, ...]:
        return tuple(self.mean.flatten().tolist())

    @property
    def std_values(self) -> tuple[float, ...]:
        return tuple(self.std.flatten().tolist())

    def __eq__(self, other) -> bool:
        return (isinstance(other, Normalize) and self.mean_values == other.mean_values
                and self.std_values == other.std_values)

    def __hash__(self) -> int:
        return hash((self.mean_values, self.std_values))

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
