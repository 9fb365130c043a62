"""Photometric views: they change pixel values, not positions, so their
inverse on dense outputs, boxes and points is the identity.

Images are floats in ``[0, 1]`` (uint8 inputs are scaled on the way in).
By default results are clipped back to ``[0, 1]``, as Keras and PIL do;
pass ``clip=false`` for data on another scale.
"""

from __future__ import annotations

import torch

from ..errors import InputError, PolicyError
from .base import View, check_bool, check_number, check_seed


class _Photometric(View):
    geometric = False

    def __init__(self, clip: bool = True):
        self.clip = check_bool(f"{self.name} clip", clip)

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp_(0.0, 1.0) if self.clip else x

    def check_input(self, x: torch.Tensor, start: int = 0) -> None:
        """A view that clips to ``[0, 1]`` would silently ruin data on another
        scale (normalised, or 0-255 floats): refuse it."""
        if not self.clip:
            return
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise InputError(
                f"the policy has photometric views that clip to [0, 1] ({self!r}), but the inputs range over "
                f"[{lo:.4g}, {hi:.4g}] (chunk starting at input {start}). Pass uint8 pixels or floats in "
                f"[0, 1] and move normalisation into preprocess=, or use clip=false on those views")


class Multiply(_Photometric):
    """``x * factor`` (also named ``brightness``: PIL, Keras and torchvision
    brightness are this multiplication)."""

    name = "multiply"

    def __init__(self, factor: float = 1.0, clip: bool = True):
        super().__init__(clip)
        if check_number("multiply factor", factor) < 0:
            raise PolicyError(f"multiply factor must be >= 0, got {factor}")
        self.factor = factor

    def params(self):
        return {"factor": self.factor, "clip": self.clip}

    def apply(self, x):
        return self._finish(x * self.factor)


class Add(_Photometric):
    """``x + value``."""

    name = "add"

    def __init__(self, value: float = 0.0, clip: bool = True):
        super().__init__(clip)
        self.value = check_number("add value", value)

    def params(self):
        return {"value": self.value, "clip": self.clip}

    def apply(self, x):
        return self._finish(x + self.value)


class Contrast(_Photometric):
    """Blend each image with its mean grey level: ``mean + factor * (x - mean)``
    (torchvision semantics: the mean of the luminance for RGB)."""

    name = "contrast"

    def __init__(self, factor: float = 1.0, clip: bool = True):
        super().__init__(clip)
        if check_number("contrast factor", factor) < 0:
            raise PolicyError(f"contrast factor must be >= 0, got {factor}")
        self.factor = factor

    def params(self):
        return {"factor": self.factor, "clip": self.clip}

    def apply(self, x):
        if x.shape[1] == 3:
            lum = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
            mean = lum.mean(dim=(-2, -1), keepdim=True).unsqueeze(1)
        else:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return self._finish(mean + self.factor * (x - mean))


class ChannelShift(_Photometric):
    """Keras ``channel_shift_range``: add ``value`` to every channel, clipped
    to each image's own range (min and max over all its channels), as Keras
    ``apply_channel_shift`` does."""

    name = "channel_shift"

    def __init__(self, value: float = 0.0):
        super().__init__(clip=False)
        self.value = check_number("channel_shift value", value)

    def params(self):
        return {"value": self.value}

    def apply(self, x):
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        return torch.minimum(torch.maximum(x + self.value, lo), hi)


class GaussianNoise(_Photometric):
    """Add a fixed Gaussian noise field of standard deviation ``std``.

    The field is drawn once from ``seed`` (on the CPU, so every device sees
    the same numbers) and is the same for every input: the view is a
    deterministic function of its input, whatever the batching.
    """

    name = "noise"

    def __init__(self, std: float = 0.05, seed: int = 0, clip: bool = True):
        super().__init__(clip)
        if check_number("noise std", std) < 0:
            raise PolicyError(f"noise std must be >= 0, got {std}")
        self.std, self.seed = std, check_seed("noise seed", seed)
        self._cache: dict = {}

    def params(self):
        return {"std": self.std, "seed": self.seed, "clip": self.clip}

    def field(self, shape, device, dtype) -> torch.Tensor:
        key = (tuple(shape), str(device), dtype)
        if key not in self._cache:
            g = torch.Generator().manual_seed(self.seed)
            noise = torch.randn(tuple(shape), generator=g, dtype=torch.float32) * self.std
            self._cache[key] = noise.to(device=device, dtype=dtype)
        return self._cache[key]

    def apply(self, x):
        return self._finish(x + self.field(x.shape[1:], x.device, x.dtype))
