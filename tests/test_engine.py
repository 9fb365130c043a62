"""The engine and Classifier against a naive reference: every view run on the
whole data set one at a time, stacked, and merged with NumPy."""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")

from functools import lru_cache

import numpy as np
import pytest
import torch
from torch import nn

from ttakit import Classifier, Policy
from ttakit.merge import WeightedMean
from ttakit.models import CallableModel, SklearnModel, as_model

N, C = 29, 5
MERGES = ["mean", "sum", "gmean", "logits", "max", "min", "vote", "sharpen", "weighted"]
RANDOM_FLIPS = Policy.random(7, seed=0, horizontal_flip=True)
SQUARE_POLICIES = {
    "random_flips": RANDOM_FLIPS,
    "d4": Policy.parse("d4"),
    "hflips_shift": Policy.parse("hflips * shift(dx=[-2, 2])"),
    "scale": Policy.parse("scale(0.9, 1.1)"),
    "photometric": Policy.parse("identity + 0.5 * multiply(1.2) + 2 * contrast(0.8) + identity"),
}




# -- data and models ---------------------------------------------------------

@lru_cache(maxsize=None)
def images(h=8, w=8, dtype="uint8", seed=0) -> np.ndarray:
    """NCHW images."""
    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        return rng.integers(0, 256, (N, 3, h, w), dtype=np.uint8)
    return rng.random((N, 3, h, w)).astype(dtype)


def as_float(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x)
    return t.float() / 255.0 if x.dtype == np.uint8 else t.float()


def cnn(seed=0, softmax=False) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, C)]
    if softmax:
        layers.append(nn.Softmax(-1))
    return nn.Sequential(*layers).eval()


class Recorder(nn.Module):
    """Wraps a module and records the batch sizes and train flags it sees."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.sizes: list[int] = []
        self.modes: list[bool] = []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        self.modes.append(self.training)
        return self.inner(x)


# -- the naive reference -------------------------------------------------------

def naive_view_outputs(fn, x: torch.Tensor, policy: Policy) -> np.ndarray:
    """``(V, N, C)``: one full pass over the data per view of the full
    (not deduplicated) policy."""
    outs = []
    for v, _ in policy:
        y = fn(v.apply(x))
        outs.append(np.asarray(y.detach().numpy() if isinstance(y, torch.Tensor) else y, dtype=np.float64))
    return np.stack(outs)


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_merge(name, out, w, kind, extra=None):
    """Scores and labels of merge ``name`` in NumPy; ``extra`` holds the
    weighted merge's weights, one per view of ``out``."""
    p = np_softmax(out) if kind == "logits" else out
    logp = np.log(p) if kind == "logits" else np.log(np.maximum(out, 1e-12))
    wn = (w / w.sum())[:, None, None]
    if name == "mean":
        s = (p * wn).sum(0)
    elif name == "sum":
        s = (p * w[:, None, None]).sum(0)
    elif name == "gmean":
        s = np_softmax((logp * wn).sum(0))
    elif name == "logits":
        s = np_softmax(((out if kind == "logits" else logp) * wn).sum(0))
    elif name == "max":
        s = p[w > 0].max(0)
        s = s / s.sum(-1, keepdims=True)
    elif name == "min":
        s = p[w > 0].min(0)
        s = s / s.sum(-1, keepdims=True)
    elif name == "sharpen":
        q = np_softmax(logp / 0.5)
        s = (q * wn).sum(0)
    elif name == "weighted":
        ww = w * extra
        s = (p * (ww / ww.sum())[:, None, None]).sum(0)
    elif name == "vote":
        s = np.zeros(out.shape[1:])
        for k in range(len(out)):
            s[np.arange(out.shape[1]), out[k].argmax(-1)] += w[k]
        s = s / w.sum()
        mean = (p * wn).sum(0)
        tied = s >= s.max(-1, keepdims=True) - 1e-9
        return s, np.where(tied, mean, -1.0).argmax(-1)
    else:  # pragma: no cover
        raise AssertionError(name)
    return s, s.argmax(-1)


