"""ttakit.Segmenter: every view's class maps come back to the input frame
(exactly for D4 of non-square inputs, bilinearly for resampled views, by
nearest neighbour for label maps), only covered pixels count, the merge on
the fly equals a naive loop over views, and memory stays per chunk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_views import EXACT_VIEWS, RESAMPLED_VIEWS, _shrinks, erode, ramp

import ttakit
from ttakit.errors import InputError, ModelOutputError
from ttakit.merge import get_merge
from ttakit.policy import Policy
from ttakit.tasks.segmentation import nearest_back

FAST = settings(max_examples=8, deadline=None)
pytestmark = pytest.mark.filterwarnings("ignore:float images range")


def echo(a):
    """A 'segmentation model' whose logits are its input: equivariant under every view."""
    return torch.as_tensor(a).clone()


def two_ramps(h, w, a, b, d):
    """Two logit channels, each linear in x and y with different slopes (so
    the softmax varies over the image)."""
    return torch.cat([ramp(h, w, a, b, d, c=1), ramp(h, w, -b, a, 0.5 * d, c=1)], 1)


@FAST
@given(seed=st.integers(0, 2**16), size=st.sampled_from([(8, 8), (6, 10), (9, 5)]))
def test_exact_views_come_back_exactly_through_the_segmenter(seed, size):
    x = torch.from_numpy(np.random.default_rng(seed).normal(size=(2, 3, *size)).astype(np.float32))
    want = torch.softmax(x, 1).numpy()
    for v in EXACT_VIEWS:
        res = ttakit.Segmenter(echo, [v], output="logits").run(x)
        mask = v.valid_mask(size).numpy()
        np.testing.assert_allclose(res.probs[..., mask], want[..., mask], atol=1e-6, err_msg=repr(v))
        assert (res.probs[..., ~mask] == 0).all()  # pixels no view saw carry no probability


@FAST
@given(a=st.floats(-0.5, 0.5), b=st.floats(-0.5, 0.5), d=st.floats(-2, 2),
       size=st.sampled_from([(16, 16), (14, 18)]))
def test_resampled_views_come_back_bilinearly_on_what_they_saw(a, b, d, size):
    x = two_ramps(*size, a, b, d)
    want = torch.softmax(x, 1).numpy()
    for v in RESAMPLED_VIEWS:
        res = ttakit.Segmenter(echo, [v], output="logits", uncertainty=False).run(x)
        inner = erode(v.valid_mask(size), 2).numpy()
        tol = 0.05 if _shrinks(v) else 1e-3
        err = np.abs(res.probs - want)[..., inner].max()
        assert err <= tol, (v, err)


def test_rot90_of_a_non_square_input_and_a_strided_model():
    # output at half resolution: resized to each view's size, then turned back
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(3, 2, 8, 12)).astype(np.float32))
    pooled = lambda a: torch.nn.functional.avg_pool2d(torch.as_tensor(a), 2)
    base = ttakit.Segmenter(pooled, "identity", output="logits").run(x).probs
    for pol in ("rot90", "rot270", "transpose", "d4"):
        got = ttakit.Segmenter(pooled, pol, output="logits").run(x).probs
        assert got.shape == (3, 2, 8, 12)
        np.testing.assert_allclose(got, base, atol=1e-5, err_msg=pol)


def naive(model, x, views, weights, merge):
    """The definition: every view's whole output stacked, de-augmented, merged."""
    size = tuple(x.shape[-2:])
    outs = [v.invert_dense(torch.as_tensor(model(v.apply(x))), size) for v in views]
    masks = [v.valid_mask(size)[None, None] for v in views]
    acc = get_merge(merge).start(list(views), list(weights), "logits", dim=1)
    for i, (o, m) in enumerate(zip(outs, masks)):
        acc.add(i, o, None if m.all() else m)
    scores = acc.result()
    return scores, acc.labels(scores)


@pytest.mark.parametrize("merge", ["mean", "gmean", "max", "vote"])
def test_merging_on_the_fly_equals_a_naive_loop_over_views(merge):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 3, 1))
    x = torch.rand(7, 3, 10, 14)
    pol = Policy.parse("identity + hflip + rot90 + 2 * scale(1.2) + crop(0.75, pos=tr) + shift(dx=2, dy=-1)")
    with torch.no_grad():
        want, labels = naive(model, x, pol.views, pol.weights, merge)
        res = ttakit.Segmenter(model, pol, merge, output="logits", batch_size=4).run(x)
    np.testing.assert_allclose(res.probs, want.numpy(), atol=1e-5)
    np.testing.assert_array_equal(res.labels, labels.numpy())


