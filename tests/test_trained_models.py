"""Models ttakit trains itself where orientation does not matter: the BCCD
and ISBI 2012 loaders on the real files, a few training steps that lower
the loss, and D4 through ttakit.Detector / ttakit.Segmenter equal to a
naive loop (augment -> model -> de-augment -> merge) on real images.
Skipped when ../shared/data (bccd, isbi2012-membrane) is absent."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

import ttakit
from ttakit.datasets import load_bccd, load_isbi_membrane
from ttakit.errors import DatasetError
from ttakit.experiments.trained import cached_model
from ttakit.merge.boxes import get_box_merge
from ttakit.zoo.centernet import CenterNet, decoder, train_centernet
from ttakit.zoo.unet import train_unet, UNet

SHARED = Path(os.environ.get("TTAKIT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
if not (SHARED / "data").exists():
    SHARED = Path("/work/shared")
BCCD = SHARED / "data" / "bccd"
ISBI = SHARED / "data" / "isbi2012-membrane"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not ((BCCD / "coco_test.json").exists() and (ISBI / "label").exists()),
                                 reason="needs ../shared/data/bccd and ../shared/data/isbi2012-membrane")]


@pytest.fixture(scope="module")
def bccd_test():
    return load_bccd(BCCD, "test")


def test_bccd_test_split_matches_its_readme(bccd_test):
    d = bccd_test
    # README: test split 72 images, 945 boxes, 640x480 images, classes RBC/WBC/Platelets
    assert len(d) == 72 and d.images.shape == (72, 480, 640, 3) and d.images.dtype == np.uint8
    assert sum(len(b) for b in d.boxes) == 945 and d.category_ids == (1, 2, 3)
    b = np.concatenate(d.boxes)
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= 640).all() and (b[:, 3] <= 480).all()
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    assert set(np.concatenate(d.labels).tolist()) == {0, 1, 2}
    assert d.images.std() > 10  # real pixels, not a blank decode


def test_bccd_boxes_agree_with_the_pascal_voc_files(bccd_test):
    """The README's conversion, checked against the published XML: x = xmin - 1, x + w = xmax."""
    names = {im["id"]: Path(im["file_name"]).stem for im in bccd_test.coco["images"]}
    cls = ["RBC", "WBC", "Platelets"]
    for k in (0, 1, 40):
        root = ET.parse(BCCD / "Annotations" / f"{names[bccd_test.image_ids[k]]}.xml").getroot()
        voc = sorted((cls.index(o.findtext("name").strip()),
                      *(float(o.find("bndbox").findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")))
                     for o in root.iter("object"))
        ours = sorted((int(lab), b[0] + 1, b[1] + 1, b[2], b[3]) for b, lab in zip(bccd_test.boxes[k], bccd_test.labels[k]))
        assert np.allclose(np.array(ours), np.array(voc))


def test_bccd_downscaled_split_scales_boxes_with_the_pixels(bccd_test):
    half = load_bccd(BCCD, "train", scale=0.5, limit=3)
    full = load_bccd(BCCD, "train", limit=3)
    assert half.images.shape == (3, 240, 320, 3) and len(load_bccd(BCCD, "test", limit=5)) == 5
    for a, b in zip(half.boxes, full.boxes):
        assert np.allclose(a * 2, b)
    assert half.coco["annotations"] == full.coco["annotations"]  # the ground truth stays in the original pixels
    with pytest.raises(DatasetError, match="split"):
        load_bccd(BCCD, "dev")


def test_isbi_slices_and_masks():
    x, y = load_isbi_membrane(ISBI)
    assert x.shape == y.shape == (30, 512, 512) and x.dtype == np.uint8
    assert set(np.unique(y).tolist()) == {0, 1}
    assert 0.18 < y.mean() < 0.26  # README: about 22% of the pixels are membrane
    # membranes are dark in EM: the membrane class is darker on every slice
    assert all(x[i][y[i] == 1].mean() < x[i][y[i] == 0].mean() - 20 for i in range(30))
    with pytest.raises(DatasetError, match="0-29"):
        load_isbi_membrane(ISBI, [30])


def test_a_few_unet_steps_lower_the_loss():
    x, y = load_isbi_membrane(ISBI, range(4))
    _, log = train_unet(x, y, steps=40, batch_size=4, crop=64, width=4, lr=1e-2, seed=0)
    assert log.steps == 40 and np.mean(log.losses[-8:]) < 0.85 * np.mean(log.losses[:8])


def test_a_few_centernet_steps_lower_the_loss():
    d = load_bccd(BCCD, "train", scale=0.5, limit=6)
    _, log = train_centernet(d.images, d.boxes, d.labels, steps=30, batch_size=2, width=4, lr=1e-2, seed=0)
    assert log.steps == 30 and np.mean(log.losses[-6:]) < 0.7 * np.mean(log.losses[:6])


def test_training_is_seeded():
    x, y = load_isbi_membrane(ISBI, range(2))
    a = train_unet(x, y, steps=3, batch_size=2, crop=32, width=2, seed=3)[0].state_dict()
    b = train_unet(x, y, steps=3, batch_size=2, crop=32, width=2, seed=3)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cached_weights_are_reused(tmp_path):
    trained = []

    def train():
        trained.append(1)
        torch.manual_seed(0)
        return UNet(2, 1), {"note": 1}

    m1, note1, fresh1 = cached_model(tmp_path / "w.pt", lambda: UNet(2, 1), train, log=lambda m: None)
    m2, note2, fresh2 = cached_model(tmp_path / "w.pt", lambda: UNet(2, 1), train, log=lambda m: None)
    assert (fresh1, fresh2) == (True, False) and len(trained) == 1 and note2 == {"note": 1}
    assert all(torch.equal(v, m2.state_dict()[k]) for k, v in m1.state_dict().items())


# -- D4 through ttakit against a naive loop -----------------------------------------------

D4 = [(k, flip) for k in range(4) for flip in (False, True)]


def _view(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """(n, C, H, W): k counter-clockwise quarter turns, then a left-right mirror."""
    a = np.rot90(a, k, axes=(-2, -1))
    return np.ascontiguousarray(a[..., ::-1] if flip else a)


def _unview(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    a = a[..., ::-1] if flip else a
    return np.ascontiguousarray(np.rot90(a, -k, axes=(-2, -1)))


def _unview_boxes(b: np.ndarray, size, k: int, flip: bool) -> np.ndarray:
    """Boxes seen in the view back to the original (h, w) image, corner by corner."""
    h, w = size
    sizes = [(h, w)]
    for _ in range(k):
        sizes.append(sizes[-1][::-1])
    vh, vw = sizes[-1]
    xs = np.stack([b[:, 0], b[:, 2], b[:, 0], b[:, 2]], 1)
    ys = np.stack([b[:, 1], b[:, 1], b[:, 3], b[:, 3]], 1)
    if flip:
        xs = vw - xs
    for j in range(k, 0, -1):  # undo one counter-clockwise turn of an image of size sizes[j - 1]
        pw = sizes[j - 1][1]
        xs, ys = pw - ys, xs
    return np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], 1)


def test_d4_segmenter_equals_a_naive_loop():
    x, _ = load_isbi_membrane(ISBI, [20, 25])
    x = x[:, None, 128:256, 64:256].astype(np.float32) / 255  # non-square: quarter turns change the shape
    torch.manual_seed(0)
    model = UNet(4).eval()
    res = ttakit.Segmenter(model, "d4", "mean", output="logits", batch_size=2).run(x)
    probs = []
    with torch.no_grad():
        for k, flip in D4:
            p = torch.sigmoid(model(torch.from_numpy(_view(x, k, flip)))).numpy()
            probs.append(_unview(p, k, flip))
    fg = np.mean(probs, 0)[:, 0]
    assert np.allclose(res.probs[:, 1], fg, atol=1e-5) and np.allclose(res.probs[:, 0], 1 - fg, atol=1e-5)
    assert np.array_equal(res.labels, (fg > 0.5).astype(np.int64))


def test_d4_detector_equals_a_naive_loop():
    d = load_bccd(BCCD, "test", scale=0.5, limit=2)
    x = np.moveaxis(d.images, -1, 1).astype(np.float32) / 255
    torch.manual_seed(0)
    model = CenterNet(3, 4).eval()
    decode = decoder(3, top_k=40)
    res = ttakit.Detector(model, "d4", "nms", merge_options={"iou_thr": 0.5}, decode=decode).run(x)
    merge = get_box_merge("nms", iou_thr=0.5)
    size = x.shape[-2:]
    for i in range(2):
        parts = []
        for v, (k, flip) in enumerate(D4):
            with torch.no_grad():
                rec = decode(model(torch.from_numpy(_view(x[i:i + 1], k, flip))))[0]
            b = _unview_boxes(rec["boxes"].numpy().astype(np.float64), size, k, flip)
            b = np.clip(b, 0, [size[1], size[0], size[1], size[0]])
            keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            parts.append((b[keep], rec["scores"].numpy()[keep].astype(np.float64), rec["labels"].numpy()[keep],
                          np.full(int(keep.sum()), v)))
        b, s, lab, views = (np.concatenate(a) for a in zip(*parts))
        naive = merge(b, s, lab, views, np.ones(8))
        # an untrained net gives some boxes equal scores: order by score, then by the box
        order = np.lexsort((*np.round(naive.boxes, 3).T[::-1], -np.round(naive.scores, 6)))
        ours = np.lexsort((*np.round(res.boxes[i], 3).T[::-1], -np.round(res.scores[i], 6)))
        assert len(naive.scores) == len(res.scores[i]) > 10
        assert np.allclose(naive.scores[order], res.scores[i][ours], atol=1e-6)
        assert np.allclose(naive.boxes[order], res.boxes[i][ours], atol=1e-4)
        assert np.array_equal(naive.labels[order], res.labels[i][ours])


def test_reproduce_membranes_quick_writes_its_report(tmp_path, capsys):
    from ttakit.interfaces import cli

    code = cli.main(["reproduce", "membranes", "--quick", "--shared", str(SHARED), "--cache", str(tmp_path / "w"),
                     "--test-limit", "1", "--out", str(tmp_path / "out")])
    assert code == 0 and list((tmp_path / "w").glob("isbi-unet-*.pt"))
    text = (tmp_path / "out" / "membranes.md").read_text()
    assert "| D4 | 8 |" in text and "slices 20" in text
