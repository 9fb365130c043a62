"""The blur corruptions on float images ``(N, H, W, C)`` in ``[0, 1]``."""

from __future__ import annotations

import numpy as np

from .kernels import disk, filter_batch, gaussian_batch, motion_blur_batch


def gaussian_blur(x, c, rng):
    return np.clip(gaussian_batch(x, c), 0, 1)


def defocus_blur(x, c, rng):
    radius, alias = c
    return np.clip(filter_batch(x, disk(radius, alias)), 0, 1)


def glass_blur(x, c, rng):
    """Blur, quantise to 8 bits, swap each pixel with a random neighbour up to
    ``max_delta`` away (scanning from the bottom-right, ``iterations`` times),
    blur again."""
    sigma, delta, iterations = c
    n, h, w = x.shape[:3]
    y = np.floor(gaussian_batch(x, sigma) * 255).astype(np.uint8)
    idx = np.arange(n)
    for _ in range(iterations):
        for r in range(h - delta, delta, -1):
            for col in range(w - delta, delta, -1):
                d = rng.integers(-delta, delta, size=(2, n))  # (dx, dy) per image, high end excluded
                r2, c2 = r + d[1], col + d[0]
                a, b = y[idx, r, col].copy(), y[idx, r2, c2].copy()
                y[idx, r, col], y[idx, r2, c2] = b, a
    return np.clip(gaussian_batch(y / 255.0, sigma), 0, 1)


def motion_blur(x, c, rng):
    """ImageMagick's motion blur (radius, sigma) at an angle uniform in
    [-45, 45] degrees per image, re-implemented (see
    :func:`~ttakit.shift.kernels.motion_blur_batch`); output in 8 bits as
    the PNG round trip of the original gives."""
    radius, sigma = c
    angles = rng.uniform(-45, 45, size=x.shape[0])
    out = motion_blur_batch(np.round(x * 255), radius, sigma, angles)
    return np.clip(np.round(out), 0, 255) / 255.0


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom into the centre of every image of ``x (N, H, W[, C])`` by
    ``factor`` (bilinear, SciPy), cropped back to ``H x W``."""
    from scipy import ndimage

    h, w = x.shape[1:3]
    ch, cw = int(np.ceil(h / factor)), int(np.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[:, top:top + ch, left:left + cw]
    zoom = (1, factor, factor) + (1,) * (x.ndim - 3)
    z = ndimage.zoom(crop, zoom, order=1)
    t, lft = (z.shape[1] - h) // 2, (z.shape[2] - w) // 2
    return z[:, t:t + h, lft:lft + w]


def zoom_blur(x, c, rng):
    x = x.astype(np.float32)
    out = np.zeros_like(x)
    for f in c:
        out += clipped_zoom(x, f)
    return np.clip((x + out) / (len(c) + 1), 0, 1)
