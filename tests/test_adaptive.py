"""Adaptive policies: stages, survivors, forwards, files."""

import json

import numpy as np
import pytest
import torch

import ttakit
from ttakit.errors import PolicyError
from ttakit.merge import TemperatureScaled, Mean
from ttakit.policy import AdaptivePolicy, Policy, Rule
from ttakit.policy.adaptive import measure

SPEC = "identity @ margin<0.5 | hflip + vflip @ maxprob<0.8 | rot90 + rot270 + 2 * rot180"


class Counting(torch.nn.Module):
    """A small classifier whose confidence varies a lot between inputs; it
    counts its calls and the rows it saw."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(3 * 8 * 8, 5, generator=g) * 0.6)
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        z = x.flatten(1) - 0.5
        return (z @ self.w) * (1 + 3 * z[:, :1].abs())


class Plain(torch.nn.Module):
    """Counting's model without the counting (TorchScript can save it)."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        z = x.flatten(1) - 0.5
        return (z @ self.w) * (1 + 3 * z[:, :1].abs())


def images(n, seed=1):
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def naive(model, x, policy: AdaptivePolicy, merge):
    """Input by input: run each stage's views, merge every view so far, stop when the rule says so."""
    full = policy.unique()
    probs, forwards = [], []
    for i in range(len(x)):
        outs, ws, n_fw = [], [], 0
        for k, stage in enumerate(policy.stages):
            for v, w in stage.unique():
                with torch.no_grad():
                    outs.append(model.forward(v.apply(x[i:i + 1]))[0])
                ws.append(w)
                n_fw += 1
            p = merge(torch.stack(outs)[:, None], ws, "logits")[0]
            if k == len(policy.stages) - 1 or not bool(policy.rules[k].uncertain(p[None])[0]):
                break
        probs.append(p)
        forwards.append(n_fw)
    assert len(full) == sum(len(s.unique()) for s in policy.stages)
    return torch.stack(probs).numpy(), np.array(forwards)


@pytest.mark.parametrize("merge", [Mean(), TemperatureScaled(Mean(), 1.7), ttakit.get_merge("gmean")])
@pytest.mark.parametrize("batch_size", [4, 16])
def test_stages_equal_a_naive_loop_and_count_forwards_exactly(merge, batch_size):
    model = Counting()
    x = images(45)
    pol = AdaptivePolicy.parse(SPEC).with_merge(merge)
    res = ttakit.Classifier(model, pol, batch_size=batch_size, output="logits").run(x)
    rows_seen = sum(model.calls)
    want, fw = naive(Counting(), x, pol, merge)
    np.testing.assert_allclose(res.probs, want, atol=2e-6)
    np.testing.assert_array_equal(res.forwards, fw)
    assert res.forward_passes == fw.sum() == rows_seen  # every model input is counted, none is run twice
    assert 1 < res.mean_forwards < 6 and {1, 6} <= set(fw.tolist())  # some stop at once, some go to the end
    if isinstance(merge, Mean):
        assert set(fw.tolist()) == {1, 3, 6}
    np.testing.assert_array_equal(res.labels, want.argmax(1))


