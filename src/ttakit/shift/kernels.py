"""The small filters the corruptions are built from (NumPy and SciPy):
OpenCV's Gaussian kernel and its anti-aliased disk, ImageMagick's motion-blur
taps, and filtering of a batch ``(N, H, W, C)`` over its two spatial axes."""

from __future__ import annotations

import numpy as np


def gaussian_taps(size: int, sigma: float) -> np.ndarray:
    """OpenCV's ``getGaussianKernel(size, sigma)`` for a given sigma: the
    sampled Gaussian, normalised to sum 1."""
    i = np.arange(size) - (size - 1) / 2
    k = np.exp(-(i ** 2) / (2 * sigma ** 2))
    return k / k.sum()


def disk(radius: float, alias_blur: float) -> np.ndarray:
    """The defocus kernel: a disk of ``radius`` on a grid of at least 17 x 17,
    normalised, then smoothed by a 3 x 3 (5 x 5 past radius 8) Gaussian of
    sigma ``alias_blur`` with OpenCV's default border (reflect-101), as
    ``cv2.GaussianBlur`` does."""
    from scipy import ndimage

    half = 8 if radius <= 8 else int(np.ceil(radius))
    ksize = 3 if radius <= 8 else 5
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    d = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float64)
    d /= d.sum()
    g = gaussian_taps(ksize, alias_blur)
    d = ndimage.correlate1d(d, g, axis=0, mode="mirror")
    return ndimage.correlate1d(d, g, axis=1, mode="mirror")


def filter_batch(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate every image and channel of ``x (N, H, W, C)`` with the 2-D
    ``kernel`` (centred), borders reflected without repeating the edge pixel
    (OpenCV's ``filter2D`` default)."""
    from scipy import ndimage

    k = kernel
    while k.shape[0] > 1 and not (k[0].any() or k[-1].any() or k[:, 0].any() or k[:, -1].any()):
        k = k[1:-1, 1:-1]  # all-zero outer rings change nothing; dropping them saves time
    return ndimage.correlate(x, k[None, :, :, None], mode="mirror")


def gaussian_batch(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> np.ndarray:
    """scikit-image's ``filters.gaussian`` per image and channel (its default
    border repeats the edge pixel)."""
    from scipy import ndimage

    sig = (0, sigma, sigma, 0) if x.ndim == 4 else (0, sigma, sigma)
    return ndimage.gaussian_filter(x, sig, mode=mode, truncate=truncate)


def motion_taps(radius: float, sigma: float) -> np.ndarray:
    """ImageMagick's ``MotionBlurImage`` weights: ``2 * ceil(radius) + 1``
    taps of a one-sided Gaussian (tap ``i`` weighs ``exp(-i^2 / 2 sigma^2)``),
    normalised."""
    width = int(2 * np.ceil(radius) + 1)
    i = np.arange(width)
    w = np.exp(-(i ** 2) / (2 * sigma ** 2))
    return w / w.sum()


def motion_blur_batch(x: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
    """Blur image ``n`` of ``x (N, H, W[, C])`` along the direction
    ``angles[n]`` (degrees) the way ImageMagick's motion blur does: the
    weighted sum of the pixels at whole-pixel offsets ``round(i * (cos a,
    sin a))`` for the taps ``i`` of :func:`motion_taps`, edge pixels
    repeated past the border."""
    n, h, w = x.shape[:3]
    taps = motion_taps(radius, sigma)
    a = np.deg2rad(np.asarray(angles, dtype=np.float64))
    rows = np.arange(h)[None, :, None]
    cols = np.arange(w)[None, None, :]
    idx = np.arange(n)[:, None, None]
    out = np.zeros(x.shape, dtype=np.float64)
    for i, wt in enumerate(taps):
        # ImageMagick: offset x = ceil(i sin(a) - 0.5) (columns), y = ceil(i cos(a) - 0.5) (rows)
        dy = np.ceil(i * np.cos(a) - 0.5).astype(np.int64)[:, None, None]
        dx = np.ceil(i * np.sin(a) - 0.5).astype(np.int64)[:, None, None]
        r = np.clip(rows + dy, 0, h - 1)
        c = np.clip(cols + dx, 0, w - 1)
        out += wt * x[idx, r, c]
    return out
