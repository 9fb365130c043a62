"""A tuned policy carries what its predictions depend on (normalisation,
model layout, output kind, classes): used when the caller leaves them unset,
refused when the caller contradicts them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import ttakit
from ttakit import InputError, Policy, PolicyError
from ttakit.errors import TTAKitWarning
from ttakit.policy.contract import InputContract

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 3))


def data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), rng.integers(0, 3, n)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    x, y = data()
    net = model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TTAKitWarning)
        res = ttakit.tune(net, x, y, candidates="hflips, vflip, shift(dx=[-1, 1])", budget=3, data_layout="NHWC",
                          preprocess=ttakit.Normalize(MEAN, STD), classes=["a", "b", "c"])
    path = res.policy.save(tmp_path_factory.mktemp("c") / "tuned.yaml")
    return net, x, y, res, path


def test_tune_saves_the_contract(tuned):
    net, x, y, res, path = tuned
    k = Policy.load(path).inputs
    assert k.mean == pytest.approx(MEAN, abs=1e-6) and k.std == pytest.approx(STD, abs=1e-6)
    assert k.output == "logits" and k.classes == ("a", "b", "c")


def test_the_policy_supplies_its_normalisation(tuned):
    net, x, y, res, path = tuned
    pol = Policy.load(path)
    implicit = ttakit.Classifier(net, pol, data_layout="NHWC").predict_proba(x)
    explicit = ttakit.Classifier(net, pol.with_inputs(None), data_layout="NHWC",
                                 preprocess=ttakit.Normalize(MEAN, STD)).predict_proba(x)
    np.testing.assert_allclose(implicit, explicit, atol=1e-6)
    np.testing.assert_allclose(implicit, res.cache.predict(pol), atol=1e-5)
    # evaluate without the options gets the same numbers as with them
    r1 = ttakit.evaluate(net, x, y, pol, data_layout="NHWC")
    r2 = ttakit.evaluate(net, x, y, pol, data_layout="NHWC", preprocess=ttakit.Normalize(MEAN, STD))
    assert r1.policy_metrics == r2.policy_metrics and r1.baseline_metrics == r2.baseline_metrics


def test_contradicting_options_are_refused(tuned):
    net, x, y, res, path = tuned
    pol = Policy.load(path)
    with pytest.raises(InputError, match="tuned with preprocess=Normalize"):
        ttakit.Classifier(net, pol, preprocess=ttakit.Normalize(0.5, 0.5))
    with pytest.raises(InputError, match="tuned with preprocess=Normalize"):
        ttakit.Classifier(net, pol, preprocess=lambda b: b)
    with pytest.raises(InputError, match="tuned with output='logits' but output='probs'"):
        ttakit.Classifier(net, pol, output="probs")
    with pytest.raises(InputError, match="tuned with 3 classes"):
        ttakit.Classifier(net, pol, classes=["x", "y", "z"])
    with pytest.raises(InputError, match="tuned with preprocess"):
        ttakit.evaluate(net, x, y, pol, data_layout="NHWC", preprocess=ttakit.Normalize(0.4, 0.2))


def test_normalize_on_the_0_255_scale_warns():
    with pytest.warns(TTAKitWarning, match="divide mean and std by 255"):
        ttakit.Normalize([125.3, 123.0, 114.0], [63.0, 62.1, 66.7])


def test_contract_values_and_algebra():
    k = InputContract(mean=[0.5], std=[0.25], output="logits")
    p = Policy.parse("identity + hflip").with_inputs(k)
    assert p != p.with_inputs(None) and (p + Policy.parse("vflip")).inputs == k
    with pytest.raises(PolicyError, match="tuned for different inputs"):
        p + Policy.parse("vflip").with_inputs(InputContract(output="probs"))
    with pytest.raises(PolicyError, match="needs both mean and std"):
        InputContract(mean=[0.5])
    with pytest.raises(PolicyError, match="unknown keys"):
        InputContract.from_dict({"normalise": {}})
    with pytest.raises(PolicyError, match="finite"):
        InputContract(mean=[float("nan")], std=[1.0])


def test_floats_on_the_0_255_scale_warn_once_with_what_to_pass():
    x = np.random.default_rng(0).random((4, 3, 6, 6)).astype(np.float32) * 255
    lin = lambda a: a.reshape(len(a), -1)[:, :3]
    with pytest.warns(TTAKitWarning, match="divide by 255"):
        ttakit.Classifier(lin, "hflips").run(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ttakit.Classifier(lin, "hflips").run(x / 255)
        ttakit.Classifier(lin, "hflips").run((x).astype(np.uint8))
