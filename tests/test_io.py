"""Tests for the library I/O layer (ttakit.io) and model-file loading
(ttakit.models.loading), used without the command line."""

from __future__ import annotations

import ast
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ttakit
from ttakit.errors import InputError, ModelLoadError, ModelRunError
from ttakit.io import (
    WRITERS,
    format_for,
    load_labelled,
    predict_files,
    render,
    subset,
    to_json,
    write_csv,
    write_predictions,
)
from ttakit.models.loading import load_model_file

SRC = Path(ttakit.__file__).parent
N_CLASSES = 4


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(5, N_CLASSES)).eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(d / f"im{i}.png")
    return d


@pytest.fixture(scope="module")
def pred(folder):
    return predict_files(_net(), [folder], "identity + hflip", classes=["a", "b", "c", "d"])


def _pixels(folder):
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))])


def test_predict_files_takes_a_model_object_and_matches_the_classifier(pred, folder):
    ref = ttakit.Classifier(_net(), "identity + hflip", data_layout="NHWC").run(_pixels(folder))
    np.testing.assert_allclose(pred.result.probs, ref.probs, atol=1e-6)
    assert pred.paths == [str(p) for p in sorted(folder.glob("*.png"))] and pred.failures == []
    assert pred.model == "Sequential" and pred.merge == "mean" and pred.seconds > 0
    # an adapter (what load_model_file returns) and a named model work the same
    adapter = ttakit.as_model(_net())
    again = predict_files(adapter, [folder], ttakit.Policy.parse("identity + hflip"), model_name="net")
    np.testing.assert_allclose(again.result.probs, ref.probs, atol=1e-6)
    assert again.model == "net"


def test_csv_and_json_round_trip(pred):
    buf = io.StringIO()
    write_csv(pred, buf)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert list(rows[0])[:7] == ["path", "label", "class", "confidence", "entropy", "spread", "agreement"]
    probs = np.array([[float(r[f"p_{c}"]) for c in "abcd"] for r in rows])
    np.testing.assert_allclose(probs, pred.result.probs, rtol=1e-6)
    assert [r["class"] for r in rows] == ["abcd"[i] for i in pred.result.labels]

    data = json.loads(render(pred, "json"))
    assert data == json.loads(json.dumps(to_json(pred)))
    np.testing.assert_allclose([r["probs"] for r in data["results"]], pred.result.probs, rtol=1e-6)
    assert [r["confidence"] for r in data["results"]] == pytest.approx(pred.result.probs.max(1), rel=1e-6)
    s = data["summary"]
    assert s["views"] == 2 and s["distinct_views"] == 2 and s["images"] == 3 and s["n_classes"] == N_CLASSES

    top = to_json(pred, top_k=2)["results"]
    assert all(len(r["top_k"]) == 2 and r["top_k"][0]["class"] == r["class"] for r in top)
    buf = io.StringIO()
    write_csv(pred, buf, top_k=1)
    assert buf.getvalue().splitlines()[0].endswith("top1_label,top1_class,top1_prob")


def test_write_predictions_picks_the_format(pred, tmp_path):
    assert set(WRITERS) == {"csv", "json"}
    assert write_predictions(pred, tmp_path / "p.json") == "json"
    assert json.loads((tmp_path / "p.json").read_text())["summary"]["images"] == 3
    assert write_predictions(pred, tmp_path / "p.txt") == "csv"
    assert (tmp_path / "p.txt").read_text().startswith("path,label,class,")
    assert format_for("x.json", "csv") == "csv"
    with pytest.raises(InputError, match="format must be one of csv, json"):
        format_for("x.csv", "parquet")


def test_model_failure_is_a_model_run_error_with_the_cause(folder):
    gray = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with pytest.raises(ModelRunError, match=r"read as NCHW; the other is model_layout='NHWC'.*the other is mode='L'") as info:
        predict_files(gray, [folder], "identity")
    assert isinstance(info.value.__cause__, RuntimeError)


def test_load_model_file_checks(tmp_path):
    path = tmp_path / "m.pt"
    torch.jit.script(_net()).save(str(path))
    assert load_model_file(path).layout == "NCHW"
    assert load_model_file(path, layout="NHWC", device="cpu").layout == "NHWC"
    with pytest.raises(ModelLoadError, match="device='gpu' is not cpu, cuda or cuda:N"):
        load_model_file(path, device="gpu")
    with pytest.raises(ModelLoadError, match="only TorchScript and ONNX models take a device"):
        load_model_file(tmp_path / "m.keras", device="cpu")
    with pytest.raises(ModelLoadError, match="model file not found"):
        load_model_file(tmp_path / "missing.onnx")
    with pytest.raises(ModelLoadError, match="cannot tell the model type"):
        load_model_file(path.rename(tmp_path / "m.h5"))


def test_labelled_from_npz_and_folders(tmp_path, folder):
    x = np.random.default_rng(0).integers(0, 256, (10, 3, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=x, labels=np.arange(10) % 2, classes=np.array(["no", "yes"]))
    data = load_labelled(str(tmp_path / "d.npz"), layout="NCHW")
    assert data.layout == "NCHW" and data.classes == ["no", "yes"] and data.x.shape == x.shape
    tune, hold = subset(data, "tune", 0.3, seed=1), subset(data, "holdout", 0.3, seed=1)
    assert len(hold.y) == 3 and len(tune.y) == 7 and "holdout part (3 of 10, seed 1)" in hold.description
    assert sorted(tune.x[:, 0, 0, 0].tolist() + hold.x[:, 0, 0, 0].tolist()) == sorted(x[:, 0, 0, 0].tolist())
    with pytest.raises(InputError, match="holdout_fraction=1.5"):
        subset(data, "tune", 1.5)

    root = tmp_path / "classes"
    (root / "cat").mkdir(parents=True)
    (root / "dog").symlink_to(folder)
    (root / "cat" / "bad.png").write_bytes(b"nope")
    Image.open(folder / "im0.png").save(root / "cat" / "good.png")
    with pytest.warns(ttakit.errors.TTAKitWarning, match="sorted sub-folder names"):
        data = load_labelled(str(root))
    assert data.classes == ["cat", "dog"] and data.y.tolist() == [0, 1, 1, 1] and data.layout == "NHWC"
    assert [Path(p).name for p, _ in data.failures] == ["bad.png"]
    with pytest.raises(InputError, match="no such file or folder"):
        load_labelled(str(tmp_path / "nowhere"))


def _imports(package: Path):
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                yield path, node


def test_layering_of_io_and_cli():
    for path, node in _imports(SRC / "io"):
        assert "interfaces" not in (node.module or ""), f"{path} imports from {node.module}"
    for path, node in _imports(SRC / "interfaces" / "cli"):
        private = [a.name for a in node.names if a.name.startswith("_") and not a.name.endswith("__")]
        assert not private, f"{path} imports private names {private} from {node.module}"
