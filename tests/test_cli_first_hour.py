"""What a new user meets in the first hour of the command line (issue 20):
zoo models in ``predict`` with their normalisation, layout hints that point
the right way, a mistyped folder as a usage error, one ``--help`` per task,
one spelling per flag, flag wording in messages."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ttakit.errors import ModelLoadError
from ttakit.interfaces.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TTAKIT_SHARED", ROOT.parent / "shared"))
if not (SHARED / "models").exists():
    SHARED = Path("/work/shared")
CIFAR = SHARED / "data" / "cifar10"
RESNETS = SHARED / "models" / "cifar10-resnet"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("first_hour")
    torch.manual_seed(0)
    net = Tiny().eval()
    torch.jit.script(net).save(str(d / "tiny.pt"))
    torch.onnx.export(net, torch.rand(2, 3, 12, 12), str(d / "tiny.onnx"), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}})
    (d / "photos").mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(d / "photos" / f"{k}.png")
    return d


# -- item 5: a mistyped folder is a usage error -------------------------------------------

def test_a_mistyped_folder_is_a_usage_error_before_any_work(files, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    code, _, err = run(capsys, "predict", files / "tiny.pt", files / "phots", "--out", out)
    assert code == 2, err
    assert "no such file or folder" in err and "Did you mean 'photos'?" in err
    assert not out.exists()  # no header-only CSV
    # a missing image among others is still reported by name and the others predicted (exit 3)
    code, _, err = run(capsys, "predict", files / "tiny.pt", files / "photos", files / "gone.png", "--out", out)
    assert code == 3 and "gone.png" in err and out.exists()


# -- item 3: a model file run without its normalisation is said so ----------------------------

def test_predict_without_mean_and_std_says_what_the_model_sees(files, tmp_path, capsys):
    code, _, err = run(capsys, "predict", files / "tiny.pt", files / "photos", "--out", tmp_path / "a.csv")
    assert code == 0 and "no --mean/--std" in err
    code, _, err = run(capsys, "predict", files / "tiny.pt", files / "photos", "--out", tmp_path / "b.csv",
                       "--mean", "0.5", "--std", "0.25")
    assert code == 0 and "no --mean/--std" not in err


# -- item 4: layout hints that point the right way ------------------------------------------

def test_an_nchw_onnx_model_read_as_nhwc_is_refused_with_the_right_layout(files, capsys):
    from ttakit.models.loading import load_model_file

    with pytest.raises(ModelLoadError, match=r"NCHW, 3 channels.*would read it as 12 channels.*layout='NCHW'"):
        load_model_file(files / "tiny.onnx", layout="NHWC")
    code, _, err = run(capsys, "predict", files / "tiny.onnx", files / "photos", "--model-layout", "NHWC")
    assert code == 2
    assert "--model-layout NCHW" in err and "expects 12 channels" not in err


def test_the_layout_hint_names_the_other_layout_not_the_one_given(files, capsys):
    code, _, err = run(capsys, "predict", files / "tiny.pt", files / "photos", "--model-layout", "NHWC")
    assert code == 2
    assert "read as NHWC; the other is --model-layout NCHW" in err
    assert "(--model-layout NHWC)" not in err


# -- item 3: zoo models in predict, with their normalisation -------------------------------

@pytest.mark.skipif(not ((CIFAR / "cifar-10-batches-bin").exists() and (RESNETS / "resnet20-12fca82f.th").exists()),
                    reason="needs ../shared/data/cifar10 and ../shared/models/cifar10-resnet")
def test_predict_takes_zoo_models_with_their_normalisation(tmp_path, capsys):
    import csv
    import io

    import ttakit
    from ttakit.datasets import cifar10
    from ttakit.zoo import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD, load_cifar_resnet

    data = cifar10(CIFAR, split="test", progress=False)
    x, y = data.images[:40], data.labels[:40]
    (tmp_path / "imgs").mkdir()
    for k, img in enumerate(x):
        Image.fromarray(img).save(tmp_path / "imgs" / f"{k:03d}.png")
    code, out, err = run(capsys, "predict", "zoo:resnet20", tmp_path / "imgs", "--weights", RESNETS,
                         "--policy", "identity + hflip")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    labels = np.array([int(r["label"]) for r in rows])
    want = ttakit.Classifier(load_cifar_resnet(20, root=RESNETS), "identity + hflip", data_layout="NHWC",
                             preprocess=ttakit.Normalize(CIFAR_RESNET_MEAN, CIFAR_RESNET_STD),
                             output="logits").run(x)
    np.testing.assert_array_equal(labels, want.labels)
    np.testing.assert_allclose([float(r["confidence"]) for r in rows], want.probs.max(1), atol=1e-5)
    assert rows[0]["class"] in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                "truck")
    assert (labels == y).mean() >= 0.8  # normalised: ResNet-20 is ~92% accurate on CIFAR-10


# -- item 8: policy surprises ------------------------------------------------------------------

def test_a_policy_without_identity_is_said_so(capsys):
    from ttakit import Policy

    bare = Policy.parse("hflips * shift(dx=[-1, 1])")
    assert not bare.has_identity and len(bare) == 4
    assert "no identity view" in bare.describe()
    kept = Policy.parse("hflips * (identity + shift(dx=[-1, 1]))")
    assert kept.has_identity and "no identity view" not in kept.describe()
    code, _, err = run(capsys, "policy", "hflips * shift(dx=[-1, 1])")
    assert code == 0 and "ttakit: warning: hflips * shift(dx=[-1, 1]): no identity view" in err
    code, _, err = run(capsys, "policy", "hflips * (identity + shift(dx=[-1, 1]))")
    assert code == 0 and "identity" not in err


def test_a_shift_below_one_says_its_unit():
    from ttakit import Policy
    from ttakit.errors import PolicyError
    from ttakit.views import Shift

    with pytest.raises(PolicyError, match=r"shift by 0.5: pixels or a share.*unit='px'.*unit='fraction'"):
        Policy.parse("shift(0.5)")
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) / 400
    half = Policy.parse("shift(0.5, unit='fraction')").views[0]
    torch.testing.assert_close(half.apply(x), Shift(4).apply(x))  # half the width of 8 pixels
    one = Policy.parse("shift(1)").views[0]  # an integer: one pixel, as before
    assert torch.equal(one.apply(x)[..., 1:], x[..., :-1])
    sub = Policy.parse("shift(0.5, unit='px')").views[0]
    assert not torch.equal(sub.apply(x), half.apply(x))
    for view in (half, sub, one):
        assert Policy.from_dict(Policy([view]).to_dict()).views == (view,)  # the unit survives a file
        assert Policy.parse(Policy([view]).spec).views == (view,)
    assert Policy([one]).spec == "shift(1)"  # no unit where the number says it


# -- item 7: progress that moves, with an ETA, only on a terminal unless asked; a readable steps table ----

class Recorder:
    """Stands for tqdm: records the total and every update."""

    made: list = []

    def __init__(self, total=None, **kwargs):
        self.total, self.updates, self.kwargs = total, [], kwargs
        Recorder.made.append(self)

    def update(self, n=1):
        self.updates.append(n)

    def close(self):
        pass


def test_the_bar_moves_after_every_forward_batch(monkeypatch):
    import tqdm.auto

    import ttakit

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    Recorder.made.clear()
    x = np.random.default_rng(0).random((20, 3, 8, 8), dtype=np.float32)
    res = ttakit.Classifier(Tiny().eval(), "d4", batch_size=10, progress=True).run(x)
    bar = Recorder.made[-1]
    assert bar.total == 20 * 8 == res.forward_passes  # forward passes: inputs x views
    assert sum(bar.updates) == bar.total
    assert len(bar.updates) == 16  # 2 chunks of 10 inputs x 8 views, one view per forward batch of 10


@pytest.fixture(scope="module")
def labelled(files, tmp_path_factory):
    d = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(1)
    np.savez(d / "data.npz", x=rng.integers(0, 256, (60, 12, 12, 3), dtype=np.uint8), y=rng.integers(0, 3, 60))
    return d / "data.npz"


def test_tune_prints_bars_only_when_asked_or_on_a_terminal_and_names_repeats(files, labelled, tmp_path, capsys):
    common = ["tune", files / "tiny.pt", "--data", labelled, "--candidates", "flips", "--budget", "8"]
    code, out, err = run(capsys, *common, "--out", tmp_path / "a.yaml")
    assert code == 0, err
    assert "pass/s" not in err and "%|" not in err  # stderr is not a terminal here: no bar in the log
    views = [row.split("|")[2].strip() for row in out.splitlines() if row.startswith("| ") and row[2].isdigit()]
    assert len(views) == 8 and len(set(views)) == 8, views  # 8 steps over 2 candidates: repeats say so
    assert any("again (weight 2)" in v for v in views)
    code, out, err = run(capsys, *common, "--progress", "--out", tmp_path / "b.yaml")
    assert code == 0 and "%|" in err and "pass" in err and "<" in err  # a bar with its rate and ETA


# -- one spelling per flag; the old ones still work, with a warning --------------------------

def test_old_spellings_work_and_say_the_new_one(capsys, tmp_path):
    pd = pytest.importorskip("pandas")
    from sklearn.linear_model import LogisticRegression
    from skops.io import dump

    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(80, 3)), columns=["a", "b", "c"])
    y = (x["a"] + 0.3 * rng.normal(size=80) > 0).astype(int)
    x.assign(y=y).to_csv(tmp_path / "t.csv", index=False)
    dump(LogisticRegression().fit(x, y), tmp_path / "m.skops")
    base = ["predict", tmp_path / "m.skops", "--data", tmp_path / "t.csv", "--target", "y", "--fit-data",
            tmp_path / "t.csv", "--copies", "2"]
    code, new, err = run(capsys, *base, "--policy", "noise(0.1)")
    assert code == 0 and "deprecated" not in err, err
    code, old, err = run(capsys, *base, "--views", "noise(0.1)")
    assert code == 0 and old == new
    assert "ttakit: warning: --views is deprecated; use --policy" in err


def test_size_is_one_flag_and_input_size_its_old_spelling(files, tmp_path, capsys):
    base = ["predict", files / "tiny.pt", files / "photos", "--task", "segment", "--policy", "identity"]

    class Seg(torch.nn.Module):
        def forward(self, x):
            return torch.cat([x[:, :1], 1 - x[:, :1]], 1)

    torch.jit.script(Seg()).save(str(tmp_path / "seg.pt"))
    base[1] = tmp_path / "seg.pt"
    code, _, err = run(capsys, *base, "--size", "8", "--out", tmp_path / "a")
    assert code == 0 and "deprecated" not in err, err
    code, _, err = run(capsys, *base, "--input-size", "8", "--out", tmp_path / "b")
    assert code == 0 and "ttakit: warning: --input-size is deprecated; use --size" in err
    assert (tmp_path / "a" / "results.json").read_text() == (tmp_path / "b" / "results.json").read_text()


# -- one help per task, each at most 120 lines -----------------------------------------------

HELPS = [("predict",), ("predict", "--engine", "ray"), ("predict", "--data", "x.csv"),
         ("predict", "--task", "detect"), ("predict", "--task", "segment"), ("predict", "--task", "keypoints"),
         ("evaluate",), ("evaluate", "--data", "x.csv"), ("evaluate", "--task", "detect"),
         ("evaluate", "--task", "segment"), ("evaluate", "--task", "keypoints"),
         ("tune",), ("tune", "--task", "detect"), ("tune", "--task", "segment")]


@pytest.mark.parametrize("words", HELPS, ids=[" ".join(w) for w in HELPS])
def test_one_help_per_task_of_at_most_120_lines(words, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, *words, "--help")
    assert code == 0
    assert len(out.splitlines()) <= 120, len(out.splitlines())
    task = words[2] if len(words) > 2 and words[1] == "--task" else None
    for other in ("detect", "segment", "keypoints"):
        if other != task:
            assert f"{other} options:" not in out
    listed = set(re.findall(r"^  (--[\w-]+)", out, re.M))  # the options the page describes
    if task == "detect":
        assert "--decode" in listed and "--mask-suffix" not in listed and "--top-k" not in listed
    if task == "segment" and words[0] != "predict":
        assert "--mask-suffix" in listed and "--decode" not in listed
    if words[1:] == ("--data", "x.csv"):
        assert "--fit-data" in listed and "--decode" not in listed and "--mode" not in listed
    if len(words) == 1:
        assert "--decode" not in listed and "--fit-data" not in listed and "the help of the other tasks:" in out
    assert "--input-size" not in out and "--views" not in out  # the old spellings are hidden


def test_messages_use_flags_not_python_parameters():
    from ttakit.interfaces.cli.common import in_flags

    assert in_flags("To fix: pass path= (the cifar-10-batches-bin folder)") == \
        "To fix: pass --data-root (the cifar-10-batches-bin folder)"


def test_the_evaluate_report_names_the_flag_not_the_python_argument(files, labelled, tmp_path, capsys):
    code, _, err = run(capsys, "tune", files / "tiny.pt", "--data", labelled, "--candidates", "flips", "--budget",
                       "2", "--out", tmp_path / "p.yaml")
    assert code == 0, err
    code, out, err = run(capsys, "evaluate", files / "tiny.pt", "--data", labelled, "--policy", tmp_path / "p.yaml")
    assert code == 0, err
    assert "--calibrate-on tune" in out and "pass calibration=" not in out
