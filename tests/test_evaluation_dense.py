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


def test_paired_detection_resamples_equal_cocoeval_rerun_on_the_resampled_set():
    """The bootstrap re-accumulates matched images; re-running COCOeval on a
    resampled data set (repeats as new image ids) must give the same mAP."""
    pytest.importorskip("pycocotools")
    from ttakit.evaluation.dense import _map_of, _matched, load_coco_ground_truth

    rng = np.random.default_rng(1)
    images = [{"id": i, "width": 200, "height": 200} for i in range(1, 9)]
    anns, dets = [], []
    for img in images:
        for _ in range(rng.integers(0, 5)):
            x, y, w, h = (float(v) for v in rng.uniform([0, 0, 5, 5], [150, 150, 50, 50]))
            cat = int(rng.integers(1, 3))
            anns.append({"id": len(anns) + 1, "image_id": img["id"], "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            if rng.random() < 0.8:
                dets.append({"image_id": img["id"], "category_id": cat, "score": float(rng.random()),
                             "bbox": [x + float(rng.normal(0, 3)), y + float(rng.normal(0, 3)), w, h]})
        for _ in range(rng.integers(0, 3)):  # false positives
            dets.append({"image_id": img["id"], "category_id": int(rng.integers(1, 3)), "score": float(rng.random()),
                         "bbox": [float(v) for v in rng.uniform([0, 0, 5, 5], [150, 150, 50, 50])]})
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    gt = load_coco_ground_truth({"images": images, "annotations": anns, "categories": cats})
    ids = sorted(gt.getImgIds())
    ev = _matched(gt, dets, ids)
    for pick in ([0, 0, 3, 5, 5, 5, 7, 2], [1], list(range(8)), [4, 4]):
        new_images, new_anns, new_dets = [], [], []
        for new_id, pos in enumerate(pick, 1):
            old = ids[pos]
            new_images.append({"id": new_id, "width": 200, "height": 200})
            new_anns += [dict(a, id=len(new_anns) + k + 1, image_id=new_id)
                         for k, a in enumerate(x for x in anns if x["image_id"] == old)]
            new_dets += [dict(d, image_id=new_id) for d in dets if d["image_id"] == old]
        rerun = coco_map({"images": new_images, "annotations": new_anns, "categories": cats}, new_dets)["map"]
        assert 0.05 < rerun < 1 and _map_of(ev, pick) == pytest.approx(rerun, abs=1e-12)
