"""Fuzzing the library's array paths: random arrays as inputs, random arrays
(and non-arrays) as model outputs.

Properties: only ttakit errors escape; with on_error="mark" every input that
is valid gets exactly the result it gets alone (nothing valid in a batch is
lost); each call returns within a bound on its CPU time (process time, so a
busy machine does not fail it) and a memory bound.

``TTAKIT_FUZZ_EXAMPLES`` sets the number of examples (``make fuzz`` runs many).
"""

from __future__ import annotations

import os
import time
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ttakit
from ttakit.errors import TTAKitError

EXAMPLES = int(os.environ.get("TTAKIT_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("TTAKIT_FUZZ_EXAMPLES"),
                suppress_health_check=list(HealthCheck))
TIME_S, MEMORY_MB = 5.0, 64

POLICIES = ["identity", "identity + hflip", "d4", "hflips * shift(dx=[-1, 1])", "rot90(1) + scale(1.1)",
            "random(5, seed=1, horizontal_flip=true, width_shift_range=0.2)", "multiply(1.2) + contrast(0.8)"]
MERGES = ["mean", "gmean", "vote", "max", "min", "sum", "sharpen(0.5)", "logits"]


def bounded(fn):
    """Run fn; return its result or the TTAKitError it raised. Anything else fails."""
    tracemalloc.start()
    t0 = time.process_time()
    try:
        return fn()
    except TTAKitError as e:
        return e
    finally:
        elapsed = time.process_time() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        assert elapsed < TIME_S, f"took {elapsed:.1f} s"
        assert peak < MEMORY_MB, f"peak {peak:.0f} MB"


shapes = st.one_of(
    st.tuples(st.integers(0, 9), st.sampled_from([1, 3]), st.integers(1, 9), st.integers(1, 9)),
    st.tuples(st.integers(0, 9), st.integers(1, 9), st.integers(1, 9), st.sampled_from([1, 3])),
    hnp.array_shapes(min_dims=0, max_dims=5, max_side=6),
)
dtypes = st.sampled_from([np.uint8, np.float32, np.float64, np.int32, np.int64, np.bool_, np.float16,
                          np.complex64, np.uint16])


def linear_model(c_out):
    def fn(a):
        flat = np.nan_to_num(a.reshape(len(a), -1).astype(np.float64))
        w = np.cos(np.arange(flat.shape[1] * c_out, dtype=np.float64)).reshape(flat.shape[1], c_out)
        return flat @ w
    return fn


@FUZZ
@given(data=st.data(), shape=shapes, dtype=dtypes, layout=st.sampled_from(["NCHW", "NHWC"]),
       policy=st.sampled_from(POLICIES), merge=st.sampled_from(MERGES), bs=st.integers(1, 40))
def test_random_inputs_only_raise_ttakit_errors(data, shape, dtype, layout, policy, merge, bs):
    x = data.draw(hnp.arrays(dtype, shape, elements=None if dtype is not np.uint8 else st.integers(0, 255)))
    clf = ttakit.Classifier(linear_model(4), policy, merge, data_layout=layout, batch_size=bs, on_error="mark")
    out = bounded(lambda: clf.run(x))
    if isinstance(out, Exception):
        return
    assert out.probs.shape[0] == len(x)
    ok = ~out.failed
    assert np.isfinite(out.probs[ok]).all()
    if merge != "sum":
        np.testing.assert_allclose(out.probs[ok].sum(1), 1, atol=1e-4)


@FUZZ
@given(data=st.data(), n=st.integers(1, 12), policy=st.sampled_from(POLICIES), merge=st.sampled_from(MERGES),
       bs=st.integers(1, 30))
def test_random_model_outputs_lose_nothing_valid(data, n, policy, merge, bs):
    """The model's output is random: finite, NaN, inf, huge, negative; per input.
    Inputs whose outputs are finite for every view get exactly their own result."""
    x = np.random.default_rng(n).integers(0, 256, (n, 3, 5, 5), dtype=np.uint8)
    x[:, 0, 0, 0] = np.clip(x[:, 0, 0, 0], 8, 255)
    c = data.draw(st.integers(1, 6))
    special = data.draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30]))
    bad_inputs = set(data.draw(st.lists(st.integers(0, n - 1), max_size=n, unique=True)))
    for i in bad_inputs:
        x[i] = 7  # a constant image: every view of it is the same image, and the model marks it

    def model(a):
        # a deterministic function of each input; for the marked ones, one special value
        sums = a.reshape(len(a), -1).sum(1, dtype=np.float64)
        out = np.cos(np.arange(c)[None, :] + sums[:, None]) * 3
        marked = np.all(np.abs(a.reshape(len(a), -1) * 255 - 7) < 0.5, axis=1)
        out[marked, 0] = special
        return out

    clf = ttakit.Classifier(model, policy, merge, batch_size=bs, on_error="mark", output="logits")
    out = bounded(lambda: clf.run(x))
    assert not isinstance(out, Exception), out
    for i in range(n):
        alone = ttakit.Classifier(model, policy, merge, output="logits", on_error="mark").run(x[i:i + 1])
        assert out.failed[i] == alone.failed[0], i
        if i in bad_inputs and not np.isfinite(special):
            assert out.failed[i]
        if not out.failed[i]:
            np.testing.assert_allclose(out.probs[i], alone.probs[0], atol=1e-5, rtol=1e-5)
            assert out.labels[i] == alone.labels[0]


@FUZZ
@given(out=st.one_of(
    hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64, np.bool_, np.complex64]),
               hnp.array_shapes(min_dims=0, max_dims=4, max_side=7)),
    st.lists(st.floats(allow_nan=True), max_size=8),
    st.none(), st.text(max_size=5), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
), policy=st.sampled_from(POLICIES[:4]))
def test_malformed_model_outputs_only_raise_ttakit_errors(out, policy):
    x = np.random.default_rng(0).integers(0, 256, (6, 3, 5, 5), dtype=np.uint8)
    res = bounded(lambda: ttakit.Classifier(lambda a: out, policy, on_error="mark").run(x))
    if not isinstance(res, Exception):
        assert res.probs.shape[0] == 6


def test_found_by_the_long_fuzz_run_unsigned_64_bit_outputs():
    # numpy's ulonglong (a dict's huge int values) once escaped as torch's TypeError
    x = np.zeros((2, 3, 4, 4), np.uint8)
    out = np.array([[2**64 - 1, 3], [1, 2]], dtype=np.ulonglong)
    res = ttakit.Classifier(lambda a: out, "identity", on_error="mark").run(x)
    assert res.probs.shape == (2, 2)