def test_survivors_of_several_chunks_share_full_batches():
    model = Counting()
    x = images(200)
    pol = AdaptivePolicy.parse(SPEC)
    res = ttakit.Classifier(model, pol, batch_size=16, output="logits").run(x)
    reach = [(res.forwards >= 1).sum(), (res.forwards >= 3).sum(), (res.forwards >= 5).sum()]
    views = [1, 2, 3]
    # pooled survivors: per stage, every forward but the last group is a full batch
    bound = sum(-(-int(n) // 16) * v for n, v in zip(reach, views))
    assert len(model.calls) <= bound
    assert sum(c < 16 for c in model.calls) <= sum(views)
    assert reach[1] > 16 and reach[2] > 16  # the test means something: survivors from several chunks


def test_everyone_going_on_is_the_full_policy():
    model = Counting()
    x = images(30)
    pol = AdaptivePolicy.parse("identity @ margin<2 | hflip + vflip @ entropy>-1 | rot90")
    a = ttakit.Classifier(model, pol, batch_size=8).run(x)
    f = ttakit.Classifier(model, pol.full, batch_size=8).run(x)
    np.testing.assert_allclose(a.probs, f.probs, atol=1e-6)
    np.testing.assert_allclose(a.spread, f.spread, atol=1e-6)
    np.testing.assert_allclose(a.agreement, f.agreement, atol=1e-6)
    assert (a.forwards == 4).all() and a.forward_passes == f.forward_passes == 120


def test_nobody_going_on_is_the_first_stage():
    model = Counting()
    x = images(30)
    a = ttakit.Classifier(model, "identity + hflip @ margin<-1 | rot90", batch_size=8).run(x)
    f = ttakit.Classifier(model, "identity + hflip", batch_size=8).run(x)
    np.testing.assert_allclose(a.probs, f.probs, atol=1e-6)
    assert (a.forwards == 2).all()


def test_iterable_input_and_uint8():
    model = Counting()
    x = (images(40) * 255).to(torch.uint8)
    pol = AdaptivePolicy.parse(SPEC)
    whole = ttakit.Classifier(model, pol, batch_size=8).run(x)
    parts = ttakit.Classifier(model, pol, batch_size=8).run(iter([x[:13], x[13:]]))
    np.testing.assert_allclose(whole.probs, parts.probs, atol=1e-6)
    np.testing.assert_array_equal(whole.forwards, parts.forwards)


def test_measures():
    p = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    np.testing.assert_allclose(measure(p, "margin"), [0.5, 0.05])
    np.testing.assert_allclose(measure(p, "maxprob"), [0.7, 0.4])
    np.testing.assert_allclose(measure(torch.tensor(p), "entropy").numpy(), measure(p, "entropy"))
    assert Rule.parse("margin<0.2").uncertain(p).tolist() == [False, True]
    assert Rule.parse("entropy>1.0").uncertain(p).tolist() == [False, True]
    with pytest.raises(PolicyError, match="continues while"):
        Rule.parse("margin>0.2")
    with pytest.raises(PolicyError, match="measures one of"):
        Rule.parse("gini<0.2")


def test_spec_and_files_round_trip(tmp_path):
    pol = AdaptivePolicy.parse(SPEC).with_merge(TemperatureScaled(Mean(), 1.3))
    assert Policy.parse(pol.spec) == pol.with_merge(None)
    for name in ("p.yaml", "p.json"):
        back = Policy.load(pol.save(tmp_path / name))
        assert isinstance(back, AdaptivePolicy) and back == pol and back.rules == pol.rules
    d = json.loads((tmp_path / "p.json").read_text())
    assert d["version"] == 3 and len(d["stages"]) == 3
    plain = pol.full
    assert json.loads(plain.save(tmp_path / "plain.json").read_text())["version"] == 2
    assert type(Policy.load(tmp_path / "plain.json")) is Policy
    assert pol.full == plain and pol.unique() == plain.unique()


def test_bad_adaptive_policies():
    with pytest.raises(PolicyError, match="each distinct view runs in one stage"):
        Policy.parse("identity @ margin<0.2 | identity + hflip")
    with pytest.raises(PolicyError, match="needs a rule"):
        Policy.parse("identity | hflip")
    with pytest.raises(PolicyError, match="no stage follows"):
        Policy.parse("identity @ margin<0.2 | hflip @ margin<0.1")
    with pytest.raises(ttakit.InputError, match="return_views"):
        ttakit.Classifier(Counting(), SPEC).run(images(4), return_views=True)


# -- tuning under a cost budget ------------------------------------------------------

def synthetic_views(n=600, v=5, c=4, seed=0):
    """Views whose mean is better than any one: each is the truth plus its own noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    base = rng.normal(0, 1.0, (n, c)) + 1.5 * np.eye(c)[y] * rng.uniform(0.2, 2, (n, 1))
    logits = base[None] + rng.normal(0, 1.2, (v, n, c))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True), y


@pytest.mark.parametrize("budget", [1.0, 1.3, 1.5, 2.2, 3.0])
def test_budget_choice_respects_the_budget_and_is_what_it_says(budget):
    from ttakit.evaluation.adaptive import simulate
    from ttakit.tuning.adaptive import choose_adaptive

    probs, y = synthetic_views()
    pol = Policy.parse("identity + hflip + vflip + rot90 + rot270").with_merge(TemperatureScaled(Mean(), 1.2))
    select = np.arange(0, 600, 2)
    c = choose_adaptive(pol, probs, y, budget, select=select)
    assert c.mean_forwards <= budget + 1e-9
    p, f = simulate(c.policy, probs[:len(c.policy.unique())])
    assert f.mean() == pytest.approx(c.mean_forwards)  # the stated cost is the policy's cost on these inputs
    nll = -np.log(p[select, y[select]]).mean()
    assert nll == pytest.approx(c.nll)
    if budget > 1:  # more budget never chooses worse, and adapts
        one = choose_adaptive(pol, probs, y, 1.0, select=select)
        assert c.objective <= one.objective
        if budget < 5:
            assert isinstance(c.policy, AdaptivePolicy) and c.objective < one.objective


def test_simulation_on_the_cache_equals_the_run():
    from ttakit.evaluation.adaptive import simulate
    from ttakit.tasks.cache import PredictionCache

    model = Counting()
    x = images(60)
    pol = AdaptivePolicy.parse(SPEC).with_merge(TemperatureScaled(Mean(), 0.8))
    res = ttakit.Classifier(model, pol, batch_size=16).run(x)
    cache = PredictionCache(model, x, batch_size=16)
    p, f = simulate(pol, cache.stack(pol.unique().views))
    np.testing.assert_array_equal(f, res.forwards)
    np.testing.assert_allclose(p, res.probs, atol=1e-5)


def test_tune_with_max_forwards():
    x = images(400, seed=5)
    m = Counting(seed=3)
    with torch.no_grad():  # labels the flips agree on: flip TTA helps this model
        y = (m(x).softmax(1) + m(x.flip(-1)).softmax(1) + m(x.flip(-2)).softmax(1)).argmax(1).numpy()
    with pytest.warns(ttakit.errors.TTAKitWarning):
        r = ttakit.tune(m, x, y, candidates="flips", budget=3, max_forwards=1.5, budget_objective="nll")
    assert len(r.full_policy.unique()) > 1.5 and isinstance(r.policy, AdaptivePolicy)
    assert r.adaptive["mean_forwards"] <= 1.5
    res = ttakit.Classifier(Counting(seed=3), r.policy).run(x)
    assert res.mean_forwards == pytest.approx(r.adaptive["mean_forwards"])
    assert "forwards per input" in r.summary()
    with pytest.raises(ttakit.InputError, match="max_forwards"):
        ttakit.tune(m, x, y, candidates="flips", max_forwards=0.5)
    # the budget chosen for accuracy (the default): the same full policy; the share of its gain kept is
    # reported from the cross-fitted folds, with an interval
    with pytest.warns(ttakit.errors.TTAKitWarning):
        a = ttakit.tune(m, x, y, candidates="flips", budget=3, max_forwards=1.5)
    assert a.full_policy == r.full_policy and a.adaptive["objective"] == "accuracy"
    assert a.adaptive["mean_forwards"] <= 1.5 and a.adaptive["guard_forwards"] <= 1.6
    lo, hi = a.adaptive["gain_kept_ci"]
    assert lo <= a.adaptive["gain_kept"] <= hi
    assert "chosen for accuracy" in a.summary() and "chosen for nll" in r.summary()
    with pytest.raises(ttakit.InputError, match="budget_objective"):
        ttakit.tune(m, x, y, candidates="flips", max_forwards=1.5, budget_objective="auc")


def test_mark_fails_an_input_alone():
    x = images(40)
    x[7, 0, 0, 0] = float("nan")
    x[33, 1, 2, 3] = float("inf")
    pol = AdaptivePolicy.parse(SPEC)
    res = ttakit.Classifier(Counting(), pol, batch_size=8, on_error="mark").run(x)
    assert sorted(res.errors) == [7, 33] and res.failed.sum() == 2 and (res.labels[[7, 33]] == -1).all()
    keep = np.setdiff1d(np.arange(40), [7, 33])
    alone = ttakit.Classifier(Counting(), pol, batch_size=8).run(x[keep])
    np.testing.assert_allclose(res.probs[keep], alone.probs, atol=1e-6)
    np.testing.assert_array_equal(res.forwards[keep], alone.forwards)
    with pytest.raises(ttakit.InputError, match="first at index 7"):
        ttakit.Classifier(Counting(), pol, batch_size=8).run(x)


def test_policy_id_tells_thresholds_apart():
    from ttakit.tasks.classification import policy_id

    m = Counting()
    a = policy_id(ttakit.Classifier(m, "identity @ margin<0.2 | hflip"))
    b = policy_id(ttakit.Classifier(m, "identity @ margin<0.3 | hflip"))
    full = policy_id(ttakit.Classifier(m, "identity + hflip"))
    assert len({a, b, full}) == 3


def test_tune_command_with_max_forwards(tmp_path, capsys):
    from ttakit.interfaces.cli import main

    x = (images(800, seed=5) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    net = torch.jit.script(Plain(Counting(seed=3).w.detach()))
    # labels the flips agree on: flip TTA helps this model
    y = ttakit.Classifier(net, "identity + hflip + vflip", data_layout="NHWC").predict(x)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    net.save(str(tmp_path / "m.pt"))
    code = main(["tune", str(tmp_path / "m.pt"), "--data", str(tmp_path / "data.npz"), "--subset", "tune",
                 "--candidates", "hflips, vflip", "--budget", "3", "--max-forwards", "1.5", "--budget-objective",
                 "accuracy",
                 "--out", str(tmp_path / "p.yaml"), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    pol = Policy.load(tmp_path / "p.yaml")
    assert isinstance(pol, AdaptivePolicy) and "Budget of 1.5 forwards per input" in out
    assert "chosen for accuracy" in out
    res = ttakit.Classifier(str(tmp_path / "m.pt"), pol, data_layout="NHWC").run(x[:300])
    assert res.mean_forwards <= 1.5 + 0.1
    assert main(["tune", str(tmp_path / "m.pt"), "--data", str(tmp_path / "data.npz"), "--max-forwards", "0.5"]) == 2
    assert "expected a number >= 1" in capsys.readouterr().err
    # evaluate draws the cost curve of the adaptive policy and its full version
    assert main(["evaluate", str(tmp_path / "m.pt"), "--data", str(tmp_path / "data.npz"), "--subset", "holdout",
                 "--policy", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "rep"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "## Cost: accuracy against forward passes" in out and "| policy | `" in out
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert 1 <= rep["forwards_per_input"] <= 1.6 and (tmp_path / "rep" / "forwards_curve.png").exists()


def test_evaluate_runs_an_adaptive_policy_as_the_classifier_does(tmp_path):
    x = images(200, seed=5)
    m = Counting(seed=3)
    with torch.no_grad():
        y = (m(x).softmax(1) + m(x.flip(-1)).softmax(1)).argmax(1).numpy()
    pol = AdaptivePolicy.parse(SPEC).with_merge(TemperatureScaled(Mean(), 0.8))
    res = ttakit.Classifier(m, pol, batch_size=32).run(x)
    rep = ttakit.evaluate(m, x, y, pol, out=tmp_path)
    # the headline is what the stages give, not the full policy
    assert rep.policy_metrics["accuracy"] == pytest.approx((res.labels == y).mean())
    assert rep.forwards_per_input == pytest.approx(res.mean_forwards)
    assert rep.forwards_per_input < len(pol.unique())
    counts = np.bincount(res.forwards)
    assert rep.forwards_histogram == {str(k): int(n) for k, n in enumerate(counts) if n}
    kinds = [r["kind"] for r in rep.forwards_curve]
    assert kinds.count("full") == len(pol.unique()) and kinds.count("policy") == 1
    # every row is what the Classifier gives with that policy (each run here for real)
    own = next(r for r in rep.forwards_curve if r["kind"] == "policy")
    assert own["forwards"] == pytest.approx(res.mean_forwards)
    for r in rep.forwards_curve:
        if r["kind"] == "adaptive" and r["policy"].startswith("margin<0.2 "):
            p = AdaptivePolicy(pol.stages, [Rule("margin", 0.2)] * 2, merge=pol.merge)
            run = ttakit.Classifier(m, p, batch_size=32).run(x)
            assert r["forwards"] == pytest.approx(run.mean_forwards)
            assert r["accuracy"] == pytest.approx((run.labels == y).mean())
        if r["policy"] == "first 3 view(s)":
            run = ttakit.Classifier(m, Policy(pol.unique().views[:3]).with_merge(pol.merge)).run(x)
            assert r["accuracy"] == pytest.approx((run.labels == y).mean())
            assert r["nll"] == pytest.approx(float(-np.log(run.probs[np.arange(200), y]).mean()), rel=1e-4)
    md = (tmp_path / "report.md").read_text()
    assert "## Cost: accuracy against forward passes" in md
    rep.timed_seconds = 1.0  # 200 tiny inputs are too quick to time: the throughput would read n/a
    assert "(estimated)" in rep.to_markdown()
    assert (tmp_path / "forwards_curve.png").stat().st_size > 1000


def test_evaluate_draws_adaptive_versions_of_a_plain_policy():
    x = images(150, seed=2)
    m = Counting(seed=1)
    y = np.arange(150) % 5
    rep = ttakit.evaluate(m, x, y, "identity + hflip + vflip")
    full = [r for r in rep.forwards_curve if r["kind"] == "full"]
    ada = [r for r in rep.forwards_curve if r["kind"] == "adaptive"]
    assert [r["forwards"] for r in full] == [1.0, 2.0, 3.0] and not rep.forwards_histogram
    assert full[-1]["accuracy"] == pytest.approx(rep.policy_metrics["accuracy"])
    # first view, then the rest: 1 or 3 forwards per input, more as the threshold rises
    fw = [r["forwards"] for r in ada]
    assert all(1 <= f <= 3 for f in fw) and fw == sorted(fw) and fw[-1] > fw[0]
    assert ttakit.evaluate(m, x, y, "identity").forwards_curve == []
