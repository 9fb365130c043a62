"""``ttakit serve --engine ray``: the HTTP server of :mod:`.app` as a Ray
Serve deployment, in replicas across a cluster (the ``ttakit[ray]`` extra).

    from ttakit.serve.ray_deployment import deploy

    def build(runner_factory):
        return create_app(Classifier(model, "identity + hflip"), size=(32, 32), runner_factory=runner_factory)

    url = deploy(build, replicas=2)   # Ray is already initialised (ray.init or ttakit.scale.ray_support.connect)

ONE API: every replica builds the very app that ``ttakit serve`` runs with
uvicorn (:func:`~ttakit.serve.app.create_app`: the same routes, JSON bodies
and error codes), and Serve's HTTP proxy hands every path to it
(``@serve.ingress`` with the app built on the replica). Only the batching
differs: in place of the :class:`~.batcher.Batcher` thread, a
:class:`ServeBatchRunner` gathers the images of concurrent requests with
``@serve.batch`` and runs them through the engine in one call, in a thread
of its own, off the replica's event loop.

Per replica, not per deployment: ``/metrics`` (each scrape is answered by
whichever replica it lands on; scrape the replicas' own counters through
Ray's metrics, or add them up), ``/readyz``, the queue depth, ``--queue``,
``--max-in-flight`` and the ``--degrade`` depth. ``@serve.batch`` waits up to
``max_wait_ms`` for company whenever a batch starts (there is no adaptive
wait), and counts its batch in images (at most ``max_batch``; a request with
more runs alone). Serve's own limits are set above the app's (in-flight
requests, request timeout), so that the app's JSON 503/504 answers first.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError, require
from ..tasks import Classifier
from .batcher import (DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_MS, Batch, DeadlineExceeded, Overloaded, ShuttingDown,
                      _BatchingRunner, _kind, model_failure, split_run)

serve = require("ray.serve", "ray", "serving on Ray")

#: the Serve application's name and the deployment's by default
APP_NAME = "ttakit"
#: how long close() waits for queued requests to finish, in seconds
CLOSE_TIMEOUT_S = 30.0
#: Serve's in-flight bound per replica is the app's plus this, so that the app answers 503 first
ONGOING_MARGIN = 16
#: Serve's request timeout is the app's deadline plus this many seconds, so that the app answers 504 first
TIMEOUT_MARGIN_S = 5.0


@dataclass
class _Job:
    images: np.ndarray
    deadline: float
    size: int  #: images it counts for in a batch (at most max_batch: a larger request runs alone)
    enqueued: float = field(default_factory=time.monotonic)


def _images_in(jobs: list[_Job]) -> int:
    return sum(j.size for j in jobs)


class ServeBatchRunner(_BatchingRunner):
    """The :class:`~.batcher.Batcher` interface (``submit``, ``depth``,
    ``warm_up``, ``close``) on Ray Serve's ``@serve.batch``: ``submit`` puts
    a request's images in Serve's batch queue; each batch (up to
    ``max_batch`` images, waiting at most ``max_wait_ms`` for them) runs
    through the classifier once per image shape, in one model thread. A
    request past its deadline when its batch starts fails with 504 unrun; one
    that would push the images waiting beyond ``queue_size`` gets 503.
    ``expect`` is accepted for the Batcher's signature and unused: Serve
    decides when a batch starts.

    It runs inside a Serve replica only (Serve's batch queue reads the
    replica's context), and Serve keeps one batch queue per decorated method
    and process: one runner per replica (a replica builds one app)."""

    def __init__(self, classifier: Classifier, *, max_batch: int = DEFAULT_MAX_BATCH,
                 max_wait_ms: float = DEFAULT_MAX_WAIT_MS, queue_size: int = 512,
                 degrade_depth: int | None = None, degrade_views: int = 1, on_batch=None, expect=None):
        super().__init__(classifier, max_batch=max_batch, queue_size=queue_size, degrade_depth=degrade_depth,
                         degrade_views=degrade_views, on_batch=on_batch)
        self._pending = 0   # images submitted, not yet taken into a batch
        self._unfinished = 0  # requests submitted, not yet answered
        self._closing = False
        self._model = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ttakit-serve-batch")
        self._run_batch.set_max_batch_size(self.max_batch)
        self._run_batch.set_batch_wait_timeout_s(max(0.0, float(max_wait_ms)) / 1000.0)

    @property
    def depth(self) -> int:
        """Images waiting for a batch."""
        return self._pending

    def submit(self, images: np.ndarray, deadline: float) -> asyncio.Future:
        """Queue ``images`` (``(n, H, W, C)``) to be predicted before
        ``deadline`` (a :func:`time.monotonic` time); call it on the replica's
        event loop. The future's result is a :class:`~.batcher.Batch`."""
        n = len(images)
        if self._closing:
            raise ShuttingDown("the server is shutting down", headers={"Retry-After": "1"})
        if self._pending + n > self.queue_size:
            raise Overloaded(f"the queue is full ({self._pending} images waiting, at most {self.queue_size}); "
                             f"retry shortly", headers={"Retry-After": "1"})
        self._pending += n
        self._unfinished += 1
        return asyncio.ensure_future(self._answer(_Job(images, deadline, min(n, self.max_batch))))

    async def _answer(self, job: _Job) -> Batch:
        try:
            out = await self._run_batch(job)
        finally:
            self._unfinished -= 1
        if isinstance(out, Exception):
            raise out
        return out

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH, batch_wait_timeout_s=DEFAULT_MAX_WAIT_MS / 1000.0,
                 batch_size_fn=_images_in)
    async def _run_batch(self, jobs: list[_Job]) -> list:
        """One Serve batch: a Batch (or the exception to raise) per job."""
        self._pending -= sum(len(j.images) for j in jobs)
        now = time.monotonic()
        out: list = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for i, j in enumerate(jobs):
            if now >= j.deadline:
                out[i] = DeadlineExceeded(f"the request waited {now - j.enqueued:.3f} s in the queue, past its "
                                          f"deadline")
            else:  # with adaptation each request is a run of its own (its images, the adaptation's stream)
                groups.setdefault(i if self.per_request else _kind(j.images), []).append(i)
        degraded = self.degraded is not None and self._pending >= self.degrade_depth
        clf = self.degraded if degraded else self.classifier
        loop = asyncio.get_running_loop()
        for idx in groups.values():
            x = np.concatenate([jobs[i].images for i in idx]) if len(idx) > 1 else jobs[idx[0]].images
            t0 = time.perf_counter()
            try:
                res = await loop.run_in_executor(self._model, clf.run, x)
            except Exception as e:  # the model failed for the whole group: every request in it fails
                for i in idx:
                    out[i] = model_failure(e)
                continue
            secs = time.perf_counter() - t0
            self.stats.record(len(x), res.forward_passes, secs, self.on_batch)
            parts = split_run(res, [len(jobs[i].images) for i in idx], [now - jobs[i].enqueued for i in idx],
                              degraded=degraded, secs=secs)
            for i, part in zip(idx, parts):
                out[i] = part
        return out

    def close(self, timeout: float | None = CLOSE_TIMEOUT_S) -> None:
        """Stop taking requests and wait (from a thread other than the event
        loop's) until those submitted are answered, at most ``timeout`` s."""
        self._closing = True
        t_end = time.monotonic() + (CLOSE_TIMEOUT_S if timeout is None else timeout)
        while self._unfinished > 0 and time.monotonic() < t_end:
            time.sleep(0.01)
        self._model.shutdown(wait=False)


