"""Boxes, masks, keypoints and uncertainty drawn on images with Pillow.

Every function takes and returns a ``PIL.Image`` (RGB) or a uint8 array,
so a report draws only the few images it shows. Boxes are drawn when their
score is at least :data:`MIN_SCORE` (a detector's decode may keep boxes down
to 0.001), at most :data:`MAX_BOXES` per image, each with its class name
and score.
"""

from __future__ import annotations

import numpy as np

#: boxes below this score are not drawn
MIN_SCORE = 0.3
#: the most boxes drawn on one image (highest scores first)
MAX_BOXES = 100

#: COCO's 17-keypoint skeleton (0-based index pairs)
COCO_SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
                 (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))

_PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 200, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                     (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
                     (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195),
                     (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128)], np.uint8)

#: a perceptually ordered colour ramp (viridis, 9 stops) for uncertainty maps
_RAMP = np.array([(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141), (39, 173, 129),
                  (92, 200, 99), (170, 220, 50), (253, 231, 37)], np.float64)


def colour(k: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in _PALETTE[int(k) % len(_PALETTE)])


def to_rgb(image, layout: str = "HWC") -> np.ndarray:
    """One image as uint8 ``(h, w, 3)``: ``layout`` HWC or CHW (or a 2-D
    grey image); floats in [0, 1] are scaled by 255, other floats stretched
    to their own range; one channel is repeated, a fourth dropped."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    elif layout.upper() == "CHW":
        a = np.moveaxis(a, 0, -1)
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        if lo >= 0 and hi <= 1:
            a = a * 255
        elif hi > 255 or lo < 0:
            a = (a - lo) / ((hi - lo) or 1) * 255
        a = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def fit_size(w: int, h: int, small: int = 96, large: int = 360) -> tuple[int, int, float]:
    """``(w, h, scale)`` of a thumbnail: tiny images enlarged by a whole
    factor to at least ``small`` pixels on their longer side, large ones
    shrunk to ``large``."""
    side = max(w, h)
    if side < small:
        f = float(-(-small // side))
    elif side > large:
        f = large / side
    else:
        f = 1.0
    return max(1, round(w * f)), max(1, round(h * f)), f


def thumbnail(image, small: int = 96, large: int = 360):
    """A PIL image of ``image`` (uint8 ``(h, w, 3)``) sized by :func:`fit_size`
    (nearest neighbour when enlarging: pixels stay pixels); and its scale."""
    from PIL import Image

    im = Image.fromarray(to_rgb(image))
    w, h, f = fit_size(im.width, im.height, small, large)
    if f != 1:
        im = im.resize((w, h), Image.NEAREST if f > 1 else Image.BILINEAR)
    return im, f


def _font(size: int = 12):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _label(draw, xy, text: str, fill, font) -> None:
    x, y = xy
    left, top, right, bottom = draw.textbbox((x, y), text, font=font)
    y = max(0, y - (bottom - top) - 3)
    left, top, right, bottom = draw.textbbox((x, y), text, font=font)
    draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=fill)
    draw.text((x, y), text, fill=(0, 0, 0) if sum(fill) > 380 else (255, 255, 255), font=font)


def class_name(names, k: int) -> str:
    k = int(k)
    if names is not None and 0 <= k < len(names):
        return str(names[k])
    return str(k)


def draw_boxes(im, boxes, labels, scores=None, names=None, scale: float = 1.0, min_score: float = MIN_SCORE,
               width: int = 2, font_size: int = 11):
    """``boxes`` (xyxy, image pixels) drawn on the PIL image ``im`` (already
    scaled by ``scale``), each in its class's colour with its name (and
    score). Returns the image (drawn in place) and the boxes drawn."""
    from PIL import ImageDraw

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4) * scale
    labels = np.asarray(labels).reshape(-1)
    show_score = scores is not None
    scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, np.float64).reshape(-1)
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= min_score][:MAX_BOXES]
    draw, font = ImageDraw.Draw(im), _font(font_size)
    for i in order[::-1]:  # the best drawn last, on top
        c = colour(labels[i])
        x0, y0, x1, y1 = boxes[i]
        draw.rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), outline=c, width=width)
        text = class_name(names, labels[i]) + (f" {scores[i]:.2f}" if show_score else "")
        _label(draw, (min(x0, x1), min(y0, y1)), text, c, font)
    return im, len(order)


def overlay_mask(im, labels, background: int = 0, alpha: float = 0.45, names=None, legend: bool = True):
    """A label map (same size as ``im``, or resized to it by nearest
    neighbour) laid over ``im``: each class but ``background`` in its colour,
    with a legend of the classes present."""
    from PIL import Image, ImageDraw

    lab = np.asarray(labels)
    if lab.shape != (im.height, im.width):
        lab = np.asarray(Image.fromarray(lab.astype(np.int32), mode="I").resize((im.width, im.height),
                                                                              Image.NEAREST))
    base = np.asarray(im.convert("RGB")).astype(np.float64)
    col = _PALETTE[lab % len(_PALETTE)].astype(np.float64)
    fg = (lab != background)[:, :, None]
    out = np.where(fg, base * (1 - alpha) + col * alpha, base).round().astype(np.uint8)
    res = Image.fromarray(out)
    if legend:
        draw, font = ImageDraw.Draw(res), _font(10)
        y = 2
        for k in [int(v) for v in np.unique(lab) if v != background][:8]:
            _label(draw, (2, y + 12), class_name(names, k), colour(k), font)
            y += 13
    return res


def heatmap(values, size: tuple[int, int] | None = None, vmax: float | None = None):
    """A 2-D array as a viridis-coloured PIL image (0 dark, ``vmax`` or the
    array's maximum bright), resized to ``size = (w, h)``."""
    from PIL import Image

    v = np.nan_to_num(np.asarray(values, np.float64))
    top = float(vmax if vmax is not None else v.max()) or 1.0
    t = np.clip(v / top, 0, 1) * (len(_RAMP) - 1)
    lo = np.floor(t).astype(int)
    hi = np.minimum(lo + 1, len(_RAMP) - 1)
    frac = (t - lo)[..., None]
    rgb = (_RAMP[lo] * (1 - frac) + _RAMP[hi] * frac).round().astype(np.uint8)
    out = Image.fromarray(rgb)
    return out.resize(size, Image.BILINEAR) if size is not None and size != out.size else out


def draw_keypoints(im, points, confidence=None, scale: float = 1.0, skeleton=None, colour_of: int = 0,
                   radius: int = 3, min_confidence: float = 0.0):
    """Keypoints ``(P, 2)`` (image pixels) drawn on ``im`` as dots, joined by
    ``skeleton`` (default: COCO's for 17 points, none otherwise); points below
    ``min_confidence`` (or NaN) are left out."""
    from PIL import ImageDraw

    pts = np.asarray(points, np.float64).reshape(-1, 2) * scale
    conf = np.ones(len(pts)) if confidence is None else np.asarray(confidence, np.float64).reshape(-1)
    ok = np.isfinite(pts).all(1) & (conf >= min_confidence)
    if skeleton is None:
        skeleton = COCO_SKELETON if len(pts) == 17 else ()
    draw, c = ImageDraw.Draw(im), colour(colour_of)
    for a, b in skeleton:
        if a < len(pts) and b < len(pts) and ok[a] and ok[b]:
            draw.line((*pts[a], *pts[b]), fill=c, width=2)
    for (x, y), good in zip(pts, ok):
        if good:
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=c, outline=(255, 255, 255))
    return im


__all__ = ["MIN_SCORE", "MAX_BOXES", "COCO_SKELETON", "colour", "to_rgb", "fit_size", "thumbnail", "class_name",
           "draw_boxes", "overlay_mask", "heatmap", "draw_keypoints"]
