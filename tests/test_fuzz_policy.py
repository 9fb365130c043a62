"""Fuzzing policy specs and policy files: whatever the input, only a ttakit
error escapes, each call returns quickly and its memory stays bounded.

The number of examples per test is ``TTAKIT_FUZZ_EXAMPLES`` (default 60, a
few seconds in all); a long run:

    TTAKIT_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q tests/test_fuzz_policy.py
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttakit import Policy
from ttakit.errors import TTAKitError
from ttakit.policy.random import KERAS_PARAMETERS
from ttakit.views.registry import GROUPS, VIEWS

EXAMPLES = int(os.environ.get("TTAKIT_FUZZ_EXAMPLES", "60"))
SECONDS = 2.0       # per call
PEAK_BYTES = 50e6   # traced memory per call

FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 100,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

pytestmark = pytest.mark.xdist_group("fuzz_policy")

NAMES = sorted(VIEWS) + sorted(GROUPS) + ["random", "policy", "file", "compose", "true", "false", "none", "nan",
                                          "inf", "seed", "n", "dx", "dy", "fill", "size", "pos", "factor"]
NUMBERS = st.one_of(
    st.integers(-5, 40).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.sampled_from(["1e400", "-1e400", "1e-400", "nan", "inf", "-inf", "9" * 320, "4294967296", "100000000",
                     "1e308", "0", "0.0", "-0", ".5", "1.", "1e5", "99999", "4097", "65"]),
)
OPS = st.sampled_from(["+", "*", "(", ")", "[", "]", ",", "=", "-", " ", "  ", "@", "'", '"', "\n", "\t"])
UNICODE = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)


def _call(draw) -> str:
    name = draw(st.sampled_from(NAMES))
    if draw(st.booleans()):
        return name
    args = []
    for _ in range(draw(st.integers(0, 3))):
        value = draw(st.one_of(NUMBERS, st.sampled_from(NAMES), st.lists(NUMBERS, max_size=4).map(
            lambda xs: "[" + ", ".join(xs) + "]"), st.lists(NUMBERS, max_size=3).map(
            lambda xs: "(" + ", ".join(xs) + ")"), st.just("'c'"), UNICODE))
        key = draw(st.one_of(st.none(), st.sampled_from(sorted(KERAS_PARAMETERS) + NAMES)))
        args.append(value if key is None else f"{key}={value}")
    return f"{name}({', '.join(args)})"


@st.composite
def specs(draw) -> str:
    """Mostly near-valid specs, mixed with operators, brackets, numbers,
    unicode and raw text at random places."""
    parts = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.integers(0, 9))
        if kind <= 4:
            parts.append(_call(draw))
        elif kind == 5:
            parts.append(draw(NUMBERS))
        elif kind <= 7:
            parts.append(draw(OPS))
        elif kind == 8:
            parts.append(draw(UNICODE))
        else:  # nesting and repetition
            depth = draw(st.sampled_from([1, 10, 63, 64, 65, 300]))
            parts.append("(" * depth + _call(draw) + ")" * draw(st.sampled_from([0, depth, depth + 1])))
        if kind <= 5 and draw(st.booleans()):
            parts.append(draw(st.sampled_from([" + ", " * ", "*", "+"])))
    spec = "".join(parts)
    if draw(st.integers(0, 19)) == 0:
        spec = spec * draw(st.sampled_from([2, 50, 2000]))
    return spec


def _bounded(call) -> None:
    """``call()`` raises nothing but ttakit errors, within the time and memory bounds."""
    tracemalloc.start()
    t = time.process_time()
    try:
        call()
    except TTAKitError as e:
        assert len(str(e)) < 2000, str(e)[:3000]
    finally:
        took = time.process_time() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert took < SECONDS, took
    assert peak < PEAK_BYTES, peak


@FUZZ
@given(spec=st.one_of(specs(), st.text(max_size=200)))
def test_any_spec(spec):
    _bounded(lambda: Policy.parse(spec))


VIEW_ENTRY = st.fixed_dictionaries({"view": st.sampled_from(sorted(VIEWS) + ["compose", "d4", "warp"])},
                                   optional={"weight": st.one_of(st.floats(), st.integers(), st.text(max_size=3)),
                                             "dx": st.floats(), "factor": st.one_of(st.floats(), st.booleans()),
                                             "views": st.just([{"view": "hflip"}]),
                                             "k": st.integers(-10**30, 10**30)})
JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
                    lambda kids: st.one_of(st.lists(kids, max_size=4),
                                           st.dictionaries(st.text(max_size=5), kids, max_size=4)),
                    max_leaves=30)
DOCS = st.one_of(
    st.fixed_dictionaries({"format": st.just("ttakit.policy"), "views": st.lists(VIEW_ENTRY, max_size=4)},
                          optional={"version": st.one_of(st.integers(-2, 3), st.text(max_size=2)),
                                    "merge": st.one_of(JSON, st.fixed_dictionaries(
                                        {"merge": st.sampled_from(["mean", "learned", "temperature_scaled", "x"])},
                                        optional={"weights": JSON, "base": JSON, "temperature": JSON})),
                                    "aggregation": JSON, "source": JSON}),
    JSON,
)


@st.composite
def files(draw) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from([".json", ".yaml", ".yml"]))
    kind = draw(st.integers(0, 4))
    if kind <= 1:
        doc = draw(DOCS)
        text = json.dumps(doc)  # JSON is YAML too (NaN and Infinity aside)
        if suffix != ".json" and draw(st.booleans()):
            import yaml

            try:
                text = yaml.safe_dump(doc)
            except Exception:  # noqa: BLE001 - a document yaml cannot write: keep the JSON
                pass
        return suffix, text.encode()
    if kind == 2:  # YAML structure: anchors, aliases, tags, nesting
        pieces = draw(st.lists(st.sampled_from(
            ["format: ttakit.policy\n", "views:\n", "- view: hflip\n", "- &a {view: hflip}\n", "- *a\n",
             "x: &x [1, 2]\n", "y: [*x, *x]\n", "- !!python/object:os.system 'ls'\n", "[" * 70, "]" * 70,
             "- {view: shift, dx: .nan}\n", "- {view: rot90, k: 1e400}\n", "--- \n", "weight: !!binary aGk=\n"]),
            max_size=8))
        return suffix, "".join(pieces).encode()
    if kind == 3:
        return suffix, draw(st.binary(max_size=200))
    return suffix, draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")


@FUZZ
@given(f=files())
def test_any_policy_file(f, tmp_path_factory):
    suffix, content = f
    path = tmp_path_factory.mktemp("fuzz") / f"p{suffix}"
    path.write_bytes(content)
    _bounded(lambda: Policy.load(path))


@FUZZ
@given(doc=DOCS)
def test_any_policy_dict(doc):
    _bounded(lambda: Policy.from_dict(doc))


@FUZZ
@given(n=st.one_of(st.integers(-3, 50), st.floats(), st.booleans(), st.text(max_size=3)),
       seed=st.one_of(st.none(), st.integers(-2, 2**33), st.floats(), st.text(max_size=3)),
       params=st.dictionaries(st.sampled_from(sorted(KERAS_PARAMETERS) + ["bogus"]),
                              st.one_of(st.floats(), st.integers(-10**20, 10**20), st.booleans(), st.text(max_size=4),
                                        st.lists(st.one_of(st.floats(), st.integers()), max_size=3), st.none()),
                              max_size=5))
def test_any_random_parameters(n, seed, params):
    _bounded(lambda: Policy.random(n, seed, **params))
