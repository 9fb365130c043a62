"""Fog and snow on float images ``(N, H, W, C)`` in ``[0, 1]`` (frost needs
Hendrycks & Dietterich's frost photographs, which ttakit does not have)."""

from __future__ import annotations

import numpy as np

from .blur import clipped_zoom
from .kernels import motion_blur_batch


def plasma_fractal(n: int, size: int, decay: float, rng) -> np.ndarray:
    """``n`` diamond-square height maps ``(n, size, size)`` in ``[0, 1]``
    (``size`` a power of two; the random amplitude starts at 100 and is
    divided by ``decay`` at each halving of the step)."""
    m = np.zeros((n, size, size))
    step, wibble = size, 100.0

    def jitter(a):
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while step >= 2:
        half = step // 2
        corners = m[:, 0:size:step, 0:size:step]
        sq = corners + np.roll(corners, -1, axis=1)
        sq = sq + np.roll(sq, -1, axis=2)
        m[:, half:size:step, half:size:step] = jitter(sq)
        centres = m[:, half:size:step, half:size:step]
        corners = m[:, 0:size:step, 0:size:step]
        left = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        m[:, 0:size:step, half:size:step] = jitter(left)
        top = centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        m[:, half:size:step, 0:size:step] = jitter(top)
        step //= 2
        wibble /= decay
    m -= m.min(axis=(1, 2), keepdims=True)
    return m / m.max(axis=(1, 2), keepdims=True)


def fog(x, c, rng):
    strength, decay = c
    n, h, w = x.shape[:3]
    size = 1 << int(np.ceil(np.log2(max(h, w, 2))))
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    y = x + strength * plasma_fractal(n, size, decay, rng)[:, :h, :w, None]
    return np.clip(y * peak / (peak + strength), 0, 1)


def grey(x: np.ndarray) -> np.ndarray:
    """Luma as OpenCV's RGB2GRAY weighs it, ``(N, H, W, 1)``."""
    return (x[..., :3] @ np.array([0.299, 0.587, 0.114]))[..., None]


def snow(x, c, rng):
    """Flakes: thresholded zoomed Gaussian noise, motion-blurred (8 bits, as
    the original's PNG round trip) at an angle in [-135, -45] degrees, added
    with its 180-degree rotation to the image brightened towards grey."""
    mean, std, zoom, thresh, radius, sigma, keep = c
    n, h, w = x.shape[:3]
    layer = rng.normal(loc=mean, scale=std, size=(n, h, w))
    layer = clipped_zoom(layer, zoom)
    layer[layer < thresh] = 0
    layer = np.floor(np.clip(layer, 0, 1) * 255)
    angles = rng.uniform(-135, -45, size=n)
    layer = np.clip(np.round(motion_blur_batch(layer, radius, sigma, angles)), 0, 255)[..., None] / 255.0
    base = keep * x + (1 - keep) * np.maximum(x, grey(x) * 1.5 + 0.5)
    return np.clip(base + layer + layer[:, ::-1, ::-1], 0, 1)
