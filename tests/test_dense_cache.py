"""Prediction caches for detection and segmentation, and the greedy dense
search on them: each distinct view runs once per image however many
policies and merges are compared, and a merged result from the cache equals
a direct run of the Detector / Segmenter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ttakit
from ttakit.errors import InputError
from ttakit.tasks.dense_cache import DetectionCache, SegmentationCache
from ttakit.tuning.dense import DETECTION_MERGES, SEGMENTATION_MERGES, greedy_dense


class CountingDetector:
    """Boxes that depend on the pixels (so views give different boxes);
    counts the images it sees."""

    def __init__(self):
        self.images = 0

    def __call__(self, x):
        x = torch.as_tensor(x)
        n, _, h, w = x.shape
        self.images += n
        out = []
        for k in range(n):
            left = float(x[k, 0, :, : w // 2].mean())
            top = float(x[k, 1, : h // 2].mean())
            boxes = np.array([[2 + 6 * left, 3 + 5 * top, w * 0.55, h * 0.6],
                              [w * 0.4, h * 0.35 + top, w - 2 - 4 * left, h - 3],
                              [w * 0.1, h * 0.5, w * 0.5, h * 0.9 - 3 * top]])
            out.append((boxes, np.array([0.3 + 0.6 * left, 0.4 + 0.5 * top, 0.7]), np.array([0, 1, 0])))
        return out


def seg_model(x):
    x = torch.as_tensor(x)
    return torch.stack([2 * x[:, 0] - 1 + x[:, 2], 2 * x[:, 1] - 1, x[:, 2] - x[:, 0]], 1) * 3


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    x = rng.random((6, 3, 24, 32)).astype(np.float32)
    x[:, :, 5:15, 4:20] += 0.5  # some structure, so that views differ
    return np.clip(x, 0, 1)


POLICIES = ["identity + hflip", "identity + hflip + scale(0.9)", "hflips * scale(0.8, 1)", "identity + 2 * hflip"]


@pytest.mark.parametrize("policy", POLICIES)
def test_detection_cache_equals_a_direct_run(images, policy):
    model = CountingDetector()
    cache = DetectionCache(model, images)
    for name, options in DETECTION_MERGES + (("nms", {"iou_thr": 1.0}),):
        got = cache.run(policy, name, options)
        want = ttakit.Detector(model, policy, name, merge_options=options).run(images)
        for i in range(len(images)):
            np.testing.assert_array_equal(got.boxes[i], want.boxes[i])
            np.testing.assert_array_equal(got.scores[i], want.scores[i])
            np.testing.assert_array_equal(got.labels[i], want.labels[i])
            np.testing.assert_array_equal(got.support[i], want.support[i])


def test_detection_cache_runs_each_view_once(images):
    model = CountingDetector()
    cache = DetectionCache(model, images)
    for policy in POLICIES:
        for name, options in DETECTION_MERGES:
            cache.run(policy, name, options)
    distinct = {v for p in POLICIES for v in ttakit.Policy.parse(p).views}
    assert model.images == len(distinct) * len(images) == cache.forward_passes


@pytest.mark.parametrize("policy", ["identity + hflip", "identity + hflip + scale(1.2) + rot90", "d4"])
@pytest.mark.parametrize("merge", [m for m, _ in SEGMENTATION_MERGES])
def test_segmentation_cache_equals_a_direct_run(images, policy, merge):
    cache = SegmentationCache(seg_model, images)
    want = ttakit.Segmenter(seg_model, policy, merge).run(images).labels
    np.testing.assert_array_equal(cache.run(policy, merge), want)


def test_segmentation_cache_refuses_past_its_limit(images):
    per_view = images.shape[0] * 3 * images.shape[2] * images.shape[3] * 4
    cache = SegmentationCache(seg_model, images, max_bytes=2 * per_view)
    cache.ensure("identity + hflip")
    with pytest.raises(InputError, match="max_bytes"):
        cache.ensure("vflip")
    assert cache.bytes == 2 * per_view


def test_greedy_dense_runs_each_candidate_once_and_is_guarded(images):
    model = CountingDetector()
    cache = DetectionCache(model, images)
    truth = [cache.run("identity + hflip", "wbf").boxes[i][:1] for i in range(len(images))]

    def score(res, idx):  # how close the top box of each image is to the two-view WBF's
        return -float(np.mean([np.abs(res.boxes[i][:1] - truth[i]).sum() if len(res.boxes[i]) else 99
                               for i in idx]))

    res = greedy_dense(cache.run, score, len(images), "flips, scale(0.9, 1.1)", budget=2, guard_folds=3,
                       ensure=cache.ensure, objective="closeness")
    assert model.images == 4 * len(images)  # identity, hflip, scale 0.9, scale 1.1: once each
    assert res.n_tune == len(images) and res.folds == 3 and len(res.fold_paths) == 3
    assert res.fit_score >= res.fit_baseline
    # the only images where hflip moves the top box fall in one fold, and the search on the other folds finds
    # nothing to gain there: no cross-fitted evidence, so the guard keeps no TTA although the full search adds hflip
    assert res.fell_back and res.policy.is_identity and res.merge == ("nms", {"iou_thr": 1.0})
    assert res.steps[0]["view"] == "identity" and len(res.steps) >= 2


def test_caches_restore_what_they_export(images):
    views = ttakit.Policy.parse("identity + hflip + scale(0.9)").views
    det = DetectionCache(CountingDetector(), images)
    det.ensure(views)
    again = DetectionCache(CountingDetector(), images)
    again.restore(det.export(), views)
    got, want = again.run(views, "wbf"), det.run(views, "wbf")
    for i in range(len(images)):
        np.testing.assert_array_equal(got.boxes[i], want.boxes[i])
        np.testing.assert_array_equal(got.scores[i], want.scores[i])
    kept = DetectionCache(CountingDetector(), images)
    kept.restore(det.export(keep=lambda labels: labels == 0), views)
    assert all((lab == 0).all() for lab in kept.run(views, "nms").labels)
    seg = SegmentationCache(seg_model, images)
    seg.ensure(views)
    copy = SegmentationCache(seg_model, images)
    copy.restore(seg.export(np.float32), views)
    np.testing.assert_array_equal(copy.run(views, "mean"), seg.run(views, "mean"))
    with pytest.raises(InputError, match="other views"):
        copy.restore(seg.export(), views[:2])