def test_uncertainty_maps_and_volume_variation():
    # views that all agree: no variance, full agreement, VVC 0
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(2, 3, 6, 6)).astype(np.float32))
    res = ttakit.Segmenter(echo, "d4", output="logits").run(x)
    assert np.allclose(res.variance, 0, atol=1e-10) and np.allclose(res.agreement, 1)
    np.testing.assert_allclose(res.vvc, 0, atol=1e-6)
    p = torch.softmax(x, 1).numpy()
    np.testing.assert_allclose(res.entropy, -(p * np.log(p)).sum(1), atol=1e-5)
    # a model that sees a flipped image differently: foreground volume 1/3 vs 2/3 of the image
    def lopsided(a):
        a = torch.as_tensor(a)
        out = torch.zeros(a.shape[0], 2, *a.shape[-2:])
        for k in range(a.shape[0]):
            cols = 2 if a[k, 0, 0, 0] > 0.5 else 4
            out[k, 1, :, :cols], out[k, 0, :, cols:] = 5.0, 5.0
        return out
    img = torch.zeros(1, 1, 3, 6)
    img[..., 0] = 1.0  # identity sees a bright top-left pixel, hflip does not
    res = ttakit.Segmenter(lopsided, "identity + hflip", output="logits").run(img)
    vols = np.array([2 / 6, 4 / 6])
    assert res.vvc[0] == pytest.approx(vols.std() / vols.mean(), rel=1e-5)
    assert (res.agreement[0] >= 0.5 - 1e-6).all() and res.variance.max() > 0.1


def test_label_maps_are_merged_by_nearest_neighbour_votes():
    x = torch.from_numpy(np.random.default_rng(3).normal(size=(4, 3, 7, 11)).astype(np.float32))
    labeller = lambda a: torch.as_tensor(a).argmax(1)
    res = ttakit.Segmenter(labeller, "d4", "vote", output="labels", classes=3).run(x)
    np.testing.assert_array_equal(res.labels, x.argmax(1).numpy())
    assert np.allclose(res.agreement, 1)
    with pytest.raises(InputError, match="classes"):
        ttakit.Segmenter(labeller, "hflip", output="labels")
    # nearest back-mapping of a resampled view keeps labels (no blends between classes)
    lab = torch.randint(0, 5, (1, 12, 12))
    back = nearest_back(ttakit.views.Scale(1.5).apply(lab[:, None].float())[:, 0].long(), ttakit.views.Scale(1.5),
                        (12, 12))
    assert set(back.unique().tolist()) <= set(lab.unique().tolist())


def test_binary_maps_labels_only_and_memory_per_chunk():
    sizes = []

    def sigmoid_model(a):
        a = torch.as_tensor(a)
        sizes.append(a.shape[0])
        return torch.sigmoid(a[:, :1] * 4 - 2)

    x = torch.rand(20, 3, 8, 6)
    res = ttakit.Segmenter(sigmoid_model, "d4", labels_only=True, batch_size=8, output="probs").run(x)
    assert res.probs is None and res.labels.shape == (20, 8, 6)
    np.testing.assert_array_equal(res.labels, (x[:, 0] > 0.5).numpy().astype(np.int64))
    assert max(sizes) <= 8 and sum(sizes) == 8 * 20  # one view of one chunk per forward
    with pytest.raises(InputError, match="labels_only"):
        ttakit.Segmenter(sigmoid_model, "hflip", labels_only=True, output="probs").predict_proba(x)


def test_auto_output_does_not_guess_a_one_channel_map_inside_0_1():
    x = torch.rand(4, 3, 8, 6)
    weak_logits = lambda a: torch.as_tensor(a)[:, :1] * 0.1 + 0.3       # logits that all lie in [0, 1]
    with pytest.raises(ModelOutputError, match="output='probs' or output='logits'"):
        ttakit.Segmenter(weak_logits, "identity + hflip").run(x)
    declared = ttakit.Segmenter(weak_logits, "identity", output="logits").run(x)
    np.testing.assert_allclose(declared.probs[:, 1], torch.sigmoid(x[:, 0] * 0.1 + 0.3).numpy(), atol=1e-6)
    wide = lambda a: torch.as_tensor(a)[:, :1] * 8 - 4                   # outside [0, 1]: only logits can be
    auto = ttakit.Segmenter(wide, "identity").run(x)
    np.testing.assert_allclose(auto.probs[:, 1], torch.sigmoid(x[:, 0] * 8 - 4).numpy(), atol=1e-6)


def test_errors_and_sklearn_conventions():
    seg = ttakit.Segmenter(echo, "identity + hflip", "gmean", output="logits", data_layout="NHWC")
    params = seg.get_params()
    assert params["policy"] == "identity + hflip" and params["merge"] == "gmean"
    seg.set_params(policy="d4")
    assert len(seg.run_policy) == 8
    with pytest.raises(InputError, match="no parameter"):
        seg.set_params(polcy="d4")
    with pytest.raises(ModelOutputError, match=r"class maps \(n, K, H, W\)"):
        ttakit.Segmenter(lambda a: torch.as_tensor(a)[:, 0, 0], "hflip").run(torch.rand(2, 3, 4, 4))
    bad = lambda a: torch.as_tensor(a) / (torch.as_tensor(a)[:, :1, :1, :1] < 0.99)  # inf where marked
    x = torch.rand(2, 3, 4, 4) * 0.9
    x[0] = 1.0
    res = ttakit.Segmenter(bad, "hflips", output="logits", on_error="mark").run(x)
    assert res.failed.tolist() == [True, False] and (res.labels[0] == -1).all() and list(res.errors) == [0]
