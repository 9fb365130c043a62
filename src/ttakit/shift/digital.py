"""Brightness, contrast, saturation, elastic, pixelate and JPEG on float
images ``(N, H, W, C)`` in ``[0, 1]``."""

from __future__ import annotations

import io

import numpy as np

from .colour import hsv_to_rgb, rgb_to_hsv
from .kernels import gaussian_batch


def contrast(x, c, rng):
    means = x.mean(axis=(1, 2), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1)


def brightness(x, c, rng):
    hsv = rgb_to_hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(hsv_to_rgb(hsv), 0, 1)


def saturate(x, c, rng):
    hsv = rgb_to_hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
    return np.clip(hsv_to_rgb(hsv), 0, 1)


def _per_image_pil(x, fn):
    from PIL import Image

    out = np.empty(x.shape, dtype=np.float64)
    u8 = np.floor(np.clip(x, 0, 1) * 255).astype(np.uint8)
    for i, img in enumerate(u8):
        im = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        res = np.asarray(fn(im), dtype=np.float64)
        out[i] = res.reshape(img.shape) / 255.0
    return out


def jpeg_compression(x, c, rng):
    """A JPEG round trip at quality ``c`` (Pillow)."""
    def encode(im):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=int(c))
        buf.seek(0)
        from PIL import Image

        return Image.open(buf).convert(im.mode)

    return _per_image_pil(x, encode)


def pixelate(x, c, rng):
    """Box-downsample to ``int(size * c)`` and box-upsample back (Pillow)."""
    from PIL import Image

    h, w = x.shape[1:3]

    def box(im):
        return im.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX)

    return _per_image_pil(x, box)


def elastic_transform(x, c, rng, relative: bool = True):
    """A random affine jitter of three points (bilinear, borders reflected
    without repeating the edge), then a smooth random displacement field:
    uniform noise smoothed by a Gaussian of ``sigma`` (truncated at 3 sigma,
    reflected borders) times ``alpha``, sampled bilinearly. ``relative``:
    the parameters are fractions of the image size (the CIFAR table)."""
    from scipy import ndimage

    n, h, w, ch = x.shape
    size = min(h, w)
    alpha, sigma, jitter = (v * size for v in c) if relative else c
    centre = np.array([h // 2, w // 2], dtype=np.float64)[::-1]  # (x, y) as the original's float32 shape // 2
    sq = size // 3
    src = np.array([centre + sq, [centre[0] + sq, centre[1] - sq], centre - sq])
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty_like(x, dtype=np.float64)
    for i in range(n):
        dst = src + rng.uniform(-jitter, jitter, size=src.shape)
        m = _affine_from_points(src, dst)
        inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
        # output pixel (col, row) samples the input at inv @ (col, row, 1)
        sx = inv[0, 0] * cols + inv[0, 1] * rows + inv[0, 2]
        sy = inv[1, 0] * cols + inv[1, 1] * rows + inv[1, 2]
        warped = np.stack([ndimage.map_coordinates(x[i, ..., k], [sy, sx], order=1, mode="mirror")
                           for k in range(ch)], -1)
        dx = gaussian_batch(rng.uniform(-1, 1, size=(1, h, w)), sigma, mode="reflect", truncate=3)[0] * alpha
        dy = gaussian_batch(rng.uniform(-1, 1, size=(1, h, w)), sigma, mode="reflect", truncate=3)[0] * alpha
        out[i] = np.stack([ndimage.map_coordinates(warped[..., k], [rows + dy, cols + dx], order=1,
                                                   mode="reflect") for k in range(ch)], -1)
    return np.clip(out, 0, 1)


def _affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2 x 3 affine map taking the three points ``src`` to ``dst``
    (OpenCV's ``getAffineTransform``)."""
    a = np.hstack([src, np.ones((3, 1))])
    return np.linalg.solve(a, dst).T