@serve.ingress()
class TTAServer:
    """The Serve deployment: ``build_app(runner_factory=ServeBatchRunner)``
    is called on each replica and is its whole HTTP API."""

    def __init__(self, build_app):
        self._build_app = build_app

    def __serve_build_asgi_app__(self):
        return self._build_app(runner_factory=ServeBatchRunner)


def deploy(build_app, *, replicas: int = 1, host: str = "127.0.0.1", port: int = 8000, cpus_per_replica: float = 1.0,
           gpus_per_replica: float = 0.0, max_in_flight: int = 1024, timeout_ms: float = 10000.0,
           name: str = APP_NAME, blocking: bool = False) -> str:
    """Deploy ``build_app`` (a picklable callable taking ``runner_factory=``
    and returning :func:`~ttakit.serve.app.create_app`'s app) on the Ray this
    process is connected to, as ``replicas`` replicas of ``cpus_per_replica``
    CPUs (and ``gpus_per_replica`` GPUs), behind Serve's HTTP proxy on
    ``host:port``. ``max_in_flight`` and ``timeout_ms`` are the app's own
    (Serve's bounds are set a little above them). Returns the base URL once
    every replica is up (loaded and warmed up). Serve's HTTP options are
    those of the first ``serve.start`` on the cluster."""
    if replicas < 1:
        raise UsageError(f"replicas must be at least 1, got {replicas}")
    serve.start(http_options={"host": host, "port": int(port),
                              "request_timeout_s": timeout_ms / 1000.0 + TIMEOUT_MARGIN_S})
    actor = {"num_cpus": cpus_per_replica, **({"num_gpus": gpus_per_replica} if gpus_per_replica else {})}
    deployment = serve.deployment(TTAServer, name=name, num_replicas=int(replicas), ray_actor_options=actor,
                                  max_ongoing_requests=int(max_in_flight) + ONGOING_MARGIN)
    serve.run(deployment.bind(build_app), name=name, route_prefix="/", blocking=blocking)
    return f"http://{host}:{port}"


def shutdown() -> None:
    """Remove every Serve application and stop Serve on this cluster."""
    serve.shutdown()


__all__ = ["ServeBatchRunner", "TTAServer", "deploy", "shutdown", "APP_NAME"]