def check_against_naive(model, fn, policy, x_nchw, kind, *, layout="NCHW", batch_size=7, merges=MERGES,
                        x_in=None, model_layout=None):
    """Run the Classifier for every merge and compare with the reference."""
    ref_out = naive_view_outputs(fn, as_float(x_nchw), policy)
    w = policy.weights
    distinct = policy.unique().views
    extra_distinct = np.linspace(0.5, 2.0, len(distinct))
    extra = np.array([extra_distinct[distinct.index(v)] for v in policy.views])
    if x_in is None:
        x_in = x_nchw.transpose(0, 2, 3, 1) if layout == "NHWC" else x_nchw
    for name in merges:
        merge = WeightedMean(extra_distinct) if name == "weighted" else name
        res = Classifier(model, policy, merge, data_layout=layout, model_layout=model_layout,
                         batch_size=batch_size).run(x_in)
        scores, labels = np_merge(name, ref_out, w, kind, extra)
        probs = scores / scores.sum(-1, keepdims=True)
        assert res.probs.shape == (len(x_nchw), ref_out.shape[-1])
        np.testing.assert_allclose(res.probs, probs, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(res.scores, scores, atol=1e-5 * max(1, w.sum()), err_msg=name)
        assert np.array_equal(res.labels, labels), name
        assert res.output_kind == kind
        assert res.forward_passes == len(distinct) * len(x_nchw)
        assert res.views == distinct
    return ref_out


def torch_fn(module):
    def fn(x):
        with torch.no_grad():
            return module(x)
    return fn


# -- torch ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("policy", list(SQUARE_POLICIES), ids=str)
def test_torch_matches_naive(policy, layout, dtype):
    model = cnn(0)
    bs = 7 if dtype == "uint8" else 13
    check_against_naive(model, torch_fn(model), SQUARE_POLICIES[policy], images(dtype=dtype), "logits",
                        layout=layout, batch_size=bs)


@pytest.mark.parametrize("policy", ["random_flips", "d4", "photometric"])
def test_torch_softmax_model_matches_naive(policy):
    model = cnn(1, softmax=True)
    check_against_naive(model, torch_fn(model), SQUARE_POLICIES[policy], images(dtype="float64"), "probs",
                        layout="NCHW", batch_size=13)


@pytest.mark.parametrize("spec", ["rot90s", "identity + rot90 + 2 * transpose", "rot90 * shift(dx=[-1, 1])",
                                  "identity + rot90 * scale(1.1)"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_non_square_views_of_several_sizes(spec, layout):
    model = cnn(2)
    x = images(h=6, w=10)
    check_against_naive(model, torch_fn(model), Policy.parse(spec), x, "logits", layout=layout,
                        batch_size=7, merges=["mean", "vote", "max"])


# -- other adapters ------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_session(tmp_path_factory):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = cnn(3)
    path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, and the one asked for
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, torch.rand(2, 3, 8, 8), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]), path, model


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("policy", ["random_flips", "d4", "hflips_shift"])
def test_onnx_matches_naive(onnx_session, policy, layout):
    session, _, _ = onnx_session

    def fn(x):
        return session.run(None, {"x": x.numpy()})[0]

    check_against_naive(session, fn, SQUARE_POLICIES[policy], images(), "logits", layout=layout, batch_size=13)


def test_onnx_from_a_path_matches_the_torch_model(onnx_session):
    _, path, model = onnx_session
    x = images(dtype="float32")
    a = Classifier(str(path), "d4", batch_size=13).run(x)
    b = Classifier(model, "d4", batch_size=13).run(x)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)


@pytest.fixture(scope="module")
def keras_model():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("these tests run Keras on the torch backend")
    keras.utils.set_random_seed(0)
    layers = keras.layers
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        layers.Conv2D(4, 3, padding="same", activation="relu"),
        layers.AveragePooling2D(4),
        layers.Flatten(),
        layers.Dense(C),
    ])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("policy", ["random_flips", "hflips_shift", "scale"])
def test_keras_matches_naive(keras_model, policy, layout):
    import keras

    def fn(x):  # Keras wants NHWC
        return keras.ops.convert_to_numpy(keras_model(x.permute(0, 2, 3, 1).numpy(), training=False))

    assert as_model(keras_model).layout == "NHWC"
    check_against_naive(keras_model, fn, SQUARE_POLICIES[policy], images(), "logits", layout=layout,
                        batch_size=13)


def test_keras_onnx_runtime_gives_the_same_predictions(keras_model):
    x = images()
    a = Classifier(keras_model, "d4", batch_size=13).run(x)
    b = Classifier(keras_model, "d4", batch_size=13, model_options={"runtime": "onnx"}).run(x)
    assert b.forward_passes == a.forward_passes
    np.testing.assert_allclose(b.probs, a.probs, atol=1e-5)
    np.testing.assert_array_equal(b.labels, a.labels)


W_NUMPY = np.random.default_rng(5).normal(size=(3 * 8 * 8, C)) * 0.1


def numpy_nchw(a):
    return a.reshape(len(a), -1) @ W_NUMPY


