"""Paired segmentation (IoU/Dice) and detection (COCO mAP) evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from ttakit.errors import InputError
from ttakit.evaluation.dense import (coco_detections, coco_map, paired_detection, paired_segmentation,
                                     segmentation_scores)


def test_segmentation_scores_by_hand():
    gt = np.array([[[0, 0], [1, 1]]])
    pred = np.array([[[0, 1], [1, 1]]])
    s = segmentation_scores(pred, gt, 2)
    # class 0: tp 1, fp 0, fn 1 -> IoU 1/2, Dice 2/3; class 1: tp 2, fp 1, fn 0 -> IoU 2/3, Dice 4/5
    assert s["iou_per_class"] == pytest.approx([0.5, 2 / 3]) and s["miou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert s["dice"] == pytest.approx((2 / 3 + 0.8) / 2)
    ign = segmentation_scores(pred, np.array([[[0, 255], [1, 1]]]), 2, ignore_index=255)
    assert ign["miou"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="class indices"):
        segmentation_scores(pred + 5, gt, 2)


def test_paired_segmentation_counts_and_ci():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 3, (20, 8, 8))
    worse = np.where(rng.random(gt.shape) < 0.3, rng.integers(0, 3, gt.shape), gt)
    better = np.where(rng.random(gt.shape) < 0.1, rng.integers(0, 3, gt.shape), gt)
    r = paired_segmentation(worse, better, gt, 3, n_boot=300)
    assert r.difference > 0 and r.ci_low > 0 and r.improved > r.worsened
    same = paired_segmentation(worse, worse, gt, 3, n_boot=50)
    assert same.difference == 0 and same.ci_low == same.ci_high == 0


def test_paired_segmentation_of_one_class_and_dice_by_hand():
    gt = np.array([[[0, 0], [1, 1]]])
    a = np.array([[[0, 1], [1, 1]]])   # class 1: IoU 2/3, Dice 4/5; class 0: IoU 1/2, Dice 2/3
    b = gt.copy()                      # perfect
    iou = paired_segmentation(a, b, gt, 2, n_boot=10, classes=[1])
    assert (iou.metric, iou.a, iou.b) == ("iou", pytest.approx(2 / 3), 1.0)
    dice = paired_segmentation(a, b, gt, 2, n_boot=10, metric="dice", classes=[1])
    assert (dice.metric, dice.a, dice.difference) == ("dice", pytest.approx(0.8), pytest.approx(0.2))
    both = paired_segmentation(a, b, gt, 2, n_boot=10, metric="dice")
    assert (both.metric, both.a) == ("mdice", pytest.approx((0.8 + 2 / 3) / 2))
    with pytest.raises(InputError, match="classes"):
        paired_segmentation(a, b, gt, 2, classes=[2])
    with pytest.raises(InputError, match="metric"):
        paired_segmentation(a, b, gt, 2, metric="f1")


@pytest.fixture
def coco_gt():
    pytest.importorskip("pycocotools")
    images = [{"id": i, "width": 100, "height": 100} for i in range(1, 7)]
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0}
            for i in range(1, 7)]
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}


def test_coco_map_perfect_and_shifted(coco_gt):
    ids = list(range(1, 7))
    perfect = coco_detections(ids, [[[10, 10, 40, 40]]] * 6, [[0.9]] * 6, [[0]] * 6, category_ids=[1])
    assert coco_map(coco_gt, perfect)["map"] == pytest.approx(1.0)
    off = coco_detections(ids, [[[20, 20, 50, 50]]] * 6, [[0.9]] * 6, [[0]] * 6, category_ids=[1])
    m = coco_map(coco_gt, off)
    assert m["map"] < 0.2 and m["ap50"] == 0.0
    r = paired_detection(coco_gt, off, perfect, n_boot=20)
    assert r.difference > 0.8 and r.ci_low > 0.5 and r.improved == 6 and r.worsened == 0
