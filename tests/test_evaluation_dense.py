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
    assert (iou.metric, iou.a, iou.b) == ("iou[1]", pytest.approx(2 / 3), 1.0)
    dice = paired_segmentation(a, b, gt, 2, n_boot=10, metric="dice", classes=[1])
    assert (dice.metric, dice.a, dice.difference) == ("dice[1]", pytest.approx(0.8), pytest.approx(0.2))
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


# -- segmentation of images of different sizes, one class, Dice ------------------------

def test_paired_segmentation_lists_of_sizes_foreground_and_dice():
    rng = np.random.default_rng(1)
    gts = [rng.integers(0, 2, (h, w)) for h, w in [(5, 7), (9, 4), (6, 6)]]
    a = [np.where(rng.random(g.shape) < 0.4, 1 - g, g) for g in gts]
    b = [np.where(rng.random(g.shape) < 0.1, 1 - g, g) for g in gts]
    for metric in ("iou", "dice"):
        r = paired_segmentation(a, b, gts, 2, metric=metric, classes=[1], n_boot=200)
        # by hand: foreground pixels of all images pooled
        tp = lambda p: sum(int(((x == 1) & (g == 1)).sum()) for x, g in zip(p, gts))
        fp = lambda p: sum(int(((x == 1) & (g == 0)).sum()) for x, g in zip(p, gts))
        fn = lambda p: sum(int(((x == 0) & (g == 1)).sum()) for x, g in zip(p, gts))
        want = (lambda p: tp(p) / (tp(p) + fp(p) + fn(p))) if metric == "iou" else \
            (lambda p: 2 * tp(p) / (2 * tp(p) + fp(p) + fn(p)))
        assert r.a == pytest.approx(want(a)) and r.b == pytest.approx(want(b))
        assert r.metric == f"{metric}[1]" and r.n == 3 and r.ci_low <= r.difference <= r.ci_high
    with pytest.raises(InputError, match="same shape"):
        paired_segmentation(a, b, [g.T for g in gts], 2)
    with pytest.raises(InputError, match="metric"):
        paired_segmentation(a, b, gts, 2, metric="f1")


# -- keypoints ---------------------------------------------------------------------------

def random_people(rng, n=12, p=17):
    boxes = np.column_stack([rng.uniform(0, 50, n), rng.uniform(0, 50, n), rng.uniform(20, 80, n),
                             rng.uniform(20, 120, n)])
    pts = boxes[:, None, :2] + rng.random((n, p, 2)) * boxes[:, None, 2:]
    vis = rng.choice([0, 1, 2], (n, p), p=[0.3, 0.2, 0.5])
    vis[0] = 2  # at least one fully labelled
    gt = np.concatenate([pts, vis[..., None]], -1)
    gt[..., :2] *= vis[..., None] > 0  # COCO stores unlabelled points as 0, 0, 0
    areas = boxes[:, 2] * boxes[:, 3] * rng.uniform(0.4, 0.9, n)
    return gt, boxes, areas


def test_keypoint_oks_equals_pycocotools_computeoks():
    pytest.importorskip("pycocotools")
    from pycocotools.cocoeval import COCOeval

    from ttakit.evaluation.dense import keypoint_oks
    rng = np.random.default_rng(0)
    gt, boxes, areas = random_people(rng)
    pred = gt[..., :2] + rng.normal(0, 6, gt[..., :2].shape)
    ev = COCOeval(iouType="keypoints")
    ev.params.maxDets = [100]
    people = range(len(gt))
    ev._gts = {(1, 1): [{"keypoints": gt[i].ravel().tolist(), "area": float(areas[i]), "bbox": boxes[i].tolist()}
                        for i in people]}
    ev._dts = {(1, 1): [{"keypoints": np.column_stack([pred[i], np.ones(17)]).ravel().tolist(), "score": 1.0}
                        for i in people]}
    ref = np.diag(np.asarray(ev.computeOks(1, 1)))  # person i's prediction against its own ground truth
    np.testing.assert_allclose(keypoint_oks(pred, gt, areas), ref, rtol=1e-12, atol=1e-12)
    assert keypoint_oks(gt, gt, areas) == pytest.approx(np.ones(len(gt)))
    missing = pred.copy()
    missing[1] = np.nan
    assert keypoint_oks(missing, gt, areas)[1] == 0.0


def test_keypoint_pck_by_a_naive_loop():
    from ttakit.evaluation.dense import keypoint_pck
    rng = np.random.default_rng(3)
    gt, boxes, _ = random_people(rng)
    pred = gt[..., :2] + rng.normal(0, 8, gt[..., :2].shape)
    pred[2, 5] = np.nan
    want = []
    for i in range(len(gt)):
        thr = 0.2 * max(boxes[i, 2], boxes[i, 3])
        lab = [j for j in range(17) if gt[i, j, 2] > 0]
        hits = [j for j in lab if np.hypot(*(pred[i, j] - gt[i, j, :2])) <= thr]  # NaN compares False
        want.append(len(hits) / len(lab) if lab else np.nan)
    np.testing.assert_allclose(keypoint_pck(pred, gt, boxes, alpha=0.2), want)


