"""Cross-request micro-batching: many requests, one run of the engine.

A :class:`Batcher` owns a bounded queue and one thread. Requests
:meth:`~Batcher.submit` their images (a uint8 ``(n, H, W, C)`` array) and get
a :class:`concurrent.futures.Future`; the thread takes the oldest request,
gathers more of the same image size until ``max_batch`` images are waiting
or ``max_wait_ms`` has passed since it took the first, runs them through the
:class:`~ttakit.Classifier` in ONE call, and splits the result back to each
request's future. The model therefore runs off the server's event loop, and
one slow or bad request never blocks the loop.

* Overload: a request that would push the queue beyond ``queue_size``
  images fails at once with :class:`Overloaded` (HTTP 503 + Retry-After).
* Deadlines: a request still queued when its deadline passes fails with
  :class:`DeadlineExceeded` (504) and is never run.
* Degrading: with ``degrade_depth`` set, a batch taken while at least that
  many images wait behind it runs a shorter prefix of the policy's distinct
  views (``degrade_views`` of them); its results say so.
* Adaptation: with a classifier that adapts (``Classifier(adapt=...)``,
  :mod:`ttakit.adapt`), every run holds the images of ONE request: the
  adaptation's stream is that request's images, never another's, so one
  client never changes another's predictions (:func:`adapts`).

:class:`DirectRunner` has the same interface without any batching (each
request runs alone, in a thread pool): the naive baseline of the benchmark.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import TTAKitError
from ..policy import Policy
from ..tasks import Classifier


#: most images per engine run by default: on 2 CPU cores ResNet-20's cost per image (2 views) falls
#: from 4.2 ms alone to 2.7 ms at 16 and 2.45 ms at 32, and no further at 64 (2.4 ms), while a request
#: at the back of a batch waits for all of it: past 32 a bigger batch buys latency, not throughput
DEFAULT_MAX_BATCH = 32
#: how long the oldest request of a batch may wait for others by default, in ms
DEFAULT_MAX_WAIT_MS = 5.0
#: threads of the naive runner's pool by default: one per CPU core (more only queue on the same cores)
DEFAULT_DIRECT_THREADS = max(1, os.cpu_count() or 1)


class ServeError(TTAKitError):
    """A request the server cannot answer; ``code`` and ``status`` are what
    the HTTP error body and status carry."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, code: str | None = None, status: int | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}


class Overloaded(ServeError):
    code, status = "overloaded", 503


class DeadlineExceeded(ServeError):
    code, status = "deadline_exceeded", 504


class ShuttingDown(ServeError):
    code, status = "shutting_down", 503


@dataclass
class Batch:
    """What one request gets back: its rows of the run's result."""

    probs: np.ndarray          #: (n, C); NaN rows for failed inputs
    labels: np.ndarray         #: (n,)
    entropy: np.ndarray
    agreement: np.ndarray
    failed: np.ndarray         #: (n,) bool
    errors: dict               #: index within the request -> message
    views: int                 #: distinct views run
    degraded: bool             #: a shorter prefix of the policy was run
    batch_images: int          #: images in the engine run this request shared
    queue_seconds: float = 0.0
    model_seconds: float = 0.0


@dataclass
class _Item:
    images: np.ndarray
    deadline: float
    future: Future
    enqueued: float = field(default_factory=time.monotonic)


def prefix_policy(policy: Policy, n_views: int) -> Policy:
    """The first ``n_views`` distinct views of ``policy`` with their weights
    (a merge tied to particular views is dropped; others are kept)."""
    u = policy.unique()
    n = max(1, min(int(n_views), len(u)))
    merge = u.merge if u.merge is not None and not u.merge.per_view else None
    return Policy(u.views[:n], u.weights[:n], merge=merge, inputs=u.inputs)


def _degraded_classifier(clf: Classifier, n_views: int) -> Classifier:
    merge = clf.effective_merge
    return Classifier(**{**clf.get_params(), "policy": prefix_policy(clf.run_policy, n_views),
                         "merge": None if merge.per_view else merge})


def adapts(classifier: Classifier) -> bool:
    """Whether ``classifier`` adapts the model to the inputs of each call:
    then a runner gives every request a run of its own."""
    return classifier._setup().adaptation is not None


def _kind(images: np.ndarray) -> tuple:
    """Requests batch together when their images have the same shape and dtype."""
    return images.shape[1:], images.dtype


class _Stats:
    """Counters the server's /metrics reads (plain numbers, thread-safe enough
    for monitoring: each is written by one thread)."""

    def __init__(self):
        self.batches = 0
        self.images = 0
        self.forward_passes = 0

    def record(self, n: int, forward_passes: int, secs: float, on_batch=None) -> None:
        """Count one engine run of ``n`` images and tell ``on_batch`` (n, forward passes, seconds)."""
        self.batches += 1
        self.images += n
        self.forward_passes += forward_passes
        if on_batch is not None:
            try:
                on_batch(n, forward_passes, secs)
            except Exception:  # metrics must never break predictions
                pass


