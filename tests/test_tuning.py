"""Policy search, temperature scaling, learned aggregation, evaluate, and
the tune/evaluate commands."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import ttakit
from ttakit import InputError, PolicyError
from ttakit.errors import TTAKitWarning
from ttakit.evaluation import PredictionCache, evaluate, nll
from ttakit.tuning import apply_temperature, candidate_views, fit_temperature, fit_weights, greedy_search, tune

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data" / "cifar10"
MODELS = SHARED / "models" / "cifar10-resnet"


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_fit_temperature_recovers_the_true_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(20000, 10)) * 3
    true_t = 2.5
    p_true = _softmax(z / true_t)
    y = np.array([rng.choice(10, p=row) for row in p_true])
    t = fit_temperature(_softmax(z), y)  # the model is over-confident by a factor 2.5
    assert t == pytest.approx(true_t, rel=0.06)
    assert nll(apply_temperature(_softmax(z), t), y) < nll(_softmax(z), y)


def _synthetic_views(rng, n=3000, c=5):
    """View 0: decent; view 1: a different decent view; view 2: noise."""
    y = rng.integers(0, c, n)
    onehot = np.eye(c)[y]
    good1 = _softmax(2.0 * onehot + rng.normal(size=(n, c)))
    good2 = _softmax(2.0 * onehot + rng.normal(size=(n, c)))
    noise = _softmax(rng.normal(size=(n, c)) * 2)
    return np.stack([good1, good2, noise]), y


def test_greedy_search_adds_helpful_views_and_avoids_noise():
    probs, y = _synthetic_views(np.random.default_rng(1))
    steps = greedy_search(probs, y, budget=4)
    assert len(steps) == 4
    assert {steps[0].index, steps[1].index} == {0, 1}
    assert 2 not in [s.index for s in steps[:2]]
    # the objective of every prefix is recorded and the first steps improve it
    assert steps[1].objective < steps[0].objective
    acc = greedy_search(probs, y, budget=2, objective="accuracy")
    assert acc[1].accuracy >= acc[0].accuracy


def test_learned_weights_down_weight_a_useless_view():
    probs, y = _synthetic_views(np.random.default_rng(2))
    learned = fit_weights(probs, y, "per_view")
    w = learned.weights
    assert w[2] < 0.5 * min(w[0], w[1])
    per_class = fit_weights(probs, y, "per_view_class")
    assert per_class.weights.shape == (3, 5)
    mean_nll = nll(probs.mean(0), y)
    from ttakit.tuning.aggregation import apply_weights

    assert nll(apply_weights(learned, probs), y) < mean_nll


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(24, 4))


def _tiny_data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    # labels the model partly knows: its own no-TTA prediction, with 30% noise
    y = ttakit.Classifier(_tiny_model(), data_layout="NHWC").predict(x)
    flip = rng.random(n) < 0.3
    y[flip] = rng.integers(0, 4, flip.sum())
    return x, y


def test_tune_falls_back_to_no_tta_when_only_harmful_views_are_offered():
    x, y = _tiny_data()
    res = tune(_tiny_model(), x, y, candidates="contrast(0.05) + multiply(0.1) + add(0.6)", budget=3,
               data_layout="NHWC")
    assert res.fell_back and res.policy.is_identity
    assert "no TTA" in res.reason
    assert res.guard["tuned_accuracy"] == res.guard["identity_accuracy"]


def test_tune_costs_one_forward_per_candidate_per_input_and_round_trips(tmp_path):
    x, y = _tiny_data()
    pool = "hflips, shift(dx=[-1, 1]), vflip"
    res = tune(_tiny_model(), x, y, candidates=pool, budget=4, aggregation="per_view", data_layout="NHWC")
    assert res.forward_passes == len(candidate_views(pool)) * len(x)
    assert 1 <= len(res.steps) <= 4 and res.steps[0]["view"] == "identity"
    path = res.policy.save(tmp_path / "policy.yaml")
    loaded = ttakit.Policy.load(path)
    assert loaded == res.policy and loaded.aggregation == res.policy.aggregation
    # the Classifier applies the saved aggregation; the cache gives the same answer
    clf = ttakit.Classifier(_tiny_model(), loaded, data_layout="NHWC")
    np.testing.assert_allclose(clf.predict_proba(x), res.cache.predict(loaded), atol=1e-5)
    if loaded.aggregation.get("merge") != "learned":
        assert "T=" in repr(loaded.merge)


def test_tune_rejects_bad_labels_pools_and_tiny_splits():
    x, y = _tiny_data(120)
    with pytest.raises(InputError, match="120 inputs but 119 labels"):
        tune(_tiny_model(), x, y[:-1], data_layout="NHWC")
    with pytest.raises(InputError, match="at least 50"):
        tune(_tiny_model(), x[:20], y[:20], data_layout="NHWC")
    with pytest.raises(PolicyError, match="Candidate pools: .*standard"):
        tune(_tiny_model(), x, y, candidates="hflips, nosuchview", data_layout="NHWC")
    with pytest.raises(InputError, match="class indices|integer"):
        tune(_tiny_model(), x, y + 0.5, data_layout="NHWC")
    with pytest.warns(TTAKitWarning, match="only 120 inputs"):
        tune(_tiny_model(), x, y, candidates="hflips", budget=1, data_layout="NHWC")


def test_evaluate_report_is_consistent_and_written(tmp_path):
    x, y = _tiny_data(300)
    rep = evaluate(_tiny_model(), x, y, "identity + hflip + vflip", data_layout="NHWC", out=tmp_path / "rep")
    p = rep.paired
    assert p.fixed - p.broken == pytest.approx(p.lift * rep.n)
    assert sum(r["fixed"] for r in rep.per_class) == p.fixed
    assert rep.forwards_per_input == 3 and rep.baseline_forwards_per_input == 1
    assert [c["views"] for c in rep.prefix_curve] == [1, 2, 3]
    assert rep.prefix_curve[0]["lift"] == 0.0
    assert rep.prefix_curve[-1]["accuracy"] == pytest.approx(rep.policy_metrics["accuracy"])
    for f in ("report.md", "report.json", "lift_vs_views.png", "reliability.png"):
        assert (tmp_path / "rep" / f).stat().st_size > 100
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["verdict"] == rep.verdict()
    with pytest.raises(InputError, match="300 inputs but 299 labels"):
        evaluate(_tiny_model(), x, y[:-1], "hflip", data_layout="NHWC")


def test_evaluate_gives_calibrated_policies_fair_baselines(tmp_path):
    x, y = _tiny_data(400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TTAKitWarning)
        res = tune(_tiny_model(), x[:200], y[:200], candidates="hflips, vflip", budget=2, aggregation="per_view",
                   guard_alpha=1.0, data_layout="NHWC")
    pol = res.policy
    assert pol.merge is not None  # a temperature or learned weights
    rep = evaluate(_tiny_model(), x[200:], y[200:], pol, calibration=(x[:200], y[:200]), data_layout="NHWC")
    names = [r["name"] for r in rep.fair_baselines]
    assert names[1:] == ["no TTA + temperature", "plain policy (mean of its views) + temperature"]
    # the calibrated no-TTA row: same accuracy as no TTA, the temperature fitted on the tuning half
    t = fit_temperature(PredictionCache(_tiny_model(), x[:200], data_layout="NHWC").predict("identity"), y[:200])
    assert rep.fair_baselines[1]["temperature"] == f"{t:.3f}"
    assert rep.fair_baselines[1]["accuracy"] == pytest.approx(rep.baseline_metrics["accuracy"])
    assert rep.fair_baselines[0]["nll"] == pytest.approx(rep.policy_metrics["nll"])
    md = rep.to_markdown()
    assert "## Fair baselines" in md and "calibration inputs given" in md and "The last row" in md
    # without calibration data: cross-fitted on the evaluation data, and said so
    rep2 = evaluate(_tiny_model(), x[200:], y[200:], pol, data_layout="NHWC")
    assert "cross-fitted" in rep2.to_markdown() and " / " in rep2.fair_baselines[1]["temperature"]
    # a plain policy has no calibration of its own: no extra rows
    assert evaluate(_tiny_model(), x[200:], y[200:], "identity + hflip", data_layout="NHWC").fair_baselines == []


def test_tune_and_evaluate_commands(tmp_path, capsys):
    from ttakit.interfaces.cli import main

    x, y = _tiny_data(300)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    model = tmp_path / "m.pt"
    torch.jit.script(_tiny_model()).save(str(model))
    code = main(["tune", str(model), "--data", str(tmp_path / "data.npz"), "--subset", "tune",
                 "--candidates", "hflips, vflip", "--budget", "2", "--out", str(tmp_path / "p.yaml"),
                 "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "tune part (150 of 300" in out and "saved:" in out
    code = main(["evaluate", str(model), "--data", str(tmp_path / "data.npz"), "--subset", "holdout",
                 "--policy", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "rep"), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "holdout part (150 of 300" in out and "McNemar" in out
    assert "## Fair baselines" in out and "cross-fitted" in out  # a tuned policy carries a temperature
    code = main(["evaluate", str(model), "--data", str(tmp_path / "data.npz"), "--subset", "holdout",
                 "--policy", str(tmp_path / "p.yaml"), "--calibrate-on", "tune", "--no-progress"])
    assert code == 0 and "fitted on the 150 calibration inputs" in capsys.readouterr().out
    assert (tmp_path / "rep" / "report.md").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: ttakit.policy\nversion: 1\nviews:\n  - view: warp\n")
    code = main(["evaluate", str(model), "--data", str(tmp_path / "data.npz"), "--policy", str(bad)])
    assert code == 2
    assert "warp" in capsys.readouterr().err


@pytest.mark.skipif(not (DATA.is_dir() and MODELS.is_dir()), reason="../shared CIFAR-10 and ResNets not found (present in CI)")
def test_tuned_resnet20_is_never_worse_than_no_tta_on_held_out_data():
    from ttakit.datasets import cifar10
    from ttakit.zoo import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD, load_cifar_resnet

    test = cifar10(DATA)
    x, y = test.images[:1600], test.labels[:1600]
    model = load_cifar_resnet(MODELS / "resnet20-12fca82f.th")
    kw = dict(data_layout="NHWC", preprocess=ttakit.Normalize(CIFAR_RESNET_MEAN, CIFAR_RESNET_STD), output="logits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TTAKitWarning)
        res = tune(model, x[:1000], y[:1000], candidates="hflips, shift(dx=[-2, 2]), harmful", budget=3, **kw)
    # cross-fitted, all 1,000 tuning images are evidence: hflip's gain is significant (the single 300-image
    # guard split of before fell back to no TTA here), and no harmful view comes with it
    assert not res.fell_back and "hflip" in res.policy.spec
    assert not any(v in res.policy.spec for v in ("rot90", "vflip", "rotate", "contrast(0.3"))
    hold = PredictionCache(model, x[1000:], **kw)
    rep = evaluate(model, x[1000:], y[1000:], res.policy, cache=hold)
    assert rep.policy_metrics["accuracy"] >= rep.baseline_metrics["accuracy"]
    assert rep.policy_metrics["nll"] < rep.baseline_metrics["nll"]  # the temperature still calibrates
    # with the significance test off, the same search keeps its views (the tie rule alone)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TTAKitWarning)
        loose = tune(model, x[:1000], y[:1000], candidates="hflips, shift(dx=[-2, 2]), harmful", budget=3,
                     guard_alpha=1.0, cache=res.cache, **kw)
    assert not loose.fell_back and "hflip" in loose.policy.spec
    assert evaluate(model, x[1000:], y[1000:], loose.policy, cache=hold).paired.lift > 0


def test_tune_command_guard_options(tmp_path, capsys):
    from ttakit.interfaces.cli import main

    x, y = _tiny_data(300)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    model = tmp_path / "m.pt"
    torch.jit.script(_tiny_model()).save(str(model))
    base = ["tune", str(model), "--data", str(tmp_path / "data.npz"), "--candidates", "hflips", "--budget", "2",
            "--out", str(tmp_path / "p.yaml"), "--no-progress"]
    assert main(base + ["--guard-folds", "1"]) == 2
    assert "--guard-folds must be at least 2" in capsys.readouterr().err
    assert main(base + ["--guard-alpha", "0"]) == 2
    assert "--guard-alpha" in capsys.readouterr().err
    assert main(base + ["--guard-folds", "3", "--guard-alpha", "0.1"]) == 0
    assert "3-fold cross-fitting" in capsys.readouterr().out
