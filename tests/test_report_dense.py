"""``index.html`` of ``ttakit evaluate --task detect|segment|keypoints`` and
of a table, and ``ttakit predict --task ... --draw DIR``: the galleries hold
the images whose own score moved, drawn where the predictions are, and the
pages load in headless Chromium with nothing from the network.

Detection runs YOLOX-nano (../shared) on real COCO images; segmentation and
keypoints the tiny models of ``test_cli_dense`` on drawn images."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from browser_support import NO_CHROMIUM, blankness, check_page_or_skip, chromium, open_page, page_requests
from test_cli_dense import MODEL, Centroid17, coco_mini, drawn, needs_yolox  # noqa: F401 (fixtures)
from ttakit.interfaces.cli import main
from ttakit.io.dense_examples import pick
from ttakit.report import draw

def sources(page: Path) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page.read_text())


def test_pick_orders_the_galleries():
    a, b = np.array([0.5, 0.5, 0.5, 0.5]), np.array([0.9, 0.5, 0.2, 0.6])
    p = pick((a, b), uncertainty=[0.1, 0.4, 0.3, 0.0], k=2)
    assert p == {"helped": [0, 3], "hurt": [2], "uncertain": [1, 2]}
    assert pick(None, uncertainty=[0.0, 0.2, 0.0])["uncertain"] == [1]  # views that all agree are not uncertain


@pytest.mark.slow
@needs_yolox
def test_detection_report_draws_no_tta_tta_and_truth(coco_mini, tmp_path, capsys):
    root, ann = coco_mini
    out = tmp_path / "det"
    rc = main(["evaluate", str(MODEL), "--data", str(root / "imgs"), "--task", "detect", "--decode", "yolox",
               "--annotations", str(root / "ann.json"), "--policy", "identity + hflip", "--n-boot", "10",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    srcs = sources(out / "index.html")
    assert srcs and all((out / s).exists() for s in srcs)
    # three panels per image (no TTA, TTA, ground truth): the truth panel has the person of 000000010764 boxed
    text = (out / "index.html").read_text()
    assert "ground truth" in text and "000000010764.jpg" in text
    truth = np.asarray(Image.open(out / srcs[2])).astype(int)
    assert np.isin(truth.reshape(-1, 3), np.array(draw.colour(0))).all(1).any()  # person = label 0
    check_page_or_skip(out / "index.html", tmp_path / "shot.png")


@pytest.mark.slow
@needs_yolox
def test_predict_draw_detect_names_the_classes(coco_mini, tmp_path, capsys):
    root, _ = coco_mini
    names = tmp_path / "names.txt"
    names.write_text((MODEL.parent / "coco_classes.txt").read_text())
    rc = main(["predict", str(MODEL), str(root / "imgs" / "000000010764.jpg"), "--task", "detect", "--decode",
               "yolox", "--out", str(tmp_path / "dets"), "--draw", str(tmp_path / "drawn"), "--classes", str(names)])
    assert rc == 0, capsys.readouterr().err
    drawn_im = np.asarray(Image.open(tmp_path / "drawn" / "000000010764.png").convert("RGB")).astype(int)
    src = np.asarray(Image.open(root / "imgs" / "000000010764.jpg").convert("RGB")).astype(int)
    assert drawn_im.shape == src.shape
    best = max((r for r in json.loads((tmp_path / "dets" / "results.json").read_text()) if r["category_id"] == 0),
               key=lambda r: r["score"])
    x, y, w, h = best["bbox"]
    # the person's box edge is drawn in the person colour, at the image's own pixels
    row = drawn_im[int(round(y + h)) - 1, int(x) + 5:int(x + w) - 5]
    assert (np.abs(row - draw.colour(0)).sum(1) < 10).mean() > 0.8
    assert (drawn_im != src).any(2).mean() < 0.2  # the rest of the image is the image


def test_segmentation_report_and_draw(drawn, tmp_path, capsys):  # noqa: F811
    root, rects = drawn
    out = tmp_path / "seg"
    rc = main(["evaluate", str(root / "bright.pt"), "--data", str(root / "imgs"), "--task", "segment",
               "--annotations", str(root / "masks"), "--mask-suffix", "_mask", "--binary-masks", "--size", "32",
               "--policy", "identity + hflip + scale(0.83)", "--n-boot", "20", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    text = (out / "index.html").read_text()
    assert "variance across views" in text and "Most uncertain images (3 shown)" in text
    srcs = sources(out / "index.html")
    assert all((out / s).exists() for s in srcs)
    # four panels: truth, no TTA, TTA overlays and the variance map, each the image's thumbnail size
    first = [s for s in srcs if re.match(r"img/segment_0_\d\.png", s)]
    assert len(first) == 4
    sizes = {Image.open(out / s).size for s in first}
    assert len(sizes) == 1

    rc = main(["predict", str(root / "bright.pt"), str(root / "imgs"), "--task", "segment", "--size", "32",
               "--out", str(tmp_path / "m"), "--draw", str(tmp_path / "d")])
    assert rc == 0
    (h, w), (y0, y1, x0, x1) = rects["a"]
    a = np.asarray(Image.open(tmp_path / "d" / "a.png").convert("RGB")).astype(int)
    assert a.shape == (h, w, 3)
    inside, outside = a[(y0 + y1) // 2, (x0 + x1) // 2], a[h - 2, w - 2]
    assert (outside == 40).all() and not (inside == 220).all()  # the foreground is tinted, the rest is not
    check_page_or_skip(out / "index.html", tmp_path / "shot.png")


def test_keypoint_report_and_draw(drawn, tmp_path, capsys):  # noqa: F811
    root, rects = drawn
    torch.jit.script(Centroid17()).save(str(tmp_path / "c17.pt"))
    images, anns = [], []
    for k, (name, ((h, w), (y0, y1, x0, x1))) in enumerate(sorted(rects.items()), 1):
        images.append({"id": k, "file_name": f"{name}.png", "height": h, "width": w})
        kp = [(x0 + x1) / 2 + 3, (y0 + y1) / 2, 2] * 17  # the truth is 3 pixels right of the centroid
        anns.append({"id": k, "image_id": k, "category_id": 1, "keypoints": kp, "num_keypoints": 17, "iscrowd": 0,
                     "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)})
    cats = [{"id": 1, "name": "person", "keypoints": [str(i) for i in range(17)], "skeleton": []}]
    (tmp_path / "kp.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    out = tmp_path / "r"
    rc = main(["evaluate", str(tmp_path / "c17.pt"), "--data", str(root / "imgs"), "--task", "keypoints",
               "--annotations", str(tmp_path / "kp.json"), "--size", "32", "--flip-pairs", "coco",
               "--policy", "identity + hflip", "--n-boot", "10", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    srcs = sources(out / "index.html")
    assert srcs and all((out / s).exists() for s in srcs)
    assert "OKS AP" in (out / "index.html").read_text()

    rc = main(["predict", str(tmp_path / "c17.pt"), str(root / "imgs"), "--task", "keypoints", "--size", "32",
               "--out", str(tmp_path / "k"), "--draw", str(tmp_path / "kd")])
    assert rc == 0
    (h, w), (y0, y1, x0, x1) = rects["a"]
    a = np.asarray(Image.open(tmp_path / "kd" / "a.png").convert("RGB")).astype(int)
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    assert (np.abs(a[cy, cx] - draw.colour(0)).sum() < 10) and (a[2, 2] == 40).all()


def test_draw_needs_no_classes_flag_elsewhere(drawn, tmp_path, capsys):  # noqa: F811
    root, _ = drawn
    rc = main(["predict", str(root / "bright.pt"), str(root / "imgs"), "--task", "segment", "--size", "32",
               "--out", str(tmp_path / "m"), "--classes", str(tmp_path / "x.txt")])
    assert rc == 2 and "--classes does not apply to --task segment" in capsys.readouterr().err


@pytest.mark.slow
def test_table_report_lists_the_rows_most_changed(tmp_path, capsys):
    pytest.importorskip("sklearn")
    sio = pytest.importorskip("skops.io")
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    x = x.iloc[:, :6]
    frame = x.assign(diagnosis=y)
    frame.iloc[:400].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[400:].to_csv(tmp_path / "test.csv", index=False)
    sio.dump(LogisticRegression(max_iter=500).fit(x.iloc[:400], y.iloc[:400]), tmp_path / "m.skops")
    rc = main(["evaluate", str(tmp_path / "m.skops"), "--data", str(tmp_path / "test.csv"), "--target", "diagnosis",
               "--views", "noise(0.3)", "--fit-data", str(tmp_path / "train.csv"), "--copies", "4",
               "--out", str(tmp_path / "r")])
    assert rc == 0, capsys.readouterr().err
    text = (tmp_path / "r" / "index.html").read_text()
    assert "<svg" in text and "rows most changed" in text and "true class&#x27;s probability gained" in text
    if chromium() is None:
        pytest.skip(f"{NO_CHROMIUM}; the checks before the browser passed")
    opened = open_page(tmp_path / "r" / "index.html", tmp_path / "shot.png")
    assert opened.images == [] and page_requests(opened.requests) == []
    assert blankness(tmp_path / "shot.png")[1] > 0.03
