"""Images: batches ``(N, C, H, W)`` or ``(N, H, W, C)`` in, float32 NCHW out.

uint8 pixels are scaled to ``[0, 1]``; floats are kept as given. Every
image check (rank, channel position, dtype, finiteness, the model's channel
count) lives here.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import InputError, TTAKitWarning
from .base import Inputs, as_tensor_chunk

LAYOUTS = ("NCHW", "NHWC")


def check_layout(layout, what: str = "data_layout") -> str:
    if not isinstance(layout, str) or layout.upper() not in LAYOUTS:
        raise InputError(f"{what} must be 'NCHW' or 'NHWC', got {layout!r}")
    return layout.upper()


class ImageInputs(Inputs):
    """Image batches in ``layout`` (the data's layout, not the model's)."""

    noun = "image"

    def __init__(self, layout: str = "NCHW"):
        self.layout = check_layout(layout)

    def batch_array(self, batch):
        try:
            return super().batch_array(batch)
        except InputError as e:
            raise InputError(f"{e}; pass one array of shape (N, C, H, W) or (N, H, W, C)") from None

    def prepare(self, raw, device, start=0):
        t = as_tensor_chunk(raw)
        check_shape(tuple(t.shape), self.layout)
        pixels = t.dtype == torch.uint8  # cannot hold NaN or infinity
        if pixels:
            t = t.to(device, non_blocking=True).to(torch.float32).div_(255.0)
        elif t.is_floating_point():
            t = t.to(device=device, dtype=torch.float32, non_blocking=True)
        else:
            raise InputError(f"unsupported input dtype {t.dtype}: pass uint8 pixels (0-255) or floats")
        if self.layout == "NHWC":
            t = t.permute(0, 3, 1, 2)
        return t.contiguous()

    def invalid(self, x):
        return None if x.dtype == torch.uint8 else super().invalid(x)

    def check_model(self, x, adapter):
        c = x.shape[1]
        expected = getattr(adapter, "expected_channels", None)
        if expected is not None and c != expected:
            layout = getattr(adapter, "layout", None)
            read = f" (its input read as {layout})" if layout else ""
            raise InputError(f"the model expects {expected} channels{read}, the input has {c}")

    def check_range(self, raw, x, preprocess):
        if preprocess is not None or getattr(raw, "dtype", None) in (np.uint8, torch.uint8) or x.numel() == 0:
            return
        finite = x[torch.isfinite(x)]
        hi = float(finite.max()) if finite.numel() else 0.0
        if hi > 2.0:
            warnings.warn("float images range above 1 (up to about "
                          f"{10 ** round(np.log10(hi))}): ttakit's views and merges expect uint8 pixels or floats "
                          "in [0, 1]. Pass uint8 pixels, divide by 255, or declare the model's scale with "
                          "preprocess=Normalize(mean, std) on the 0-1 scale", TTAKitWarning, stacklevel=4)

    def describe(self, shape):
        return f"{tuple(shape)} (NCHW)"


def check_shape(shape: tuple, layout: str) -> None:
    if len(shape) != 4:
        want = "(N, C, H, W)" if layout == "NCHW" else "(N, H, W, C)"
        hint = " For one image, pass x[None]." if len(shape) == 3 else ""
        raise InputError(f"expected a batch of images of rank 4 {want} for data_layout {layout}, "
                         f"got shape {shape}.{hint}")
    c = shape[1] if layout == "NCHW" else shape[3]
    other = shape[3] if layout == "NCHW" else shape[1]
    if c not in (1, 2, 3, 4) and other in (1, 3, 4):
        alt = "NHWC" if layout == "NCHW" else "NCHW"
        raise InputError(f"shape {shape} has {c} channels for data_layout {layout}; it looks like {alt}. "
                         f"Pass data_layout={alt!r}")