def model_failure(e: Exception) -> ServeError:
    """What every request of an engine run that raised ``e`` fails with."""
    return e if isinstance(e, ServeError) else ServeError(f"the model failed: {e}", code="model_error", status=500)


def split_run(res, sizes: list[int], waits: list[float], *, degraded: bool, secs: float) -> list[Batch]:
    """One engine run's result ``res`` cut back into each request's
    :class:`Batch`, in order: ``sizes`` are their image counts, ``waits``
    their seconds in the queue."""
    out, start, total = [], 0, sum(sizes)
    for n, wait in zip(sizes, waits):
        sl = slice(start, start + n)
        errs = {i - start: msg for i, msg in res.errors.items() if start <= i < start + n}
        out.append(Batch(probs=res.probs[sl], labels=res.labels[sl], entropy=res.entropy[sl],
                         agreement=res.agreement[sl], failed=res.failed[sl], errors=errs, views=len(res.views),
                         degraded=degraded, batch_images=total, queue_seconds=wait, model_seconds=secs))
        start += n
    return out


class _BatchingRunner:
    """What the batching runners share: the classifier (copied with
    ``on_error="mark"``, so that one bad input fails only itself), the
    limits, the shorter classifier for degrading, the counters, warm-up."""

    def __init__(self, classifier: Classifier, *, max_batch: int, queue_size: int, degrade_depth: int | None,
                 degrade_views: int, on_batch):
        if classifier.on_error != "mark":
            classifier = Classifier(**{**classifier.get_params(), "on_error": "mark"})
        self.classifier = classifier
        self.max_batch = max(1, int(max_batch))
        self.queue_size = max(1, int(queue_size))
        self.degrade_depth = degrade_depth
        self.views = len(classifier.run_policy)
        #: test-time adaptation: each request runs alone (its images are the adaptation's stream)
        self.per_request = adapts(classifier)
        self.degraded = (_degraded_classifier(classifier, degrade_views)
                         if degrade_depth is not None else None)
        self.on_batch = on_batch  #: called (n_images, forward_passes, seconds) after each run
        self.stats = _Stats()

    def warm_up(self, shape: tuple[int, ...]) -> None:
        """Run blank batches of ``shape`` ``(H, W, C)`` through every
        classifier the runner uses, one of each size from 1 to ``max_batch``:
        first calls allocate and compile, and a model meets every batch size
        it will see here, so its allocator's pools are sized at start rather
        than growing in steps under load (resident memory stays flat)."""
        blank = np.zeros((self.max_batch, *shape), np.uint8)
        for clf in (self.classifier, self.degraded):
            if clf is not None:
                for n in range(1, self.max_batch + 1):
                    clf.run(blank[:n])


