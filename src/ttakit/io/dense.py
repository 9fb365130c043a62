"""Detection, segmentation and keypoints on image files: what ``ttakit
predict --task detect|segment|keypoints`` does but parsing options.

Images of any sizes are read (:func:`~ttakit.io.images.read_image`), each
fitted into the model's input (``letterbox``: resized by ``r = min(H / h,
W / w)``, pasted top-left, padded; ``stretch``: resized to ``H x W``), run
in bounded chunks with every view of the policy, and the merged outputs are
mapped back to each image's own pixels: boxes and points divided by the
scale, label maps cut to the fitted region and resized by nearest
neighbour. A file that cannot be read, or that the model fails on, is listed
in ``failures`` and does not stop the others.

Outputs (:func:`write_dense`): ``results.json`` in COCO's result format
(detections: ``image_id``, ``category_id``, ``bbox`` x, y, w, h, ``score``;
keypoints: ``keypoints`` x, y, v triples and ``score``; segmentation: one
RLE record per class present, when pycocotools is installed), ``index.json``
(images with their ids, files and sizes, the failures, the run's settings),
and for segmentation one PNG label map per image under ``masks/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files import write_atomic
from .images import CHUNK, MAX_PIXELS, Failure, _reason, find_images, read_image

TASKS = ("detect", "segment", "keypoints")


@dataclass
class Fitted:
    """Images fitted into a model's input, and how to go back."""

    x: np.ndarray           #: (n, H, W, C) uint8
    scales: np.ndarray      #: (n, 2) rx, ry: model pixels per image pixel
    sizes: list             #: each image's own (h, w)


def fit_images(images: Sequence[np.ndarray], size: tuple[int, int], fit: str = "letterbox",
               pad_value: int = 0) -> Fitted:
    """``images`` (uint8 ``(h, w, C)``, sizes may differ) fitted into ``size
    = (H, W)``: ``letterbox`` (aspect kept, top-left, padded with
    ``pad_value``) or ``stretch``; bilinear resampling (Pillow)."""
    from PIL import Image

    if fit not in ("letterbox", "stretch"):
        raise InputError(f"fit must be 'letterbox' or 'stretch', got {fit!r}")
    H, W = size
    c = images[0].shape[2] if images else 3
    x = np.full((len(images), H, W, c), pad_value, np.uint8)
    scales = np.zeros((len(images), 2))
    sizes = []
    for i, a in enumerate(images):
        h, w = a.shape[:2]
        sizes.append((h, w))
        if fit == "letterbox":
            r = min(H / h, W / w)
            nh, nw = int(h * r), int(w * r)
            scales[i] = (r, r)
        else:
            nh, nw = H, W
            scales[i] = (W / w, H / h)
        im = Image.fromarray(a[:, :, 0] if c == 1 else a)
        if (nh, nw) != (h, w):
            im = im.resize((nw, nh), Image.BILINEAR)
        x[i, :nh, :nw] = np.asarray(im).reshape(nh, nw, c)
    return Fitted(x, scales, sizes)


def labels_back(labels: np.ndarray, size: tuple[int, int], scale, fit: str) -> np.ndarray:
    """A label map of the fitted input brought back to the image's own
    ``size = (h, w)``: the fitted region cut out (letterbox) and resized by
    nearest neighbour."""
    from PIL import Image

    h, w = size
    if fit == "letterbox":
        labels = labels[:max(1, int(h * scale[1])), :max(1, int(w * scale[0]))]
    lab = np.asarray(labels, np.int32)
    if lab.shape == (h, w):
        return lab.astype(np.int64)
    return np.asarray(Image.fromarray(lab, mode="I").resize((w, h), Image.NEAREST)).astype(np.int64)


def read_files(paths: Sequence, mode: str = "RGB", max_pixels: int = MAX_PIXELS) -> tuple[list, list, list[Failure]]:
    """``(arrays, paths read, failures)``: each file at its own size."""
    arrays, good, failures = [], [], []
    for p in paths:
        try:
            arrays.append(read_image(p, mode, None, max_pixels=max_pixels))
            good.append(str(p))
        except Exception as e:  # one bad file fails alone
            failures.append((str(p), _reason(e)))
    return arrays, good, failures


