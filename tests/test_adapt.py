"""Test-time adaptation (:mod:`ttakit.adapt`, ``Classifier(adapt=...)``):
the user's model is never changed, the statistics are the prior-weighted mix
of a naive reference, non-torch models get one clear error, calls are
independent, and the default guard keeps clean streams (random order, sorted
by class, small chunks) within 0.5 points of no adaptation on the real zoo
ResNet-20 while corrupted streams gain."""

import threading
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ttakit
from ttakit.adapt import Memo, Norm, Tent
from ttakit.errors import InputError, ModelLoadError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
# the synthetic streams are shifted on purpose (values beyond [0, 1])
pytestmark = pytest.mark.filterwarnings("ignore:float images range above 1")
# ../shared beside the checkout, or where TTAKIT_DATA / TTAKIT_MODELS point (a worktree elsewhere)
DATA = Path(os.environ.get("TTAKIT_DATA") or SHARED / "data" / "cifar10")
MODELS = Path(os.environ.get("TTAKIT_MODELS") or SHARED / "models" / "cifar10-resnet")
needs_shared = pytest.mark.skipif(not ((DATA / "cifar-10-batches-bin").is_dir() and MODELS.is_dir()),
                                  reason="../shared CIFAR-10 and the published ResNets not found (present in CI)")


def small_net(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():  # statistics of inputs around 0 (as if trained there)
        net[1].running_mean.uniform_(-0.1, 0.1)
        net[1].running_var.uniform_(0.5, 1.0)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.2, 0.2)
    return net.eval()


def shifted(n=64, seed=0, scale=3.0, offset=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g) * scale + offset


EVERY_MODE = [Norm(min_inputs=1), Tent(min_inputs=1), Tent(min_inputs=1, episodic=True, steps=2),
              Tent(min_inputs=1, optimizer="sgd", lr=0.1), Memo(), Memo(stats=True, min_inputs=1)]


@pytest.mark.parametrize("mode", EVERY_MODE, ids=[f"{m.name}-{i}" for i, m in enumerate(EVERY_MODE)])
def test_the_users_model_is_never_changed(mode):
    net = small_net()
    net.train()  # its own flags too
    before = {k: v.clone() for k, v in net.state_dict().items()}
    grads = [p.requires_grad for p in net.parameters()]
    clf = ttakit.Classifier(net, "identity + hflip", adapt=mode, batch_size=16)
    res = clf.run(shifted())
    assert np.isfinite(res.probs).all()
    after = net.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert [p.requires_grad for p in net.parameters()] == grads and net.training
    assert all(p.grad is None for p in net.parameters())


def test_adaptation_changes_predictions_on_a_shifted_stream():
    net = small_net()
    x = shifted()
    plain = ttakit.Classifier(net, adapt=None).predict_proba(x)
    for mode in (Norm(min_inputs=1), Tent(min_inputs=1, lr=0.05)):
        assert not np.allclose(plain, ttakit.Classifier(net, adapt=mode).predict_proba(x), atol=1e-4)


def test_norm_uses_the_prior_weighted_mix_of_the_streams_statistics():
    """Reference: the naive per-layer formula, for one chunk and for two."""
    net = small_net()
    x = shifted(48)
    prior = 10.0

    def reference(chunks):
        out = []
        feats = torch.cat([net[0](c) for c in chunks]).detach()
        for k in range(1, len(chunks) + 1):
            seen = torch.cat([net[0](c) for c in chunks[:k]]).detach().double()
            n = seen.shape[0]
            w = n / (prior + n)
            mean = seen.mean((0, 2, 3))
            var = seen.var((0, 2, 3), unbiased=False)
            ref = small_net()
            ref[1].running_mean.copy_((1 - w) * net[1].running_mean.double() + w * mean)
            ref[1].running_var.copy_((1 - w) * net[1].running_var.double() + w * var)
            with torch.no_grad():
                out.append(torch.softmax(ref(chunks[k - 1]), -1))
        assert feats.shape[0] == 48
        return torch.cat(out).numpy()

    mode = Norm(prior=prior, min_inputs=1, shift_threshold=0)
    one = ttakit.Classifier(net, adapt=mode, batch_size=48, output="logits").predict_proba(x)
    assert np.allclose(one, reference([x]), atol=1e-5)
    two = ttakit.Classifier(net, adapt=mode, batch_size=24, output="logits").predict_proba(x)
    assert np.allclose(two, reference([x[:24], x[24:]]), atol=1e-5)


