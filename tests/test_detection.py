"""ttakit.Detector: every view's boxes come back to the input frame, in
every accepted output form and box format, clipped, outside boxes dropped,
merged per image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ttakit
from ttakit.errors import InputError, ModelOutputError
from ttakit.merge.boxes import from_xyxy

pytestmark = pytest.mark.filterwarnings("ignore:float images range")


def bright_box(batch) -> list:
    """One box per image: the hull of the pixels above 0.5 in channel 0
    (pixel (i, j) covers [j, j+1) x [i, i+1)), label 1, score 0.9."""
    out = []
    for img in np.asarray(batch):
        ys, xs = np.nonzero(img[0] > 0.5)
        if len(xs) == 0:
            out.append({"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0)})
            continue
        out.append({"boxes": np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], float),
                    "scores": np.array([0.9]), "labels": np.array([1])})
    return out


def images(n=4, h=12, w=20, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 3, h, w), np.float32)
    truth = []
    for k in range(n):
        y0, x0 = int(rng.integers(1, h - 5)), int(rng.integers(3, w - 8))
        hh, ww = int(rng.integers(2, 4)), int(rng.integers(2, 6))
        x[k, 0, y0:y0 + hh, x0:x0 + ww] = 1.0
        truth.append([x0, y0, x0 + ww, y0 + hh])
    return x, np.array(truth, float)


@pytest.mark.parametrize("policy", ["d4", "hflips * shift(dx=[-2, 2], fill=constant)", "identity + transverse"])
@pytest.mark.parametrize("merge", ["wbf", "nms", "soft_nms"])
def test_boxes_come_back_from_every_exact_view(policy, merge):
    x, truth = images()
    res = ttakit.Detector(bright_box, policy, merge, batch_size=8).run(x)
    n_views = len(ttakit.Policy.parse(policy).unique())
    for k in range(len(x)):
        # soft-NMS decays the copies instead of removing them
        assert len(res.boxes[k]) == 1 or (merge == "soft_nms" and len(res.boxes[k]) <= n_views), res.boxes[k]
        np.testing.assert_allclose(res.boxes[k], np.broadcast_to(truth[k], res.boxes[k].shape), atol=1e-9)
        assert res.labels[k][0] == 1 and res.support[k][0] == n_views and res.scores[k][0] == pytest.approx(0.9)
    assert res.forward_passes == n_views * len(x)


def test_formats_normalised_and_padded_outputs_with_counts():
    x, truth = images(n=3, seed=1)
    h, w = x.shape[-2:]

    def padded_cxcywh_normalised(batch):
        recs = bright_box(batch)
        n = len(recs)
        boxes, scores, labels = np.zeros((n, 5, 4)), np.zeros((n, 5)), np.zeros((n, 5))
        for k, r in enumerate(recs):
            vh, vw = np.asarray(batch).shape[-2:]  # the view's own size (rot90 turns it)
            boxes[k, :1] = from_xyxy(r["boxes"], "cxcywh") / [vw, vh, vw, vh]
            scores[k, :1], labels[k, :1] = r["scores"], r["labels"]
        return {"boxes": boxes, "scores": scores, "labels": labels, "num": np.ones(n)}

    res = ttakit.Detector(padded_cxcywh_normalised, "d4", box_format="cxcywh", normalized=True).run(x)
    want = from_xyxy(truth, "cxcywh") / [w, h, w, h]
    np.testing.assert_allclose(np.concatenate(res.boxes), want, atol=1e-9)
    # the tuple form (boxes, scores, labels, num) and xywh pixels
    def tuple_xywh(batch):
        d = padded_cxcywh_normalised(batch)
        vh, vw = np.asarray(batch).shape[-2:]
        b = from_xyxy(ttakit.merge.boxes.to_xyxy(d["boxes"] * [vw, vh, vw, vh], "cxcywh"), "xywh")
        return torch.as_tensor(b), torch.as_tensor(d["scores"]), torch.as_tensor(d["labels"]), torch.ones(len(b))
    res = ttakit.Detector(tuple_xywh, "rot90s", "nms", box_format="xywh").run(x)
    np.testing.assert_allclose(np.concatenate(res.boxes), from_xyxy(truth, "xywh"), atol=1e-9)


def test_a_decode_function_for_raw_outputs():
    x, truth = images(n=2, seed=2)

    def raw_model(batch):  # an ONNX-like raw grid: (n, 1, 6) = box, score, class
        recs = bright_box(batch)
        return np.stack([np.concatenate([r["boxes"][0], [0.9, 1]])[None] for r in recs])

    decode = lambda raw: [(r[:, :4], r[:, 4], r[:, 5]) for r in np.asarray(raw)]
    res = ttakit.Detector(raw_model, "hflips", decode=decode).run(x)
    np.testing.assert_allclose(np.concatenate(res.boxes), truth, atol=1e-9)
    with pytest.raises(ModelOutputError, match="decode="):
        ttakit.Detector(raw_model, "hflip").run(x)
    with pytest.raises(ModelOutputError, match="decode failed"):
        ttakit.Detector(raw_model, "hflip", decode=lambda r: 1 / 0).run(x)


def test_boxes_are_clipped_and_boxes_outside_the_frame_dropped():
    x = np.zeros((1, 3, 10, 10), np.float32)
    edge = lambda batch: [{"boxes": [[7.0, 0.0, 10.0, 3.0]], "scores": [0.8], "labels": [0]}] * len(batch)
    # shift(dx=-4): view pixel 7..10 shows input 11..14, outside: dropped; identity keeps its box
    res = ttakit.Detector(edge, "identity + shift(dx=-4, fill=constant)", "nms").run(x)
    np.testing.assert_allclose(res.boxes[0], [[7, 0, 10, 3]])
    assert res.support[0].tolist() == [1]
    # shift(dx=-2): the box comes back as 9..12, clipped to 9..10
    res = ttakit.Detector(edge, "shift(dx=-2, fill=constant)").run(x)
    np.testing.assert_allclose(res.boxes[0], [[9, 0, 10, 3]])


def test_resampled_views_merge_close_to_the_truth_and_min_views():
    x, truth = images(n=3, h=24, w=32, seed=3)
    res = ttakit.Detector(bright_box, "identity + scale(1.1) + crop(0.9)", "wbf",
                          merge_options={"iou_thr": 0.4}).run(x)
    for k in range(3):
        assert len(res.boxes[k]) == 1 and np.abs(res.boxes[k][0] - truth[k]).max() < 1.5
    only_one = lambda batch: bright_box(batch) if np.asarray(batch).shape[-1] == 32 and np.asarray(batch)[0, 0].sum() \
        else bright_box(np.zeros_like(np.asarray(batch)))
    res = ttakit.Detector(only_one, "identity + rot90", merge_options={"min_views": 2}).run(x)
    assert all(len(b) == 0 for b in res.boxes)


def test_errors_params_and_bad_records():
    det = ttakit.Detector(bright_box, "hflips", "nms", merge_options={"iou_thr": 0.6})
    assert det.get_params()["merge_options"] == {"iou_thr": 0.6}
    with pytest.raises(InputError, match="box_format"):
        ttakit.Detector(bright_box, box_format="yxyx")
    with pytest.raises(ModelOutputError, match="no 'labels'"):
        ttakit.Detector(lambda b: [{"boxes": [[0, 0, 1, 1]], "scores": [1]}] * len(b)).run(np.zeros((2, 3, 4, 4)))
    nan = lambda b: [{"boxes": [[0, 0, float("nan"), 1]], "scores": [1], "labels": [0]}] + bright_box(b[1:])
    x, _ = images(n=2)
    res = ttakit.Detector(nan, on_error="mark").run(x)
    assert res.failed.tolist() == [True, False] and len(res.boxes[0]) == 0 and len(res.boxes[1]) == 1
