"""The micro-batcher in-process (no HTTP, no extra needed): batching,
splitting, overload, deadlines, degrading, draining on close."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ttakit import Classifier, Policy
from ttakit.serve import Batcher, DeadlineExceeded, Overloaded, prefix_policy


def slow_model(delay=0.0):
    def f(x):
        time.sleep(delay)
        x = np.asarray(x, np.float32)
        s = x.reshape(len(x), -1)
        return np.stack([s[:, 0] + s[:, -1], s.mean(1), -s[:, 1]], 1)
    return f


def clf(delay=0.0, policy="identity + hflip + vflip"):
    return Classifier(slow_model(delay), policy, data_layout="NHWC", output="logits")


def test_prefix_policy():
    p = prefix_policy(Policy.parse("identity + hflip + hflip + vflip"), 2)
    assert p.spec == "identity + 2 * hflip"
    assert prefix_policy(Policy.parse("identity"), 5).spec == "identity"


def test_requests_are_batched_and_split_back_exactly():
    x = np.random.default_rng(0).random((10, 4, 4, 3)).astype(np.float32)
    c = clf()
    b = Batcher(c, max_batch=64, max_wait_ms=100)
    try:
        futs = [b.submit(x[i:i + 2], time.monotonic() + 10) for i in range(0, 10, 2)]
        outs = [f.result(10) for f in futs]
    finally:
        b.close()
    np.testing.assert_allclose(np.concatenate([o.probs for o in outs]), c.predict_proba(x), rtol=0, atol=1e-6)
    assert b.stats.batches < 5 and outs[0].batch_images > 2


def test_overload_and_deadline():
    b = Batcher(clf(0.3), max_batch=1, max_wait_ms=0, queue_size=3)
    try:
        x = np.zeros((1, 4, 4, 3), np.float32)
        first = b.submit(x, time.monotonic() + 10)
        time.sleep(0.05)  # the thread is running `first` for 0.3 s
        late = b.submit(x, time.monotonic() + 0.05)
        b.submit(x, time.monotonic() + 10)
        b.submit(x, time.monotonic() + 10)
        with pytest.raises(Overloaded):
            b.submit(x, time.monotonic() + 10)
        assert first.result(10).probs.shape == (1, 3)
        with pytest.raises(DeadlineExceeded):
            late.result(10)
    finally:
        b.close()


def test_degrade_runs_a_shorter_prefix_when_the_queue_is_deep():
    b = Batcher(clf(0.2), max_batch=1, max_wait_ms=0, degrade_depth=2, degrade_views=1)
    x = np.random.default_rng(1).random((1, 4, 4, 3)).astype(np.float32)
    try:
        futs = [b.submit(x, time.monotonic() + 30) for _ in range(4)]
        outs = [f.result(30) for f in futs]
    finally:
        b.close()
    # the first may be taken before the others arrive; the second waits behind two more
    assert outs[1].degraded and outs[1].views == 1
    assert not outs[3].degraded and outs[3].views == 3
    np.testing.assert_allclose(outs[1].probs, clf(policy="identity").predict_proba(x), rtol=0, atol=1e-6)


def test_close_finishes_queued_requests():
    b = Batcher(clf(0.05), max_batch=1, max_wait_ms=0)
    x = np.zeros((1, 4, 4, 3), np.float32)
    futs = [b.submit(x, time.monotonic() + 30) for _ in range(5)]
    b.close()
    assert all(f.done() and f.exception() is None for f in futs)
    with pytest.raises(Overloaded.__mro__[1]):  # ServeError: shutting down
        b.submit(x, time.monotonic() + 30)



def test_requests_that_queued_while_the_model_ran_do_not_wait_for_company():
    """max_wait_ms is how long a batch waits for company while the model is
    idle; requests that queued while it ran have waited already and run as
    soon as it is free, even with a 10 s window and a batch far from full."""
    b = Batcher(clf(0.3), max_batch=4, max_wait_ms=10_000)
    x = np.random.default_rng(2).random((6, 4, 4, 3)).astype(np.float32)
    try:
        t0 = time.monotonic()
        first = b.submit(x[:4], t0 + 60)  # a full batch: runs at once, for 0.3 s
        time.sleep(0.1)
        assert not first.done()
        later = [b.submit(x[i:i + 1], t0 + 60) for i in (4, 5)]  # queue behind the running batch
        outs = [first.result(30)] + [f.result(30) for f in later]
        took = time.monotonic() - t0
    finally:
        b.close()
    assert took < 5, f"the requests queued behind the model waited for the 10 s window ({took:.1f} s)"
    assert [o.batch_images for o in outs] == [4, 2, 2] and b.stats.batches == 2
    np.testing.assert_allclose(np.concatenate([o.probs for o in outs]), clf().predict_proba(x), rtol=0, atol=1e-6)


def test_a_lone_request_on_an_idle_model_waits_for_company_within_the_window():
    b = Batcher(clf(), max_batch=64, max_wait_ms=400)
    x = np.random.default_rng(3).random((2, 4, 4, 3)).astype(np.float32)
    try:
        t0 = time.monotonic()
        first = b.submit(x[:1], t0 + 60)
        time.sleep(0.1)
        assert not first.done()  # inside its 400 ms window
        second = b.submit(x[1:], t0 + 60)
        outs = [first.result(10), second.result(10)]
    finally:
        b.close()
    assert [o.batch_images for o in outs] == [2, 2]
