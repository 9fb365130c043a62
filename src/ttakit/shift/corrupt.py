""":func:`corrupt`: one corruption at one severity over a batch of images."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from . import blur, digital, noise, weather
from .params import table_for

#: name -> function(x float64 (N, H, W, C) in [0, 1], parameter, rng), in CIFAR-10-C's order
CORRUPTIONS = {
    "gaussian_noise": noise.gaussian_noise,
    "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "snow": weather.snow,
    "fog": weather.fog,
    "brightness": digital.brightness,
    "contrast": digital.contrast,
    "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression,
    # the four extra corruptions of the CIFAR-10-C release
    "speckle_noise": noise.speckle_noise,
    "gaussian_blur": blur.gaussian_blur,
    "saturate": digital.saturate,
}

#: corruptions of CIFAR-10-C that ttakit cannot make, and why
NOT_AVAILABLE = {
    "frost": "needs Hendrycks & Dietterich's six frost photographs, which are not distributed with ttakit",
    "spatter": "its water drops need OpenCV's Canny edges and distance transform (not a dependency of ttakit)",
}

#: the nine corruptions of the issue-24 protocol
PROTOCOL = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "zoom_blur", "contrast", "fog",
            "jpeg_compression", "pixelate")

_COLOUR_ONLY = ("brightness", "saturate", "snow")


def corrupt(images, name: str, severity: int, seed: int = 0, *, layout: str = "NHWC",
            table: str = "auto") -> np.ndarray:
    """``images`` corrupted by ``name`` at ``severity`` (1-5).

    ``images``: ``(N, H, W, C)`` (or ``layout="NCHW"``) uint8, or float in
    ``[0, 1]``; the result has the same shape, layout and dtype (uint8
    results are truncated to integers as the published generator's
    ``np.uint8`` does). The parameters are Hendrycks & Dietterich's CIFAR
    ones for images up to 64 pixels, their ImageNet ones above (``table``
    picks one). The same ``seed`` gives the same result; every image of the
    batch gets its own draw."""
    if name not in CORRUPTIONS:
        why = NOT_AVAILABLE.get(name)
        if why:
            raise InputError(f"corruption {name!r} is not available: {why}")
        raise InputError(f"unknown corruption {name!r}; available: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or severity not in (1, 2, 3, 4, 5):
        raise InputError(f"severity must be an integer from 1 to 5, got {severity!r}")
    arr = np.asarray(images)
    if arr.ndim != 4:
        raise InputError(f"images must be a batch (N, H, W, C) or (N, C, H, W), got shape {arr.shape}")
    if layout not in ("NHWC", "NCHW"):
        raise InputError(f"layout must be 'NHWC' or 'NCHW', got {layout!r}")
    x = arr if layout == "NHWC" else arr.transpose(0, 2, 3, 1)
    is_u8 = x.dtype == np.uint8
    if not is_u8 and x.dtype.kind != "f":
        raise InputError(f"images must be uint8 or float in [0, 1], got dtype {x.dtype}")
    xf = x.astype(np.float64) / 255.0 if is_u8 else x.astype(np.float64)
    if not is_u8 and xf.size and (xf.min() < 0 or xf.max() > 1):
        raise InputError("float images must lie in [0, 1]")
    if name in _COLOUR_ONLY and xf.shape[-1] != 3:
        raise InputError(f"{name} needs RGB images (3 channels), got {xf.shape[-1]}")
    which, params = table_for(xf.shape[1], xf.shape[2], table)
    c = params[name][severity - 1]
    rng = np.random.default_rng(seed)
    if name == "elastic_transform":
        y = digital.elastic_transform(xf, c, rng, relative=which == "cifar")
    else:
        y = CORRUPTIONS[name](xf, c, rng)
    y = np.clip(y, 0, 1)
    y = np.floor(y * 255).astype(np.uint8) if is_u8 else y.astype(x.dtype)
    return y if layout == "NHWC" else y.transpose(0, 3, 1, 2)