def numpy_nhwc(a):
    return numpy_nchw(a.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("policy", ["random_flips", "d4", "hflips_shift"])
def test_numpy_callable_matches_naive(policy, layout):
    def fn(x):
        return numpy_nchw(x.numpy().astype(np.float64))

    # a bare callable consumes the data's layout unless told otherwise
    check_against_naive(numpy_nchw, fn, SQUARE_POLICIES[policy], images(), "logits", layout=layout, batch_size=7,
                        model_layout="NCHW")
    check_against_naive(numpy_nchw if layout == "NCHW" else numpy_nhwc, fn, SQUARE_POLICIES[policy], images(),
                        "logits", layout=layout, batch_size=7, merges=["mean"])
    # a callable that consumes NHWC gives the same result
    check_against_naive(CallableModel(numpy_nhwc, layout="NHWC"), fn, SQUARE_POLICIES[policy], images(),
                        "logits", layout=layout, batch_size=13, merges=["mean", "vote"])


@pytest.fixture(scope="module")
def sklearn_model():
    lm = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(6)
    xs = rng.random((80, 3 * 8 * 8))
    ys = (xs[:, :96].mean(1) > xs[:, 96:].mean(1)).astype(int) + 2 * (xs[:, ::2].mean(1) > 0.5)
    return lm.LogisticRegression(max_iter=200).fit(xs, ys)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("policy", ["random_flips", "d4", "photometric"])
def test_sklearn_matches_naive(sklearn_model, policy, layout):
    # the estimator sees each image flattened in the data's own layout (as it was fitted)
    def fn(x):
        x = x if layout == "NCHW" else x.permute(0, 2, 3, 1)
        return sklearn_model.predict_proba(x.numpy().reshape(len(x), -1).astype(np.float64))

    assert isinstance(as_model(sklearn_model), SklearnModel)
    check_against_naive(sklearn_model, fn, SQUARE_POLICIES[policy], images(dtype="float32"), "probs",
                        layout=layout, batch_size=13)


# -- dedupe, bookkeeping, streaming -------------------------------------------------

def test_dedupe_false_same_probs_more_passes():
    model = Recorder(cnn(0))
    x = images()
    assert len(RANDOM_FLIPS) == 7 and len(RANDOM_FLIPS.unique()) == 2
    for merge in MERGES[:-1]:
        a = Classifier(model, RANDOM_FLIPS, merge, batch_size=13).run(x)
        b = Classifier(model, RANDOM_FLIPS, merge, batch_size=13, dedupe=False).run(x)
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-6, err_msg=merge)
        assert np.array_equal(a.labels, b.labels)
        assert a.forward_passes == 2 * N and b.forward_passes == 7 * N
        assert b.forward_passes / a.forward_passes == 7 / 2
        assert len(b.views) == 7 and list(b.weights) == [1.0] * 7
        assert sorted(a.weights) == sorted(RANDOM_FLIPS.unique().weights) and a.weights.sum() == 7
    model.sizes.clear()
    Classifier(model, RANDOM_FLIPS, dedupe=False, batch_size=13).run(x)
    assert sum(model.sizes) == 7 * N


def test_forward_passes_count_model_inputs():
    model = Recorder(cnn(0))
    for spec, distinct in [("d4", 8), ("identity + hflip + hflip + identity", 2), ("flips * scale(0.9, 1.1)", 6)]:
        model.sizes.clear()
        res = Classifier(model, spec, batch_size=16).run(images())
        assert res.forward_passes == distinct * N == sum(model.sizes)


def test_return_views():
    model = cnn(0)
    x = images()
    res = Classifier(model, "d4", batch_size=13).run(x, return_views=True)
    assert res.view_probs.shape == (8, N, C)
    ref = naive_view_outputs(torch_fn(model), as_float(x), Policy.parse("d4"))
    np.testing.assert_allclose(res.view_probs, np_softmax(ref), atol=1e-5)
    np.testing.assert_allclose(res.view_probs.mean(0), res.probs, atol=1e-6)
    assert Classifier(model, "d4").run(x).view_probs is None
    dup = Classifier(model, RANDOM_FLIPS).run(x, return_views=True)
    assert dup.view_probs.shape == (2, N, C)


def test_streaming_inputs_match_the_array():
    model = cnn(0)
    x = images().transpose(0, 2, 3, 1)  # NHWC uint8
    y = np.arange(N)
    clf = Classifier(model, "hflips * shift(dx=[-2, 2])", "gmean", data_layout="NHWC", batch_size=13)
    ref = clf.run(x)

    def batches():
        for s in range(0, N, 10):
            yield x[s:s + 10]

    def pairs():
        for s in range(0, N, 4):
            yield x[s:s + 4], y[s:s + 4]

    for data in (batches(), pairs(), [(x[:20], y[:20]), (x[20:], y[20:])], [x[:3], x[3:]],
                 torch.from_numpy(x), (torch.from_numpy(x[s:s + 6]) for s in range(0, N, 6))):
        res = clf.run(data)
        assert len(res) == N
        np.testing.assert_allclose(res.probs, ref.probs, atol=1e-6)
        assert np.array_equal(res.labels, ref.labels)
        assert res.forward_passes == ref.forward_passes