def test_views_do_not_change_the_statistics():
    """The statistics come from the inputs as given, once per chunk: with
    views the identity view's prediction is the same as without them."""
    net = small_net()
    x = shifted()
    mode = Norm(min_inputs=1)
    alone = ttakit.Classifier(net, "identity", adapt=mode).predict_proba(x)
    res = ttakit.Classifier(net, "identity + hflip + vflip", adapt=mode).run(x, return_views=True)
    assert np.allclose(res.view_probs[0], alone, atol=1e-6)


def test_unshifted_or_short_streams_keep_the_model_exactly():
    net = small_net()
    x = shifted(scale=1.0, offset=0.0)[:8]  # fewer inputs than the default floor
    plain = ttakit.Classifier(net).predict_proba(x)
    for mode in ("norm", "tent"):
        assert np.array_equal(plain, ttakit.Classifier(net, adapt=mode).predict_proba(x))


def test_calls_below_the_floor_run_the_model_itself(monkeypatch):
    """A call known to hold fewer than ``min_inputs`` inputs never builds an
    adapted copy; one whose size is not known in advance (a generator) does,
    and its guard keeps the model's own statistics exactly."""
    from ttakit import adapt

    net = small_net()
    x = shifted(40)
    plain = ttakit.Classifier(net, batch_size=8).predict_proba(x)
    built = []
    real = adapt.AdaptedModel

    def spy(*a, **k):
        built.append(1)
        return real(*a, **k)

    monkeypatch.setattr(adapt, "AdaptedModel", spy)
    clf = ttakit.Classifier(net, adapt="norm", batch_size=8)
    assert np.array_equal(clf.predict_proba(x), plain) and not built
    streamed = clf.predict_proba(x[s:s + 8] for s in range(0, 40, 8))
    assert len(built) == 1 and np.array_equal(streamed, plain)
    assert np.array_equal(ttakit.Classifier(net, adapt=Norm(min_inputs=40), batch_size=8).predict_proba(x[:39]),
                          plain[:39]) and len(built) == 1
    ttakit.Classifier(net, adapt=Norm(min_inputs=40, shift_threshold=0), batch_size=8).predict_proba(x)
    assert len(built) == 2


def test_calls_are_independent_and_thread_safe():
    net = small_net()
    x = shifted(64)
    clf = ttakit.Classifier(net, "identity + hflip", adapt=Tent(min_inputs=1, lr=0.05), batch_size=16)
    first = clf.predict_proba(x)
    assert np.array_equal(first, clf.predict_proba(x))  # nothing carried over from the first call
    other = shifted(64, seed=5, scale=0.2)
    results = {}

    def work(i):
        results[i] = clf.predict_proba(x if i % 2 == 0 else other)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert np.array_equal(results[0], first) and np.array_equal(results[2], first)
    assert np.array_equal(results[1], results[3])


def test_models_that_cannot_adapt_get_one_clear_error():
    with pytest.raises(ModelLoadError, match="needs a PyTorch model"):
        ttakit.Classifier(lambda a: np.ones((len(a), 3)) / 3, adapt="norm")
    with pytest.raises(ModelLoadError, match="batch-norm"):
        ttakit.Classifier(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)), adapt="tent")
    with pytest.raises(ModelLoadError, match="needs a PyTorch model"):
        ttakit.Classifier(small_net(), adapt="norm", runtime="onnx")
    with pytest.raises(ModelLoadError, match="TorchScript model"):  # it has batch norms, but runs no hooks
        ttakit.Classifier(torch.jit.script(small_net()), adapt="norm")
    with pytest.raises(InputError, match="adapt must be one of"):
        ttakit.Classifier(small_net(), adapt="bn")
    with pytest.raises(InputError, match="two or more distinct views"):
        ttakit.Classifier(small_net(), "identity", adapt="memo").run(shifted(4))
    with pytest.raises(InputError, match="lr"):
        Tent(lr=-1)


