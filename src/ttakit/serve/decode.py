"""Turning what a request carries into image arrays, one image at a time:
an image that cannot be used becomes an :class:`ImageProblem` (code, HTTP
status, message naming the image) and the request's other images go on."""

from __future__ import annotations

import base64
import binascii
import io
import sys
from dataclasses import dataclass

import numpy as np

from ..io.images import ImageTooLarge, image_size, read_image

#: the longest piece of a client's name or text quoted in a message
QUOTE_CHARS = 200


@dataclass(frozen=True)
class Limits:
    """What one request may carry."""

    max_request_bytes: int = 16 * 1024 * 1024
    max_images: int = 64
    max_pixels: int = 4096 * 4096  #: per image, H x W


@dataclass(frozen=True)
class ImageProblem:
    code: str
    status: int
    message: str


def quoted(name: str) -> str:
    """``name`` (as a client sent it) quoted for a message: ``repr``, cut to
    :data:`QUOTE_CHARS` characters."""
    return repr(name) if len(name) <= QUOTE_CHARS else repr(name[:QUOTE_CHARS]) + f"... ({len(name):,} characters)"


def _problem(name: str, code: str, status: int, why: str) -> ImageProblem:
    return ImageProblem(code, status, f"image {quoted(name)}: {why}")


def allow_pixels(max_pixels: int) -> None:
    """Let Pillow open images up to ``max_pixels``: it refuses anything over
    twice its own ``Image.MAX_IMAGE_PIXELS`` (about 179 megapixels) as a
    decompression bomb before ttakit's check sees it. Raised (never lowered,
    never from "off") to ``max_pixels``, so that a Pillow refusal means an
    image over twice the server's limit. Process-wide: Pillow has no
    per-call setting."""
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = int(max_pixels)


def decode_bytes(data: bytes, name: str, limits: Limits, mode: str = "RGB",
                 size: tuple[int, int] | None = None) -> np.ndarray | ImageProblem:
    """An encoded image file (PNG, JPEG...) as uint8 ``(H, W, C)``, resized to
    ``size`` when given; the pixel limit (``limits.max_pixels``, whatever
    its size) is checked on the header, before decoding."""
    from PIL import Image

    if not data:
        return _problem(name, "invalid_image", 422, "is empty")
    try:  # read_image checks the header against the limit before it decodes anything
        return read_image(io.BytesIO(data), mode=mode, size=size, max_pixels=limits.max_pixels)
    except (ImageTooLarge, Image.DecompressionBombError):
        return _too_large(data, name, limits)
    except Exception as e:  # Pillow raises many types for bad data
        try:
            image_size(io.BytesIO(data), max_pixels=sys.maxsize)
        except Exception:
            return _problem(name, "invalid_image", 422, f"not an image Pillow can read ({type(e).__name__})")
        # a readable header, truncated or corrupt pixel data
        return _problem(name, "invalid_image", 422, f"cannot be decoded ({type(e).__name__}: {str(e)[:QUOTE_CHARS]})")


def _too_large(data: bytes, name: str, limits: Limits) -> ImageProblem:
    """The 413 of an image over ``limits.max_pixels``, naming its size when Pillow opens its header."""
    from PIL import Image

    try:
        h, w = image_size(io.BytesIO(data), max_pixels=sys.maxsize)
    except Image.DecompressionBombError as e:  # over Pillow's ceiling, which allow_pixels keeps above the limit
        return _problem(name, "image_too_large", 413,
                        f"is more than the {limits.max_pixels} pixels allowed ({str(e)[:QUOTE_CHARS]})")
    return _problem(name, "image_too_large", 413, f"{h}x{w} pixels is more than the {limits.max_pixels} allowed")


def decode_base64(text: str, name: str, limits: Limits, mode: str = "RGB",
                  size: tuple[int, int] | None = None) -> np.ndarray | ImageProblem:
    """A base64 string (optionally a ``data:image/...;base64,`` URL) of an image file."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return _problem(name, "invalid_image", 422, "is not valid base64")
    return decode_bytes(data, name, limits, mode, size)


def decode_array(value, name: str, limits: Limits, mode: str = "RGB",
                 size: tuple[int, int] | None = None) -> np.ndarray | ImageProblem:
    """Nested lists ``(H, W, C)`` (or ``(H, W)`` for mode L): integers 0-255
    (read as uint8) or floats in [0, 1] (read as float32, used as given)."""
    channels = 1 if mode == "L" else 3
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return _problem(name, "invalid_image", 422, "is not a rectangular array of numbers")
    if arr.ndim == 2 and channels == 1:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[-1] != channels or min(arr.shape) < 1:
        return _problem(name, "invalid_image", 422,
                        f"an array image must have shape (H, W, {channels}) for mode {mode}, got {arr.shape}")
    h, w = arr.shape[:2]
    if h * w > limits.max_pixels:
        return _problem(name, "image_too_large", 413, f"{h}x{w} pixels is more than the {limits.max_pixels} allowed")
    if size is not None and (h, w) != tuple(size):
        return _problem(name, "invalid_image", 422, f"is {h}x{w}; array images must be {size[0]}x{size[1]}")
    if not np.isfinite(arr).all():
        return _problem(name, "invalid_image", 422, "has NaN or infinite values")
    if (arr == np.round(arr)).all() and arr.min() >= 0 and arr.max() <= 255 and not (arr.max() <= 1 and _floats(value)):
        return arr.astype(np.uint8)
    if arr.min() >= 0 and arr.max() <= 1:
        return arr.astype(np.float32)
    return _problem(name, "invalid_image", 422, "values must be integers 0-255 or floats in [0, 1]")


def _floats(value) -> bool:
    """Whether the first number of nested lists was written as a float (1.0, not 1)."""
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    return isinstance(value, float)
