"""Paired evaluation of detection, segmentation and keypoints on image
files: what ``ttakit evaluate --task ...`` does but parsing options.

A policy (with its merge) against a baseline (default: no TTA) on the same
images, each metric with a bootstrap CI over images and the images each
helped or hurt (:mod:`ttakit.evaluation.dense`):

- detection: COCO mAP@[.5:.95] and AP50 (pycocotools) against a COCO
  instances file; both arms are merged from one
  :class:`~ttakit.tasks.dense_cache.DetectionCache`, so the baseline's views
  are not run twice;
- keypoints: COCO OKS AP and AP50 against a COCO person-keypoints file;
- segmentation: mean IoU (and Dice) against a folder of label-map PNGs, at
  each image's own resolution.

Box merges are written as specs: ``wbf``, ``wbf(iou_thr=0.6, conf_type=max)``,
``nms(iou_thr=0.65)`` (:func:`parse_merge_spec`).
"""

from __future__ import annotations

import ast
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..evaluation.formatting import ci, signed
from ..files import write_atomic
from ..policy import Policy
from .dense import DensePredictions, fit_images, labels_back, read_files, spec_of
from .dense_examples import box_disagreement, coco_truth, gather, pick, values_back
from .images import IMAGE_EXTENSIONS, MAX_PIXELS, find_images

#: the baseline's box merge by default: NMS that suppresses nothing (IoU > 1
#: never holds), so no TTA is the model's own boxes
NO_MERGE = "nms(iou_thr=1.0)"
#: label written over the padding when images of different sizes are stacked
IGNORE = 255


def parse_merge_spec(text: str) -> tuple[str, dict]:
    """``"wbf(iou_thr=0.6, conf_type=max)"`` -> ``("wbf", {"iou_thr": 0.6,
    "conf_type": "max"})``; values are Python literals or bare words."""
    text = text.strip()
    name, _, rest = text.partition("(")
    name = name.strip()
    if not name.isidentifier():
        raise InputError(f"a merge is written name or name(key=value, ...), got {text!r}")
    options: dict = {}
    if rest:
        if not rest.endswith(")"):
            raise InputError(f"unbalanced parentheses in merge {text!r}")
        body = rest[:-1].strip()
        for item in filter(None, (p.strip() for p in body.split(","))):
            key, eq, value = item.partition("=")
            if not eq or not key.strip().isidentifier():
                raise InputError(f"merge parameters are key=value, got {item!r} in {text!r}")
            try:
                options[key.strip()] = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError):
                options[key.strip()] = value.strip()
    return name, options


def merge_spec(name: str, options: dict | None = None) -> str:
    """The spec :func:`parse_merge_spec` reads back."""
    if not options:
        return name
    return f"{name}({', '.join(f'{k}={v}' for k, v in options.items())})"


