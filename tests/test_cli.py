"""Tests for the ``ttakit`` command line (ttakit.interfaces.cli) and the
library I/O it runs on (ttakit.io).

Real models are built in a temporary folder (TorchScript, ONNX, Keras) and
real image files are written with Pillow; the CLI must give exactly what
``ttakit.Classifier`` gives on the same pixels.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import ttakit
from ttakit.interfaces import cli
from ttakit.io.images import find_images, load_images, parse_size

N_CLASSES = 5
SIZE = 16
POLICY = "identity + hflip + vflip"

# torch.jit / legacy ONNX export deprecations, raised while building the test models
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# -- fixtures: models and images ----------------------------------------------------
class TinyCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.fc = torch.nn.Linear(6, N_CLASSES)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        h = h.mean(dim=(2, 3))
        return self.fc(h) * 3.0  # logits spread enough for views to disagree sometimes


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    net = TinyCNN().eval()
    ts = d / "tiny.pt"
    torch.jit.script(net).save(str(ts))
    onnx_path = d / "tiny.onnx"
    x = torch.rand(2, 3, SIZE, SIZE)
    torch.onnx.export(net, x, str(onnx_path), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}})
    return {"torchscript": ts, "onnx": onnx_path}


@pytest.fixture(scope="module")
def keras_model(tmp_path_factory):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    d = tmp_path_factory.mktemp("keras")
    m = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(N_CLASSES, activation="softmax"),
    ])
    path = d / "tiny.keras"
    m.save(str(path))
    return path


def _model(kind, models, request):
    return request.getfixturevalue("keras_model") if kind == "keras" else models[kind]


def _write(path: Path, rng, size=(SIZE, SIZE)) -> Path:
    arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """5 good images (3 PNG, 2 JPEG), a text file, a hidden file, and a
    sub-folder with one more image."""
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(3):
        _write(d / f"img{i}.png", rng)
    for i in range(2):
        _write(d / f"photo{i}.jpg", rng)
    (d / "notes.txt").write_text("not an image")
    _write(d / ".hidden.png", rng)
    (d / "sub").mkdir()
    _write(d / "sub" / "deep.png", rng)
    return d


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory):
    p = tmp_path_factory.mktemp("bad") / "broken.png"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes())
    return p


def _good(image_dir):
    return sorted(str(p) for p in image_dir.glob("*") if p.suffix in (".png", ".jpg") and not p.name.startswith("."))


def _pixels(paths, size=None):
    """Read the images independently of the CLI: plain Pillow."""
    out = []
    for p in paths:
        im = Image.open(p).convert("RGB")
        if size is not None:
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        out.append(np.asarray(im))
    return np.stack(out)


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _csv(text):
    return list(csv.DictReader(io.StringIO(text)))


def _probs(rows):
    cols = [k for k in rows[0] if k.startswith("p_")]
    return np.array([[float(r[c]) for c in cols] for r in rows])


# -- predict: faithful to the Classifier ----------------------------------------------
@pytest.mark.parametrize("kind", ["torchscript", "onnx", "keras"])
def test_predict_matches_classifier(kind, models, image_dir, tmp_path, capsys, request):
    model = _model(kind, models, request)
    code, out, err = run(capsys, "predict", model, image_dir, "--policy", POLICY, "--no-progress")
    assert code == 0, err
    rows = _csv(out)
    paths = _good(image_dir)
    assert [r["path"] for r in rows] == paths  # folder expanded, sorted, no txt/hidden/sub-folder files
    probs = _probs(rows)
    assert probs.shape == (5, N_CLASSES)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    labels = np.array([int(r["label"]) for r in rows])
    np.testing.assert_array_equal(labels, probs.argmax(1))

    expected = ttakit.Classifier(str(model), POLICY, data_layout="NHWC").run(_pixels(paths))
    np.testing.assert_allclose(probs, expected.probs, atol=1e-5)
    np.testing.assert_array_equal(labels, expected.labels)
    for col, ref in (("confidence", expected.probs[np.arange(5), expected.labels]), ("entropy", expected.entropy),
                     ("spread", expected.spread), ("agreement", expected.agreement)):
        np.testing.assert_allclose([float(r[col]) for r in rows], ref, atol=1e-5)

    # JSON, format taken from the --out suffix
    out_file = tmp_path / "preds.json"
    code, out, err = run(capsys, "predict", model, *paths, "-p", POLICY, "--out", out_file)
    assert code == 0 and out == ""
    data = json.loads(out_file.read_text())
    assert len(data["results"]) == 5 and data["failures"] == []
    js = np.array([r["probs"] for r in data["results"]])
    np.testing.assert_allclose(js, expected.probs, atol=1e-5)
    assert [r["label"] for r in data["results"]] == expected.labels.tolist()
    s = data["summary"]
    assert s["policy"] == ttakit.Policy.parse(POLICY).spec
    assert s["views"] == 3 and s["distinct_views"] == 3 and s["forward_passes"] == 15
    assert s["output_kind"] == ("probs" if kind == "keras" else "logits")
    assert s["seconds"] > 0 and s["images"] == 5 and s["failed"] == 0


def test_corrupt_file_is_reported_and_skipped(models, image_dir, corrupt, tmp_path, capsys):
    missing = tmp_path / "missing.png"
    code, out, err = run(capsys, "predict", models["onnx"], image_dir, corrupt, missing, "--format", "json")
    assert code == 3
    assert f"ttakit: cannot read {corrupt}: " in err and f"ttakit: cannot read {missing}: no such file" in err
    assert "Traceback" not in err
    data = json.loads(out)
    assert len(data["results"]) == 5
    assert [f["path"] for f in data["failures"]] == [str(corrupt), str(missing)]
    assert all(f["reason"] for f in data["failures"])
    assert data["summary"]["failed"] == 2
    # CSV too: the good images are written
    code, out, _ = run(capsys, "predict", models["torchscript"], corrupt, *_good(image_dir)[:2])
    assert code == 3 and len(_csv(out)) == 2


def test_images_stream_in_chunks(models, image_dir, corrupt, monkeypatch, capsys):
    from ttakit.io import images

    paths = [corrupt, *_good(image_dir)]
    stream = images.ImageStream(paths, chunk=2)
    assert [len(b) for b in stream] == [2, 2, 1]
    assert stream.good == _good(image_dir) and [p for p, _ in stream.failures] == [str(corrupt)]
    code, whole, _ = run(capsys, "predict", models["torchscript"], *paths, "-p", POLICY)
    monkeypatch.setattr(images, "CHUNK", 2)
    code2, chunked, _ = run(capsys, "predict", models["torchscript"], *paths, "-p", POLICY)
    assert code == code2 == 3
    np.testing.assert_allclose(_probs(_csv(chunked)), _probs(_csv(whole)), atol=1e-6)


def test_truncated_image_fails_at_decode(models, image_dir, tmp_path, capsys):
    good = _good(image_dir)[0]
    cut = tmp_path / "cut.png"
    cut.write_bytes(Path(good).read_bytes()[:200])  # header fine, pixel data cut short
    code, out, err = run(capsys, "predict", models["torchscript"], good, cut)
    assert code == 3 and f"cannot read {cut}" in err
    assert [r["path"] for r in _csv(out)] == [good]


def test_folders_recursive_and_empty(models, image_dir, tmp_path, capsys):
    found = [str(p) for p in find_images([image_dir], recursive=True)]
    assert found == _good(image_dir) + [str(image_dir / "sub" / "deep.png")]
    code, out, _ = run(capsys, "predict", models["torchscript"], image_dir, "--recursive", "-p", "identity")
    assert code == 0 and len(_csv(out)) == 6
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run(capsys, "predict", models["torchscript"], empty)
    assert code == 2 and "no image files found" in err and "--recursive" in err and out == ""


def test_classes_and_top_k(models, image_dir, tmp_path, capsys):
    names = ["cat", "dog", "bird, small", "fish", "frog"]
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(names) + "\n\n")
    code, out, err = run(capsys, "predict", models["torchscript"], image_dir, "--classes", classes)
    assert code == 0, err
    rows = _csv(out)
    assert [k for k in rows[0] if k.startswith("p_")] == [f"p_{n}" for n in names]
    assert all(r["class"] == names[int(r["label"])] for r in rows)

    code, out, _ = run(capsys, "predict", models["torchscript"], image_dir, "--classes", classes,
                       "--top-k", 2, "-f", "json")
    res = json.loads(out)["results"]
    assert all(len(r["top_k"]) == 2 and "probs" not in r for r in res)
    assert all(r["top_k"][0]["label"] == r["label"] and r["top_k"][0]["class"] == r["class"] for r in res)
    assert all(r["top_k"][0]["prob"] >= r["top_k"][1]["prob"] for r in res)
    code, out, _ = run(capsys, "predict", models["torchscript"], image_dir, "--top-k", 3)
    head = list(_csv(out)[0])
    assert head[-6:] == ["top1_label", "top1_prob", "top2_label", "top2_prob", "top3_label", "top3_prob"]

    wrong = tmp_path / "three.txt"
    wrong.write_text("a\nb\nc\n")
    code, out, err = run(capsys, "predict", models["torchscript"], image_dir, "--classes", wrong)
    assert code == 2 and "3 class names" in err and "Traceback" not in err


def test_sizes(models, tmp_path, capsys):
    rng = np.random.default_rng(3)
    d = tmp_path / "mixed"
    d.mkdir()
    a = _write(d / "a.png", rng, (16, 16))
    b = _write(d / "b.png", rng, (20, 24))
    # TorchScript says nothing about its input size: a clear error naming the files
    code, out, err = run(capsys, "predict", models["torchscript"], d)
    assert code == 2 and out == ""
    assert str(a) in err and str(b) in err and "--size" in err and "20x24" in err
    # --size resizes them all (bilinear, as Pillow does)
    for size_args in (["12", "14"], ["12x14"]):
        code, out, err = run(capsys, "predict", models["torchscript"], d, "--size", *size_args, "-p", POLICY)
        assert code == 0, err
        ref = ttakit.Classifier(str(models["torchscript"]), POLICY, data_layout="NHWC").run(_pixels([a, b], (12, 14)))
        np.testing.assert_allclose(_probs(_csv(out)), ref.probs, atol=1e-5)
    # ONNX knows its input is 16x16: resized to that without --size
    code, out, err = run(capsys, "predict", models["onnx"], d, "-p", POLICY)
    assert code == 0, err
    ref = ttakit.Classifier(str(models["onnx"]), POLICY, data_layout="NHWC").run(_pixels([a, b], (16, 16)))
    np.testing.assert_allclose(_probs(_csv(out)), ref.probs, atol=1e-5)
    assert parse_size(["7"]) == (7, 7)
    code, _, err = run(capsys, "predict", models["torchscript"], d, "--size", "0x3")
    assert code == 2 and "size" in err


def test_normalisation_and_policy_file(models, image_dir, tmp_path, capsys):
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    pol_file = tmp_path / "pol.yaml"
    ttakit.Policy.parse("d4").save(pol_file)
    code, out, err = run(capsys, "predict", models["torchscript"], image_dir, "--policy", pol_file,
                         "--mean", *mean, "--std", *std, "--merge", "gmean", "--batch-size", 7)
    assert code == 0, err
    arr, good, failures = load_images(_good(image_dir))
    assert failures == [] and good == _good(image_dir)
    np.testing.assert_array_equal(arr, _pixels(good))
    ref = ttakit.Classifier(str(models["torchscript"]), "d4", "gmean", data_layout="NHWC",
                            preprocess=ttakit.Normalize(mean, std)).run(arr)
    np.testing.assert_allclose(_probs(_csv(out)), ref.probs, atol=1e-5)
    code, _, err = run(capsys, "predict", models["torchscript"], image_dir, "--mean", 0.5, 0.5)
    assert code == 2 and "--mean takes 1 or 3 values" in err


def test_grayscale_mode(tmp_path, image_dir, capsys):
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    path = tmp_path / "gray.pt"
    torch.jit.script(net).save(str(path))
    code, out, err = run(capsys, "predict", path, image_dir, "--mode", "L")
    assert code == 0, err
    gray = np.stack([np.asarray(Image.open(p).convert("L"))[..., None] for p in _good(image_dir)])
    ref = ttakit.Classifier(str(path), "identity + hflip", data_layout="NHWC").run(gray)
    np.testing.assert_allclose(_probs(_csv(out)), ref.probs, atol=1e-5)
    # an RGB image into a 1-channel model: the model's error, without a traceback
    code, _, err = run(capsys, "predict", path, image_dir)
    assert code == 2 and "the model failed" in err and "--mode" in err and "Traceback" not in err


# -- errors ---------------------------------------------------------------------------
def test_bad_policy_and_merge(models, image_dir, capsys):
    code, out, err = run(capsys, "predict", models["torchscript"], image_dir, "--policy", "identity + hflp")
    assert code == 2 and out == ""
    assert err.startswith("ttakit: error: unknown view 'hflp'") and "Did you mean 'hflip'" in err
    assert "Traceback" not in err
    code, _, err = run(capsys, "predict", models["torchscript"], image_dir, "--merge", "meen")
    assert code == 2 and "unknown merge" in err
    code, _, err = run(capsys, "policy", "missing.yaml")
    assert code == 2 and "cannot read policy file missing.yaml" in err


def test_missing_or_bad_model(image_dir, tmp_path, capsys):
    code, out, err = run(capsys, "predict", tmp_path / "nope.onnx", image_dir)
    assert code == 2 and out == "" and "ttakit: error: model file not found" in err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    code, _, err = run(capsys, "predict", junk, image_dir)
    assert code == 2 and "not a TorchScript file" in err and "Traceback" not in err
    code, _, err = run(capsys, "predict", tmp_path / "model.h5", image_dir)
    assert code == 2
    code, _, err = run(capsys, "predict", "--top-k", "0", junk, image_dir)  # argparse usage error
    assert code == 2 and "positive integer" in err
    code, _, err = run(capsys, "frobnicate")
    assert code == 2 and "invalid choice" in err


def test_errors_name_flags_not_parameters(models, image_dir, tmp_path, capsys):
    # an ONNX input (n, 3, 3, 3) does not say its layout: the hint is the flag
    ambiguous = tmp_path / "square.onnx"
    torch.onnx.export(TinyCNN().eval(), torch.rand(1, 3, 3, 3), str(ambiguous), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})
    code, out, err = run(capsys, "predict", ambiguous, image_dir)
    assert code == 2 and out == ""
    assert "--model-layout NCHW or NHWC" in err and "layout=" not in err
    code, out, err = run(capsys, "predict", ambiguous, image_dir, "--model-layout", "nchw", "-p", "identity")
    assert code == 0, err
    ref = ttakit.Classifier(str(ambiguous), "identity", data_layout="NHWC", model_layout="NCHW").run(
        _pixels(_good(image_dir), (3, 3)))
    np.testing.assert_allclose(_probs(_csv(out)), ref.probs, atol=1e-5)
    code, _, err = run(capsys, "predict", models["torchscript"], image_dir, "--device", "gpu")
    assert code == 2 and "--device gpu is not cpu, cuda or cuda:N" in err
    code, _, err = run(capsys, "predict", models["torchscript"], image_dir, "--layout", "NHWC")
    assert code == 2 and "unrecognized arguments: --layout" in err


def test_in_flags():
    from ttakit.interfaces.cli.common import in_flags

    assert in_flags("pass layout='NCHW' or 'NHWC'") == "pass --model-layout NCHW or NHWC"
    assert in_flags("Pass data_layout='NHWC'") == "Pass --data-layout NHWC"
    assert in_flags("pass size=(H, W) (e.g. size=(16, 16))") == "pass --size H W (e.g. --size 16 16)"
    assert in_flags("; pass recursive=True to search") == "; pass --recursive to search"
    assert in_flags("pass output='logits', not batch_size=0") == "pass --output-kind logits, not --batch-size 0"
    assert in_flags("image size (size=) and mode (mode='L')") == "image size (--size) and mode (--mode L)"
    assert in_flags("weights=2, a_size=3") == "weights=2, a_size=3"


# -- policy and views commands -----------------------------------------------------------
def test_policy_command(tmp_path, capsys):
    spec = "random(7, seed=0, horizontal_flip=true)"
    code, out, _ = run(capsys, "policy", spec)
    assert code == 0
    assert "7 views, 2 distinct" in out and "identity" in out and "hflip" in out

    code, out, _ = run(capsys, "policy", spec, "--format", "yaml")
    assert code == 0 and "# 7 views, 2 distinct" in out
    back = ttakit.Policy.from_dict(yaml.safe_load(out))
    assert back == ttakit.Policy.parse(spec).unique() and len(back) == 2
    np.testing.assert_array_equal(back.weights, [6, 1])

    code, out, _ = run(capsys, "policy", spec, "-f", "json", "--save", tmp_path / "p.json")
    d = json.loads(out)
    assert d["expanded_views"] == 7 and d["distinct_views"] == 2
    assert ttakit.Policy.from_dict(d) == back == ttakit.Policy.load(tmp_path / "p.json")
    code, out, _ = run(capsys, "policy", tmp_path / "p.json")
    assert code == 0 and "2 views, 2 distinct" in out


def test_views_command(capsys):
    code, out, _ = run(capsys, "views")
    assert code == 0
    for name in ("hflip", "d4", "mean", "sharpen(temperature=0.5)", "shift(dx=0", "tencrop"):
        assert name in out
    code, out, _ = run(capsys, "views", "--format", "json")
    data = json.loads(out)
    assert {"views", "groups", "merges"} <= set(data)
    assert "vote" in [m["name"] for m in data["merges"]]


# -- help, version, entry point ----------------------------------------------------------
#: how the help of each task is asked for (predict, evaluate and tune have one help per task)
TASK_HELPS = ([], ["--engine", "ray"], ["--data", "x.csv"], ["--task", "detect"], ["--task", "segment"],
              ["--task", "keypoints"])


def _check_help(capsys, words, parser):
    """Every option and positional of ``parser`` is in ``ttakit WORDS --help``
    (for predict, evaluate and tune: in the help of one of its tasks) and
    has a help string, except the old spellings (hidden, deprecated);
    nested subcommands are checked the same way."""
    out = ""
    for task in (TASK_HELPS if words[-1] in ("predict", "evaluate", "tune") else ([],)):
        code, text, _ = run(capsys, *words, *task, "--help")
        assert code == 0 or task, text
        out += text
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            assert isinstance(action, cli.common.Deprecated), action.option_strings
            continue
        for opt in action.option_strings:
            assert opt in out, f"{' '.join(words)} --help does not mention {opt}"
        if not action.option_strings:
            assert action.metavar in out
        assert action.help, f"{' '.join(words)}: {action.dest} has no help"
        if isinstance(action, argparse._SubParsersAction):
            for name, p in action.choices.items():
                _check_help(capsys, [*words, name], p)


def test_help_mentions_every_option(capsys):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"predict", "policy", "views", "tune", "evaluate", "reproduce", "demo"} <= set(sub.choices)
    for name, p in sub.choices.items():
        _check_help(capsys, [name], p)
    code, out, _ = run(capsys, "--help")
    assert code == 0 and all(name in out for name in sub.choices)
    code, out, _ = run(capsys, "--version")
    assert code == 0 and ttakit.__version__ in out


def test_commands_are_an_explicit_list(capsys):
    assert [c.name for c in cli.COMMANDS] == ["predict", "policy", "views", "tune", "evaluate", "reproduce", "demo",
                                                 "serve", "export"]
    seen = []
    cmd = cli.Command("echo-test", "test only", configure=lambda p: p.add_argument("word"),
                      run=lambda a: seen.append(a.word) or 5)
    assert cli.main(["echo-test", "hi"], commands=[*cli.COMMANDS, cmd]) == 5 and seen == ["hi"]
    assert "echo-test" not in [c.name for c in cli.COMMANDS]
    with pytest.raises(ttakit.errors.UsageError, match="echo-test given twice"):
        cli.build_parser([cmd, cmd])


def test_python_m_ttakit_help():
    proc = subprocess.run([sys.executable, "-m", "ttakit", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "predict" in proc.stdout and "policy" in proc.stdout and "views" in proc.stdout
