"""A real detector on real images: YOLOX-nano (ONNX) on COCO val2017
images, through the ONNX adapter with ttakit.zoo.yolox's decode function.
Skipped when ../shared (models and data) or onnxruntime is absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import ttakit
from ttakit.merge.boxes import nms, pair_iou
from ttakit.zoo.yolox import bgr_255, decoder, letterbox

SHARED = Path(os.environ.get("TTAKIT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
if not (SHARED / "models").exists():
    SHARED = Path("/work/shared")
MODEL = SHARED / "models" / "yolox-nano" / "yolox_nano.onnx"
IMAGES = SHARED / "data" / "coco-val2017-mini" / "val2017"
ort = pytest.importorskip("onnxruntime")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (MODEL.exists() and IMAGES.exists()),
                                 reason="needs ../shared/models/yolox-nano and ../shared/data/coco-val2017-mini")]

# (file, COCO class index, the ground-truth box x, y, w, h from instances_val2017_mini.json)
CASES = [("000000010764.jpg", 0, [219, 81, 265, 315]),   # person
         ("000000022192.jpg", 16, [72, 121, 144, 255]),  # dog
         ("000000005001.jpg", 0, [355, 92, 163, 379])]   # person


@pytest.fixture(scope="module")
def letterboxed():
    from PIL import Image

    imgs = [np.asarray(Image.open(IMAGES / f).convert("RGB")) for f, _, _ in CASES]
    return letterbox(imgs, 416)


def best_iou(res, i, cls, gt, ratio):
    x, y, w, h = gt
    mine = res.boxes[i][res.labels[i] == cls] / ratio
    return float(pair_iou(mine, np.array([x, y, x + w, y + h], float)).max()) if len(mine) else 0.0


def test_identity_equals_the_models_own_decoded_output(letterboxed):
    x, _ = letterboxed
    det = ttakit.Detector(str(MODEL), "identity", "nms", merge_options={"iou_thr": 0.65}, data_layout="NHWC",
                          decode=decoder(416), preprocess=bgr_255)
    res = det.run(x)
    sess = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    for i in range(len(x)):
        raw = sess.run(None, {"images": x[i:i + 1, :, :, ::-1].transpose(0, 3, 1, 2).astype(np.float32)})[0]
        boxes, scores, labels = decoder(416)(raw)[0]
        # the same, clipped to the image (as the Detector does) and merged by the same NMS
        boxes = np.clip(boxes, 0, 416)
        ref = nms(boxes, scores, labels, iou_thr=0.65)
        boxes, scores, labels = ref.boxes, ref.scores, ref.labels
        assert len(res.boxes[i]) == len(boxes) > 0
        np.testing.assert_allclose(res.boxes[i], boxes, atol=1e-3)
        np.testing.assert_allclose(res.scores[i], scores, atol=1e-5)
        np.testing.assert_array_equal(res.labels[i], labels)


def test_flip_tta_with_wbf_finds_the_known_objects(letterboxed):
    x, ratios = letterboxed
    kwargs = dict(data_layout="NHWC", decode=decoder(416), preprocess=bgr_255)
    tta = ttakit.Detector(str(MODEL), "identity + hflip", "wbf", **kwargs).run(x)
    flipped = ttakit.Detector(str(MODEL), "hflip", "nms", merge_options={"iou_thr": 0.65}, **kwargs).run(x)
    for i, (_, cls, gt) in enumerate(CASES[:2]):
        assert best_iou(tta, i, cls, gt, ratios[i]) > 0.7
        assert best_iou(flipped, i, cls, gt, ratios[i]) > 0.7  # the mirror view's boxes came back mirrored
        top = np.flatnonzero(tta.labels[i] == cls)[0]
        assert tta.scores[i][top] > 0.5 and tta.support[i][top] == 2
    assert tta.forward_passes == 2 * len(x)


def test_reproduce_detection_on_a_few_images(tmp_path, capsys):
    from ttakit.interfaces import cli

    code = cli.main(["reproduce", "detection", "--shared", str(SHARED), "--limit", "4", "--n-boot", "5",
                     "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "| no TTA | 1 |" in out and "| hflip, WBF iou 0.55 avg | 2 |" in out
    assert (tmp_path / "detection.md").exists() and (tmp_path / "detection.json").exists()