@dataclass
class DenseReport:
    """A policy against a baseline on one dense task."""

    task: str
    n_images: int
    policy: str
    baseline: str
    merge: str
    baseline_merge: str
    metrics: dict               #: metric -> {"baseline": value, "policy": value}
    paired: dict                #: metric -> PairedDense as a dict
    forward_passes: int = 0
    seconds: float = 0.0        #: wall time of the whole evaluation
    failures: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    absent: int = 0             #: images of the annotation file that are not in the folder (left out)
    #: the images a report shows, by gallery (:mod:`ttakit.io.dense_examples`; not in :meth:`as_dict`)
    examples: dict = field(default_factory=dict, repr=False)
    #: class names by model label (detection: the COCO categories' names), when known
    names: list | None = None

    def as_dict(self) -> dict:
        d = asdict(replace(self, examples={}))
        d.pop("examples")
        return d

    def to_markdown(self) -> str:
        lines = [f"# ttakit evaluate --task {self.task}", "",
                 f"{self.n_images} images; policy `{self.policy}` merged by `{self.merge}` against baseline "
                 f"`{self.baseline}` (`{self.baseline_merge}`). Difference: policy - baseline on the same images, "
                 f"95% bootstrap CI over images ({self.settings.get('n_boot')} resamples); helped/hurt: images "
                 "whose own score rose/fell by more than 0.01.", "",
                 "| metric | baseline | policy | difference [95% CI] | helped/hurt |", "|---|---:|---:|---|---|"]
        for k, m in self.metrics.items():
            p = self.paired.get(k)
            diff = "" if p is None else f"{signed(p['difference'], 4)} {ci(p['ci_low'], p['ci_high'], 1, 4)}"
            hh = "" if p is None else f"{p['improved']}/{p['worsened']}"
            lines.append(f"| {k} | {m['baseline']:.4f} | {m['policy']:.4f} | {diff} | {hh} |")
        lines += ["", f"{self.forward_passes} forward passes, {self.seconds:.1f} s in all."]
        if self.settings.get("adapt"):
            lines.append(f"Both sides ran with test-time adaptation `{self.settings['adapt']}` over the evaluated "
                         "images (docs/adaptation.md).")
        if self.absent:
            lines.append(f"{self.absent} images of the annotation file are not in the folder (left out).")
        if self.failures:
            lines.append(f"{len(self.failures)} images could not be read or predicted (left out).")
        return "\n".join(lines) + "\n"

    def write(self, out) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "report.json", json.dumps(self.as_dict(), indent=1, default=_plain) + "\n")
        write_atomic(out / "report.md", self.to_markdown())
        return out / "report.md"


