"""One bad input fails only itself: non-finite inputs and non-finite model
outputs are named (on_error="raise") or marked while the others are kept
(on_error="mark"); an empty input has the model's number of classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ttakit
from ttakit.errors import InputError, ModelOutputError

W = np.random.default_rng(0).normal(size=(3 * 6 * 6, 5)).astype(np.float32)


def linear(a):
    return a.reshape(len(a), -1) @ W


def poisoned(bad_rows_values):
    """A model that returns inf for inputs whose first pixel equals one of the values."""
    def fn(a):
        out = linear(a)
        hit = np.isin(np.round(a[:, 0, 0, 0] * 255), bad_rows_values)
        out[hit] = np.inf
        return out
    return fn


def images(n=23, seed=0):
    x = np.random.default_rng(seed).integers(0, 200, (n, 3, 6, 6), dtype=np.uint8)
    return x


def test_a_model_output_of_inf_is_named_or_isolated():
    x = images()
    x[[4, 17], 0, 0, 0] = 250  # these two make the model return inf (on every view: the pixel is a corner... of
    x[[4, 17], 0, 0, 5] = 250  # identity, and of its mirror under hflip)
    model = poisoned([250])
    with pytest.raises(ModelOutputError, match=r"input\(s\) failed: the model returned NaN or infinite.*index 4"):
        ttakit.Classifier(model, "identity + hflip", batch_size=8).run(x)
    res = ttakit.Classifier(model, "identity + hflip", batch_size=8, on_error="mark").run(x)
    assert res.failed.tolist() == [i in (4, 17) for i in range(len(x))]
    assert set(res.errors) == {4, 17} and "NaN or infinite" in res.errors[4]
    assert np.isnan(res.probs[[4, 17]]).all() and (res.labels[[4, 17]] == -1).all()
    keep = [i for i in range(len(x)) if i not in (4, 17)]
    clean = ttakit.Classifier(linear, "identity + hflip", batch_size=8).run(x[keep])
    np.testing.assert_allclose(res.probs[keep], clean.probs, atol=1e-6)
    np.testing.assert_array_equal(res.labels[keep], clean.labels)
    np.testing.assert_allclose(res.spread[keep], clean.spread, atol=1e-6)


def test_a_view_that_alone_gives_inf_fails_that_input_only():
    x = images(n=10)
    x[3, 0, 0, 0] = 250  # only identity sees it at the corner; hflip moves it
    x[3, 0, 0, 5] = 0
    res = ttakit.Classifier(poisoned([250]), "identity + hflip", on_error="mark").run(x)
    assert res.failed.tolist() == [i == 3 for i in range(10)]
    assert "view identity" in res.errors[3]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_pixels_fail_only_their_input(bad):
    x = images(n=11).astype(np.float32) / 255
    x[6, 1, 2, 3] = bad
    with pytest.raises(InputError, match="index 6"):
        ttakit.Classifier(linear, "hflips").run(x)
    res = ttakit.Classifier(linear, "hflips", on_error="mark", batch_size=4).run(iter([x[:5], x[5:]]))
    assert res.failed.tolist() == [i == 6 for i in range(11)]
    assert "input contains NaN" in res.errors[6]
    keep = [i for i in range(11) if i != 6]
    np.testing.assert_allclose(res.probs[keep], ttakit.Classifier(linear, "hflips").run(x[keep]).probs, atol=1e-6)


def test_every_input_failing_still_returns_a_result():
    x = images(n=4)
    x[:, 0, 0, 0] = 250
    x[:, 0, 0, 5] = 250
    res = ttakit.Classifier(poisoned([250]), "hflips", on_error="mark").run(x)
    assert res.failed.all() and np.isnan(res.probs).all() and len(res.errors) == 4


def test_bad_on_error_value():
    with pytest.raises(InputError, match="on_error must be one of raise, mark"):
        ttakit.Classifier(linear, on_error="ignore")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_an_empty_array_has_the_models_classes(layout):
    x = images()[:0]
    if layout == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    res = ttakit.Classifier(linear if layout == "NCHW" else (lambda a: linear(a.transpose(0, 3, 1, 2))),
                            "d4", data_layout=layout).run(x, return_views=True)
    assert res.probs.shape == (0, 5) and res.view_probs.shape == (8, 0, 5) and res.forward_passes == 0
    assert ttakit.Classifier(linear, "d4").predict_proba(torch.from_numpy(images()[:0])).shape == (0, 5)
