"""No model or policy format is loaded in a way that runs foreign code."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import ttakit
from ttakit.errors import ModelLoadError, PolicyError, TTAKitError


def test_keras_lambda_layers_are_refused(tmp_path):
    keras = pytest.importorskip("keras")
    ran = tmp_path / "ran"
    inp = keras.Input((4, 4, 3))
    out = keras.layers.Lambda(lambda t: t * 2)(inp)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(out)))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ModelLoadError, match="Keras cannot load"):
        ttakit.as_model(str(path))
    assert not ran.exists()


def test_pickled_weights_and_data_are_refused(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("foreign code ran",))

    npz = tmp_path / "data.npz"
    np.savez(npz, x=np.array([Boom()], dtype=object), y=np.array([0]))
    from ttakit.io.labelled import load_labelled

    with pytest.raises(TTAKitError):
        load_labelled(str(npz))
    pt = tmp_path / "w.th"
    torch.save({"state_dict": Boom()}, pt)
    from ttakit.zoo import load_cifar_resnet

    with pytest.raises(TTAKitError, match="weights_only"):
        load_cifar_resnet(str(pt))


def test_yaml_tags_are_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("!!python/object/apply:os.system ['echo foreign code']\n")
    with pytest.raises(PolicyError):
        ttakit.Policy.load(path)
    pickle_file = tmp_path / "p.pkl"
    pickle_file.write_bytes(pickle.dumps({"format": "ttakit.policy"}))
    with pytest.raises(PolicyError):
        ttakit.Policy.load(pickle_file)


def test_sklearn_models_load_from_skops_and_pickles_only_when_allowed(tmp_path):
    sio = pytest.importorskip("skops.io")
    lm = pytest.importorskip("sklearn.linear_model")
    from ttakit.models.sklearn_loading import load_sklearn

    rng = np.random.default_rng(0)
    x, y = rng.random((40, 3)), rng.integers(0, 2, 40)
    est = lm.LogisticRegression().fit(x, y)
    path = tmp_path / "m.skops"
    sio.dump(est, path)
    np.testing.assert_allclose(load_sklearn(path).predict_proba(x), est.predict_proba(x))
    # a type skops does not trust by default is listed and refused until trusted by name
    from sklearn.ensemble import HistGradientBoostingClassifier

    pipe = HistGradientBoostingClassifier(max_iter=5).fit(x, y)
    risky = tmp_path / "p.skops"
    sio.dump(pipe, risky)
    with pytest.raises(ModelLoadError, match="not trusted by default: .*TreePredictor"):
        load_sklearn(risky)
    untrusted = __import__("ttakit.models.sklearn_loading", fromlist=["x"]).untrusted_types(risky)
    np.testing.assert_allclose(load_sklearn(risky, trusted=untrusted).predict_proba(x), pipe.predict_proba(x))
    pkl = tmp_path / "m.pkl"
    pkl.write_bytes(pickle.dumps(est))
    with pytest.raises(ModelLoadError, match="is a pickle: loading it can run any code"):
        load_sklearn(pkl)
    assert load_sklearn(pkl, allow_pickle=True).predict(x).shape == (40,)
    with pytest.raises(ModelLoadError, match="not a readable skops file"):
        (tmp_path / "bad.skops").write_bytes(b"not a zip")
        load_sklearn(tmp_path / "bad.skops")