def _plain(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# -- COCO images -----------------------------------------------------------------

def coco_images(annotations, folder) -> tuple[dict, list[tuple[dict, Path]]]:
    """The COCO file (a dict) and each of its images with its path: the
    image's ``file_name`` under ``folder``, else its base name there."""
    try:
        data = json.loads(Path(annotations).read_text()) if not isinstance(annotations, dict) else annotations
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the COCO annotations {annotations}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or "annotations" not in data:
        raise InputError(f"{annotations} is not a COCO annotation file (no 'images' and 'annotations')")
    folder = Path(folder)
    out = []
    for im in sorted(data["images"], key=lambda im: im["id"]):
        p = folder / im["file_name"]
        out.append((im, p if p.exists() else folder / Path(im["file_name"]).name))
    return data, out


def _ground_truth(data: dict, ids: list[int]):
    from ..evaluation.dense import load_coco_ground_truth

    keep = set(ids)
    return load_coco_ground_truth({**data, "images": [im for im in data["images"] if im["id"] in keep],
                                   "annotations": [a for a in data["annotations"] if a["image_id"] in keep]})


def _read_coco(data, listed, mode, max_pixels, limit):
    """``(arrays, images, paths, failures, absent)``: the annotated images
    that are in the folder (the first ``limit``), read; ``absent`` counts
    those of the file that are not there, which are left out, not failures
    (a folder may hold a part of a large annotation file)."""
    present = [(im, p) for im, p in listed if os.path.lexists(p)]
    absent = len(listed) - len(present)
    if not present:
        where = Path(listed[0][1]).parent if listed else "the folder"
        raise InputError(f"none of the {len(listed)} images of the annotation file is in {where}")
    present = present[:limit]
    arrays, good, failures = read_files([p for _, p in present], mode, max_pixels)
    by_path = {str(p): im for im, p in present}
    if not arrays:
        raise InputError("none of the annotated images could be read")
    return arrays, [by_path[p] for p in good], good, failures, absent


def _paired_coco(gt, recs_a, recs_b, iou_type, n_boot, seed) -> tuple[dict, dict, tuple]:
    """Metrics, paired differences, and each image's own AP without and with TTA."""
    from ..evaluation.dense import paired_coco

    paired = paired_coco(gt, recs_a, recs_b, iou_type=iou_type, n_boot=n_boot, seed=seed)
    metrics = {k: {"baseline": p.a, "policy": p.b} for k, p in paired.items()}
    return metrics, {k: p.as_dict() for k, p in paired.items()}, paired["map"].per_image


def evaluate_detection_files(model, folder, annotations, policy="identity + hflip", merge: str = "wbf",
                             baseline="identity", baseline_merge: str = NO_MERGE, *, size: tuple[int, int],
                             fit: str = "letterbox", pad_value: int = 0, category_ids=None, mode: str = "RGB",
                             max_pixels: int = MAX_PIXELS, limit: int | None = None, n_boot: int = 200,
                             seed: int = 0, **detector_options) -> DenseReport:
    """Detection mAP/AP50 of ``policy`` against ``baseline`` on the images of
    the COCO file ``annotations`` found in ``folder``. Model label ``k`` is
    the ``k``-th category of the file (sorted by id) unless
    ``category_ids`` lists them; labels past the list are left out."""
    from ..tasks.dense_cache import DetectionCache
    from .dense import detection_records

    t0 = time.perf_counter()
    data, listed = coco_images(annotations, folder)
    arrays, images, paths, failures, absent = _read_coco(data, listed, mode, max_pixels, limit)
    cats = list(category_ids) if category_ids is not None else sorted(c["id"] for c in data["categories"])
    f = fit_images(arrays, size, fit, pad_value)
    cache = DetectionCache(model, f.x, data_layout="NHWC", on_error="mark", **detector_options)
    recs, outs = [], []
    for pol, spec in ((baseline, baseline_merge), (policy, merge)):
        name, options = parse_merge_spec(spec)
        res = cache.run(pol, name, options)
        pred = DensePredictions("detect", paths, [im["id"] for im in images], f.sizes,
                                [{"boxes": b / np.r_[s, s], "scores": sc, "labels": lab, "support": sup}
                                 for b, s, sc, lab, sup in zip(res.boxes, f.scales, res.scores, res.labels,
                                                               res.support)], [])
        recs.append(detection_records(pred, cats))
        outs.append(pred.outputs)
    ok = [im["id"] for k, im in enumerate(images) if not cache.failed[k]]
    failures += [(paths[k], "the model failed on it") for k in np.flatnonzero(cache.failed)]
    gt = _ground_truth(data, ok)
    metrics, paired, per_image = _paired_coco(gt, recs[0], recs[1], "bbox", n_boot, seed)
    report = DenseReport("detect", len(ok), spec_of(policy), spec_of(baseline), merge, baseline_merge, metrics,
                         paired, cache.forward_passes, time.perf_counter() - t0, failures,
                         {"n_boot": n_boot, "size": list(size), "fit": fit, "category_ids": cats,
                          "model_seconds": cache.seconds}, absent)
    names_of = {c["id"]: c.get("name", str(c["id"])) for c in data["categories"]}
    report.names = [names_of.get(c, str(c)) for c in cats]
    report.examples = _detection_examples(data, images, arrays, paths, cats, cache, outs, per_image,
                                          len(Policy.coerce(policy).unique()))
    return report


def _detection_examples(data, images, arrays, paths, cats, cache, outs, per_image, views: int) -> dict:
    from ..report.draw import MIN_SCORE

    pos = [k for k in range(len(images)) if not cache.failed[k]]
    unsure = [box_disagreement(outs[1][k]["scores"], outs[1][k]["support"], views, MIN_SCORE) for k in pos]

    def make(j):
        k = pos[j]
        return {"path": paths[k], "image": arrays[k], "baseline": outs[0][k], "policy": outs[1][k],
                "truth": coco_truth(data, images[k]["id"], cats)}

    return gather(pick(per_image, unsure), make, per_image, unsure)


def evaluate_keypoint_files(model, folder, annotations, policy="identity + hflip", baseline="identity", *,
                            size: tuple[int, int], fit: str = "stretch", pad_value: int = 0, category_id: int = 1,
                            mode: str = "RGB", max_pixels: int = MAX_PIXELS, limit: int | None = None,
                            n_boot: int = 200, seed: int = 0, **options) -> DenseReport:
    """OKS AP/AP50 (COCOeval ``keypoints``) of ``policy`` against
    ``baseline``: the model finds one set of keypoints per image."""
    from ..tasks import KeypointDetector
    from .dense import keypoint_records

    t0 = time.perf_counter()
    data, listed = coco_images(annotations, folder)
    arrays, images, paths, failures, absent = _read_coco(data, listed, mode, max_pixels, limit)
    f = fit_images(arrays, size, fit, pad_value)
    recs, outs, passes, failed = [], [], 0, np.zeros(len(images), bool)
    for pol in (baseline, policy):
        res = KeypointDetector(model, pol, data_layout="NHWC", on_error="mark", **options).run(f.x)
        passes += res.forward_passes
        failed |= np.asarray(res.failed, bool)
        pred = DensePredictions("keypoints", paths, [im["id"] for im in images], f.sizes,
                                [{"points": p / s, "confidence": c, "spread": sp / np.mean(s)} for p, s, c, sp in
                                 zip(res.points, f.scales, res.confidence, res.spread)], [])
        recs.append(keypoint_records(pred, category_id))
        outs.append(pred.outputs)
    ok = [im["id"] for k, im in enumerate(images) if not failed[k]]
    failures += [(paths[k], "the model failed on it") for k in np.flatnonzero(failed)]
    recs = [[r for r in rr if r["image_id"] in set(ok)] for rr in recs]
    gt = _ground_truth(data, ok)
    metrics, paired, per_image = _paired_coco(gt, recs[0], recs[1], "keypoints", n_boot, seed)
    report = DenseReport("keypoints", len(ok), spec_of(policy), spec_of(baseline), "mean", "mean", metrics, paired,
                         passes, time.perf_counter() - t0, failures, {"n_boot": n_boot, "size": list(size), "fit": fit},
                         absent)
    pos = [k for k in range(len(images)) if not failed[k]]
    unsure = [float(np.nanmean(outs[1][k]["spread"])) if np.size(outs[1][k]["spread"]) else 0.0 for k in pos]

    def make(j):
        k = pos[j]
        return {"path": paths[k], "image": arrays[k], "baseline": outs[0][k], "policy": outs[1][k],
                "truth": coco_truth(data, images[k]["id"])}

    report.examples = gather(pick(per_image, unsure), make, per_image, unsure)
    return report


# -- segmentation ----------------------------------------------------------------

def mask_pairs(images, masks, suffix: str = "", recursive: bool = False) -> tuple[list[Path], list[Path], list]:
    """Image files (``images``: files or folders) paired with their label
    maps in the folder ``masks``: ``<stem><suffix>`` with any image
    extension. Images without one are failures."""
    failures: list = []
    paths = find_images(images, recursive, failures)
    folder = Path(masks)
    if not folder.is_dir():
        raise InputError(f"the masks folder {masks} is not a folder")
    by_stem = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
    imgs, found = [], []
    for p in paths:
        m = by_stem.get(Path(p).stem + suffix)
        if m is None:
            failures.append((str(p), f"no mask {Path(p).stem + suffix}.png (or another image type) in {masks}"))
            continue
        imgs.append(Path(p))
        found.append(m)
    if not imgs:
        raise InputError(f"no image has a mask in {masks} (looked for <image stem>{suffix}.png)")
    return imgs, found, failures


def read_mask(path, binary: bool = False) -> np.ndarray:
    """A label-map PNG as integers ``(h, w)``; ``binary``: every nonzero value is 1."""
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im)
    if a.ndim == 3:
        raise InputError(f"mask {path} has {a.shape[2]} channels; a label map has one (class index per pixel)")
    a = a.astype(np.int64)
    return (a != 0).astype(np.int64) if binary else a


