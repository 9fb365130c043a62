"""Tests for ttakit.export (the package ttakit.graph): TTA as one graph.

Each view's graph operations equal ``View.apply`` (property tests over
views and sizes), each merge's module equals the merge (property tests over
weights and output kinds), and the exported ONNX graph, run in plain ONNX
Runtime, equals ``Classifier.predict_proba`` within 1e-5 on the tutorial CNN
(seeded, untrained) and the published ResNet-20 for every view kind and
merge; ``TTAModule`` survives ``torch.jit.script`` and ``torch.export``;
what cannot be exported is refused by name.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ttakit
from ttakit import Classifier, Normalize, Policy
from ttakit.errors import InputError, ModelError, ModelLoadError, PolicyError, ZooError
from ttakit.graph import TTAModule, export
from ttakit.graph import save as export_save
from ttakit.graph.merge_ops import merge_module
from ttakit.graph.view_ops import view_module
from ttakit.interfaces import cli
from ttakit.merge import (GeometricMean, LearnedMerge, Max, Mean, MeanLogits, Min, Sharpen, Sum, TemperatureScaled,
                          WeightedMean, normalise)
from ttakit.policy.contract import InputContract
from ttakit.views import (Add, Affine, ChannelShift, Contrast, Crop, Dihedral, GaussianNoise, Multiply, Rotate,
                          Scale, Shift, View, compose)
from ttakit.zoo import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD, load_cifar_resnet, tutorial_cnn_torch

ort = pytest.importorskip("onnxruntime")
# the TorchScript-based ONNX exporter and torch.jit warn about their own deprecation
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOL = 1e-5
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- views ------------------------------------------------------------------------------------
FILLS = st.sampled_from(["nearest", "reflect", "wrap", "constant"])
CVAL = st.sampled_from([0.0, 0.5, 1.0])
OFFSET = st.one_of(st.integers(-6, 6), st.floats(-0.4, 0.4).filter(lambda v: abs(v) > 1e-3))


def _geometric():
    return st.one_of(
        st.builds(Dihedral, st.integers(0, 3), st.booleans()),
        st.builds(Shift, OFFSET, OFFSET, FILLS, CVAL, st.sampled_from(["px", "fraction"])),
        st.builds(Rotate, st.floats(-40, 40), FILLS, CVAL),
        st.builds(Affine, st.floats(-20, 20), st.floats(-3, 3), st.floats(-3, 3), st.floats(-10, 10),
                  st.floats(0.8, 1.25), st.floats(0.8, 1.25), st.just(False), FILLS, CVAL),
        st.builds(Scale, st.floats(0.5, 1.6), FILLS, CVAL),
        st.builds(Crop, st.one_of(st.floats(0.4, 1.0), st.tuples(st.floats(0.4, 1.0), st.floats(0.4, 1.0))),
                  st.sampled_from(["c", "tl", "tr", "bl", "br"])),
    )


def _photometric():
    return st.one_of(
        st.builds(Multiply, st.floats(0.5, 1.5), st.booleans()),
        st.builds(Add, st.floats(-0.3, 0.3), st.booleans()),
        st.builds(Contrast, st.floats(0.3, 1.7), st.booleans()),
        st.builds(ChannelShift, st.floats(-0.3, 0.3)),
        st.builds(GaussianNoise, st.floats(0.0, 0.1), st.integers(0, 5), st.booleans()),
    )


VIEW = st.one_of(_geometric(), _photometric(),
                 st.tuples(st.one_of(_geometric(), _photometric()), st.one_of(_geometric(), _photometric()))
                 .map(lambda pair: compose(*pair)))


@PROPERTY
@given(view=VIEW, c=st.sampled_from([1, 3]), h=st.integers(5, 19), w=st.integers(5, 19), seed=st.integers(0, 9))
def test_view_operations_equal_the_view(view, c, h, w, seed):
    x = torch.rand((3, c, h, w), generator=torch.Generator().manual_seed(seed))
    expected = view.apply(x.clone())
    got = view_module(view, (c, h, w))(x.clone())
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) <= TOL, view


# -- merges -----------------------------------------------------------------------------------
WEIGHT = st.one_of(st.just(0.0), st.floats(0.01, 3.0))  # no weights so small that float32 sums underflow


def _merges(v: int, c: int):
    rows = st.lists(WEIGHT, min_size=v, max_size=v)
    base = st.one_of(
        st.sampled_from([Mean(), Sum(), GeometricMean(), MeanLogits(), Max(), Min()]),
        st.builds(Sharpen, st.floats(0.2, 3.0)),
        rows.filter(lambda r: sum(r) > 0).map(WeightedMean),
        rows.map(lambda r: LearnedMerge(r)),
        st.lists(st.lists(st.floats(-1.0, 2.0), min_size=c, max_size=c), min_size=v, max_size=v)
        .map(lambda r: LearnedMerge(r, 0.7)),
    )
    return st.one_of(base, st.builds(TemperatureScaled, base.filter(lambda m: not isinstance(m, LearnedMerge)),
                                     st.floats(0.3, 3.0)))


@PROPERTY
@given(data=st.data(), v=st.integers(1, 6), c=st.integers(2, 6), kind=st.sampled_from(["probs", "logits"]),
       seed=st.integers(0, 99))
def test_merge_operations_equal_the_merge(data, v, c, kind, seed):
    weights = data.draw(st.lists(WEIGHT, min_size=v, max_size=v).filter(lambda w: max(w) > 0))
    merge = data.draw(_merges(v, c))
    outs = torch.randn((v, 5, c), generator=torch.Generator().manual_seed(seed)) * 3
    if kind == "probs":
        outs = torch.softmax(outs, -1)
    views = list(range(v))
    acc = merge.start(views, weights, kind)  # as the run loop does (Merge.__call__ rounds weights to float32)
    for i in views:
        acc.add(i, outs[i].clone())
    expected = acc.result()
    if not merge.normalised:
        expected = normalise(expected)
    if expected.isnan().all():  # the weights that count sum to 0: refused, not exported as NaN
        with pytest.raises(PolicyError, match="sum to 0"):
            merge_module(merge, views, weights, kind)
        return
    got = merge_module(merge, views, weights, kind)(outs.clone())
    assert float((got - expected).abs().max()) <= TOL, merge


# -- models -----------------------------------------------------------------------------------
def _tutorial():
    torch.manual_seed(0)
    return tutorial_cnn_torch().eval()  # softmax outputs


def _resnet20():
    try:
        return load_cifar_resnet(20, root=os.environ.get("TTAKIT_MODELS"))  # logits
    except ZooError as e:
        pytest.skip(f"the published ResNet-20 weights are not here (set TTAKIT_MODELS): {e}")


MODELS = {"tutorial": _tutorial, "resnet20": _resnet20}
RESNET_NORM = {"mean": CIFAR_RESNET_MEAN, "std": CIFAR_RESNET_STD}

#: every view kind and every merge, over both models, both layouts and both input dtypes
CASES = [
    ("d4", None, "NHWC", "uint8"),
    ("identity + shift(dx=2, dy=-1) + shift(dx=0.1, dy=0.15, unit='fraction', fill='reflect') + rotate(12, fill='constant', cval=0.5) "
     "+ affine(theta=5, shear=4, zx=0.9, fill='wrap')", "gmean", "NCHW", "float32"),
    ("identity + scale(0.8, 1.15) + scale(0.7, fill='constant') + fivecrop(0.8) + (hflip * crop(0.75))", "logits",
     "NHWC", "float32"),
    ("identity + multiply(1.1) + add(-0.05) + contrast(0.8) + channel_shift(0.1) + noise(0.03)",
     "weighted(1, 0.5, 2, 1, 0.25, 1)", "NCHW", "uint8"),
    ("hflips + rot90", "sum", "NHWC", "uint8"),
    ("hflips + rot90", "sharpen(0.5)", "NHWC", "uint8"),
    ("hflips + rot90", "max", "NCHW", "float32"),
    ("hflips + rot90", "min", "NCHW", "float32"),
]


def _images(layout: str, dtype: str, n: int = 5, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2).copy()
    return x if dtype == "uint8" else (x / 255.0).astype(np.float32)


def _shape(layout: str):
    return (3, 32, 32) if layout == "NCHW" else (32, 32, 3)


def _run_file(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probs"], {"input": x})[0]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("spec, merge, layout, dtype", CASES)
def test_the_onnx_graph_equals_predict_proba(tmp_path, name, spec, merge, layout, dtype):
    model = MODELS[name]()
    pre = Normalize(**RESNET_NORM) if name == "resnet20" else None
    x = _images(layout, dtype)
    expected = Classifier(model, spec, merge=merge, data_layout=layout, preprocess=pre).predict_proba(x)
    path = export(model, spec, tmp_path / "tta.onnx", merge=merge, input_shape=_shape(layout), data_layout=layout,
                  input_dtype=dtype, preprocess=pre)
    got = _run_file(path, x)
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).max()) <= TOL


@pytest.mark.parametrize("per_class", [False, True])
def test_a_tuned_policy_exports_with_its_merge_normalisation_and_temperature(tmp_path, per_class):
    model = _resnet20()
    base = Policy.parse("identity + hflip + shift(dx=2) + scale(1.1)")
    rng = np.random.default_rng(1)
    weights = rng.uniform(-0.5, 1.5, (4, 10) if per_class else 4)
    contract = InputContract(mean=CIFAR_RESNET_MEAN, std=CIFAR_RESNET_STD, output="logits")
    policy = base.with_merge(LearnedMerge(weights, 0.8, base.views)).with_inputs(contract)
    path = tmp_path / "tuned.yaml"
    policy.save(path)
    policy = Policy.load(path)
    x = _images("NHWC", "uint8")
    expected = Classifier(model, policy, data_layout="NHWC").predict_proba(x)  # the contract's Normalize
    got = _run_file(export(model, policy, tmp_path / "tta.onnx", input_shape=(32, 32, 3), data_layout="NHWC",
                           input_dtype="uint8"), x)
    assert float(np.abs(got - expected).max()) <= TOL
    scaled = base.with_merge(TemperatureScaled(Mean(), 1.7)).with_inputs(contract)
    expected = Classifier(model, scaled, data_layout="NHWC").predict_proba(x)
    got = _run_file(export(model, scaled, tmp_path / "t.onnx", input_shape=(32, 32, 3), data_layout="NHWC",
                           input_dtype="uint8"), x)
    assert float(np.abs(got - expected).max()) <= TOL


def _policy_and_merge(data):
    """A random policy of 1-4 views (any kind, products included) with random
    weights, and a random merge for its distinct views."""
    views = data.draw(st.lists(VIEW, min_size=1, max_size=4))
    weights = data.draw(st.lists(st.floats(0.1, 3.0), min_size=len(views), max_size=len(views)))
    policy = Policy(views, weights)
    return policy, data.draw(_merges(len(policy.unique()), 10))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_tta_module_equals_predict_proba_on_random_policies(data):
    model = _tutorial()
    policy, merge = _policy_and_merge(data)
    layout = data.draw(st.sampled_from(["NCHW", "NHWC"]))
    x = _images(layout, "uint8", n=3, seed=data.draw(st.integers(0, 9)))
    expected = Classifier(model, policy, merge=merge, data_layout=layout).predict_proba(x)
    tta = TTAModule(model, policy, merge=merge, input_shape=_shape(layout), data_layout=layout,
                    input_dtype="uint8")
    with torch.no_grad():
        got = tta(torch.from_numpy(x)).numpy()
    assert float(np.abs(got - expected).max()) <= TOL, (policy, merge)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_onnx_graph_equals_predict_proba_on_random_policies(tmp_path_factory, data):
    model = _tutorial()
    policy, merge = _policy_and_merge(data)
    x = _images("NCHW", "float32", n=3)
    expected = Classifier(model, policy, merge=merge).predict_proba(x)
    path = export(model, policy, tmp_path_factory.mktemp("onnx") / "tta.onnx", merge=merge, input_shape=(3, 32, 32))
    assert float(np.abs(_run_file(path, x) - expected).max()) <= TOL, (policy, merge)


def test_the_graph_has_a_dynamic_batch_axis_and_describes_itself(tmp_path):
    import onnx

    model = _tutorial()
    path = export(model, "d4", tmp_path / "tta.onnx", input_shape=(3, 32, 32))
    for n in (1, 7):
        x = _images("NCHW", "float32", n=n, seed=n)
        assert _run_file(path, x).shape == (n, 10)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["ttakit.model_output"] == "probs" and meta["ttakit.input"] == "float32 NCHW"
    assert "transverse" in meta["ttakit.views"] and meta["ttakit.merge"] == "mean"


# -- TTAModule ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
def test_tta_module_survives_jit_script_and_torch_export(name):
    model = MODELS[name]()
    pre = Normalize(**RESNET_NORM) if name == "resnet20" else None
    spec = "d4 + shift(1, -2) + scale(0.9) + crop(0.8) + multiply(1.1)"
    x = _images("NHWC", "uint8")
    expected = Classifier(model, spec, merge="gmean", data_layout="NHWC", preprocess=pre).predict_proba(x)
    from ttakit.torch import TTAModule as FrontDoor

    assert FrontDoor is TTAModule
    tta = TTAModule(model, spec, merge="gmean", input_shape=(32, 32, 3), data_layout="NHWC", input_dtype="uint8",
                    preprocess=pre)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        eager = tta(xt).numpy()
        scripted = torch.jit.script(tta)(xt).numpy()
        program = torch.export.export(tta, (xt,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        exported = program.module()(torch.from_numpy(_images("NHWC", "uint8", n=3)))
        exported_x = program.module()(xt).numpy()
    for got in (eager, scripted, exported_x):
        assert float(np.abs(got - expected).max()) <= TOL
    assert exported.shape == (3, 10)


def test_torchscript_file_equals_predict_proba(tmp_path):
    model = _tutorial()
    path = export(model, "hflips + scale(1.2)", tmp_path / "tta.pt", "torchscript", input_shape=(3, 32, 32))
    x = _images("NCHW", "float32")
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        got = loaded(torch.from_numpy(x)).numpy()
    expected = Classifier(model, "hflips + scale(1.2)").predict_proba(x)
    assert float(np.abs(got - expected).max()) <= TOL


def test_front_door():
    assert callable(ttakit.export) and ttakit.export is export
    from ttakit.graph import TTAModule as T
    import ttakit.graph.view_ops as ops  # the package is not shadowed by the function

    assert T is TTAModule and ops.view_module is view_module


# -- refusals ----------------------------------------------------------------------------------
class Invert(View):
    """A user's view: no graph form."""

    name = "invert"

    def apply(self, x):
        return 1 - x