def test_memo_adapts_each_input_on_its_own():
    """MEMO's per-input parameters: an input's prediction does not depend on
    the other inputs of its chunk."""
    net = small_net()
    x = shifted(12)
    clf = ttakit.Classifier(net, "identity + hflip + vflip", adapt=Memo(lr=0.5), batch_size=12)
    together = clf.predict_proba(x)
    alone = np.concatenate([clf.predict_proba(x[i:i + 1]) for i in range(4)])
    assert np.allclose(together[:4], alone, atol=1e-5)
    plain = ttakit.Classifier(net, "identity + hflip + vflip").predict_proba(x)
    assert not np.allclose(together, plain, atol=1e-4)
    # the adapted marginal is sharper (lower entropy) than the plain one
    def ent(p):
        return -(p * np.log(np.clip(p, 1e-12, 1))).sum(-1)
    assert ent(together).mean() < ent(plain).mean()


@pytest.fixture(scope="module")
def cifar():
    from ttakit.datasets import cifar10
    from ttakit.zoo import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD, load_cifar_resnet

    test = cifar10(DATA, split="test")
    idx = np.random.default_rng(0).permutation(len(test.labels))[:400]
    return (load_cifar_resnet(20, root=MODELS), ttakit.Normalize(CIFAR_RESNET_MEAN, CIFAR_RESNET_STD),
            test.images[idx], test.labels[idx])


def error(cifar, xs, ys, adapt, batch_size=200, policy="identity"):
    model, pre = cifar[:2]
    clf = ttakit.Classifier(model, policy, data_layout="NHWC", preprocess=pre, batch_size=batch_size,
                            adapt=adapt, output="logits")
    return 100 * np.mean(clf.predict(xs) != ys)


@needs_shared
def test_default_guard_on_clean_streams(cifar):
    _, _, x, y = cifar
    order = np.argsort(y, kind="stable")
    base = error(cifar, x, y, None)
    for xs, ys, bs in ((x, y, 200), (x[order], y[order], 200), (x, y, 1), (x, y, 4), (x, y, 16),
                       (x[order], y[order], 16)):
        for mode in ("norm", "tent"):
            assert error(cifar, xs, ys, mode, bs) <= base + 0.5, (mode, bs)


@needs_shared
def test_adaptation_gains_on_a_corrupted_stream(cifar):
    from ttakit.shift import corrupt

    _, _, x, y = cifar
    xs = corrupt(x, "gaussian_noise", 5, seed=1)
    none = error(cifar, xs, y, None)
    norm = error(cifar, xs, y, "norm")
    assert norm < none - 15
    assert error(cifar, xs, y, "tent") <= norm + 1.0


def test_evaluate_pairs_adaptation_against_none():
    from ttakit.evaluation import evaluate

    net = small_net()
    x = shifted(96)
    y = np.random.default_rng(0).integers(0, 3, size=96)
    rep = evaluate(net, x, y, "identity + hflip", adapt=Norm(min_inputs=1), batch_size=32)
    assert [r["what"] for r in rep.adaptation] == ["baseline + adaptation vs baseline",
                                                   "policy + adaptation vs policy"]
    plain = ttakit.Classifier(net, "identity + hflip", batch_size=32).predict(x)
    adapted = ttakit.Classifier(net, "identity + hflip", batch_size=32, adapt=Norm(min_inputs=1)).predict(x)
    row = rep.adaptation[1]
    assert np.isclose(row["accuracy_a"], np.mean(plain == y)) and np.isclose(row["accuracy_b"], np.mean(adapted == y))
    assert np.isclose(rep.policy_metrics["accuracy"], np.mean(adapted == y))
    assert row["ci_low"] <= row["lift"] <= row["ci_high"]
    assert "## Test-time adaptation" in rep.to_markdown()
    assert not evaluate(net, x, y, "identity + hflip").adaptation
    with pytest.raises(InputError, match="cannot be cached view by view"):
        evaluate(net, x, y, "identity + hflip", adapt="memo")


