"""No policy input can hurt ttakit: every short input that used to ask for
unbounded work (memory, time, recursion, file reads) is refused quickly, with
an error that names the limit, its value, the value found and how to raise it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc

import pytest

import ttakit
from ttakit import Policy, PolicyError
from ttakit.limits import DEFAULTS, LimitError, Limits, current, override
from ttakit.views import Affine, Crop, GaussianNoise, Multiply, Shift, identity, make_views, rot90


def _limit(spec_or_call, limit: str) -> LimitError:
    with pytest.raises(LimitError) as e:
        spec_or_call() if callable(spec_or_call) else Policy.parse(spec_or_call)
    err = e.value
    msg = str(err)
    assert err.limit == limit and f"{limit}=" in msg, msg
    assert f"TTAKIT_{limit.upper()}" in msg and f"override({limit}=N)" in msg, msg
    assert len(msg) < 600, msg
    return err


def _quick(f, seconds=1.0):
    t = time.perf_counter()
    try:
        return f()
    finally:
        assert time.perf_counter() - t < seconds


# -- the limits themselves ------------------------------------------------------------------------
def test_defaults_and_override():
    assert current() == DEFAULTS == Limits(4096, 100_000, 10_000, 64, 1 << 20)
    with override(max_views=10) as inner:
        assert current().max_views == 10 == inner.max_views
        with override(max_depth=3):
            assert current().max_views == 10 and current().max_depth == 3
        assert current().max_depth == 64
    assert current() == DEFAULTS
    with pytest.raises(PolicyError, match="no limit named 'max_view'"):
        with override(max_view=3):
            pass
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(PolicyError, match="positive integer"):
            Limits(max_views=bad)


def test_environment_variables(monkeypatch):
    monkeypatch.setenv("TTAKIT_MAX_VIEWS", "7")
    assert current().max_views == 7
    _limit("d4", "max_views")
    monkeypatch.setenv("TTAKIT_MAX_VIEWS", "many")
    with pytest.raises(PolicyError, match="TTAKIT_MAX_VIEWS must be a positive integer"):
        Policy.parse("d4 * d4")


# -- unbounded work from short inputs --------------------------------------------------------------
def test_products_are_counted_before_expanding():
    err = _quick(lambda: _limit("d4*d4*d4*d4*d4*d4*d4*d4", "max_copies"))
    assert err.found == 8**8 and "16,777,216" in str(err)
    big = "shift(dx=[%s]) * shift(dy=[%s])" % (", ".join(map(str, range(1000))), ", ".join(map(str, range(1000))))
    assert len(big) < 10_000
    assert _quick(lambda: _limit(big, "max_copies")).found == 1_000_000
    with pytest.raises(LimitError, match=r"about 1e\d+"):
        Policy.parse("d4*" * 2000 + "d4")


def test_random_copies_are_checked_before_drawing():
    assert _quick(lambda: _limit("random(100000000)", "max_copies")).found == 100_000_000
    _quick(lambda: _limit(lambda: Policy.random(10**12, horizontal_flip=True), "max_copies"))
    with override(max_copies=50):
        _limit("random(51, horizontal_flip=true)", "max_copies")
        assert len(Policy.parse("random(50, horizontal_flip=true)")) == 50


def test_distinct_views_stop_drawing_and_composing():
    # 10,000 distinct random views: refused after 4,097 draws, not 10,000
    assert _quick(lambda: _limit("random(10000, rotation_range=10)", "max_views")).found == 4097
    # 10,000 distinct products: refused while composing
    grid = "shift(dx=[%s]) * shift(dy=[%s])" % (",".join(map(str, range(1, 101))), ",".join(map(str, range(1, 101))))
    _quick(lambda: _limit(grid, "max_views"))
    # many copies of few views are fine: dedupe makes them cheap
    p = Policy.parse("random(20000, horizontal_flip=true)")
    assert len(p) == 20000 and len(p.unique()) == 2
    assert len(Policy.parse("d4 * d4 * d4 * d4")) == 4096
    with override(max_views=3):
        _limit(lambda: Policy(list(make_views("d4"))), "max_views")
        _limit(lambda: Policy.parse("hflips") * Policy.parse("vflips"), "max_views")


def test_python_api_checks_too():
    with pytest.raises(LimitError):
        make_views("shift", dx=list(range(1000)), dy=list(range(1000)))
    with override(max_copies=10):
        _limit(lambda: Policy.parse("d4") * Policy.parse("d4"), "max_copies")
        _limit(lambda: Policy.parse("d4") + Policy.parse("d4"), "max_copies")


# -- parsing: linear time, no recursion errors, short messages -------------------------------------------
def test_long_sums_parse_in_linear_time():
    spec = " + ".join(["identity"] * 10_000)
    _limit(spec, "max_spec_chars")
    with override(max_spec_chars=len(spec)):
        t = time.perf_counter()
        p = Policy.parse(spec)
        took = time.perf_counter() - t
    assert len(p) == 10_000 and len(p.unique()) == 1
    assert took < 3.0, took  # 25 s before (quadratic); ~0.3 s on one shared core


@pytest.mark.parametrize("spec", [
    "(" * 2000 + "identity" + ")" * 2000,
    "shift(dx=" + "[" * 3000 + "1" + "]" * 3000 + ")",
    "crop(size=" + "(" * 100 + "1" + ")" * 100 + ")",
])
def test_deep_nesting_is_a_limit_not_a_recursion_error(spec):
    with override(max_spec_chars=100_000):
        err = _limit(spec, "max_depth")
    assert err.found == 65
    with override(max_depth=10_000, max_spec_chars=100_000):
        with pytest.raises(PolicyError):  # even past Python's stack: a PolicyError
            Policy.parse("(" * 5000 + "identity" + ")" * 5000)


def test_errors_show_a_window_not_the_whole_spec():
    spec = "identity + " * 400 + "@ + hflip" + " + identity" * 400
    with pytest.raises(PolicyError) as e:
        Policy.parse(spec)
    msg = str(e.value)
    assert len(msg) < 300 and f"position {spec.index('@')}" in msg and f"of {len(spec.rstrip()):,}" in msg
    line, caret = msg.splitlines()[-2:]
    assert line[caret.index("^")] == "@" and line.startswith("  ...") and line.endswith("...")
    long_name = "x" * 5000
    for s in (long_name, f"shift({long_name}=1)", f"shift(dx={long_name})", "'" + long_name + "'",
              f"identity + {long_name}(1)", f"random(3, {long_name}=1)", f"shift(1, fill='{long_name}')"):
        with pytest.raises(PolicyError) as e:
            Policy.parse(s)
        assert len(str(e.value)) < 700, (s[:30], len(str(e.value)))


@pytest.mark.parametrize("spec", ["random(3, rotation_range=1e400)", "shift(dx=1e999)", "affine(tx=-1e400)",
                                  "random(%s)" % ("9" * 5000), "rot90(%s)" % ("9" * 400)])
def test_overflowing_numbers_are_refused(spec):
    with pytest.raises(PolicyError, match="number (out of range|too large)"):
        Policy.parse(spec)


# -- random(...) ------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, words", [
    ("random(3, width_shift_range=[nan])", "width_shift_range"),
    ("random(3, width_shift_range=nan)", "width_shift_range"),
    ("random(3, height_shift_range=[1, inf])", "height_shift_range"),
    ("random(3, horizontal_flip=abc)", "horizontal_flip must be true or false"),
    ("random(3, vertical_flip=2)", "vertical_flip must be true or false"),
    ("random(3, rotation_range=-1)", "rotation_range must be >= 0"),
    ("random(3, rotation_range=1e300)", "rotation_range"),
    ("random(3, shear_range=nan)", "shear_range"),
    ("random(3, channel_shift_range=x)", "channel_shift_range"),
    ("random(3, zoom_range=nan)", "zoom_range"),
    ("random(3, zoom_range=(0.5, inf))", "zoom_range"),
    ("random(3, zoom_range=(0, 1))", "zoom_range"),
    ("random(3, zoom_range=2)", "zoom_range"),
    ("random(3, brightness_range=(a, b))", "brightness_range"),
    ("random(3, brightness_range=(nan, 1))", "brightness_range"),
    ("random(3, brightness_range=(-1, 1))", "brightness_range"),
    ("random(3, brightness_range=1)", "brightness_range"),
    ("random(3, brightness_range=(1, 0))", "lo <= hi"),
    ("random(3, zoom_range=(1.2, 0.8))", "lo <= hi"),
    ("random(3, cval=abc)", "cval"),
    ("random(3, fill_mode=[1])", "fill_mode"),
    ("random(3, width_shift_range=[])", "width_shift_range"),
    ("random(3, width_shift_range=99999999999)", "width_shift_range"),
    ("random(3, seed=-1)", "seed"),
    ("random(3, seed=1.5)", "seed"),
    ("random(3, seed=4294967296)", "seed"),
    ("random(3, seed=true)", "seed"),
    ("random(1.5)", "positive integer"),
    ("random(true)", "positive integer"),
    ("random(-3)", "positive integer"),
    ("random(n=x)", "positive integer"),
])
def test_random_validates_every_parameter(spec, words):
    with pytest.raises(PolicyError) as e:
        Policy.parse(spec)
    assert words in str(e.value), str(e.value)


def test_random_valid_edge_values_still_work():
    assert len(Policy.parse("random(3, seed=4294967295, horizontal_flip=1, width_shift_range=[-2, 2])")) == 3
    assert len(Policy.random(2, seed=None, brightness_range=(0.5, 1.5), zoom_range=[0.9, 1.1])) == 2


@pytest.mark.parametrize("make, words", [
    (lambda: Affine(theta=float("nan")), "affine theta"),
    (lambda: Affine(tx=float("inf")), "affine tx"),
    (lambda: Affine(zx="abc"), "affine zx"),
    (lambda: Affine(relative="abc"), "affine relative must be true or false"),
    (lambda: Affine(cval=float("nan")), "cval"),
    (lambda: Multiply(1.0, clip="abc"), "clip must be true or false"),
    (lambda: GaussianNoise(seed=-1), "noise seed"),
    (lambda: GaussianNoise(seed=1.5), "noise seed"),
    (lambda: GaussianNoise(std=float("nan")), "noise std"),
    (lambda: rot90(10**400), "rot90 k"),
    (lambda: rot90(float("inf")), "rot90 k"),
    (lambda: Shift(10**400), "shift dx"),
    (lambda: Crop(size=float("nan")), "crop size"),
])
def test_view_parameters_are_finite(make, words):
    with pytest.raises(PolicyError) as e:
        make()
    assert words in str(e.value)


# -- policy files ------------------------------------------------------------------------------------
BOMB = ('format: ttakit.policy\na: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
        + "views: [*i]\n")


def test_yaml_alias_bomb_is_refused_small_and_fast(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB) < 600
    tracemalloc.start()
    try:
        with pytest.raises(PolicyError) as e:
            _quick(lambda: Policy.load(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "anchor or alias" in str(e.value) and len(str(e.value)) < 300
    assert peak < 5e6
    path.write_text("format: ttakit.policy\nviews:\n- &v {view: hflip}\n")
    with pytest.raises(PolicyError, match="anchor or alias"):
        Policy.load(path)


def test_oversized_files_are_refused_before_reading(tmp_path):
    path = tmp_path / "big.json"
    with open(path, "wb") as f:
        f.truncate((1 << 20) + 1)  # sparse: refused from its size, never read
    err = _quick(lambda: _limit(lambda: Policy.load(path), "max_file_bytes"))
    assert err.found == (1 << 20) + 1
    if os.path.exists("/dev/zero"):  # reports size 0: refused after reading one byte past the limit
        with override(max_file_bytes=1000):
            assert _limit(lambda: Policy.load("/dev/zero"), "max_file_bytes").found == 1001


@pytest.mark.parametrize("name, text", [
    ("deep.yaml", "[" * 100_000 + "]" * 100_000),
    ("deep.json", "[" * 100_000 + "]" * 100_000),
    ("deep2.json", "[" * 100 + "]" * 100),
    ("compose.json", json.dumps(
        {"format": "ttakit.policy", "views": [json.loads('{"view": "compose", "views": [' * 200 + '{"view": "hflip"}'
                                                         + "]}" * 200)]})),
])
def test_deeply_nested_files_are_refused(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PolicyError, match="too deeply|does not parse"):
        Policy.load(path)


@pytest.mark.parametrize("text, words", [
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b"[1, 2]", "not a ttakit policy"),
    (b'"just a string"', "not a ttakit policy"),
    (b'{"format": "ttakit.policy", "views": [{"view": "hflip", "weight": 1e999}]}', "weights must be finite"),
    (b'{"format": "ttakit.policy", "views": [{"view": "hflip", "weight": NaN}]}', "weights must be finite"),
    (b'{"format": "ttakit.policy", "views": [{"view": "hflip", "weight": true}]}', "malformed"),
    (b'{"format": "ttakit.policy", "views": [{"view": "hflip", "weight": 1' + b"0" * 400 + b"}]}", "malformed"),
    (b'{"format": "ttakit.policy", "views": [{"view": "shift", "dx": NaN}]}', "finite"),
    (b'{"format": "ttakit.policy", "views": [{"view": "compose", "views": 3}]}', "must be a list"),
    (b'{"format": "ttakit.policy", "views": [{"view": ["x"]}]}', "view"),
    (b'{"format": "ttakit.policy", "views": [{"view": "' + b"x" * 100_000 + b'"}]}', "unknown view"),
    (b'{"format": "ttakit.policy", "views": [{"view": "hflip"}], "merge": {"merge": "learned", "weights": 3}}',
     "learned weights"),
])
def test_bad_entries_are_reported_short(tmp_path, text, words):
    path = tmp_path / "p.json"
    path.write_bytes(text)
    with pytest.raises(PolicyError) as e:
        Policy.load(path)
    assert words in str(e.value) and len(str(e.value)) < 800, str(e.value)[:1000]


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "p.yaml"
    Policy.parse("d4").save(path)
    before = path.read_text()

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        Policy.parse("hflip").save(path)
    monkeypatch.undo()
    assert path.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]
    Policy.parse("hflip").save(path)
    assert Policy.load(path) == Policy.parse("hflip").with_source("hflip")
    assert oct(path.stat().st_mode & 0o777) != oct(0o600) or os.umask(0o22) == 0o177


# -- the command line ------------------------------------------------------------------------------
def test_cli_prints_a_limit_error_on_one_line():
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(ttakit.__file__))}
    r = subprocess.run([sys.executable, "-m", "ttakit", "policy", "d4*d4*d4*d4*d4*d4*d4*d4"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("ttakit: error: ") and "max_copies=" in r.stderr
    r = subprocess.run([sys.executable, "-m", "ttakit", "policy", "--help"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert "TTAKIT_MAX_VIEWS" in r.stdout and "never reads files" in r.stdout


def test_identity_survives():
    assert Policy.parse("identity").views == (identity(),)
