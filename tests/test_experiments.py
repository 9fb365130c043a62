"""The founding experiment and the ResNet report, on small real slices.

These need ../shared (CIFAR-10 and the published ResNets); they skip with the
reason when it is absent (a user's clone) and run in CI, where it is present.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data" / "cifar10"
MODELS = SHARED / "models" / "cifar10-resnet"

needs_data = pytest.mark.skipif(not (DATA / "cifar-10-batches-bin").is_dir(),
                                reason="../shared/data/cifar10 not found (present in CI)")
needs_models = pytest.mark.skipif(not MODELS.is_dir(), reason="../shared/models/cifar10-resnet not found (present in CI)")


@needs_data
def test_tutorial_literal_and_deduplicated_random_flips_are_identical(tmp_path):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    from ttakit.experiments import tutorial

    cfg = tutorial.TutorialConfig(repeats=2, epochs=1, train_limit=2000, test_limit=400, data=str(DATA),
                                  out=str(tmp_path / "tut"), progress=False)
    res = tutorial.run(cfg, log=lambda m: None)
    for check in res["checks"]:
        assert check["identical_predictions"] == check["n"] == 400
        assert check["max_prob_diff"] < 1e-5
    rows = {r["policy"]: r for r in res["rows"]}
    lit = rows["tutorial: 7 random flips, literal"]
    ded = rows["tutorial: 7 random flips, ttakit dedupe"]
    assert lit["accuracy_per_model"] == ded["accuracy_per_model"]
    assert (lit["forwards_per_image"], ded["forwards_per_image"]) == (7, 2)
    assert rows["no TTA"]["forwards_per_image"] == 1 and rows["D4 (flips + rotations)"]["forwards_per_image"] == 8
    # one cache pass per distinct view, not per policy
    for t in res["timings"]:
        assert t["forward_passes"] == t["distinct_views"] * 400
    out = Path(res["out"])
    report = (out / "report.md").read_text()
    assert "| no TTA" in report and "identical predictions" in report
    data = json.loads((out / "results.json").read_text())
    assert len(data["rows"]) == len(tutorial.POLICIES) + 2 and data["config"]["repeats"] == 2
    assert (out / "accuracy.png").stat().st_size > 1000


@needs_data
@needs_models
def test_published_resnet20_gains_from_horizontal_flips(tmp_path):
    import ttakit
    from ttakit.datasets import cifar10
    from ttakit.evaluation import paired_accuracy
    from ttakit.zoo import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD, load_cifar_resnet

    test = cifar10(DATA, split="test")
    x, y = test.images[:2000], test.labels[:2000]
    model = load_cifar_resnet(MODELS / "resnet20-12fca82f.th")
    norm = ttakit.Normalize(CIFAR_RESNET_MEAN, CIFAR_RESNET_STD)
    plain = ttakit.Classifier(model, None, data_layout="NHWC", preprocess=norm).predict(x)
    flips = ttakit.Classifier(model, "identity + hflip", data_layout="NHWC", preprocess=norm).predict(x)
    r = paired_accuracy(plain == y, flips == y)
    assert 0.75 < r.accuracy_a < 0.88
    assert r.lift > 0.005 and r.fixed > r.broken and r.p_value < 0.05


@needs_data
@needs_models
def test_reproduce_resnet_cli_writes_a_paired_report(tmp_path, capsys):
    from ttakit.interfaces.cli import main

    out = tmp_path / "rn"
    code = main(["reproduce", "resnet", "--depth", "20", "--test-limit", "300", "--data", str(DATA),
                 "--weights", str(MODELS), "--out", str(out), "--no-progress"])
    assert code == 0
    text = (out / "report.md").read_text()
    assert "ResNet-20" in text and "identity + hflip" in text and "McNemar" in text
    rows = json.loads((out / "resnet20.json").read_text())["rows"]
    assert rows[0]["policy"] == "no TTA" and np.isclose(rows[0]["lift"], 0.0)


def test_missing_data_gives_a_clear_error(tmp_path):
    from ttakit.interfaces.cli import main

    code = main(["reproduce", "resnet", "--data", str(tmp_path / "nowhere"), "--weights", str(tmp_path)])
    assert code == 2


@needs_data
def test_tuning_experiment_runs_the_tutorial_cnn_through_onnx(monkeypatch):
    """The tutorial branch of `reproduce tuning` (a Keras model, run by ONNX Runtime)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    from ttakit.datasets import cifar10
    from ttakit.evaluation import PredictionCache
    from ttakit.experiments import tuning, tutorial

    real = tutorial.train_tutorial_model
    monkeypatch.setattr(tutorial, "train_tutorial_model",
                        lambda x, y, seed, epochs, batch, verbose=0: real(x[:256], y[:256], seed, 1, batch, verbose=0))
    model, kw = tuning._model(tuning.TuningConfig(model="tutorial", data=str(DATA), progress=False), lambda m: None)
    x = cifar10(str(DATA), split="test", progress=False).images[:40]
    probs = PredictionCache(model, x, data_layout="NHWC", **kw).predict("identity + hflip")
    assert probs.shape == (40, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)