def test_cli_commands_take_adapt():
    from ttakit.interfaces.cli import build_parser

    parser = build_parser()
    for cmd in ("predict", "evaluate", "tune"):
        args = parser.parse_args([cmd, "model.pt"] + (["img.png"] if cmd == "predict" else ["--data", "d"])
                                 + ["--adapt", "tent"])
        assert args.adapt == "tent"
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "m.pt", "--data", "d", "--adapt", "bn"])


def test_policy_id_says_whether_the_model_adapts():
    from ttakit.tasks.classification import policy_id

    net = small_net()
    plain = policy_id(ttakit.Classifier(net, "identity + hflip"))
    assert plain == policy_id(ttakit.Classifier(net, "identity + hflip", adapt=None))
    ids = {policy_id(ttakit.Classifier(net, "identity + hflip", adapt=a)) for a in ("norm", "tent", Tent(lr=0.1))}
    assert len(ids) == 3 and plain not in ids


def test_memo_with_stream_statistics_over_several_chunks():
    """MEMO on top of the stream statistics, over several chunks of different sizes."""
    net = small_net()
    x = shifted(20)
    mode = Memo(stats=True, min_inputs=1, lr=0.5)
    together = ttakit.Classifier(net, "identity + hflip", adapt=mode, batch_size=7).predict_proba(x)
    # the first chunk's inputs do not depend on the chunk size once the statistics are the same
    first = ttakit.Classifier(net, "identity + hflip", adapt=mode, batch_size=7).predict_proba(x[:7])
    assert np.allclose(together[:7], first, atol=1e-5) and np.isfinite(together).all()


def test_cli_refuses_adapt_where_it_does_not_apply(capsys):
    from ttakit.interfaces.cli import main

    code = main(["evaluate", "model.onnx", "--data", "d.csv", "--target", "y", "--adapt", "norm"])
    assert code != 0 and "--adapt is for image classification" in capsys.readouterr().err
    code = main(["predict", "model.onnx", "img.png", "--task", "keypoints", "--adapt", "norm"])
    assert code != 0 and "--adapt is for image classification" in capsys.readouterr().err
    code = main(["predict", "model.onnx", "img.png", "--task", "detect", "--adapt", "tent", "--out", "o"])
    assert code != 0 and "--task detect takes --adapt norm only" in capsys.readouterr().err
    code = main(["tune", "model.onnx", "--data", "d", "--task", "segment", "--adapt", "norm"])
    assert code != 0 and "--adapt is for image classification" in capsys.readouterr().err


@needs_shared
def test_tune_treats_adaptation_as_a_candidate_the_guard_must_accept(cifar):
    """On a corrupted stream the adapted model passes the guard and the views
    are searched on it; on the clean stream adaptation is not kept (the shift
    test leaves the model as it is, so there is no evidence for it)."""
    from ttakit.shift import corrupt

    model, pre, x, y = cifar
    kw = dict(data_layout="NHWC", preprocess=pre, output="logits", batch_size=200, progress=False)
    xs = corrupt(x, "gaussian_noise", 5, seed=1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shifted = ttakit.tune(model, xs, y, candidates="flips", budget=2, adapt="norm", **kw)
        clean = ttakit.tune(model, x, y, candidates="flips", budget=2, adapt="norm", **kw)
    a = shifted.adaptation
    assert a["kept"] and a["accuracy_adapted"] > a["accuracy_plain"] + 0.1 and a["p"] < 0.05
    assert "pass --adapt norm" in shifted.summary()
    assert not clean.adaptation["kept"] and "not kept" in clean.summary()
    # the clean search ran on the model as it is: its no-TTA accuracy is the plain one
    assert clean.guard["identity_accuracy"] == pytest.approx(clean.adaptation["accuracy_plain"])
