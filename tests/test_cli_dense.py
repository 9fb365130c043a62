"""``ttakit predict|evaluate|tune --task detect|segment|keypoints`` end to
end: YOLOX-nano (ONNX, from ../shared) on three real COCO val2017 images for
detection, tiny TorchScript models on drawn images for segmentation and
keypoints."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ttakit
from ttakit.errors import UsageError
from ttakit.evaluation.dense import coco_detections, coco_map, load_coco_ground_truth
from ttakit.interfaces.cli import main
from ttakit.interfaces.cli.dense import DENSE_CANDIDATES
from ttakit.io.dense_eval import NO_MERGE, parse_merge_spec
from ttakit.zoo.decoders import DECODERS, get_decoder

SHARED = Path(os.environ.get("TTAKIT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
if not (SHARED / "models").exists():
    SHARED = Path("/work/shared")
MODEL = SHARED / "models" / "yolox-nano" / "yolox_nano.onnx"
COCO = SHARED / "data" / "coco-val2017-mini"
NAMES = ["000000010764.jpg", "000000022192.jpg", "000000005001.jpg"]
needs_yolox = pytest.mark.skipif(
    not (MODEL.exists() and (COCO / "instances_val2017_mini.json").exists()),
    reason="needs ../shared/models/yolox-nano and ../shared/data/coco-val2017-mini")


@pytest.fixture(scope="module")
def coco_mini(tmp_path_factory):
    """Three COCO images (and one file that is not an image) with their annotations."""
    root = tmp_path_factory.mktemp("coco")
    data = json.loads((COCO / "instances_val2017_mini.json").read_text())
    images = [im for im in data["images"] if im["file_name"] in NAMES]
    ids = {im["id"] for im in images}
    (root / "imgs").mkdir()
    for n in NAMES:
        shutil.copy(COCO / "val2017" / n, root / "imgs" / n)
    (root / "imgs" / "broken.jpg").write_text("not an image")
    ann = {**data, "images": images, "annotations": [a for a in data["annotations"] if a["image_id"] in ids]}
    (root / "ann.json").write_text(json.dumps(ann))
    return root, ann


def yolox_direct(paths, policy, merge, options):
    """The reference: ttakit.Detector on the letterboxed images, boxes divided by the ratio."""
    from ttakit.zoo.yolox import bgr_255, decoder, letterbox

    x, ratios = letterbox([np.asarray(Image.open(p).convert("RGB")) for p in paths], 416)
    res = ttakit.Detector(str(MODEL), policy, merge, merge_options=options, data_layout="NHWC",
                          decode=decoder(416), preprocess=bgr_255).run(x)
    return [b / r for b, r in zip(res.boxes, ratios)], res.scores, res.labels


@pytest.mark.slow
@needs_yolox
def test_predict_detect_writes_coco_results_in_image_pixels(coco_mini, tmp_path, capsys):
    root, ann = coco_mini
    out = tmp_path / "dets"
    rc = main(["predict", str(MODEL), str(root / "imgs"), "--task", "detect", "--decode", "yolox",
               "--policy", "identity + hflip", "--merge", "wbf(iou_thr=0.6, conf_type=max)", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 3 and "broken.jpg" in err  # the bad file fails alone
    index = json.loads((out / "index.json").read_text())
    assert [f["file"] for f in index["failures"]] == [str(root / "imgs" / "broken.jpg")]
    assert index["merge"] == "wbf(iou_thr=0.6, conf_type=max)" and index["fit"] == "letterbox"
    files = [im["file"] for im in index["images"]]
    assert [Path(f).name for f in files] == sorted(NAMES)
    records = json.loads((out / "results.json").read_text())
    boxes, scores, labels = yolox_direct(files, "identity + hflip", "wbf", {"iou_thr": 0.6, "conf_type": "max"})
    want = coco_detections([im["id"] for im in index["images"]], boxes, scores, labels)
    assert len(records) == len(want) > 10
    for r, w in zip(records, want):
        assert r["image_id"] == w["image_id"] and r["category_id"] == w["category_id"]
        np.testing.assert_allclose(r["bbox"], w["bbox"], atol=1e-6)
        assert r["score"] == pytest.approx(w["score"])
    # the person of 000000010764 (ground truth x, y, w, h = 219, 81, 265, 315) is found in its own pixels
    img = next(im["id"] for im in index["images"] if im["file"].endswith("000000010764.jpg"))
    best = max((r for r in records if r["image_id"] == img and r["category_id"] == 0), key=lambda r: r["score"])
    np.testing.assert_allclose(best["bbox"], [219, 81, 265, 315], atol=25)


@pytest.mark.slow
@needs_yolox
def test_evaluate_and_tune_detect(coco_mini, tmp_path, capsys):
    root, ann = coco_mini
    out = tmp_path / "report"
    rc = main(["evaluate", str(MODEL), "--data", str(root / "imgs"), "--task", "detect", "--decode", "yolox",
               "--annotations", str(root / "ann.json"), "--policy", "identity + hflip", "--merge", "soft_nms",
               "--n-boot", "10", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "| map |" in text and "| ap50 |" in text
    report = json.loads((out / "report.json").read_text())
    assert report["n_images"] == 3 and report["forward_passes"] == 6  # identity once, shared by both arms
    # the baseline is the model's own boxes (no merge), scored independently here
    gt = load_coco_ground_truth(ann)
    cats = sorted(c["id"] for c in ann["categories"])
    paths = [root / "imgs" / im["file_name"] for im in sorted(ann["images"], key=lambda im: im["id"])]
    for arm, policy, merge in (("baseline", "identity", "nms"), ("policy", "identity + hflip", "soft_nms")):
        boxes, scores, labels = yolox_direct(paths, policy, merge, {"iou_thr": 1.0} if arm == "baseline" else {})
        ids = [im["id"] for im in sorted(ann["images"], key=lambda im: im["id"])]
        m = coco_map(gt, coco_detections(ids, boxes, scores, labels, cats))
        assert report["metrics"]["map"][arm] == pytest.approx(m["map"], abs=1e-9)
        assert report["metrics"]["ap50"][arm] == pytest.approx(m["ap50"], abs=1e-9)
    p = report["paired"]["map"]
    assert p["difference"] == pytest.approx(report["metrics"]["map"]["policy"] - report["metrics"]["map"]["baseline"])

    policy = tmp_path / "tuned.yaml"
    rc = main(["tune", str(MODEL), "--data", str(root / "imgs"), "--task", "detect", "--decode", "yolox",
               "--annotations", str(root / "ann.json"), "--candidates", "flips", "--merges", "nms(iou_thr=0.65); wbf",
               "--dense-budget", "1", "--out", str(policy)])
    text = capsys.readouterr().out
    assert rc == 0 and policy.exists() and "6 forward passes" in text  # 3 images x 2 candidate views, once
    assert "--merge '" in text
    ttakit.Policy.load(policy)


# -- segmentation and keypoints: tiny TorchScript models on drawn images ------------------

class Bright(torch.nn.Module):
    """Two-class logits: foreground where the pixel is bright."""

    def forward(self, x):
        fg = (x.mean(1, keepdim=True) - 0.5) * 20
        return torch.cat([-fg, fg], 1)


class Centroid(torch.nn.Module):
    """Two keypoints: the centroid of the bright pixels, and a fixed point (x 3, y 2)."""

    def forward(self, x):
        n, _, h, w = x.shape
        m = (x.mean(1) > 0.5).float()
        ys = torch.arange(h, dtype=torch.float32).view(1, h, 1) + 0.5
        xs = torch.arange(w, dtype=torch.float32).view(1, 1, w) + 0.5
        tot = m.sum((1, 2)).clamp_min(1)
        cx, cy = (m * xs).sum((1, 2)) / tot, (m * ys).sum((1, 2)) / tot
        c = torch.stack([cx, cy, torch.ones_like(cx)], 1)
        fixed = torch.tensor([3.0, 2.0, 0.5]).expand(n, 3)
        return torch.stack([c, fixed], 1)


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """Images of different sizes with one bright rectangle each, their masks, and the two models."""
    root = tmp_path_factory.mktemp("seg")
    (root / "imgs").mkdir()
    (root / "masks").mkdir()
    rects = {"a": ((48, 64), (10, 30, 8, 40)), "b": ((40, 40), (5, 25, 20, 36)), "c": ((56, 48), (30, 50, 4, 20))}
    for name, ((h, w), (y0, y1, x0, x1)) in rects.items():
        img = np.full((h, w, 3), 40, np.uint8)
        img[y0:y1, x0:x1] = 220
        mask = np.zeros((h, w), np.uint8)
        mask[y0:y1, x0:x1] = 7  # an instance id: --binary-masks makes it class 1
        Image.fromarray(img).save(root / "imgs" / f"{name}.png")
        Image.fromarray(mask).save(root / "masks" / f"{name}_mask.png")
    torch.jit.script(Bright()).save(str(root / "bright.pt"))
    torch.jit.script(Centroid()).save(str(root / "centroid.pt"))
    return root, rects


def predict_drawn(root, model: str, task: str, out, capsys) -> dict:
    """``ttakit predict`` of a tiny model on the drawn images (input 32 x 32, flips); the index it writes."""
    rc = main(["predict", str(root / model), str(root / "imgs"), "--task", task, "--size", "32",
               "--policy", "identity + hflip", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    return json.loads((out / "index.json").read_text())


def test_predict_segment_writes_masks_at_each_images_size(drawn, tmp_path, capsys):
    root, rects = drawn
    out = tmp_path / "masks"
    index = predict_drawn(root, "bright.pt", "segment", out, capsys)
    assert len(index["images"]) == 3 and index["fit"] == "stretch"
    records = json.loads((out / "results.json").read_text())
    assert {r["image_id"] for r in records} == {1, 2, 3} and all(r["category_id"] == 1 for r in records)
    for im in index["images"]:
        name = Path(im["file"]).stem
        (h, w), (y0, y1, x0, x1) = rects[name]
        mask = np.asarray(Image.open(out / im["mask"]))
        want = np.zeros((h, w), np.uint8)
        want[y0:y1, x0:x1] = 1
        assert mask.shape == (h, w)
        assert (mask != want).mean() < 0.06  # only edge pixels move through the 32 x 32 input


def test_evaluate_and_tune_segment(drawn, tmp_path, capsys):
    root, _ = drawn
    rc = main(["evaluate", str(root / "bright.pt"), "--data", str(root / "imgs"), "--task", "segment",
               "--annotations", str(root / "masks"), "--mask-suffix", "_mask", "--binary-masks",
               "--size", "32", "--policy", "identity + hflip", "--n-boot", "50", "--out", str(tmp_path / "r")])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["n_images"] == 3 and report["settings"]["classes"] == 2
    assert report["metrics"]["miou"]["baseline"] > 0.85 and report["metrics"]["dice"]["policy"] > 0.9
    capsys.readouterr()
    rc = main(["tune", str(root / "bright.pt"), "--data", str(root / "imgs"), "--task", "segment",
               "--annotations", str(root / "masks"), "--mask-suffix", "_mask", "--binary-masks", "--size", "32",
               "--candidates", "flips", "--out", str(tmp_path / "p.yaml")])
    text = capsys.readouterr().out
    assert rc == 0 and (tmp_path / "p.yaml").exists() and "6 forward passes" in text
    # a limit on the cache says so, by name
    rc = main(["tune", str(root / "bright.pt"), "--data", str(root / "imgs"), "--task", "segment",
               "--annotations", str(root / "masks"), "--mask-suffix", "_mask", "--binary-masks", "--input-size", "32",
               "--candidates", "flips", "--cache-bytes", "1000", "--out", str(tmp_path / "p.yaml")])
    assert rc == 2 and "max_bytes" in capsys.readouterr().err


def test_predict_keypoints_in_image_pixels_with_flip_pairs(drawn, tmp_path, capsys):
    root, rects = drawn
    out = tmp_path / "kp"
    index = predict_drawn(root, "centroid.pt", "keypoints", out, capsys)
    records = {r["image_id"]: r for r in json.loads((out / "results.json").read_text())}
    for im in index["images"]:
        (h, w), (y0, y1, x0, x1) = rects[Path(im["file"]).stem]
        kp = np.array(records[im["id"]]["keypoints"]).reshape(-1, 3)
        np.testing.assert_allclose(kp[0, :2], [(x0 + x1) / 2, (y0 + y1) / 2], atol=1.5)
        assert kp.shape == (2, 3) and (kp[:, 2] == 1).all()


def test_decoders_are_named_and_user_code_only_on_request(tmp_path, monkeypatch, capsys):
    assert {"none", "yolox"} <= set(DECODERS)
    assert get_decoder("yolox").size == 416 and get_decoder("yolox").fit == "letterbox"
    with pytest.raises(UsageError, match="unknown decoder 'yolo'"):
        get_decoder("yolo")
    (tmp_path / "my_decode.py").write_text("CALLS = []\ndef decode(raw):\n    CALLS.append(1)\n    return raw\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = get_decoder("my_decode:decode")
    assert spec.make(100) is sys.modules["my_decode"].decode
    with pytest.raises(UsageError, match="has no 'missing'"):
        get_decoder("my_decode:missing")
    rc = main(["predict", "m.onnx", str(tmp_path), "--task", "detect", "--decode", "nope", "--out", str(tmp_path)])
    assert rc == 2 and "unknown decoder" in capsys.readouterr().err


def test_merge_specs():
    assert parse_merge_spec("wbf(iou_thr=0.6, conf_type=max)") == ("wbf", {"iou_thr": 0.6, "conf_type": "max"})
    assert parse_merge_spec(NO_MERGE) == ("nms", {"iou_thr": 1.0})
    assert parse_merge_spec("soft_nms") == ("soft_nms", {})


def test_help_texts_name_what_the_code_does(capsys):
    main(["predict", "--task", "detect", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in DECODERS:
        assert f"{name}:" in text
    assert "--task {classify,detect,segment,keypoints}" in text
    main(["evaluate", "--task", "detect", "--help"])
    assert f"Default: {NO_MERGE}" in " ".join(capsys.readouterr().out.split())
    main(["tune", "--task", "detect", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"'{DENSE_CANDIDATES}'" in text and "--task {classify,detect,segment}" in text


class Centroid17(torch.nn.Module):
    """COCO's 17 keypoints, all at the centroid of the bright pixels (so flips agree)."""

    def forward(self, x):
        n, _, h, w = x.shape
        m = (x.mean(1) > 0.5).float()
        ys = torch.arange(h, dtype=torch.float32).view(1, h, 1) + 0.5
        xs = torch.arange(w, dtype=torch.float32).view(1, 1, w) + 0.5
        tot = m.sum((1, 2)).clamp_min(1)
        c = torch.stack([(m * xs).sum((1, 2)) / tot, (m * ys).sum((1, 2)) / tot], 1)
        return c[:, None, :].expand(n, 17, 2)


