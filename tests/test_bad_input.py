"""Every bad input gives a clear ttakit error, raised by ttakit itself before
anything deep in torch trips over it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import ttakit
from ttakit import Classifier, InputError, ModelOutputError, PolicyError

C = 4




def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(2, C)).eval()


def logits_fn(a):
    return a.reshape(len(a), -1)[:, :C] * 3 - 1


def softmax_np(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def probs_fn(a):
    return softmax_np(logits_fn(a))


def imgs(n=6, dtype=np.float32, layout="NCHW", seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 3, 8, 8)).astype(dtype) if dtype != np.uint8 else rng.integers(0, 256, (n, 3, 8, 8),
                                                                                        dtype=np.uint8)
    return x.transpose(0, 2, 3, 1) if layout == "NHWC" else x


def raises(kind, fn, *words):
    """``fn()`` raises ``kind`` (a TTAKitError and a ValueError), from ttakit
    code, with every one of ``words`` in the message."""
    with pytest.raises(kind) as e:
        fn()
    assert isinstance(e.value, ttakit.TTAKitError) and isinstance(e.value, ValueError)
    assert "/ttakit/" in str(e.traceback[-1].path).replace("\\", "/"), e.traceback[-1].path
    msg = str(e.value)
    for w in words:
        assert w in msg, (w, msg)
    return msg


# -- shapes and layouts ----------------------------------------------------------

def test_wrong_rank():
    clf = Classifier(cnn(), "hflips")
    raises(InputError, lambda: clf.run(imgs()[0]), "rank 4", "(N, C, H, W)", "(3, 8, 8)", "x[None]")
    msg = raises(InputError, lambda: Classifier(cnn(), data_layout="NHWC").run(imgs(layout="NHWC")[0]), "x[None]")
    assert "(N, H, W, C)" in msg
    raises(InputError, lambda: clf.run(np.zeros((2, 3, 8, 8, 1), np.float32)), "rank 4")
    assert "x[None]" not in raises(InputError, lambda: clf.run(np.zeros((2, 8), np.float32)), "rank 4")
    # the one-image fix works
    assert Classifier(cnn(), "hflips").run(imgs()[0][None]).probs.shape == (1, C)


def test_channels_that_look_like_the_other_layout():
    raises(InputError, lambda: Classifier(cnn(), "hflips").run(imgs(layout="NHWC")),
           "(6, 8, 8, 3)", "looks like NHWC", "data_layout='NHWC'")
    raises(InputError, lambda: Classifier(cnn(), "hflips", data_layout="NHWC").run(imgs(layout="NCHW")),
           "looks like NCHW", "data_layout='NCHW'")


def test_keras_channel_count_is_checked(tmp_path):
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("torch backend only")
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(C)])
    raises(InputError, lambda: Classifier(model, "hflips", data_layout="NHWC").run(imgs(layout="NHWC")),
           "expects 1 channels", "has 3")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_empty_batch_gives_an_empty_result(layout):
    empty = imgs(layout=layout)[:0]
    res = Classifier(cnn(), "d4", data_layout=layout).run(empty)
    assert res.probs.shape[0] == 0 and res.labels.shape == (0,) and len(res) == 0
    assert res.entropy.shape == (0,) and res.forward_passes == 0
    named = Classifier(cnn(), "d4", data_layout=layout, classes=list("abcd")).run(empty, return_views=True)
    assert named.probs.shape == (0, C) and named.view_probs.shape == (8, 0, C)
    assert Classifier(cnn(), "d4").run([]).probs.shape[0] == 0
    assert Classifier(cnn(), "d4").run(iter([])).labels.shape == (0,)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_name_the_index(bad):
    x = imgs(n=9)
    x[5, 1, 2, 3] = bad
    # batch_size 4 with two views: chunks of 2, so the bad image is in the third chunk
    raises(InputError, lambda: Classifier(cnn(), "hflips", batch_size=4).run(x), "NaN or infinite", "index 5")
    x[7, 0, 0, 0] = bad
    raises(InputError, lambda: Classifier(cnn(), "hflips").run(x), "2 input(s)", "index 5")
    xs = imgs(n=9, layout="NHWC")
    xs[8, 0, 0, 2] = bad
    raises(InputError, lambda: Classifier(cnn(), "hflips", data_layout="NHWC", batch_size=4).run(xs), "index 8")


# -- dtypes and types -----------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.complex64])
def test_unsupported_dtype(dtype):
    x = imgs(dtype=np.uint8).astype(dtype)
    raises(InputError, lambda: Classifier(cnn(), "hflips").run(x), "dtype", "uint8")


@pytest.mark.parametrize("bad", ["images.png", 5, None, 3.5, {"a": 1}, [["a", "b"]], [object()]])
def test_non_array_inputs(bad):
    raises(InputError, lambda: Classifier(cnn(), "hflips").run(bad))


def test_object_array():
    x = np.empty(2, dtype=object)
    x[0], x[1] = np.zeros((3, 8, 8)), np.zeros((3, 6, 6))
    raises(InputError, lambda: Classifier(cnn()).run(x), "object array")


# -- model outputs --------------------------------------------------------------------

def test_wrong_output_batch_dimension():
    raises(ModelOutputError, lambda: Classifier(lambda a: np.zeros((1, C))).run(imgs()),
           "shape (1, 4)", "batch of 6", "expected (6, ...)")
    raises(ModelOutputError, lambda: Classifier(lambda a: np.float32(1.0)).run(imgs()), "returned shape ()")
    raises(ModelOutputError, lambda: Classifier(lambda a: np.zeros((len(a) + 1, C))).run(imgs()), "expected")


def test_three_d_outputs():
    raises(ModelOutputError, lambda: Classifier(lambda a: np.zeros((len(a), C, 2))).run(imgs()),
           "(n, C)", "(4, 2)")
    raises(ModelOutputError, lambda: Classifier(lambda a: np.zeros(len(a))).run(imgs()), "(n, C)")


def test_probs_declared_for_a_logits_model():
    msg = raises(ModelOutputError, lambda: Classifier(logits_fn, output="probs").run(imgs()),
                 "declared", "output='logits'")
    assert "sums to" in msg
    # probabilities declared as such are fine
    Classifier(probs_fn, "hflips", output="probs").run(imgs())


def test_auto_detected_probs_that_stop_summing_to_one():
    calls = []

    def model(a):
        calls.append(len(a))
        return probs_fn(a) if len(calls) <= 2 else logits_fn(a)  # the first chunk: 2 views, 1 forward each

    raises(ModelOutputError, lambda: Classifier(model, "hflips", batch_size=4).run(imgs(n=10)),
           "detected from the first batch", "chunk starting at input 4", "output='logits'")


def test_non_finite_outputs():
    raises(ModelOutputError, lambda: Classifier(lambda a: logits_fn(a) * np.nan).run(imgs()), "NaN")


def test_wrong_class_name_count():
    raises(ModelOutputError, lambda: Classifier(cnn(), classes=["a", "b"]).run(imgs()),
           "4 classes", "2 class names")


# -- policies, merges and arguments -----------------------------------------------------

def test_unknown_view_or_parameter():
    raises(PolicyError, lambda: Classifier(cnn(), "identity + hflp"), "unknown view 'hflp'", "Did you mean 'hflip'")
    raises(PolicyError, lambda: Classifier(cnn(), "scale(fctor=1.1)"), "no parameter 'fctor'",
           "Did you mean 'factor'", "factor, fill, cval")
    raises(PolicyError, lambda: Classifier(cnn(), "rotate(angle=bad)"), "rotate")
    raises(PolicyError, lambda: Classifier(cnn(), 42), "cannot make a policy from int")


def test_clipping_view_with_floats_outside_unit_range():
    x = imgs() * 255  # floats on the 0-255 scale
    msg = raises(InputError, lambda: Classifier(cnn(), "identity + multiply(1.1)").run(x),
                 "clip to [0, 1]", "preprocess=", "clip=false")
    assert "254" in msg or "255" in msg
    normalised = (imgs() - 0.5) / 0.25
    raises(InputError, lambda: Classifier(cnn(), "hflip * contrast(0.9)").run(normalised), "clip to [0, 1]")
    # fine: uint8 pixels, floats in [0, 1], or non-clipping views
    Classifier(cnn(), "identity + multiply(1.1)").run(imgs(dtype=np.uint8))
    Classifier(cnn(), "identity + multiply(1.1, clip=false)").run(x)
    Classifier(cnn(), "d4 * shift(1)").run(x)


def test_unknown_merge():
    raises(PolicyError, lambda: Classifier(cnn(), merge="avg"), "unknown merge 'avg'", "mean", "vote")
    raises(PolicyError, lambda: Classifier(cnn(), merge="sharpen(-1)"), "temperature")


@pytest.mark.parametrize("bs", [0, -3, 2.5, "8", True])
def test_bad_batch_size(bs):
    raises(InputError, lambda: Classifier(cnn(), batch_size=bs), "batch_size", "positive integer")


def test_numpy_integer_batch_size_is_fine():
    assert Classifier(cnn(), "hflips", batch_size=np.int64(4)).run(imgs()).probs.shape == (6, C)


@pytest.mark.parametrize("layout", ["NCWH", "nchw ", "CHW", None])
def test_bad_layout(layout):
    raises(InputError, lambda: Classifier(cnn(), data_layout=layout), "'NCHW' or 'NHWC'")


def test_bad_output_kind():
    raises(InputError, lambda: Classifier(cnn(), output="softmax"), "auto, probs, logits")


def test_lowercase_layout_is_accepted():
    a = Classifier(cnn(), "hflips", data_layout="nhwc").run(imgs(layout="NHWC"))
    b = Classifier(cnn(), "hflips").run(imgs())
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)


def test_crop_too_big_for_the_image():
    raises(PolicyError, lambda: Classifier(cnn(), "crop(12)").run(imgs()), "crop size 12", "8x8")
