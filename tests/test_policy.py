"""Policies: the spec grammar, files, dedupe and Keras-style random draws."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ttakit
from ttakit import Policy, PolicyError
from ttakit.views import (
    Affine, ChannelShift, Contrast, Crop, Dihedral, GaussianNoise, Multiply, Rotate, Scale, Shift, compose, d4,
    hflip, identity, rot90, vflip,
)
from ttakit.views.photometric import Add

FAST = settings(max_examples=30, deadline=None)




# -- the grammar ------------------------------------------------------------

def test_sum_of_views():
    p = Policy.parse("identity + hflip")
    assert p.views == (identity(), hflip())
    assert list(p.weights) == [1.0, 1.0]
    assert Policy.parse("identity+hflip") == p == Policy.parse("  identity  +  hflip ")


def test_groups():
    assert Policy.parse("d4").views == tuple(d4())
    assert Policy.parse("flips").views == (identity(), hflip(), vflip())
    assert len(Policy.parse("tencrop")) == 10 and len(set(Policy.parse("tencrop").views)) == 10
    assert Policy.parse("rot90s").views == tuple(rot90(k) for k in range(4))


def test_product_with_positional_expansion():
    p = Policy.parse("flips * scale(0.9, 1.1)")
    expected = [compose(f, Scale(s)) for f in (identity(), hflip(), vflip()) for s in (0.9, 1.1)]
    assert list(p.views) == expected
    assert list(p.weights) == [1.0] * 6
    assert p.views[0] == Scale(0.9)  # identity vanishes from the composition
    x = torch.rand(1, 1, 8, 8)
    assert torch.allclose(p.views[3].apply(x), Scale(1.1).apply(hflip().apply(x)))


def test_weights():
    p = Policy.parse("identity + 0.5*hflip")
    assert list(p.weights) == [1.0, 0.5]
    assert Policy.parse("identity +0.5*hflip") == p
    assert Policy.parse("identity + hflip * 0.5") == p
    q = Policy.parse("2 * (identity + hflip)")
    assert list(q.weights) == [2.0, 2.0]
    assert list(Policy.parse("0.5 * 4 * hflip").weights) == [2.0]


def test_parentheses_and_list_expansion():
    p = Policy.parse("(identity + hflip) * shift(dx=[-2, 2])")
    assert list(p.views) == [Shift(-2), Shift(2), compose(hflip(), Shift(-2)), compose(hflip(), Shift(2))]
    q = Policy.parse("shift(dx=[-2,2], dy=[-1, 1])")
    assert list(q.views) == [Shift(-2, -1), Shift(-2, 1), Shift(2, -1), Shift(2, 1)]
    assert Policy.parse("scale([0.9, 1.1])").views == Policy.parse("scale(0.9, 1.1)").views
    assert Policy.parse("identity + (hflip + vflip) * rot90").views == (
        identity(), compose(hflip(), rot90()), compose(vflip(), rot90()))


def test_tuples_and_strings():
    p = Policy.parse("crop(size=(4, 6), pos=tl)")
    assert p.views == (Crop((4, 6), "tl"),)
    assert p.views[0].apply(torch.rand(2, 3, 8, 8)).shape == (2, 3, 8, 8)
    assert Policy.parse("shift(2, fill='wrap')").views == (Shift(2, fill="wrap"),)
    assert Policy.parse('affine(theta=5, relative=true)').views == (Affine(5, relative=True),)


def test_random_in_a_spec():
    p = Policy.parse("random(7, seed=0, horizontal_flip=true)")
    assert p == Policy.random(7, seed=0, horizontal_flip=True)
    assert p.source == "random(7, seed=0, horizontal_flip=true)"
    q = Policy.parse("identity + random(3, seed=1, width_shift_range=(1, 2))")
    assert len(q) == 4 and q.views[0] == identity()
    assert q.views[1:] == Policy.random(3, seed=1, width_shift_range=[1, 2]).views


def test_coerce():
    assert Policy.coerce(None).views == (identity(),)
    assert Policy.coerce(hflip()).views == (hflip(),)
    assert Policy.coerce([hflip(), vflip()]).views == (hflip(), vflip())
    p = Policy.parse("d4")
    assert Policy.coerce(p) is p and Policy.coerce("d4") == p


def test_algebra():
    a, b = Policy.parse("identity + hflip"), Policy.parse("shift(1, 2)")
    assert (a + b).views == (identity(), hflip(), Shift(1), Shift(2))
    assert (a * b) == Policy.parse("(identity + hflip) * shift(1, 2)")
    assert list((0.25 * a).weights) == [0.25, 0.25] and (a * 0.25) == 0.25 * a
    assert Policy.parse("identity").is_identity and not a.is_identity


# -- spec round trip --------------------------------------------------------

finite = dict(allow_nan=False, allow_infinity=False)
fill = st.sampled_from(["constant", "nearest", "reflect", "wrap"])
d4_view = st.sampled_from(d4())
shift_view = st.builds(Shift, st.one_of(st.integers(-4, 4), st.floats(-3.5, 3.5, **finite)),
                       st.one_of(st.integers(-4, 4), st.floats(-0.5, 0.5, **finite)), fill,
                       st.floats(0, 1, **finite), st.sampled_from(["px", "fraction"]))
scale_view = st.builds(Scale, st.floats(0.5, 1.5, **finite), fill)
rotate_view = st.builds(Rotate, st.floats(-45, 45, **finite), fill)
crop_view = st.builds(Crop, st.one_of(st.floats(0.5, 1.0), st.integers(4, 8),
                                      st.tuples(st.integers(4, 8), st.integers(4, 8))),
                      st.sampled_from(["c", "tl", "tr", "bl", "br"]))
affine_view = st.builds(Affine, st.floats(-20, 20, **finite), st.floats(-2, 2, **finite),
                        st.floats(-2, 2, **finite), st.floats(-10, 10, **finite), st.floats(0.8, 1.2),
                        st.floats(0.8, 1.2), st.booleans(), fill)
photo_view = st.one_of(
    st.builds(Multiply, st.floats(0, 2, **finite), st.booleans()),
    st.builds(Add, st.floats(-0.5, 0.5, **finite), st.booleans()),
    st.builds(Contrast, st.floats(0, 2, **finite)),
    st.builds(ChannelShift, st.floats(-0.3, 0.3, **finite)),
    st.builds(GaussianNoise, st.floats(0, 0.2, **finite), st.integers(0, 99)),
)
one_view = st.one_of(d4_view, shift_view, scale_view, rotate_view, crop_view, affine_view, photo_view)
composed = st.lists(one_view, min_size=1, max_size=3).map(lambda vs: compose(*vs))
weight = st.one_of(st.just(1.0), st.integers(1, 5).map(float), st.floats(0.001, 10, **finite))


@FAST
@given(entries=st.lists(st.tuples(composed, weight), min_size=1, max_size=5))
def test_spec_round_trip(entries):
    p = Policy([v for v, _ in entries], [w for _, w in entries])
    q = Policy.parse(p.spec)
    assert q == p
    assert [repr(v) for v in q.views] == [repr(v) for v in p.views]
    assert q.unique() == p.unique()


def test_spec_keeps_weights_exact():
    p = Policy([hflip(), identity()], [0.1 * 3, 1 / 3])
    assert Policy.parse(p.spec) == p


@FAST
@given(entries=st.lists(st.tuples(composed, weight), min_size=1, max_size=4))
def test_file_round_trip(entries, tmp_path_factory):
    d = tmp_path_factory.mktemp("pol")
    p = Policy([v for v, _ in entries], [w for _, w in entries])
    for name in ("p.yaml", "p.yml", "p.json"):
        path = p.save(d / name)
        q = Policy.load(path)
        assert q == p
        assert q.spec == p.spec


def test_file_contents_and_source(tmp_path):
    from ttakit.merge import LearnedMerge

    p = Policy.random(5, seed=2, horizontal_flip=True, rotation_range=10)
    distinct = p.unique().views
    p = p.with_merge(LearnedMerge(np.linspace(0.2, 1.0, len(distinct)), 0.7, distinct))
    path = p.save(tmp_path / "p.json")
    data = json.loads(path.read_text())
    assert data["format"] == "ttakit.policy" and data["version"] == 2
    assert len(data["views"]) == 5 and all("weight" in e and "view" in e for e in data["views"])
    # the learned weights are saved keyed by view, not by position
    assert [e["view"] for e in data["merge"]["weights"]] == [v.to_dict() for v in distinct]
    q = Policy.load(path)
    assert q == p and q.source == p.source and q.merge == p.merge
    y = Policy.load(p.save(tmp_path / "p.yaml"))
    assert y == p and y.aggregation == p.aggregation
    assert p != p.with_merge(None) and p.with_merge(None) == Policy(p.views, p.weights)


# -- dedupe ---------------------------------------------------------------------

def test_unique_sums_weights_in_first_order():
    p = Policy([hflip(), identity(), compose(hflip(), hflip()), hflip(), Shift(2), Shift(2.0)],
               [1, 2, 0.5, 0.25, 1, 3])
    u = p.unique()
    assert u.views == (hflip(), identity(), Shift(2))
    assert list(u.weights) == [1.25, 2.5, 4.0]
    assert u.weights.sum() == p.weights.sum()
    assert u.unique() == u


@FAST
@given(entries=st.lists(st.tuples(st.sampled_from(d4() + [Shift(1), Scale(1.1)]), st.integers(1, 4)),
                        min_size=1, max_size=12))
def test_unique_preserves_total_weight_per_view(entries):
    p = Policy([v for v, _ in entries], [w for _, w in entries])
    u = p.unique()
    assert len(set(u.views)) == len(u.views) == len({v for v, _ in entries})
    for v, w in u:
        assert w == sum(x for u2, x in entries if u2 == v)


# -- Keras-style random policies ------------------------------------------------

def test_random_flips():
    p = Policy.random(n=7, seed=0, horizontal_flip=True)
    assert len(p) == 7
    assert set(p.views) <= {identity(), hflip()}
    assert len(set(p.views)) == 2  # seed 0 draws both outcomes
    assert Policy.random(n=7, seed=0, horizontal_flip=True) == p
    others = [Policy.random(n=7, seed=s, horizontal_flip=True) for s in range(1, 8)]
    assert any(o != p for o in others)
    assert len(p.unique()) == 2 and p.unique().weights.sum() == 7


def test_random_respects_flags():
    p = Policy.random(n=40, seed=1, vertical_flip=True)
    assert set(p.views) == {identity(), vflip()}
    q = Policy.random(n=40, seed=1, vertical_flip=True, horizontal_flip=True)
    assert set(q.views) == {identity(), hflip(), vflip(), rot90(2)}  # both flips = a half turn
    assert Policy.random(n=10, seed=3).views == (identity(),) * 10


def _affines(p):
    out = []
    for v in p.views:
        parts = getattr(v, "views", (v,))
        aff = [u for u in parts if isinstance(u, Affine)]
        assert len(aff) == 1, v
        out.append(aff[0])
    return out


@pytest.mark.parametrize("r", [0.1, 0.25])
def test_random_fractional_width_shift(r):
    p = Policy.random(n=30, seed=4, width_shift_range=r)
    affs = _affines(p)
    assert all(a.relative and abs(a.tx) <= r and a.ty == 0 and a.theta == 0 and a.shear == 0 for a in affs)
    assert len({a.tx for a in affs}) > 20  # continuous draws
    w = 20
    for a in affs:
        m = a.matrix((10, w))
        assert abs(m[0, 2]) <= r * w + 1e-9 and np.allclose(m[:2, :2], np.eye(2))
        assert np.isclose(m[0, 2], a.tx * w)


def test_random_int_shift_is_whole_pixels():
    p = Policy.random(n=30, seed=5, width_shift_range=3, height_shift_range=2)
    affs = _affines(Policy([v for v in p.views if v != identity()]))  # a (0, 0) draw is the identity
    x = torch.rand(1, 2, 9, 11)
    for a in affs:
        assert not a.relative
        assert float(a.tx).is_integer() and abs(a.tx) < 3
        assert float(a.ty).is_integer() and abs(a.ty) < 2
        # a whole-pixel affine shift is the exact shift
        assert torch.equal(a.apply(x), Shift(int(a.tx), int(a.ty)).apply(x))
    assert {a.tx for a in affs} >= {-2.0, 2.0}


def test_random_list_shift_and_other_ranges():
    p = Policy.random(n=30, seed=6, width_shift_range=[1, 3])
    assert {abs(a.tx) for a in _affines(p)} <= {1.0, 3.0}
    rot = _affines(Policy.random(n=30, seed=7, rotation_range=25))
    assert all(abs(a.theta) <= 25 and a.tx == 0 for a in rot) and max(abs(a.theta) for a in rot) > 10
    zoom = _affines(Policy.random(n=30, seed=8, zoom_range=0.2))
    assert all(0.8 <= a.zx <= 1.2 and 0.8 <= a.zy <= 1.2 for a in zoom)
    zoom2 = _affines(Policy.random(n=10, seed=8, zoom_range=(0.9, 1.0)))
    assert all(0.9 <= a.zx <= 1.0 for a in zoom2)
    shear = _affines(Policy.random(n=10, seed=8, shear_range=15, fill_mode="reflect"))
    assert all(abs(a.shear) <= 15 and a.fill == "reflect" for a in shear)
    bright = Policy.random(n=20, seed=9, brightness_range=(0.5, 1.5)).views
    assert all(isinstance(v, Multiply) and 0.5 <= v.factor <= 1.5 for v in bright)
    chan = Policy.random(n=20, seed=9, channel_shift_range=0.1).views
    assert all(isinstance(v, ChannelShift) and abs(v.value) <= 0.1 for v in chan)


def test_random_keras_order():
    """Keras applies the affine transform, then the channel shift, then the
    flips, then brightness."""
    p = Policy.random(n=20, seed=10, rotation_range=10, horizontal_flip=True, brightness_range=(0.8, 1.2),
                      channel_shift_range=0.1)
    rank = {Affine: 0, ChannelShift: 1, Dihedral: 2, Multiply: 3}
    for v in p.views:
        kinds = [rank[type(u)] for u in getattr(v, "views", (v,))]
        assert kinds == sorted(kinds)
        assert kinds[0] == 0 and kinds[-1] == 3
    assert any(hflip() in getattr(v, "views", ()) for v in p.views)


# -- errors ---------------------------------------------------------------------

def _err(spec) -> str:
    with pytest.raises(PolicyError) as e:
        Policy.parse(spec)
    assert isinstance(e.value, ttakit.TTAKitError) and isinstance(e.value, ValueError)
    return str(e.value)


def test_unknown_view_lists_names_and_suggests():
    msg = _err("identity + hflp")
    assert "'hflp'" in msg and "Did you mean 'hflip'" in msg
    for name in ("vflip", "shift", "scale", "rotate", "d4", "tencrop"):
        assert name in msg
    assert "Did you mean" not in _err("qqqqqq")


def test_unknown_parameter_lists_valid_ones():
    msg = _err("shift(dz=2)")
    assert "'dz'" in msg
    for p in ("dx", "dy", "fill", "cval"):
        assert p in msg
    assert "Did you mean 'fill'" in _err("shift(2, fil=wrap)")
    assert "no parameters" in _err("hflip(factor=2)") or "no parameter" in _err("hflip(factor=2)")
    assert "takes no parameters" in _err("hflip(2)")


def test_bad_values():
    assert "positive" in _err("scale(-1)")
    assert "positive" in _err("scale(0)")
    msg = _err("shift(2, fill=mirror)")
    assert "fill mode" in msg and "'mirror'" in msg and "reflect" in msg
    msg = _err("rot90(1.5)")
    assert "whole number" in msg and "rot90" in msg
    assert "crop position" in _err("crop(0.5, pos=middle)")
    assert "multiply" in _err("multiply(-1)")
    assert "weights must be finite and >= 0" in _err("-1 * hflip")
    assert "positive" in _err("0 * hflip")
    assert "given both by position and by name" in _err("shift(1, dx=2)")
    # values of the wrong type are caught when the view is made, not when it runs
    for spec in ("rotate(angle=bad)", "shift(dx=inf)", "shift(1, dy=true)", "add('0.1')", "crop(size=big)",
                 "multiply(x)", "scale(factor=[0.9, big])", "channel_shift(none)", "noise(std=high)"):
        msg = _err(spec)
        assert "finite number" in msg, (spec, msg)
    assert "pair" in _err("crop(size=(4, 5, 6))")
    with pytest.raises(PolicyError, match="finite number"):
        Rotate(float("nan"))


@pytest.mark.parametrize("spec, pos", [
    ("identity + + hflip", 11),
    ("identity + hflip)", 16),
    ("identity hflip", 9),
    ("shift(2", 7),
    ("identity @ hflip", 9),
    ("shift(dx=2, 3)", 12),
    ("0.5 + hflip", 4),
])
def test_syntax_errors_point_at_the_position(spec, pos):
    msg = _err(spec)
    assert f"position {pos}" in msg
    lines = msg.splitlines()
    assert lines[-2].strip() == spec and lines[-1].index("^") == lines[-2].index(spec) + pos


def test_empty_and_non_string_specs():
    assert "empty" in _err("")
    assert "number" in _err("3")
    with pytest.raises(PolicyError, match="string"):
        Policy.parse(["hflip"])
    with pytest.raises(PolicyError, match="cannot make a policy"):
        Policy.coerce(3.5)
    with pytest.raises(PolicyError, match="at least one view"):
        Policy([])
    with pytest.raises(PolicyError, match="weights"):
        Policy([hflip()], [1, 2])


def test_random_errors():
    with pytest.raises(PolicyError) as e:
        Policy.random(7, seed=0, horizontal_flipp=True)
    msg = str(e.value)
    assert "'horizontal_flipp'" in msg and "Did you mean 'horizontal_flip'" in msg and "width_shift_range" in msg
    assert "rotation_range" in _err("random(7, rotation=10)")
    assert "positive integer" in _err("random(0, horizontal_flip=true)")
    assert "fill_mode" in _err("random(3, fill_mode=mirror)")
    assert "zoom_range" in _err("random(3, zoom_range=(0.5, 1, 2))")
    assert "fractions" in _err("random(3, width_shift_range=0.1, height_shift_range=2)")
    assert "one positional" in _err("random(3, 4)")


def _write(tmp_path, name, text) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("name, text, words", [
    ("a.json", "[1, 2]", ["not a ttakit policy"]),
    ("a.json", '{"format": "other", "views": []}', ["not a ttakit policy"]),
    ("a.json", '{"format": "ttakit.policy", "version": 99, "views": [{"view": "hflip"}]}',
     ["version 99", "newer", "upgrade"]),
    ("a.json", '{"format": "ttakit.policy", "version": "two", "views": [{"view": "hflip"}]}',
     ["version", "'two'"]),
    ("a.json", '{"format": "ttakit.policy", "version": 1}', ["non-empty 'views'"]),
    ("a.json", '{"format": "ttakit.policy", "version": 1, "views": ["hflip"]}', ["view #0", "malformed"]),
    ("a.json", '{"format": "ttakit.policy", "version": 1, "views": [{"view": "hflip", "weight": "heavy"}]}',
     ["view #0", "malformed"]),
    ("a.json", '{"format": "ttakit.policy", "version": 1, "views": [{"weight": 1}]}', ["view #0", "'view' key"]),
    ("a.json", '{"format": "ttakit.policy", "version": 1, "views": [{"view": "hflip"}, {"view": "warp", '
               '"strength": 2}]}', ["view #1", "unknown view 'warp'", "valid views", "shift"]),
    ("a.json", '{"format": "ttakit.policy", "version": 1, "views": [{"view": "shift", "dz": 2}]}',
     ["view #0", "no parameter 'dz'"]),
    ("a.json", '{"format": "ttakit.policy", "version": 1, "views": [{"view": "d4"}]}', ["group"]),
    ("a.json", "{not json", ["does not parse"]),
    ("a.yaml", "format: ttakit.policy\nviews: [\n", ["does not parse"]),
    ("a.yaml", "format: ttakit.policy\nversion: 1\nviews:\n- view: scale\n  factor: -2\n", ["positive"]),
])
def test_bad_policy_files(tmp_path, name, text, words):
    path = _write(tmp_path, name, text)
    with pytest.raises(PolicyError) as e:
        Policy.load(path)
    msg = str(e.value)
    assert path in msg
    for w in words:
        assert w.lower() in msg.lower(), (w, msg)


def test_missing_policy_file(tmp_path):
    with pytest.raises(PolicyError, match="cannot read policy file"):
        Policy.load(tmp_path / "nope.yaml")


@pytest.mark.parametrize("call", ["policy", "file"])
def test_a_spec_reads_no_file(tmp_path, call):
    """Files are explicit arguments (Policy.load, --policy FILE), not part of the grammar: a spec that
    names one is refused before anything is read (policy('/dev/zero') used to read until MemoryError)."""
    path = Policy.parse("d4").save(tmp_path / "p.yaml")
    for spec in (f"identity + 0.5 * {call}('{path}')", f"{call}('/dev/zero')", f"hflip * {call}(x)"):
        with pytest.raises(PolicyError, match=r"not part of the spec grammar.*Policy\.load.*--policy FILE"):
            Policy.parse(spec)
    assert (Policy.parse("identity") + 0.5 * Policy.load(path)).views == (identity(), *d4())