@dataclass
class DensePredictions:
    """Merged outputs of a dense task for a set of image files, in each
    image's own pixels, ready to write."""

    task: str                    #: detect, segment or keypoints
    paths: list[str]             #: the files predicted (failures left out)
    ids: list[int]               #: their image ids
    sizes: list                  #: their (h, w)
    outputs: list                #: per image: a dict (boxes xyxy, scores, labels; points, confidence) or a label map
    failures: list[Failure]      #: (path, reason) of files not read or not predicted
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    forward_passes: int = 0
    confidence: list = field(default_factory=list)  #: segment: per image, the label's merged probability per pixel


def stem_ids(paths: Sequence) -> dict | None:
    """Image ids from the files' stems when every stem is a number and no
    two are the same (``000000010764.jpg`` is image 10764, as in COCO's
    own folders), else None."""
    ids = {}
    for p in paths:
        stem = Path(p).stem
        if not stem.isdigit():
            return None
        ids[str(p)] = int(stem)
    return ids if len(set(ids.values())) == len(ids) else None


def coco_file_ids(annotations) -> tuple[dict, dict]:
    """``(image id by file name, category name by id)`` of the COCO file
    ``annotations`` (a path or a loaded dict): what makes predictions of
    its images load into pycocotools' ``COCO.loadRes`` against it."""
    try:
        data = annotations if isinstance(annotations, dict) else json.loads(Path(annotations).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the COCO annotations {annotations}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"{annotations} is not a COCO annotation file (no 'images' list)")
    try:
        images = {Path(im["file_name"]).name: int(im["id"]) for im in data["images"]}
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in data.get("categories") or []}
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{annotations}: an image or category lacks a valid 'file_name'/'id' ({e})") from None
    return images, names


def spec_of(policy) -> str:
    """A policy's spec (as given when a string)."""
    return getattr(policy, "spec", None) or str(policy)


def merge_name(merge, options: dict) -> str:
    """The merge as a spec, with the box merge's parameters."""
    opts = options.get("merge_options") or {}
    name = str(merge or ("wbf" if "decode" in options else "mean"))
    return name if not opts else f"{name}({', '.join(f'{k}={v}' for k, v in opts.items())})"


def _front(task: str, model, policy, merge, options: dict):
    from ..tasks import Detector, KeypointDetector, Segmenter

    if task == "detect":
        return Detector(model, policy, merge or "wbf", **options)
    if task == "segment":
        return Segmenter(model, policy, merge or "mean", uncertainty=False, **options)
    if task == "keypoints":
        return KeypointDetector(model, policy, **options)
    raise InputError(f"task must be one of {', '.join(TASKS)}, got {task!r}")


def predict_dense_files(task: str, model, inputs: Sequence, policy="identity + hflip", merge=None, *,
                        size: tuple[int, int], fit: str = "stretch", pad_value: int = 0, mode: str = "RGB",
                        recursive: bool = False, max_pixels: int = MAX_PIXELS, image_ids: dict | None = None,
                        chunk: int = CHUNK, **options) -> DensePredictions:
    """Run ``task`` (detect, segment, keypoints) on the image files
    ``inputs`` (files or folders), ``chunk`` images at a time; ``options``
    go to the :class:`~ttakit.Detector` / :class:`~ttakit.Segmenter` /
    :class:`~ttakit.KeypointDetector` (``merge_options``, ``decode``,
    ``preprocess``, ``flip_pairs``...; ``data_layout`` is NHWC).
    ``image_ids`` maps a file path, or its name, to its image id (a file
    it does not name is a failure); default: the stems when all are numbers
    (:func:`stem_ids`), else 1, 2, ... in order."""
    t0 = time.perf_counter()
    failures: list[Failure] = []
    paths = find_images(inputs, recursive, failures)
    if image_ids is not None:
        known = {p: str(p) in image_ids or Path(p).name in image_ids for p in paths}
        failures.extend((str(p), "not an image of the annotation file") for p in paths if not known[p])
        paths = [p for p in paths if known[p]]
        image_ids = {str(p): int(image_ids.get(str(p), image_ids.get(Path(p).name))) for p in paths}
    else:
        image_ids = stem_ids(paths)
    front = _front(task, model, policy, merge, {"data_layout": "NHWC", "on_error": "mark", **options})
    out = DensePredictions(task, [], [], [], [], failures,
                           {"policy": spec_of(policy), "merge": merge_name(merge, options),
                            "size": list(size), "fit": fit})
    for s in range(0, len(paths), chunk):
        arrays, good, bad = read_files(paths[s:s + chunk], mode, max_pixels)
        failures.extend(bad)
        if not arrays:
            continue
        f = fit_images(arrays, size, fit, pad_value)
        res = front.run(f.x)
        out.forward_passes += res.forward_passes
        for k, p in enumerate(good):
            if res.failed is not None and res.failed[k]:
                failures.append((p, res.errors.get(k, "the model failed on it")))
                continue
            out.paths.append(p)
            out.sizes.append(f.sizes[k])
            out.ids.append(int(image_ids[p]) if image_ids is not None else len(out.ids) + 1)
            out.outputs.append(_back(task, res, k, f, fit))
            if task == "segment":
                out.confidence.append(_confidence_back(res.probs[k], res.labels[k], f, k, fit))
    out.seconds = time.perf_counter() - t0
    return out