def test_a_view_without_graph_form_is_refused_by_name(tmp_path):
    with pytest.raises(PolicyError, match=r"cannot export view invert \(Invert\)"):
        export(_tutorial(), Policy([Dihedral(), Invert()]), tmp_path / "x.onnx", input_shape=(3, 32, 32))
    # inside a product too
    with pytest.raises(PolicyError, match="cannot export view invert"):
        TTAModule(_tutorial(), Policy([compose(Dihedral(0, True), Invert())]), input_shape=(3, 32, 32))
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("policy, merge, match", [
    ("identity @ margin<0.2 | hflip", None, "cannot export the adaptive policy"),
    ("hflips", "vote", "cannot export merge vote"),
])
def test_adaptive_policies_and_vote_are_refused(policy, merge, match):
    with pytest.raises(PolicyError, match=match):
        TTAModule(_tutorial(), policy, merge=merge, input_shape=(3, 32, 32))


def test_bad_arguments_are_refused():
    model = _tutorial()
    with pytest.raises(ModelLoadError, match="PyTorch model"):
        TTAModule(lambda x: x, "hflips", input_shape=(3, 32, 32))
    with pytest.raises(InputError, match=r"input_shape must be one input's shape \(H, W, C\)"):
        TTAModule(model, "hflips", input_shape=(32, 32), data_layout="NHWC")
    with pytest.raises(InputError, match="input_dtype"):
        TTAModule(model, "hflips", input_shape=(3, 32, 32), input_dtype="float64")
    tuned = Policy.parse("hflips").with_inputs(InputContract(mean=(0.5,) * 3, std=(0.2,) * 3))
    with pytest.raises(InputError, match="tuned with preprocess=Normalize"):
        TTAModule(model, tuned, input_shape=(3, 32, 32), preprocess=Normalize(0.4, 0.2))
    with pytest.raises(InputError, match="format"):
        export(model, "hflips", "x.onnx", "tflite", input_shape=(3, 32, 32))