@pytest.mark.parametrize("bs", [1, 3, 5, 7, 8, 13, 64])
def test_forward_batches_never_exceed_batch_size(bs):
    model = Recorder(cnn(0))
    res = Classifier(model, "d4 + shift(1.5)", batch_size=bs).run(images())
    assert max(model.sizes) <= bs
    assert sum(model.sizes) == res.forward_passes == 9 * N
    # and non-square views: each output size is its own batch
    model.sizes.clear()
    Classifier(model, "identity + rot90 + hflip", batch_size=bs).run(images(h=6, w=10))
    assert max(model.sizes) <= bs and sum(model.sizes) == 3 * N


def test_predict_and_predict_proba():
    clf = Classifier(cnn(0), "d4", batch_size=13)
    res = clf.run(images())
    np.testing.assert_allclose(clf.predict_proba(images()), res.probs, atol=1e-7)
    assert np.array_equal(clf.predict(images()), res.labels)
    assert res.labels.dtype == np.int64 and res.probs.dtype == np.float32


def test_output_auto_detection():
    x = images()
    assert Classifier(cnn(0, softmax=True), "d4").run(x).output_kind == "probs"
    assert Classifier(cnn(0), "d4").run(x).output_kind == "logits"
    a = Classifier(cnn(0, softmax=True), "d4", "gmean", output="probs").run(x)
    b = Classifier(cnn(0, softmax=True), "d4", "gmean").run(x)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-7)
    # logits declared as logits, and the same logits as probabilities after a softmax
    c = Classifier(cnn(0), "d4", "gmean", output="logits").run(x)
    np.testing.assert_allclose(b.probs, c.probs, atol=1e-5)


def test_train_flag_is_restored():
    inner = cnn(0)
    model = Recorder(inner)
    model.train()
    inner[0].eval()  # a frozen part of a model in training
    Classifier(model, "hflips", batch_size=13).run(images())
    assert model.modes and not any(model.modes)  # ran in eval mode
    assert model.training and inner.training and not inner[0].training and inner[1].training
    model.eval()
    Classifier(model, "hflips").run(images())
    assert not model.training and not inner.training


def test_uncertainty_for_a_view_invariant_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, C)).eval()
    res = Classifier(model, "d4 + random(5, seed=1, horizontal_flip=true)", batch_size=13).run(images())
    np.testing.assert_allclose(res.agreement, 1.0)
    np.testing.assert_allclose(res.spread, 0.0, atol=1e-6)
    p = res.probs.astype(np.float64)
    np.testing.assert_allclose(res.entropy, -(p * np.log(p)).sum(-1), atol=1e-5)
    # a photometric view changes the pooled colour, so views disagree somewhat
    res2 = Classifier(model, "identity + multiply(0.5)").run(images())
    assert res2.spread.max() > 1e-4


def test_uncertainty_formulas():
    res = Classifier(cnn(4), "identity + 2 * hflip + 0.5 * rot90 + shift(1.5)", batch_size=13).run(
        images(), return_views=True)
    vp = res.view_probs.astype(np.float64)
    wn = res.weights / res.weights.sum()
    agree = (wn[:, None] * (vp.argmax(-1) == res.labels[None])).sum(0)
    np.testing.assert_allclose(res.agreement, agree, atol=1e-6)
    pl = vp[:, np.arange(N), res.labels]
    mean = (wn[:, None] * pl).sum(0)
    np.testing.assert_allclose(res.spread, np.sqrt((wn[:, None] * (pl - mean) ** 2).sum(0)), atol=1e-6)
    assert (res.agreement > 0).all() and (res.agreement <= 1 + 1e-6).all()
    assert res.throughput > 0 and res.seconds > 0


def test_preprocess_runs_after_the_views():
    model = cnn(0)
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3])

    def pre(x):
        return (x - mean[None, :, None, None]) / std[None, :, None, None]

    from ttakit import Normalize

    res = Classifier(model, "hflips * multiply(1.1)", preprocess=Normalize(mean.tolist(), std.tolist()),
                     batch_size=7).run(images())
    ref = naive_view_outputs(lambda x: torch_fn(model)(pre(x)), as_float(images()),
                             Policy.parse("hflips * multiply(1.1)"))
    np.testing.assert_allclose(res.probs, np_softmax(ref).mean(0), atol=1e-5)


def test_class_names():
    res = Classifier(cnn(0), "hflips", classes=list("abcde")).run(images())
    assert res.class_names == [list("abcde")[i] for i in res.labels]
