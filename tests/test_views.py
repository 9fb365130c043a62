"""Views: the dihedral group, geometric inverses, equality, specs and the
photometric views."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ttakit import Policy
from ttakit.views import (
    Affine, ChannelShift, Compose, Contrast, Crop, Dihedral, GaussianNoise, Multiply, Rotate, Scale, Shift,
    compose, d4, hflip, identity, make_views, rot90, transpose, transverse, vflip,
)
from ttakit.views import sampling
from ttakit.views.photometric import Add

FAST = settings(max_examples=25, deadline=None)
FILLS = sampling.FILL_MODES




def rand_images(n=2, c=3, h=8, w=8, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random((n, c, h, w), dtype=np.float32))


def ramp(h, w, a, b, d, n=1, c=2) -> torch.Tensor:
    """An image linear in x and y: value a * x + b * y + d (+ k on channel k)
    at each pixel centre."""
    ys, xs = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    img = np.stack([a * xs + b * ys + d + k for k in range(c)])
    return torch.tensor(np.broadcast_to(img, (n, c, h, w)).copy(), dtype=torch.float32)


def erode(mask: torch.Tensor, r: int) -> torch.Tensor:
    """``mask`` minus every pixel within ``r`` (chessboard distance) of a
    pixel outside it or of the image border."""
    outside = F.pad((~mask).float()[None, None], (r, r, r, r), value=1.0)
    return ~(F.max_pool2d(outside, 2 * r + 1, stride=1)[0, 0] > 0)


# -- the dihedral group ----------------------------------------------------------

SIZES = [(8, 8), (6, 10), (9, 5)]


@FAST
@given(seed=st.integers(0, 2**16), size=st.sampled_from(SIZES))
def test_hflip_twice_is_identity(seed, size):
    x = rand_images(h=size[0], w=size[1], seed=seed)
    assert torch.equal(hflip().apply(hflip().apply(x)), x)
    assert not torch.equal(hflip().apply(x), x)
    assert compose(hflip(), hflip()) == identity()
    assert isinstance(compose(hflip(), hflip()), Dihedral)
    assert compose(vflip(), vflip(), hflip()) == hflip()


@FAST
@given(seed=st.integers(0, 2**16), size=st.sampled_from(SIZES))
def test_rot90_four_times_is_identity(seed, size):
    x = rand_images(h=size[0], w=size[1], seed=seed)
    y = x
    for _ in range(4):
        y = rot90().apply(y)
    assert torch.equal(y, x)
    assert compose(rot90(), rot90(), rot90(), rot90()) == identity()
    assert compose(rot90(), rot90()) == rot90(2) == make_views("rot180")[0]
    assert compose(rot90(), rot90(), rot90()) == rot90(-1) == make_views("rot270")[0]


def test_d4_has_eight_distinct_elements():
    g = d4()
    assert len(g) == 8 and len(set(g)) == 8
    assert g[0] == identity()
    assert {repr(v) for v in g} == {"identity", "rot90", "rot180", "rot270", "hflip", "vflip",
                                    "transpose", "transverse"}
    x = rand_images(n=1, c=1, h=6, w=6, seed=3)  # random: no symmetry
    outs = {tuple(v.apply(x).flatten().tolist()) for v in g}
    assert len(outs) == 8


def test_d4_is_closed_and_composition_matches_application():
    g = d4()
    for size in [(6, 6), (5, 7)]:
        x = rand_images(n=1, c=2, h=size[0], w=size[1], seed=1)
        for a in g:
            for b in g:
                ab = compose(a, b)
                assert isinstance(ab, Dihedral) and ab in g
                assert torch.equal(ab.apply(x), b.apply(a.apply(x))), (a, b)
            # each element has its inverse in the group
            assert compose(a, a.inverse()) == identity() and a.inverse() in g


def test_named_d4_elements_are_what_they_say():
    x = rand_images(n=1, c=1, h=5, w=7, seed=2)
    assert torch.equal(hflip().apply(x), x.flip(-1))
    assert torch.equal(vflip().apply(x), x.flip(-2))
    assert torch.equal(transpose().apply(x), x.transpose(-1, -2))
    assert torch.equal(transverse().apply(x), x.flip(-1).flip(-2).transpose(-1, -2))
    # counter-clockwise: the top-right corner goes to the top-left
    r = rot90().apply(x)
    assert r[0, 0, 0, 0] == x[0, 0, 0, -1]
    assert r.shape[-2:] == (7, 5)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("v", d4(), ids=repr)
def test_d4_element_equals_resampling_its_matrix(v, size):
    x = rand_images(n=2, c=3, h=size[0], w=size[1], seed=5)
    inv = np.linalg.inv(v.matrix(size))
    y = sampling.resample(x, inv, v.output_size(size), fill="constant")
    assert torch.equal(y, v.apply(x))


def test_rotate_and_shift_directions_agree_with_d4():
    x = rand_images(n=1, c=2, h=8, w=8, seed=7)
    assert torch.allclose(Rotate(90).apply(x), rot90().apply(x), atol=1e-6)
    assert torch.allclose(Rotate(-90).apply(x), rot90(3).apply(x), atol=1e-6)
    assert torch.allclose(Rotate(180).apply(x), rot90(2).apply(x), atol=1e-6)
    y = Shift(2, 1, fill="constant").apply(x)  # content moves right 2, down 1
    assert torch.equal(y[..., 1:, 2:], x[..., :-1, :-2])
    assert (y[..., :1, :] == 0).all() and (y[..., :, :2] == 0).all()


# -- inverses --------------------------------------------------------------------

EXACT_VIEWS = d4() + [
    *[Shift(dx, dy, fill=f) for f in FILLS for dx, dy in [(2, -1), (-3, 0)]],
    compose(hflip(), Shift(2, 1)),
    compose(Shift(-1, 2, fill="wrap"), rot90()),
    compose(transpose(), Shift(1, 1, fill="reflect")),
]

RESAMPLED_VIEWS = [
    *[Shift(1.5, -2.5, fill=f) for f in FILLS],
    Scale(1.25), Scale(1.1, fill="reflect"), Scale(0.8), Scale(0.6, fill="constant"),
    Rotate(17), Rotate(-30, fill="reflect"),
    *[Crop(0.75, p) for p in ("c", "tl", "tr", "bl", "br")],
    Crop((9, 10), "br"),
    Affine(theta=10, tx=1, ty=-1, shear=5, zx=0.9, zy=1.1),
    Affine(tx=0.1, relative=True, fill="wrap"),
    compose(hflip(), Shift(1.5, 1)),
    compose(Scale(1.2), rot90()),
    compose(Rotate(10), Shift(2, 0)),
    compose(Crop(0.75, "tl"), vflip()),
]
GEOMETRIC = EXACT_VIEWS + RESAMPLED_VIEWS


def _shrinks(v) -> bool:
    """Antialiased downscaling (PIL-style triangle filter) is only
    approximately linear-preserving."""
    return any(isinstance(u, Scale) and u.factor < 1 for u in getattr(v, "views", (v,)))


@FAST
@given(seed=st.integers(0, 2**16), size=st.sampled_from([(8, 8), (7, 10)]))
def test_exact_views_invert_exactly_on_valid_mask(seed, size):
    x = rand_images(n=2, c=2, h=size[0], w=size[1], seed=seed)
    for v in EXACT_VIEWS:
        y = v.apply(x)
        assert y.shape[-2:] == v.output_size(size)
        back = v.invert_dense(y, size)
        mask = v.valid_mask(size)
        assert back.shape == x.shape and mask.shape == size
        assert torch.equal(back[..., mask], x[..., mask]), v
        assert (back[..., ~mask] == 0).all(), v


def test_whole_pixel_shift_valid_mask_is_exact():
    m = Shift(2, -1).valid_mask((6, 8))
    expected = torch.zeros(6, 8, dtype=torch.bool)
    expected[1:, :6] = True  # x + 2 < 8 and y - 1 >= 0
    assert torch.equal(m, expected)
    for v in d4():
        assert v.valid_mask((5, 7)).all()


@FAST
@given(a=st.floats(-1, 1), b=st.floats(-1, 1), d=st.floats(-2, 2), size=st.sampled_from([(16, 16), (14, 18)]))
def test_resampled_views_invert_linear_images(a, b, d, size):
    """Bilinear resampling reproduces linear functions, so de-augmenting the
    view of a ramp gives the ramp back away from the edges of what the view
    saw."""
    x = ramp(*size, a, b, d)
    slope = max(abs(a), abs(b), 1e-3)
    for v in RESAMPLED_VIEWS:
        back = v.invert_dense(v.apply(x), size)
        mask = v.valid_mask(size)
        inner = erode(mask, 2)
        assert 0.05 < inner.float().mean() and mask.float().mean() > 0.3, v
        tol = 0.1 * (abs(a) + abs(b)) + 1e-4 if _shrinks(v) else 1e-4 * (1 + abs(d) + 16 * slope)
        err = (back - x)[..., inner].abs().max().item()
        assert err <= tol, (v, err)


@pytest.mark.parametrize("v", [v for v in GEOMETRIC if getattr(v, "fill", "nearest") != "constant"
                               and not any(getattr(u, "fill", "") == "constant" for u in getattr(v, "views", ()))],
                         ids=repr)
def test_valid_mask_means_known_for_constant_images(v):
    """Every pixel the mask calls valid comes back whole: none is blended
    with the zero the inverse puts outside the view."""
    size = (10, 12)
    x = torch.full((1, 1, *size), 0.7)
    back = v.invert_dense(v.apply(x), size)
    mask = v.valid_mask(size)
    assert mask.any()
    assert torch.allclose(back[..., mask], torch.tensor(0.7), atol=1e-5), v


def test_valid_mask_fractions_are_sensible():
    size = (16, 16)
    frac = {repr(v): v.valid_mask(size).float().mean().item() for v in GEOMETRIC}
    for v in GEOMETRIC:
        f = frac[repr(v)]
        assert 0.3 <= f <= 1.0, (v, f)
    for v in d4() + [Scale(0.8)]:
        assert frac[repr(v)] == 1.0
    for v in [Shift(1.5, -2.5), Rotate(17), Crop(0.75), Scale(1.25)]:
        assert frac[repr(v)] < 1.0
    # a crop of 3/4 of each side keeps about (3/4)^2 of the pixels
    assert abs(frac[repr(Crop(0.75))] - 0.5625) < 0.05


def test_non_square_rot90_swaps_sides_and_inverts():
    x = rand_images(n=2, c=3, h=5, w=9, seed=4)
    for v in [rot90(), rot90(3), transpose(), compose(rot90(), Shift(1, 0))]:
        y = v.apply(x)
        assert y.shape == (2, 3, 9, 5)
        assert v.output_size((5, 9)) == (9, 5)
        back = v.invert_dense(y, (5, 9))
        assert back.shape == x.shape
        mask = v.valid_mask((5, 9))
        assert torch.equal(back[..., mask], x[..., mask])


points_st = st.lists(st.tuples(st.floats(-4, 20), st.floats(-4, 20)), min_size=1, max_size=6)


@FAST
@given(pts=points_st, size=st.sampled_from([(12, 12), (10, 15)]))
def test_points_round_trip(pts, size):
    p = np.asarray(pts, dtype=np.float64)
    for v in GEOMETRIC:
        fwd = sampling.transform_points(p, v.matrix(size))
        back = v.invert_points(fwd, size)
        np.testing.assert_allclose(back, p, atol=1e-6, err_msg=repr(v))
        # torch tensors work the same way
        back_t = v.invert_points(torch.from_numpy(fwd), size)
        np.testing.assert_allclose(back_t.numpy(), p, atol=1e-6, err_msg=repr(v))


AXIS_ALIGNED = [v for v in GEOMETRIC if not any(isinstance(u, (Rotate, Affine)) for u in getattr(v, "views", (v,)))]


@FAST
@given(x1=st.floats(0, 10), y1=st.floats(0, 10), w=st.floats(0.5, 6), h=st.floats(0.5, 6))
def test_boxes_round_trip_for_axis_aligned_views(x1, y1, w, h):
    size = (12, 12)
    box = np.array([[x1, y1, x1 + w, y1 + h]])
    for v in AXIS_ALIGNED:
        fwd = sampling.transform_boxes(box, v.matrix(size))
        assert (fwd[:, 2:] >= fwd[:, :2]).all()
        np.testing.assert_allclose(v.invert_boxes(fwd, size), box, atol=1e-6, err_msg=repr(v))


def test_rotated_box_inverse_contains_the_original():
    size = (12, 12)
    box = np.array([3.0, 4.0, 7.0, 9.0])
    for v in [Rotate(30), compose(Rotate(-20), hflip())]:
        back = v.invert_boxes(sampling.transform_boxes(box, v.matrix(size)), size)
        assert (back[:2] <= box[:2] + 1e-9).all() and (back[2:] >= box[2:] - 1e-9).all()


@FAST
@given(i=st.integers(0, 6), j=st.integers(0, 9))
def test_bright_pixel_maps_back_to_its_origin(i, j):
    size = (7, 10)
    x = torch.zeros(1, 1, *size)
    x[0, 0, i, j] = 1.0
    views = d4() + [Shift(2, 1, fill="constant"), compose(hflip(), Shift(-1, 2, fill="constant")),
                    compose(rot90(), vflip(), Shift(1, 1, fill="constant")), Rotate(180, fill="constant")]
    for v in views:
        y = v.apply(x)[0, 0]
        if y.max() < 1:  # shifted out of view
            assert not v.valid_mask(size)[i, j]
            continue
        r, c = divmod(int(y.argmax()), y.shape[1])
        back = v.invert_points(np.array([[c + 0.5, r + 0.5]]), size)
        np.testing.assert_allclose(back, [[j + 0.5, i + 0.5]], atol=1e-9, err_msg=repr(v))
        box = v.invert_boxes(np.array([[c, r, c + 1.0, r + 1.0]]), size)
        np.testing.assert_allclose(box, [[j, i, j + 1.0, i + 1.0]], atol=1e-9, err_msg=repr(v))


def test_invert_dense_takes_multichannel_outputs():
    """Dense outputs have their own channel count (a K-class mask)."""
    v = compose(hflip(), Shift(1.5, 0))
    y = torch.rand(3, 5, 12, 12)
    assert v.invert_dense(y, (12, 12)).shape == (3, 5, 12, 12)


# -- equality, hashing, specs -------------------------------------------------

def test_equality_and_hash():
    assert Shift(2) == Shift(2.0) and hash(Shift(2)) == hash(Shift(2.0))
    assert Shift(2) == Shift(dx=2, dy=0, fill="nearest", cval=0.0)
    assert Shift(2) != Shift(3)
    assert Shift(2) != Shift(2, fill="wrap")
    assert Shift(2) != Shift(0, 2)
    assert Scale(1.1) != Rotate(1.1)
    assert Scale(1.1) == make_views("zoom", 1.1)[0]
    assert rot90(5) == rot90(1) and rot90(1) != rot90(3)
    assert compose(hflip(), Shift(2)) == compose(hflip(), Shift(2.0))
    assert compose(hflip(), Shift(2)) != compose(Shift(2), hflip())
    assert Crop([4, 6]) == Crop((4, 6))
    s = {Shift(2), Shift(2.0), Shift(3), hflip(), compose(hflip(), hflip()), identity(),
         compose(Scale(1.1), hflip()), compose(Scale(1.1), hflip())}
    assert len(s) == 5
    d = {Shift(2): "a"}
    assert d[Shift(2.0)] == "a"
    assert GaussianNoise(0.1, seed=1) != GaussianNoise(0.1, seed=2)


REPR_VIEWS = GEOMETRIC + [
    Multiply(1.2), Multiply(0.8, clip=False), Add(-0.1), Contrast(0.5), ChannelShift(0.05),
    GaussianNoise(0.02, seed=3), compose(Multiply(1.1), hflip(), Shift(1.5, 0.25, unit="px")),
    Crop(0.5, "tr"), Scale(1.1, fill="constant", cval=0.25),
]


@pytest.mark.parametrize("v", REPR_VIEWS, ids=repr)
def test_repr_parses_back_to_the_view(v):
    p = Policy.parse(repr(v))
    assert p.views == (v,) and list(p.weights) == [1.0]
    if isinstance(v, Compose):
        assert " * " in repr(v)


# -- photometric ---------------------------------------------------------------

def test_multiply_brightness_add_contrast():
    x = rand_images(n=3, c=3, seed=9)
    b = make_views("brightness", 1.3)[0]
    assert b == make_views("multiply", 1.3)[0] == Multiply(1.3)
    assert torch.allclose(b.apply(x), (x * 1.3).clamp(0, 1))
    assert torch.allclose(Multiply(1.3, clip=False).apply(x), x * 1.3)
    assert torch.allclose(Add(0.2).apply(x), (x + 0.2).clamp(0, 1))
    assert torch.allclose(Add(-0.2, clip=False).apply(x), x - 0.2)
    assert torch.allclose(Contrast(1.0).apply(x), x)
    # factor 0: every pixel becomes the image's luminance mean
    lum = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).mean(dim=(1, 2))
    flat = Contrast(0.0).apply(x)
    assert torch.allclose(flat, lum[:, None, None, None].expand_as(x), atol=1e-6)
    g = rand_images(n=2, c=1, seed=1)
    assert torch.allclose(Contrast(0.5, clip=False).apply(g),
                          g.mean(dim=(1, 2, 3), keepdim=True) + 0.5 * (g - g.mean(dim=(1, 2, 3), keepdim=True)),
                          atol=1e-6)
    # photometric views leave geometry alone
    pts = np.array([[1.0, 2.0]])
    assert np.array_equal(Multiply(2).invert_points(pts, (8, 8)), pts)
    assert not Multiply(2).geometric and compose(Multiply(2), hflip()).geometric


@pytest.mark.parametrize("value", [0.3, -0.3])
def test_channel_shift_follows_keras(value):
    """Keras apply_channel_shift: x + value, clipped to the image's own min
    and max over all channels."""
    x = rand_images(n=2, c=3, seed=11) * torch.tensor([0.5, 1.0, 0.8])[None, :, None, None]
    out = ChannelShift(value).apply(x).numpy()
    for n, img in enumerate(x.numpy()):
        expected = np.clip(img + value, img.min(), img.max())
        np.testing.assert_allclose(out[n], expected, atol=1e-6)


@FAST
@given(std=st.floats(0.01, 0.5), seed=st.integers(0, 1000), split=st.integers(1, 5))
def test_noise_is_deterministic_and_batch_independent(std, seed, split):
    x = rand_images(n=6, c=2, seed=seed % 7)
    v = GaussianNoise(std, seed=seed)
    full = v.apply(x)
    assert torch.equal(full, GaussianNoise(std, seed=seed).apply(x))
    assert torch.equal(torch.cat([v.apply(x[:split]), v.apply(x[split:])]), full)
    assert full.min() >= 0 and full.max() <= 1
    raw = GaussianNoise(std, seed=seed, clip=False).apply(x) - x
    assert raw.abs().max() > 0
    assert torch.allclose(raw[0], raw[-1], atol=1e-6)  # the same field for every input
    assert not torch.equal(GaussianNoise(std, seed=seed + 1, clip=False).apply(x), raw + x)