def test_a_file_that_differs_from_the_module_is_not_written(tmp_path, monkeypatch):
    monkeypatch.setattr(export_save, "_run_onnx", lambda data, x: torch.zeros(x.shape[0], 10))
    with pytest.raises(ModelError, match="differ from the module's by up to"):
        export(_tutorial(), "hflips", tmp_path / "x.onnx", input_shape=(3, 32, 32))
    assert not (tmp_path / "x.onnx").exists()


# -- command line -----------------------------------------------------------------------------
def test_cli_export_writes_a_graph_equal_to_predict_proba(tmp_path, capsys):
    model = _tutorial()
    pt = tmp_path / "cnn.pt"
    torch.jit.script(model).save(str(pt))
    out = tmp_path / "model_tta.onnx"
    code = cli.main(["export", str(pt), "--policy", "d4 + scale(0.9)", "--merge", "gmean", "--size", "32",
                     "--data-layout", "NHWC", "--input-dtype", "uint8", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "9 distinct views" in err
    x = _images("NHWC", "uint8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = Classifier(torch.jit.load(str(pt)), "d4 + scale(0.9)", merge="gmean",
                              data_layout="NHWC").predict_proba(x)
    assert float(np.abs(_run_file(out, x) - expected).max()) <= TOL


def test_cli_export_refusals(tmp_path, capsys):
    pt = tmp_path / "cnn.pt"
    torch.jit.script(_tutorial()).save(str(pt))
    code = cli.main(["export", str(tmp_path / "m.onnx"), "--size", "32", "--out", str(tmp_path / "x.onnx")])
    assert code == 2 and "TorchScript" in capsys.readouterr().err
    code = cli.main(["export", str(pt), "--policy", "hflips", "--merge", "vote", "--size", "32",
                     "--out", str(tmp_path / "x.onnx")])
    assert code == 2 and "cannot export merge vote" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_exports_a_zoo_resnet_with_its_normalisation(tmp_path, capsys):
    model = _resnet20()
    out = tmp_path / "resnet20_d4.onnx"
    code = cli.main(["export", "zoo:resnet20", "--policy", "d4", "--data-layout", "NHWC", "--input-dtype", "uint8",
                     "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    x = _images("NHWC", "uint8")
    expected = Classifier(model, "d4", data_layout="NHWC", preprocess=Normalize(**RESNET_NORM)).predict_proba(x)
    assert float(np.abs(_run_file(out, x) - expected).max()) <= TOL