class Batcher(_BatchingRunner):
    """See the module docstring."""

    def __init__(self, classifier: Classifier, *, max_batch: int = DEFAULT_MAX_BATCH,
                 max_wait_ms: float = DEFAULT_MAX_WAIT_MS, queue_size: int = 512,
                 degrade_depth: int | None = None, degrade_views: int = 1, on_batch=None, expect=None):
        super().__init__(classifier, max_batch=max_batch, queue_size=queue_size, degrade_depth=degrade_depth,
                         degrade_views=degrade_views, on_batch=on_batch)
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        #: how many requests are on their way to submit() (being read or decoded); while none are,
        #: a batch does not wait for company (a lone request is not delayed by max_wait_ms)
        self.expect = expect
        self._q: collections.deque[_Item] = collections.deque()
        self._pending = 0  # images queued
        self._cv = threading.Condition()
        self._closing = False
        self._model_free_since = 0.0  # time.monotonic() when the last run ended
        self._thread = threading.Thread(target=self._loop, name="ttakit-batcher", daemon=True)
        self._thread.start()

    # -- the request side ---------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Images waiting in the queue."""
        return self._pending

    def submit(self, images: np.ndarray, deadline: float) -> Future:
        """Queue ``images`` (uint8 or float ``(n, H, W, C)``) to be predicted
        before ``deadline`` (a :func:`time.monotonic` time)."""
        n = len(images)
        with self._cv:
            if self._closing:
                raise ShuttingDown("the server is shutting down", headers={"Retry-After": "1"})
            if self._pending + n > self.queue_size:
                raise Overloaded(f"the queue is full ({self._pending} images waiting, at most {self.queue_size}); "
                                 f"retry shortly", headers={"Retry-After": "1"})
            item = _Item(images, deadline, Future())
            self._q.append(item)
            self._pending += n
            self._cv.notify()
        return item.future

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop taking requests, finish those queued, stop the thread."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join(timeout)

    # -- the batching thread -----------------------------------------------------------------
    def _take(self) -> tuple[list[_Item], int] | None:
        """The next batch: items of one image shape, up to max_batch images
        (a request larger than max_batch goes alone), and the queue depth
        behind it. None when closing with nothing left.

        The batch waits for company only when its oldest request arrived while
        the model was idle, only while that request has waited less than
        ``max_wait``, and (with ``expect``) only while other requests are on
        their way in. Requests that queued up while the model ran the previous
        batch have waited already: they run at once, so under load the model
        never idles waiting for a batch to fill."""
        with self._cv:
            while not self._q:
                if self._closing:
                    return None
                self._cv.wait()
            if self.per_request:  # adaptation: the oldest request alone, nothing to wait for
                it = self._q.popleft()
                self._pending -= len(it.images)
                return [it], self._pending
            while True:
                shape = _kind(self._q[0].images)
                total = sum(len(it.images) for it in self._q if _kind(it.images) == shape)
                oldest = self._q[0].enqueued
                left = self.max_wait - (time.monotonic() - oldest)
                if (total >= self.max_batch or left <= 0 or self._closing
                        or oldest <= self._model_free_since  # it queued while the model was busy
                        or (self.expect is not None and self.expect() <= 0)):
                    break
                self._cv.wait(left)
            batch, n, keep = [], 0, collections.deque()
            while self._q:
                it = self._q.popleft()
                if _kind(it.images) == shape and (not batch or n + len(it.images) <= self.max_batch):
                    batch.append(it)
                    n += len(it.images)
                else:
                    keep.append(it)
            keep.extend(self._q)
            self._q = keep
            self._pending -= n
            return batch, self._pending

    def _loop(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            items, behind = taken
            now = time.monotonic()
            live = []
            for it in items:
                if not it.future.set_running_or_notify_cancel():
                    continue  # the request gave up (its deadline passed on the server side)
                if now >= it.deadline:
                    it.future.set_exception(DeadlineExceeded(
                        f"the request waited {now - it.enqueued:.3f} s in the queue, past its deadline"))
                    continue
                live.append(it)
            if not live:
                continue
            degraded = self.degraded is not None and behind >= self.degrade_depth
            clf = self.degraded if degraded else self.classifier
            x = live[0].images if len(live) == 1 else np.concatenate([it.images for it in live])
            t0 = time.perf_counter()
            try:
                res = clf.run(x)
            except Exception as e:  # the model failed for the whole batch: every request in it fails
                err = model_failure(e)
                for it in live:
                    it.future.set_exception(err)
                continue
            finally:
                self._model_free_since = time.monotonic()
            secs = time.perf_counter() - t0
            self.stats.record(len(x), res.forward_passes, secs, self.on_batch)
            parts = split_run(res, [len(it.images) for it in live], [now - it.enqueued for it in live],
                              degraded=degraded, secs=secs)
            for it, part in zip(live, parts):
                it.future.set_result(part)


class DirectRunner:
    """The :class:`Batcher` interface with no batching across requests: each
    request runs alone in a thread pool (the naive baseline): ``threads``
    requests run at once, by default one per CPU core."""

    def __init__(self, classifier: Classifier, *, threads: int = DEFAULT_DIRECT_THREADS, queue_size: int = 512,
                 on_batch=None, **_batching_options):
        if classifier.on_error != "mark":
            classifier = Classifier(**{**classifier.get_params(), "on_error": "mark"})
        self.classifier = classifier
        self.views = len(classifier.run_policy)
        self.degraded = None
        self.queue_size = queue_size
        self.on_batch = on_batch
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ttakit-direct")
        self._pending = 0
        self._lock = threading.Lock()
        self.stats = _Stats()

    @property
    def depth(self) -> int:
        return self._pending

    def submit(self, images: np.ndarray, deadline: float) -> Future:
        with self._lock:
            if self._pending + len(images) > self.queue_size:
                raise Overloaded("too many requests in flight; retry shortly", headers={"Retry-After": "1"})
            self._pending += len(images)
        return self._pool.submit(self._run, images, time.monotonic())

    def _run(self, images, enqueued) -> Batch:
        try:
            t0 = time.perf_counter()
            res = self.classifier.run(images)
            secs = time.perf_counter() - t0
        finally:
            with self._lock:
                self._pending -= len(images)
        self.stats.batches += 1
        self.stats.images += len(images)
        self.stats.forward_passes += res.forward_passes
        if self.on_batch is not None:
            self.on_batch(len(images), res.forward_passes, secs)
        return Batch(probs=res.probs, labels=res.labels, entropy=res.entropy, agreement=res.agreement,
                     failed=res.failed, errors=dict(res.errors), views=len(res.views), degraded=False,
                     batch_images=len(images), queue_seconds=t0 - enqueued, model_seconds=secs)

    def warm_up(self, shape) -> None:
        self.classifier.run(np.zeros((1, *shape), np.uint8))

    def close(self, timeout: float | None = 30.0) -> None:
        self._pool.shutdown(wait=True)