def test_evaluate_keypoints_oks(drawn, tmp_path, capsys):
    root, rects = drawn
    torch.jit.script(Centroid17()).save(str(tmp_path / "c17.pt"))
    images, anns = [], []
    for k, (name, ((h, w), (y0, y1, x0, x1))) in enumerate(sorted(rects.items()), 1):
        images.append({"id": k, "file_name": f"{name}.png", "height": h, "width": w})
        kp = [(x0 + x1) / 2, (y0 + y1) / 2, 2] * 17
        anns.append({"id": k, "image_id": k, "category_id": 1, "keypoints": kp, "num_keypoints": 17, "iscrowd": 0,
                     "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)})
    cats = [{"id": 1, "name": "person", "keypoints": [str(i) for i in range(17)], "skeleton": []}]
    (tmp_path / "kp.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    rc = main(["evaluate", str(tmp_path / "c17.pt"), "--data", str(root / "imgs"), "--task", "keypoints",
               "--annotations", str(tmp_path / "kp.json"), "--size", "32", "--flip-pairs", "coco",
               "--n-boot", "10", "--out", str(tmp_path / "r")])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    # every point lands within a pixel or so of the truth: all found at OKS 0.5
    assert report["n_images"] == 3 and report["metrics"]["ap50"]["baseline"] == 1.0
    assert report["metrics"]["ap50"]["policy"] == 1.0 and report["metrics"]["map"]["policy"] > 0.5


# -- detection outputs that load into pycocotools; a folder holding part of an annotation file ---------

@pytest.mark.slow
@needs_yolox
def test_evaluate_detect_on_a_folder_holding_part_of_the_annotated_images(tmp_path, capsys):
    """The whole mini annotation file (158 images) against a folder of two of them: the two are
    evaluated, the 156 others are counted once, not reported one by one as unreadable."""
    (tmp_path / "imgs").mkdir()
    for n in NAMES[:2]:
        shutil.copy(COCO / "val2017" / n, tmp_path / "imgs" / n)
    rc = main(["evaluate", str(MODEL), "--data", str(tmp_path / "imgs"), "--task", "detect", "--decode", "yolox",
               "--annotations", str(COCO / "instances_val2017_mini.json"), "--policy", "identity + hflip",
               "--n-boot", "5", "--out", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "cannot read" not in err and len(err.strip().splitlines()) <= 2, err
    assert "156 images of" in err and "evaluated the 2 there" in err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["n_images"] == 2 and report["absent"] == 156 and report["failures"] == []
    assert "156 images of the annotation file are not in the folder" in out


@pytest.mark.slow
@needs_yolox
def test_predict_detect_results_load_into_coco_and_score_what_evaluate_scores(coco_mini, tmp_path, capsys):
    root, ann = coco_mini
    args = ["--task", "detect", "--decode", "yolox", "--policy", "identity + hflip", "--merge", "wbf"]
    rc = main(["predict", str(MODEL), str(root / "imgs"), *args, "--annotations", str(root / "ann.json"),
               "--out", str(tmp_path / "dets")])
    assert rc == 3  # broken.jpg
    records = json.loads((tmp_path / "dets" / "results.json").read_text())
    by_name = {im["file_name"]: im["id"] for im in ann["images"]}
    index = json.loads((tmp_path / "dets" / "index.json").read_text())
    assert {Path(im["file"]).name: im["id"] for im in index["images"]} == by_name  # the file's own ids
    cat_names = {c["id"]: c["name"] for c in ann["categories"]}
    assert all(r["category_name"] == cat_names[r["category_id"]] for r in records)
    assert {r["category_id"] for r in records} <= set(cat_names)  # COCO ids (1..90), not label indices
    gt = load_coco_ground_truth(ann)
    m = coco_map(gt, records)  # loadRes as written
    rc = main(["evaluate", str(MODEL), "--data", str(root / "imgs"), *args, "--annotations",
               str(root / "ann.json"), "--n-boot", "5", "--out", str(tmp_path / "r")])
    capsys.readouterr()
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["metrics"]["map"]["policy"] == pytest.approx(m["map"], abs=1e-9)
    assert report["metrics"]["ap50"]["policy"] == pytest.approx(m["ap50"], abs=1e-9)


@pytest.mark.slow
@needs_yolox
def test_predict_detect_ids_from_stems_score_threshold_and_class_names(coco_mini, tmp_path, capsys):
    root, _ = coco_mini
    (tmp_path / "imgs").mkdir()
    for n in NAMES[:2]:
        shutil.copy(root / "imgs" / n, tmp_path / "imgs" / n)
    names = (MODEL.parent / "coco_classes.txt").read_text().split("\n")
    base = ["predict", str(MODEL), str(tmp_path / "imgs"), "--task", "detect", "--decode", "yolox",
            "--policy", "identity"]
    assert main([*base, "--out", str(tmp_path / "all")]) == 0
    assert main([*base, "--score-threshold", "0.3", "--classes", str(MODEL.parent / "coco_classes.txt"),
                 "--out", str(tmp_path / "some")]) == 0
    capsys.readouterr()
    every = json.loads((tmp_path / "all" / "results.json").read_text())
    some = json.loads((tmp_path / "some" / "results.json").read_text())
    assert {r["image_id"] for r in every} == {int(Path(n).stem) for n in NAMES[:2]}  # 000000010764.jpg -> 10764
    assert len(some) == sum(r["score"] >= 0.3 for r in every) < len(every)
    assert all(r["score"] >= 0.3 for r in some)
    assert all(r["category_name"] == names[r["category_id"]] for r in some)
    assert any(r["category_name"] == "person" for r in some)


def test_predict_segment_masks_are_visible_with_probabilities_beside(drawn, tmp_path, capsys):
    root, rects = drawn
    out = tmp_path / "masks"
    index = predict_drawn(root, "bright.pt", "segment", out, capsys)
    for im in index["images"]:
        (h, w), (y0, y1, x0, x1) = rects[Path(im["file"]).stem]
        shown = np.asarray(Image.open(out / im["mask"]).convert("L"))  # as an image viewer shows it
        assert shown[(y0 + y1) // 2, (x0 + x1) // 2] == 255 and shown[0, 0] == 0
        assert np.asarray(Image.open(out / im["mask"])).max() == 1  # the values are still the labels
        prob = np.asarray(Image.open(out / im["probability"]))
        assert prob.shape == (h, w) and prob.dtype == np.uint8
        assert prob[(y0 + y1) // 2, (x0 + x1) // 2] > 250  # the bright model is sure in the middle