@needs_data
def test_tuning_experiment_reports_on_the_held_out_half(tmp_path, monkeypatch):
    import torch

    from ttakit.experiments import tuning

    torch.manual_seed(0)
    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                               torch.nn.Flatten(), torch.nn.Linear(32, 10))
    monkeypatch.setattr(tuning, "_model", lambda cfg, log: (tiny, {"output": "logits"}))
    cfg = tuning.TuningConfig(model="tiny", data=str(DATA), budget=2, test_limit=300, out=str(tmp_path / "t"),
                              progress=False)
    s = tuning.run(cfg, log=lambda m: None)
    assert s["n_tune"] == 150 and s["n_holdout"] == 150
    names = [r["policy"] for r in s["rows"]]
    assert names[:4] == ["no TTA", "no TTA + temperature", "identity + hflip", "identity + hflip + temperature"]
    assert s["rows"][0]["lift"] == 0.0
    # one forward per candidate per tuning image; the harmful pool only adds its own views
    assert s["search_cost"]["per_candidate_per_image"] == 1.0
    harm = s["policies"]["standard + harmful pool"]
    assert harm["new_forward_passes"] == 150 * (len(tuning.candidate_views("standard,harmful"))
                                                - len(tuning.candidate_views("standard")))
    text = (tmp_path / "t" / "tiny.md").read_text()
    assert "held out" in text and "Search cost" in text


def test_segmentation_report_takes_sections_added_later(tmp_path, monkeypatch):
    from ttakit.errors import InputError
    from ttakit.experiments import segmentation

    def fake_run(cfg, log):
        return {"section": "fake", "value": 0.25}

    monkeypatch.setitem(segmentation.SECTIONS, "fake", (fake_run, lambda sec: f"## Fake\n\nvalue {sec['value']}\n"))
    cfg = segmentation.SegmentationConfig(sections=("fake",), out=str(tmp_path))
    summary = segmentation.run(cfg, log=lambda m: None)
    path = segmentation.write(summary, tmp_path)
    assert "## Fake" in path.read_text() and "value 0.25" in path.read_text()
    assert json.loads((tmp_path / "segmentation.json").read_text())["sections"][0]["section"] == "fake"
    with pytest.raises(InputError, match="unknown segmentation section"):
        segmentation.run(segmentation.SegmentationConfig(sections=("nope",)), log=lambda m: None)


def test_mediapipe_experiments_without_mediapipe_say_how_to_install(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("mediapipe") is not None:
        pytest.skip("mediapipe is installed here: this checks the message where it is not")
    from ttakit.interfaces.cli import main

    for exp in ("segmentation", "keypoints"):
        assert main(["reproduce", exp, "--shared", str(tmp_path), "--out", str(tmp_path)]) == 2
        assert "pip install --no-deps mediapipe==0.10.14" in capsys.readouterr().err