def _stack(maps: list[np.ndarray], fill: int) -> np.ndarray:
    h = max(m.shape[0] for m in maps)
    w = max(m.shape[1] for m in maps)
    out = np.full((len(maps), h, w), fill, np.uint8)
    for i, m in enumerate(maps):
        out[i, :m.shape[0], :m.shape[1]] = m
    return out


def evaluate_segmentation_files(model, images, masks, policy="identity + hflip", merge: str = "mean",
                                baseline="identity", *, size: tuple[int, int], fit: str = "stretch",
                                pad_value: int = 0, mask_suffix: str = "", binary_masks: bool = False,
                                mode: str = "RGB", max_pixels: int = MAX_PIXELS, limit: int | None = None,
                                n_boot: int = 1000, seed: int = 0, recursive: bool = False,
                                **segmenter_options) -> DenseReport:
    """Mean IoU and Dice of ``policy`` against ``baseline`` at each image's own
    resolution (predicted label maps mapped back from the model's input)."""
    from ..evaluation.dense import paired_segmentation, segmentation_scores
    from ..tasks import Segmenter

    t0 = time.perf_counter()
    imgs, mask_paths, failures = mask_pairs(images, masks, mask_suffix, recursive)
    imgs, mask_paths = imgs[:limit], mask_paths[:limit]
    arrays, good, bad = read_files(imgs, mode, max_pixels)
    failures += bad
    gts = [read_mask(m, binary_masks) for p, m in zip(imgs, mask_paths) if str(p) in set(good)]
    f = fit_images(arrays, size, fit, pad_value)
    for p, g, s in zip(good, gts, f.sizes):
        if g.shape != tuple(s):
            raise InputError(f"the mask of {p} is {g.shape[1]}x{g.shape[0]} but the image is {s[1]}x{s[0]}")
    preds, passes, failed = [], 0, np.zeros(len(good), bool)
    for pol, m in ((baseline, merge), (policy, merge)):
        # the policy's per-pixel variance across views: the report's uncertainty maps
        res = Segmenter(model, pol, m, labels_only=True, uncertainty=pol is policy, data_layout="NHWC",
                        on_error="mark", **segmenter_options).run(f.x)
        passes += res.forward_passes
        failed |= np.asarray(res.failed, bool)
        preds.append([labels_back(lab, s, sc, fit) for lab, s, sc in zip(res.labels, f.sizes, f.scales)])
    variance = res.variance
    keep = np.flatnonzero(~failed)
    failures += [(good[k], "the model failed on it") for k in np.flatnonzero(failed)]
    k_max = max(int(max(p[k].max() for p in preds for k in keep)), int(max(gts[k].max() for k in keep))) + 1
    if k_max >= IGNORE:
        raise InputError(f"segmentation evaluation takes up to {IGNORE - 1} classes, found label {k_max - 1}")
    a, b = (_stack([p[k] for k in keep], 0) for p in preds)
    gt = _stack([gts[k] for k in keep], IGNORE)
    paired = paired_segmentation(a, b, gt, k_max, ignore_index=IGNORE, n_boot=n_boot, seed=seed)
    sa = segmentation_scores(a, gt, k_max, IGNORE)
    sb = segmentation_scores(b, gt, k_max, IGNORE)
    metrics = {"miou": {"baseline": sa["miou"], "policy": sb["miou"]},
               "dice": {"baseline": sa["dice"], "policy": sb["dice"]}}
    report = DenseReport("segment", len(keep), spec_of(policy), spec_of(baseline), merge, merge, metrics,
                         {"miou": paired.as_dict()}, passes, time.perf_counter() - t0, failures,
                         {"n_boot": n_boot, "size": list(size), "fit": fit, "classes": k_max,
                          "iou_per_class": {"baseline": sa["iou_per_class"], "policy": sb["iou_per_class"]}})
    unsure = None if variance is None else [float(_region_mean(variance[k], f.sizes[k], f.scales[k], fit))
                                            for k in keep]

    def make(j):
        k = keep[j]
        ex = {"path": good[k], "image": arrays[k], "baseline": preds[0][k], "policy": preds[1][k], "truth": gts[k]}
        if variance is not None:
            ex["variance"] = values_back(variance[k], f.sizes[k], f.scales[k], fit)
        return ex

    report.examples = gather(pick(paired.per_image, unsure), make, paired.per_image, unsure)
    return report


def _region_mean(values, size, scale, fit) -> float:
    """The mean of a fitted map over the image's own region (letterbox: without the padding)."""
    h, w = size
    if fit == "letterbox":
        values = values[:max(1, int(h * scale[1])), :max(1, int(w * scale[0]))]
    return float(np.mean(values))


__all__ = ["NO_MERGE", "parse_merge_spec", "merge_spec", "DenseReport", "coco_images", "evaluate_detection_files",
           "evaluate_keypoint_files", "mask_pairs", "read_mask", "evaluate_segmentation_files"]