def test_paired_keypoints_ci_groups_and_counts():
    from ttakit.evaluation.dense import paired_keypoints
    rng = np.random.default_rng(5)
    gt, boxes, areas = random_people(rng, n=40)
    good = gt[..., :2] + rng.normal(0, 2, gt[..., :2].shape)
    bad = gt[..., :2] + rng.normal(0, 12, gt[..., :2].shape)
    groups = np.repeat(np.arange(20), 2)  # two people per image
    r = paired_keypoints(bad, good, gt, areas, boxes, groups=groups, n_boot=500)
    assert r.metric == "oks" and r.n == 40 and r.difference > 0 and r.ci_low > 0
    assert r.improved > r.worsened and r.improved + r.worsened <= 40
    same = paired_keypoints(good, good, gt, areas, boxes, groups=groups, metric="pck", n_boot=100)
    assert same.difference == 0 and same.ci_low == same.ci_high == 0 and same.improved == same.worsened == 0
    # the point estimate is the plain mean over people; the CI is a percentile interval around it
    p = paired_keypoints(bad, good, gt, areas, boxes, metric="pck", alpha=0.1, n_boot=300)
    from ttakit.evaluation.dense import keypoint_pck
    assert p.difference == pytest.approx(np.mean(keypoint_pck(good, gt, boxes) - keypoint_pck(bad, gt, boxes)))
    assert p.ci_low <= p.difference <= p.ci_high
    with pytest.raises(InputError, match="groups"):
        paired_keypoints(bad, good, gt, areas, boxes, groups=[1, 2])


def test_oks_ap_through_pycocotools_and_paired():
    pytest.importorskip("pycocotools")
    rng = np.random.default_rng(2)
    gt, boxes, areas = random_people(rng, n=6)
    images = [{"id": i + 1, "width": 200, "height": 200} for i in range(6)]
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": boxes[i].tolist(), "area": float(areas[i]),
             "iscrowd": 0, "keypoints": gt[i].ravel().tolist(), "num_keypoints": int((gt[i, :, 2] > 0).sum())}
            for i in range(6)]
    cats = [{"id": 1, "name": "person", "keypoints": [str(k) for k in range(17)], "skeleton": []}]
    data = {"images": images, "annotations": anns, "categories": cats}

    def dets(noise):
        out = []
        for i in range(6):
            p = gt[i, :, :2] + rng.normal(0, noise, (17, 2))
            out.append({"image_id": i + 1, "category_id": 1, "score": 0.9,
                        "keypoints": np.column_stack([p, np.ones(17)]).ravel().tolist()})
        return out

    exact = [dict(d, keypoints=np.column_stack([gt[d["image_id"] - 1, :, :2], np.ones(17)]).ravel().tolist())
             for d in dets(0)]
    assert coco_map(data, exact, iou_type="keypoints")["map"] == pytest.approx(1.0)
    noisy = dets(15)
    assert coco_map(data, noisy, iou_type="keypoints")["map"] < 1.0
    r = paired_detection(data, noisy, exact, n_boot=10, iou_type="keypoints")
    assert r.metric == "oks_ap" and r.difference > 0 and r.b == pytest.approx(1.0)
    with pytest.raises(InputError, match="iou_type"):
        coco_map(data, exact, iou_type="kp")


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


def test_paired_detection_keypoints_resamples_equal_cocoeval_rerun():
    """The same re-accumulation for OKS AP (``iou_type="keypoints"``: 20
    detections per image, area ranges all/medium/large)."""
    pytest.importorskip("pycocotools")
    from ttakit.evaluation.dense import _map_of, _matched, load_coco_ground_truth

    rng = np.random.default_rng(2)
    images = [{"id": i, "width": 300, "height": 300} for i in range(1, 7)]
    anns, dets = [], []
    for img in images:
        for _ in range(rng.integers(1, 4)):
            x, y = (float(v) for v in rng.uniform(0, 200, 2))
            w, h = (float(v) for v in rng.uniform(40, 90, 2))
            pts = np.column_stack([rng.uniform(x, x + w, 17), rng.uniform(y, y + h, 17), np.full(17, 2.0)])
            anns.append({"id": len(anns) + 1, "image_id": img["id"], "category_id": 1, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0, "num_keypoints": 17, "keypoints": pts.ravel().tolist()})
            noisy = pts.copy()
            noisy[:, :2] += rng.normal(0, rng.uniform(1, 8), (17, 2))
            dets.append({"image_id": img["id"], "category_id": 1, "score": float(rng.random()),
                         "keypoints": noisy.ravel().tolist()})
    cats = [{"id": 1, "name": "person", "keypoints": [str(k) for k in range(17)], "skeleton": []}]
    data = {"images": images, "annotations": anns, "categories": cats}
    gt = load_coco_ground_truth(data)
    ids = sorted(gt.getImgIds())
    ev = _matched(gt, dets, ids, "keypoints")
    for pick in ([0, 0, 3, 5, 5, 2], [1], list(range(6)), [4, 4]):
        new_images, new_anns, new_dets = [], [], []
        for new_id, pos in enumerate(pick, 1):
            old = ids[pos]
            new_images.append({"id": new_id, "width": 300, "height": 300})
            new_anns += [dict(a, id=len(new_anns) + k + 1, image_id=new_id)
                         for k, a in enumerate(x for x in anns if x["image_id"] == old)]
            new_dets += [dict(d, image_id=new_id) for d in dets if d["image_id"] == old]
        rerun = coco_map({"images": new_images, "annotations": new_anns, "categories": cats}, new_dets,
                         iou_type="keypoints")["map"]
        assert 0.05 < rerun < 1 and _map_of(ev, pick) == pytest.approx(rerun, abs=1e-12)