def _back(task: str, res, k: int, f: Fitted, fit: str):
    rx, ry = f.scales[k]
    if task == "detect":
        return {"boxes": res.boxes[k] / np.array([rx, ry, rx, ry]), "scores": res.scores[k],
                "labels": res.labels[k], "support": res.support[k]}
    if task == "segment":
        return labels_back(res.labels[k], f.sizes[k], f.scales[k], fit)
    return {"points": res.points[k] / np.array([rx, ry]), "confidence": res.confidence[k], "spread": res.spread[k]}


def _confidence_back(probs: np.ndarray, labels: np.ndarray, f: Fitted, k: int, fit: str) -> np.ndarray:
    """The label's merged probability per pixel, 0-255 (uint8), in the image's own pixels."""
    p = np.take_along_axis(np.asarray(probs), np.asarray(labels)[None], 0)[0]
    return labels_back(np.rint(np.clip(p, 0, 1) * 255), f.sizes[k], f.scales[k], fit).astype(np.uint8)


# -- COCO records ----------------------------------------------------------------

def detection_records(pred: DensePredictions, category_ids: Sequence[int] | None = None, *,
                      names: dict | None = None, score_threshold: float | None = None) -> list[dict]:
    """COCO detection results; ``category_ids[label]`` names each label's
    category (labels past its end are left out), default the label itself.
    ``names`` maps a category id to its name, written as ``category_name``
    (pycocotools ignores the extra field); boxes scoring below
    ``score_threshold`` are left out."""
    from ..evaluation.dense import coco_detections

    ids, boxes, scores, labels = [], [], [], []
    for i, o in zip(pred.ids, pred.outputs):
        keep = np.ones(len(o["labels"]), bool) if category_ids is None else o["labels"] < len(category_ids)
        if score_threshold is not None:
            keep &= np.asarray(o["scores"]) >= score_threshold
        ids.append(i)
        boxes.append(o["boxes"][keep])
        scores.append(o["scores"][keep])
        labels.append(o["labels"][keep])
    records = coco_detections(ids, boxes, scores, labels, category_ids)
    if names:
        for r in records:
            if r["category_id"] in names:
                r["category_name"] = names[r["category_id"]]
    return records


def keypoint_records(pred: DensePredictions, category_id: int = 1) -> list[dict]:
    """COCO keypoint results: one per image, ``keypoints`` as x, y, v
    triples (v = 1, visible, for every point), ``score`` the mean confidence."""
    out = []
    for i, o in zip(pred.ids, pred.outputs):
        pts = np.column_stack([o["points"], np.ones(len(o["points"]))]).ravel()
        out.append({"image_id": int(i), "category_id": int(category_id), "keypoints": [float(v) for v in pts],
                    "score": float(np.mean(o["confidence"])) if len(o["confidence"]) else 0.0})
    return out


