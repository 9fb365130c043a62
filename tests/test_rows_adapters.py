"""Row views with torch and Keras tabular models through ttakit's adapters:
``Classifier(model, policy, data_layout="rows")`` and :func:`run_rows` with an
adapter give what the naive loop gives (each view's float32 copy of the
rows -> the model -> the mean of the probabilities or values). Small models
trained here on scikit-learn's breast_cancer and diabetes tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ttakit
from ttakit.errors import InputError
from ttakit.models import as_model
from ttakit.policy import Policy
from ttakit.tasks.regression import RegressionTask
from ttakit.tasks.rows import run_rows
from ttakit.views.rows import FeatureStats, copies

datasets = pytest.importorskip("sklearn.datasets")


def _standardised(loader, n_train):
    x, y = loader(return_X_y=True)
    mean, std = x[:n_train].mean(0), x[:n_train].std(0)
    x = (x - mean) / std
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


@pytest.fixture(scope="module")
def cancer():
    xtr, ytr, xte, yte = _standardised(datasets.load_breast_cancer, 400)
    stats = FeatureStats().fit(xtr)
    views = copies("noise", stats, 0.3, 4) + copies("dropout", stats, 0.1, 3, first_seed=1000)
    return xtr, ytr, xte, yte, stats, views


def _train(module, x, y, loss, steps=150):
    torch.manual_seed(0)
    opt = torch.optim.Adam(module.parameters(), 1e-2)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    for _ in range(steps):
        opt.zero_grad()
        loss(module(xt).squeeze(-1), yt).backward()
        opt.step()
    return module


def _copies32(x, views):
    x32 = torch.from_numpy(x.astype(np.float32))
    return [v(x32) for v in views]


def test_torch_mlp_classifier_on_rows_equals_the_naive_loop(cancer):
    xtr, ytr, xte, yte, stats, views = cancer
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    _train(mlp, xtr, ytr, torch.nn.functional.cross_entropy)
    clf = ttakit.Classifier(mlp, Policy(views), data_layout="rows")
    got = clf.predict_proba(xte)
    with torch.no_grad():
        ref = torch.stack([mlp(c).softmax(1) for c in _copies32(xte, views)]).mean(0).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6)
    # the copies are the rows' own: batch size and order change nothing
    small = ttakit.Classifier(mlp, Policy(views), data_layout="rows", batch_size=37)
    order = np.random.default_rng(0).permutation(len(xte))
    np.testing.assert_allclose(small.predict_proba(xte[order]), got[order], atol=1e-6)
    assert (got.argmax(1) == yte).mean() > 0.9  # a real model, not a constant
    with pytest.raises(InputError, match="rows must be 2-D"):
        clf.predict_proba(xte[:, :, None])


def test_keras_model_on_rows_equals_the_naive_loop(cancer):
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"this test runs Keras on the torch backend (KERAS_BACKEND=torch), not {keras.backend.backend()}")
    xtr, ytr, xte, yte, stats, views = cancer
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(xtr.astype("float32"), ytr, epochs=5, verbose=0)
    got = ttakit.Classifier(model, Policy(views), data_layout="rows").predict_proba(xte)
    ref = np.mean([np.asarray(model.predict(c.numpy(), verbose=0)) for c in _copies32(xte, views)], 0)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert (got.argmax(1) == yte).mean() > 0.85


def test_torch_regressor_through_run_rows_equals_the_naive_loop():
    xtr, ytr, xte, _ = _standardised(datasets.load_diabetes, 300)
    ytr = (ytr - ytr.mean()) / ytr.std()
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    _train(mlp, xtr, ytr.astype(np.float32), torch.nn.functional.mse_loss)
    stats = FeatureStats().fit(xtr)
    views = copies("jitter", stats, 0.1, 6)
    res = run_rows(RegressionTask(), as_model(mlp), xte, views, [1.0] * len(views), chunk_rows=25)
    with torch.no_grad():
        per_view = torch.stack([mlp(c)[:, 0] for c in _copies32(xte, views)]).double().numpy()
    np.testing.assert_allclose(res.pred[:, 0] if res.pred.ndim == 2 else res.pred, per_view.mean(0), atol=1e-6)
    std = res.std[:, 0] if res.std.ndim == 2 else res.std
    np.testing.assert_allclose(std, per_view.std(0), atol=1e-6)
    assert std.max() > 0  # the copies differ
