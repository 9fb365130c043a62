"""The HTTP server: a FastAPI app around a :class:`~ttakit.Classifier`.

    app = create_app(Classifier(model, "identity + hflip", data_layout="NHWC"), classes=names, size=(32, 32))
    uvicorn.run(app, host="127.0.0.1", port=8000)

``POST /v1/predict`` takes one or several images (multipart files, or JSON
``{"images": [...]}`` with base64 strings or nested arrays) and answers, per
image, the label, the class name when known, the top-k probabilities, the
entropy and view agreement, and the policy's id. Images from many requests
are predicted together by a :class:`~ttakit.serve.batcher.Batcher` thread,
off the event loop -- except with a classifier that adapts the model
(``Classifier(adapt=...)``): then each request runs alone, adapted to its own
images only (nothing carried across requests; docs/adaptation.md). Every failure is a JSON body ``{"error": {"code",
"message"}}`` with a stable ``code`` (:data:`ERROR_CODES`); an image that
cannot be used fails only itself (its entry carries the error).
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import math
import os
import sys
import threading
import time
from contextlib import asynccontextmanager
from typing import Any

import numpy as np

from ..errors import require

for _module in ("fastapi", "starlette", "prometheus_client"):  # the serve extra: one error naming it
    require(_module, "serve", "ttakit.serve")
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from . import schema
from ..tasks import Classifier
from ..tasks.classification import policy_id
from .batcher import (DEFAULT_DIRECT_THREADS, DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_MS, Batcher, DirectRunner,
                      ServeError, prefix_policy)
from .decode import (QUOTE_CHARS, ImageProblem, Limits, allow_pixels, decode_array, decode_base64, decode_bytes,
                     quoted)
from .multipart import simple_multipart

#: every error code a response can carry, with its HTTP status
ERROR_CODES = {
    "unauthorized": 401, "not_found": 404, "method_not_allowed": 405, "request_timeout": 408,
    "request_too_large": 413, "too_many_images": 413, "image_too_large": 413,
    "unsupported_media_type": 415,
    "invalid_request": 422, "no_images": 422, "invalid_image": 422,
    "internal_error": 500, "model_error": 500,
    "overloaded": 503, "shutting_down": 503, "not_ready": 503,
    "deadline_exceeded": 504,
}

log = logging.getLogger("ttakit.serve")

#: request bodies up to this size are decoded on the event loop (a 32x32 PNG takes ~0.1 ms; handing it
#: to a thread and back costs more); larger ones in a worker thread, so that the loop keeps serving
INLINE_DECODE_BYTES = 64 * 1024
#: Python's GIL switch interval while the server runs, in seconds (its default: 5 ms). The model thread
#: lets go of the GIL in every torch operator and ONNX Runtime run (a ResNet-20 batch: ~125 of them with
#: --runtime onnx, ~200 eager) and must take it back after each; while the event loop runs Python, each
#: takes up to the whole interval. Measured on 2 shared (contended) cores, bench/bench_serve.py's model
#: in batches of 16 beside a thread running Python 40% of the time: eager 179 images/s at 5 ms, 229 at
#: 0.1 ms (alone: ~250-300); that thread ran 23% slower. The loop is interrupted only while the model waits.
SWITCH_INTERVAL_S = 0.0001
#: set (by ``ttakit serve --workers N``) when several processes share one set of metrics
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(), "msg": record.getMessage()}
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "info") -> None:
    """JSON lines on stderr for the ``ttakit.serve`` logger."""
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(JsonFormatter())
    log.handlers[:] = [h]
    log.setLevel(level.upper())
    log.propagate = False


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: a name a client sent
    may hold a lone surrogate (``"\\ud800"`` in its JSON), which UTF-8
    cannot encode; escaped, it goes back as it came."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _error(code: str, message: str, status: int | None = None, headers: dict | None = None, details=None):
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details:
        body["error"]["details"] = details
    return AsciiJSONResponse(body, status_code=status or ERROR_CODES.get(code, 500), headers=headers)


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def create_app(classifier: Classifier, *, classes=None, size: tuple[int, int] | None = None, mode: str = "RGB",
               max_batch: int = DEFAULT_MAX_BATCH, max_wait_ms: float = DEFAULT_MAX_WAIT_MS, queue_size: int = 512,
               timeout_ms: float = 10000, threads: int = DEFAULT_DIRECT_THREADS,
               degrade_depth: int | None = None, degrade_views: int = 1, api_key: str | None = None,
               limits: Limits | None = None, top_k: int = 5, batching: bool = True, model_name: str = "model",
               warm_up: bool = True, adaptive_wait: bool = True, max_in_flight: int | None = None,
               runner_factory=None, on_ready=None):
    """The FastAPI app serving ``classifier`` (images arrive as ``(H, W, C)``,
    so its ``data_layout`` must be NHWC). ``size`` resizes every file image to
    ``(H, W)`` (and is the warm-up shape); ``batching=False`` runs each request
    alone (the naive baseline of ``bench/bench_serve.py``). A batch waits
    for company (at most ``max_wait_ms`` from its oldest request's arrival)
    only when the model was idle as that request arrived; with
    ``adaptive_wait`` it also stops waiting as soon as no other request is on
    its way in (a lone request is not delayed by ``max_wait_ms``).
    ``threads`` is the naive runner's pool size (``batching=False``).
    ``max_in_flight`` bounds the ``/v1/*`` requests being handled at once
    (read, decoded, queued or run; default twice ``queue_size``): beyond it a
    request is answered 503 ``overloaded`` at once, before its body is read,
    so that a server starved of CPU holds a bounded backlog, not one that
    grows with every request the clients send. ``runner_factory`` replaces
    the :class:`~ttakit.serve.batcher.Batcher` (it is called with the
    Batcher's arguments and returns an object with its ``submit``, ``depth``,
    ``warm_up`` and ``close``): :mod:`ttakit.serve.ray_deployment` batches
    with Ray Serve's ``@serve.batch`` this way, behind the same routes.
    ``on_ready()`` is called once the model is loaded and warmed up (the
    command line prints the address it listens on). ``limits.max_pixels``
    holds above Pillow's own ceiling too (see
    :func:`~ttakit.serve.decode.allow_pixels`).

    With ``$PROMETHEUS_MULTIPROC_DIR`` set (several worker processes),
    ``/metrics`` adds up every worker's counters and histograms from that
    folder; the queue depth is then the sum of each worker's depth when it
    last ran a batch or answered ``/metrics``."""
    if str(classifier.data_layout).upper() != "NHWC":
        classifier = Classifier(**{**classifier.get_params(), "data_layout": "NHWC"})
    if classifier.on_error != "mark":
        classifier = Classifier(**{**classifier.get_params(), "on_error": "mark"})
    limits = limits or Limits()
    allow_pixels(limits.max_pixels)
    classes = list(classes) if classes is not None else (list(classifier.classes) if classifier.classes else None)
    pid = policy_id(classifier)
    run_policy = classifier.run_policy
    merge = classifier.effective_merge
    key = api_key.encode() if api_key else None
    channels = 1 if mode == "L" else 3
    default_k = top_k

    reg = CollectorRegistry()
    m_requests = Counter("ttakit_requests", "HTTP requests by path and status", ["path", "status"], registry=reg)
    m_latency = Histogram("ttakit_request_seconds", "request latency (predict)", registry=reg,
                          buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
    m_batch = Histogram("ttakit_batch_images", "images per engine run", registry=reg,
                        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
    m_forwards = Histogram("ttakit_forward_passes_per_input", "forward passes per input image, per engine run",
                           registry=reg, buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32))
    m_images = Counter("ttakit_images", "images by outcome", ["outcome"], registry=reg)
    shared_metrics = bool(os.environ.get(MULTIPROC_ENV))
    m_queue = Gauge("ttakit_queue_depth", "images waiting to be batched", registry=reg,
                    **({"multiprocess_mode": "livesum"} if shared_metrics else {}))
    m_degraded = Counter("ttakit_degraded_responses", "requests answered with the shorter policy", registry=reg)

    def on_batch(n, forwards, secs):
        if shared_metrics:
            m_queue.set(state["runner"].depth)
        m_batch.observe(n)
        m_forwards.observe(forwards / max(n, 1))

    state: dict[str, Any] = {"ready": False, "runner": None, "receiving": 0}

    @asynccontextmanager
    async def lifespan(app):
        state["answers"] = _Answers(asyncio.get_running_loop())
        runner_cls, extra = (runner_factory or Batcher, {}) if batching else (DirectRunner, {"threads": threads})
        runner = runner_cls(classifier, **extra, max_batch=max_batch, max_wait_ms=max_wait_ms, queue_size=queue_size,
                            degrade_depth=degrade_depth, degrade_views=degrade_views, on_batch=on_batch,
                            expect=(lambda: state["receiving"]) if adaptive_wait else None)
        state["runner"] = runner
        if not shared_metrics:
            m_queue.set_function(lambda: runner.depth)
        if warm_up and size is not None:
            t0 = time.perf_counter()
            await run_in_threadpool(runner.warm_up, (*size, channels))
            log.info("warmed up", extra={"fields": {"seconds": round(time.perf_counter() - t0, 3)}})
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, SWITCH_INTERVAL_S))
        state["ready"] = True
        log.info("ready", extra={"fields": {"model": model_name, "policy_id": pid, "views": len(run_policy),
                                            "adapt": getattr(classifier._setup().adaptation, "name", "none"),
                                            "batching": batching, "max_batch": max_batch,
                                            "max_wait_ms": max_wait_ms, "queue": queue_size}})
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            sys.setswitchinterval(switch)
            state["ready"] = False
            log.info("shutting down: finishing queued requests")
            await run_in_threadpool(runner.close)
            if shared_metrics:
                multiprocess.mark_process_dead(os.getpid())
            log.info("stopped")

    app = FastAPI(title="ttakit serve", version=_version(), lifespan=lifespan,
                  description="Test-time augmentation for an image classifier, with cross-request micro-batching. "
                              "Every error is `{\"error\": {\"code\": ..., \"message\": ...}}` with a stable code.")
    err_responses = {s: {"model": schema.ErrorBody, "description": d} for s, d in (
        (401, "missing or wrong API key"), (408, "the body did not arrive within --timeout-ms"),
        (413, "request, image count or image too large"),
        (415, "not multipart/form-data or application/json"), (422, "invalid request or images"),
        (500, "internal error"), (503, "overloaded (see Retry-After) or shutting down"),
        (504, "deadline exceeded"))}

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large",
                415: "unsupported_media_type"}.get(exc.status_code, "invalid_request")
        return _error(code, str(exc.detail), exc.status_code, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        errs = exc.errors()
        where = ".".join(str(p) for p in errs[0].get("loc", ())) if errs else ""
        msg = errs[0].get("msg", "invalid request") if errs else "invalid request"
        return _error("invalid_request", f"{where}: {msg}" if where else msg, 422)

    @app.exception_handler(Exception)
    async def internal_error(request, exc):
        log.error("unhandled error", exc_info=exc, extra={"fields": {"path": request.url.path}})
        return _error("internal_error", "internal error", 500)

    def on_done(scope, status: int, secs: float, rid: str) -> None:
        path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
        m_requests.labels(path, str(status)).inc()
        if path == "/v1/predict":
            m_latency.observe(secs)
        if path != "/metrics":
            log.info("request", extra={"fields": {
                "rid": rid, "method": scope["method"], "path": scope["path"], "status": status,
                "ms": round(secs * 1000, 2), "images": scope.get("state", {}).get("images")}})

    app.add_middleware(_Access, on_done=on_done, max_in_flight=max_in_flight or 2 * queue_size)

    def authorized(request: Request) -> bool:
        if key is None:
            return True
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest((given or "").encode(), key)

    @app.get("/healthz", response_model=schema.Health, tags=["operations"])
    async def healthz():
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=schema.Health, responses={503: {"model": schema.ErrorBody}},
             tags=["operations"])
    async def readyz():
        """The model is loaded and warmed up, and the server takes requests."""
        if not state["ready"]:
            return _error("not_ready", "the model is not loaded and warmed up yet, or the server is stopping")
        return {"status": "ready"}

    @app.get("/metrics", include_in_schema=False)
    async def metrics():
        if not shared_metrics:
            return Response(generate_latest(reg), media_type=CONTENT_TYPE_LATEST)
        if state["runner"] is not None:
            m_queue.set(state["runner"].depth)
        every_worker = CollectorRegistry()
        multiprocess.MultiProcessCollector(every_worker)
        return Response(generate_latest(every_worker), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/policy", response_model=schema.PolicyInfo, responses={401: err_responses[401]}, tags=["predict"])
    async def get_policy(request: Request):
        """The policy the server runs: its id, spec, distinct views, weights and merge."""
        if not authorized(request):
            return _error("unauthorized", "missing or wrong API key (send X-API-Key or Authorization: Bearer)")
        runner = state["runner"]
        degrade = None
        if degrade_depth is not None:
            degrade = {"queue_depth": degrade_depth,
                       "spec": prefix_policy(run_policy, degrade_views).spec}
        return {
            "policy_id": pid, "spec": run_policy.spec, "views": [repr(v) for v in run_policy.views],
            "weights": [float(w) for w in run_policy.weights], "merge": repr(merge),
            "forward_passes_per_input": len(run_policy), "description": run_policy.describe(),
            "classes": classes, "input": {"size": list(size) if size else None, "mode": mode},
            "limits": {"max_request_bytes": limits.max_request_bytes, "max_images": limits.max_images,
                       "max_pixels": limits.max_pixels},
            "batching": {"enabled": batching, "max_batch": max_batch, "max_wait_ms": max_wait_ms,
                         "queue": queue_size, "timeout_ms": timeout_ms,
                         "queue_depth": runner.depth if runner is not None else 0},
            "degrade": degrade, "model": model_name,
        }

    @app.post("/v1/predict", response_model=schema.PredictResponse, responses=err_responses, tags=["predict"],
              openapi_extra={"requestBody": schema.request_body(limits.max_images)})
    async def predict(request: Request,
                      top_k: int | None = Query(None, ge=1, le=1000,
                                                description=f"probabilities per image (default {top_k})")):
        """Predict one or several images with test-time augmentation."""
        t_start = time.monotonic()
        deadline = t_start + timeout_ms / 1000.0
        if not authorized(request):
            return _error("unauthorized", "missing or wrong API key (send X-API-Key or Authorization: Bearer)")
        if not state["ready"]:
            return _error("not_ready", "the model is not loaded and warmed up yet, or the server is stopping")
        state["receiving"] += 1
        try:
            return await _predict(request, top_k, deadline)
        finally:
            if not getattr(request.state, "submitted", False):
                state["receiving"] = max(0, state["receiving"] - 1)

    async def _predict(request: Request, top_k: int | None, deadline: float):
        k = top_k
        try:
            named = await _read_images(request, limits, deadline)
        except ServeError as e:
            return _error(e.code, str(e), e.status, e.headers)
        if isinstance(named, tuple):  # (entries, k from the body)
            named, body_k = named
            k = k or body_k
        k = k or default_k
        request.state.images = len(named)
        if sum(_payload_bytes(v) for _, _, v in named) <= INLINE_DECODE_BYTES:
            arrays = _decode_all(named, limits, mode, size)
        else:
            arrays = await run_in_threadpool(_decode_all, named, limits, mode, size)
        problems = {i: a for i, a in enumerate(arrays) if isinstance(a, ImageProblem)}
        if len(problems) == len(arrays):
            first = problems[0]
            details = [{"index": i, "name": named[i][0], "code": p.code, "message": p.message}
                       for i, p in problems.items()]
            return _error(first.code, first.message if len(arrays) == 1 else
                          f"none of the {len(arrays)} images could be used; first: {first.message}",
                          first.status, details=details)
        groups: dict[tuple, list[int]] = {}
        for i, a in enumerate(arrays):
            if not isinstance(a, ImageProblem):
                groups.setdefault((a.shape, a.dtype.str), []).append(i)
        runner = state["runner"]
        state["receiving"] = max(0, state["receiving"] - 1)  # on its way in: the batcher need not wait for it
        request.state.submitted = True
        try:
            futures = [(idx, runner.submit(np.stack([arrays[i] for i in idx]), deadline)) for idx in groups.values()]
        except ServeError as e:
            return _error(e.code, str(e), e.status, e.headers)
        try:
            results = await _results_by([f for _, f in futures], deadline, state["answers"])
        except asyncio.TimeoutError:
            for _, f in futures:
                f.cancel()
            return _error("deadline_exceeded", f"no answer within the server's deadline of {timeout_ms:g} ms", 504)
        except ServeError as e:
            return _error(e.code, str(e), e.status, e.headers)
        out: list[dict] = [None] * len(arrays)  # type: ignore[list-item]
        degraded = False
        views = len(run_policy)
        for (idx, _), b in zip(futures, results):
            degraded |= b.degraded
            views = min(views, b.views)
            for j, i in enumerate(idx):
                out[i] = _prediction(i, named[i][0], b, j, k, classes, pid)
        for i, p in problems.items():
            out[i] = {"index": i, "name": named[i][0], "policy_id": pid,
                      "error": {"code": p.code, "message": p.message}}
        failed = sum(1 for o in out if "error" in o)
        m_images.labels("predicted").inc(len(out) - failed)
        if failed:
            m_images.labels("failed").inc(failed)
        if degraded:
            m_degraded.inc()
        return AsciiJSONResponse({"model": model_name, "policy_id": pid, "views": views, "degraded": degraded,
                                  "failed": failed, "predictions": out})

    KNOWN_PATHS = {"/v1/predict", "/v1/policy", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"}
    app.state.ttakit = state
    return app


class _Access:
    """ASGI middleware: a request id (X-Request-Id), ``on_done(scope,
    status, seconds, rid)`` after every HTTP request (metrics, JSON log), and
    at most ``max_in_flight`` ``/v1/*`` requests handled at once (the others
    get 503 overloaded at once, their bodies unread)."""

    def __init__(self, app, on_done, max_in_flight: int):
        self.app = app
        self.on_done = on_done
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        rid = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-request-id"), None)
        rid = (rid or _next_request_id())[:64]
        status = [500]

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        bounded = scope["path"].startswith("/v1/")
        try:
            if bounded and self.in_flight >= self.max_in_flight:
                await _error("overloaded", f"{self.in_flight} requests are being handled, at most "
                             f"{self.max_in_flight}; retry shortly", headers={"Retry-After": "1"}
                             )(scope, receive, send_with_id)
                return
            self.in_flight += bounded
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                self.in_flight -= bounded
        finally:
            self.on_done(scope, status[0], time.perf_counter() - t0, rid)


def _version() -> str:
    from ..version import __version__

    return __version__


def _prediction(i: int, name: str, b, j: int, k: int, classes, pid: str) -> dict:
    base = {"index": i, "name": name, "policy_id": pid}
    if b.failed[j]:
        return {**base, "error": {"code": "invalid_image",
                                  "message": f"image {quoted(name)}: {b.errors.get(j, 'failed')}"}}
    probs = b.probs[j]
    kk = min(k, probs.shape[-1])
    top = np.argsort(-probs, kind="stable")[:kk]
    label = int(b.labels[j])
    entry = {**base, "label": label,
             "top_k": [{"label": int(c), "prob": float(probs[c]),
                        **({"class": classes[c]} if classes and c < len(classes) else {})} for c in top],
             "entropy": _finite(b.entropy[j]), "agreement": _finite(b.agreement[j]),
             "views": b.views, "degraded": b.degraded}
    if classes and label < len(classes):
        entry["class"] = classes[label]
    return entry


_RID_PREFIX = os.urandom(4).hex()
_rid_counter = itertools.count(1)


def _next_request_id() -> str:
    """A request id unique to this server's life (random per process, then a
    counter): cheaper than a uuid4 per request, which reads the OS's random source."""
    return f"{_RID_PREFIX}{next(_rid_counter):08x}"


def _payload_bytes(value) -> int:
    """The bytes an encoded image carries; a nested array counts as large (it is decoded in a thread)."""
    return len(value) if isinstance(value, (bytes, str)) else INLINE_DECODE_BYTES + 1


def _decode_all(named, limits: Limits, mode: str, size):
    out = []
    for name, kind, value in named:
        if kind == "bytes":
            out.append(decode_bytes(value, name, limits, mode, size))
        elif kind == "base64":
            out.append(decode_base64(value, name, limits, mode, size))
        else:
            out.append(decode_array(value, name, limits, mode, size))
    return out


class _Answers:
    """The runner's answers handed to the event loop, one wake-up per batch.

    :func:`asyncio.wrap_future` wakes the loop once per future (a
    ``call_soon_threadsafe``: a write to the loop's self-pipe, from the model
    thread, between two batches); here the first answer of a batch schedules
    one callback that sets every answer that has come by then."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._lock = threading.Lock()
        self._done: list = []

    def watch(self, future) -> asyncio.Future:
        """An asyncio future of the loop with ``future``'s outcome
        (``future`` itself when it is one already); cancelling it cancels
        ``future``."""
        if asyncio.isfuture(future):
            return future
        waiter = self.loop.create_future()
        waiter.add_done_callback(lambda w: future.cancel() if w.cancelled() else None)
        future.add_done_callback(lambda f: self._arrived(f, waiter))
        return waiter

    def _arrived(self, future, waiter) -> None:
        with self._lock:
            self._done.append((future, waiter))
            first = len(self._done) == 1
        if first and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._hand_over)

    def _hand_over(self) -> None:
        with self._lock:
            done, self._done = self._done, []
        for future, waiter in done:
            if waiter.done():  # given up (deadline) meanwhile
                continue
            if future.cancelled():
                waiter.cancel()
            elif future.exception() is not None:
                waiter.set_exception(future.exception())
            else:
                waiter.set_result(future.result())


async def _results_by(futures: list, deadline: float, answers: _Answers) -> list:
    """The results of ``futures`` (:class:`concurrent.futures.Future`, or
    asyncio futures), or :class:`asyncio.TimeoutError` at ``deadline`` (the
    loop's clock): a timer rather than :func:`asyncio.wait_for`, which starts
    a task per request."""
    waiting = [answers.watch(f) for f in futures]
    both = waiting[0] if len(waiting) == 1 else asyncio.gather(*waiting)
    late = []
    timer = asyncio.get_running_loop().call_at(deadline, lambda: late.append(both.cancel()))
    try:
        got = await both
    except asyncio.CancelledError:
        if not late:
            raise
        raise asyncio.TimeoutError from None
    finally:
        timer.cancel()
    return [got] if len(waiting) == 1 else got


async def _read_body(request, limit: int, deadline: float) -> bytes:
    """The body, at most ``limit`` bytes, received by ``deadline`` (a
    :func:`time.monotonic` time; the event loop's clock): a client that
    sends its body slowly, or stops, holds its connection only until then."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > limit:
                raise ServeError(f"the request is {int(length)} bytes, more than the {limit} allowed",
                                 code="request_too_large", status=413)
        except ValueError:
            raise ServeError("bad Content-Length header", code="invalid_request", status=422) from None
    chunks, n = [], 0
    task, late = asyncio.current_task(), []
    # a timer, not asyncio.wait_for: no task per request, and a body already received is never late
    timer = asyncio.get_running_loop().call_at(deadline, lambda: late.append(task.cancel()))
    try:
        async for chunk in request.stream():
            n += len(chunk)
            if n > limit:
                raise ServeError(f"the request is more than the {limit} bytes allowed", code="request_too_large",
                                 status=413)
            chunks.append(chunk)
    except ClientDisconnect:  # the answer goes nowhere; the access log says what happened
        raise ServeError("the client closed the connection before the body ended", code="invalid_request",
                         status=422) from None
    except asyncio.CancelledError:
        if not late:
            raise
        if hasattr(task, "uncancel"):
            task.uncancel()
        raise ServeError("the request's body did not arrive within the server's deadline (--timeout-ms)",
                         code="request_timeout", status=408) from None
    finally:
        timer.cancel()
    return b"".join(chunks)


async def _read_images(request, limits: Limits, deadline: float):
    """``[(name, kind, value)]`` (kind: bytes, base64 or array) from a
    multipart or JSON body, and the body's ``top_k`` when it has one."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("multipart/form-data", "application/json"):
        raise ServeError(f"send multipart/form-data (image files) or application/json ({{\"images\": [...]}}), "
                         f"not {ctype or 'a body without Content-Type'}", code="unsupported_media_type", status=415)
    body = await _read_body(request, limits.max_request_bytes, deadline)
    body_k = None
    if ctype == "application/json":
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ServeError(f"the body is not valid JSON ({str(e)[:QUOTE_CHARS]})", code="invalid_request",
                             status=422) from None
        except RecursionError:  # arrays or objects nested about a thousand deep
            raise ServeError("the JSON body is nested too deeply", code="invalid_request", status=422) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
            raise ServeError('the JSON body must be an object with an "images" list', code="invalid_request",
                             status=422)
        if "top_k" in doc:
            tk = doc["top_k"]
            if isinstance(tk, bool) or not isinstance(tk, int) or not 1 <= tk <= 1000:
                raise ServeError('"top_k" must be an integer from 1 to 1000', code="invalid_request", status=422)
            body_k = tk
        items = doc["images"]
        names = doc.get("names")
        if names is not None and (not isinstance(names, list) or len(names) != len(items)
                                  or not all(isinstance(s, str) for s in names)):
            raise ServeError('"names", when given, must be a list of strings, one per image',
                             code="invalid_request", status=422)
        _check_count(len(items), limits)
        named = []
        for i, v in enumerate(items):
            name = names[i] if names else f"#{i}"
            named.append((name, "base64" if isinstance(v, str) else "array", v))
        return named, body_k
    plain = simple_multipart(request.headers.get("content-type", "").encode("latin-1"), body, limits.max_images + 1)
    if plain is not None:
        files, top_k_text = plain
        named = [(name, "bytes", data) for name, data in files]
        fields = [] if top_k_text is None else [top_k_text]
    else:
        named, fields = await _parse_form(request, body, limits)
    for text in fields:
        try:
            body_k = int(text)
        except ValueError:
            body_k = 0
        if not 1 <= body_k <= 1000:
            raise ServeError('"top_k" must be an integer from 1 to 1000', code="invalid_request", status=422)
    _check_count(len(named), limits)
    return named, body_k


async def _parse_form(request, body: bytes, limits: Limits):
    """``([(name, "bytes", data)], [top_k texts])`` from any multipart body, by Starlette's parser."""
    try:
        form = await _replay(request, body).form(max_files=limits.max_images + 1, max_fields=100)
    except Exception as e:  # multipart parse errors (starlette raises its own types)
        raise ServeError(f"the multipart body cannot be parsed ({type(e).__name__}: {str(e)[:QUOTE_CHARS]})",
                         code="invalid_request", status=422) from None
    named, fields = [], []
    for field, value in form.multi_items():
        if hasattr(value, "read"):  # an uploaded file
            named.append((value.filename or field, "bytes", await value.read()))
        elif field == "top_k":
            fields.append(value)
    return named, fields


def _check_count(n: int, limits: Limits) -> None:
    if n == 0:
        raise ServeError("the request has no images", code="no_images", status=422)
    if n > limits.max_images:
        raise ServeError(f"the request has {n} images, more than the {limits.max_images} allowed",
                         code="too_many_images", status=413)


def _replay(request, body: bytes):
    """A Request whose body is ``body`` (already read, bounded)."""
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)