def mask_records(pred: DensePredictions, background: int | None = 0) -> list[dict] | None:
    """COCO segmentation results (RLE) per image and class present (not
    ``background``), or None without pycocotools."""
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        return None
    out = []
    for i, lab in zip(pred.ids, pred.outputs):
        for c in np.unique(lab):
            if background is not None and c == background:
                continue
            rle = mask_utils.encode(np.asfortranarray((lab == c).astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            out.append({"image_id": int(i), "category_id": int(c), "segmentation": rle, "score": 1.0})
    return out


def palette() -> list[int]:
    """The 256 colours of label PNGs: 0 (background) black, 1 white, then
    PASCAL VOC's colours (bit-interleaved, all distinct), so every class is
    visible while the pixel values stay the labels."""
    colours = [(0, 0, 0), (255, 255, 255)]
    for k in range(2, 256):
        r = g = b = 0
        c = k
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours.append((r, g, b))
    return [v for rgb in colours for v in rgb]


def write_mask(labels: np.ndarray, path: Path) -> None:
    """A label map as a PNG whose pixel values are the labels: a palette
    PNG (:func:`palette`: background black, class 1 white, other classes in
    colour) when every label is below 256, else a 16-bit grey one."""
    from PIL import Image

    lab = np.asarray(labels)
    if lab.min() < 0 or lab.max() >= 2**16:
        raise InputError(f"label maps must hold 0 to 65535 to be written as PNG, got {lab.min()} to {lab.max()}")
    if lab.max() < 256:
        im = Image.fromarray(lab.astype(np.uint8), mode="L").convert("P")
        im.putpalette(palette())
    else:
        im = Image.fromarray(lab.astype(np.uint16))
    _save_png(im, path)


def write_grey(values: np.ndarray, path: Path) -> None:
    """An 8-bit grey PNG of ``values`` (0-255)."""
    from PIL import Image

    _save_png(Image.fromarray(np.asarray(values, np.uint8), mode="L"), path)


def _save_png(im, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    im.save(tmp)
    tmp.replace(path)


def write_dense(pred: DensePredictions, out, category_ids: Sequence[int] | None = None, model: str = "", *,
                names: dict | None = None, score_threshold: float | None = None) -> Path:
    """Write ``results.json``, ``index.json`` (and for segmentation
    ``masks/NAME.png``, the labels, and ``masks/NAME.prob.png``, the label's
    probability x 255) into the folder ``out``; returns the results file.
    ``names`` and ``score_threshold``: as :func:`detection_records`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = [{"id": int(i), "file": p, "height": int(s[0]), "width": int(s[1])}
              for i, p, s in zip(pred.ids, pred.paths, pred.sizes)]
    if pred.task == "detect":
        records = detection_records(pred, category_ids, names=names, score_threshold=score_threshold)
    elif pred.task == "keypoints":
        records = keypoint_records(pred)
    else:
        (out / "masks").mkdir(exist_ok=True)
        taken: set[str] = set()
        for k, (img, lab) in enumerate(zip(images, pred.outputs)):
            stem = Path(img['file']).stem
            if f"{stem}.png" in taken:  # two inputs of one stem (different folders or extensions)
                stem = f"{stem}.{img['id']}"
            taken.add(f"{stem}.png")
            write_mask(lab, out / "masks" / f"{stem}.png")
            img["mask"] = f"masks/{stem}.png"
            if k < len(pred.confidence):
                write_grey(pred.confidence[k], out / "masks" / f"{stem}.prob.png")
                img["probability"] = f"masks/{stem}.prob.png"
        records = mask_records(pred)
    results = out / "results.json"
    if records is not None:
        write_atomic(results, json.dumps(records) + "\n")
    index = {"task": pred.task, "model": model, **pred.settings, "images": images,
             "results": results.name if records is not None else None,
             "failures": [{"file": p, "reason": r} for p, r in pred.failures],
             "seconds": pred.seconds, "forward_passes": pred.forward_passes}
    write_atomic(out / "index.json", json.dumps(index, indent=1) + "\n")
    return results if records is not None else out / "index.json"


__all__ = ["TASKS", "Fitted", "fit_images", "labels_back", "read_files", "DensePredictions", "stem_ids",
           "coco_file_ids", "predict_dense_files", "detection_records", "keypoint_records", "mask_records", "palette",
           "write_mask", "write_grey", "write_dense"]
