"""``ttakit serve``: an HTTP server predicting images with test-time
augmentation, batching requests together (FastAPI + uvicorn, the
``ttakit[serve]`` extra). Parses the options and starts uvicorn; the work is
:mod:`ttakit.serve`."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import signal
import socket
import sys
import tempfile

from ...errors import UsageError, require
from .common import (EXIT_OK, EXIT_USAGE, Command, add_model_options, add_runtime_option, error, load_policy,
                     normalize, positive_int, read_classes)
from . import serve_ray
from .adapt_option import adapt_value, add_adapt_option
from .model_data import ZOO

DESCRIPTION = """\
Serve a model over HTTP with test-time augmentation.

POST /v1/predict takes one or several images (multipart files, or JSON
{"images": [base64 strings or nested (H, W, C) arrays]}) and answers, per
image, the label, the class name (zoo models, --classes), the top-k
probabilities, entropy, view agreement and the policy's id. Images from
concurrent requests are predicted together (up to --max-batch images; an
idle model waits at most --max-wait-ms for more, a busy one runs what queued
as soon as it is free), off the event loop. GET /v1/policy, /healthz,
/readyz, /metrics (Prometheus) and /docs (OpenAPI) are there too. Errors are
JSON {"error": {"code": ..., "message": ...}}; logs are JSON lines on stderr.

With --engine ray the same API runs as a Ray Serve deployment of --replicas
replicas (each batching with @serve.batch) behind Serve's HTTP proxy on
--host:--port; /metrics and the queue limits are then per replica.
"""

EPILOG = """\
Once the model is loaded and warmed up, the server prints the address it
listens on ("ttakit serve: ready on http://HOST:PORT ..."). On SIGTERM
or Ctrl-C it stops taking requests, answers those it holds and exits with
status 0. Exit status 4: it cannot listen on
--host:--port (the port is in use, the address is not this machine's, or
a port below 1024 without the right to it).

examples:
  ttakit serve zoo:resnet20 --policy "identity + hflip"
  curl -s -F files=@cat.png http://127.0.0.1:8000/v1/predict
  ttakit serve zoo:resnet20 --policy d4 --engine ray --replicas 4 --address auto --host 0.0.0.0
  ttakit serve model.onnx --policy policy.yaml --classes classes.txt --size 224 --mean 0.485 0.456 0.406 \\
      --std 0.229 0.224 0.225 --port 8080 --api-key "$KEY"
"""

#: the CIFAR-10 class names, in label order, for the zoo models
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ENV = "TTAKIT_SERVE_OPTIONS"
#: the exit code when the server cannot listen on --host:--port (port in use, address not this machine's...)
EXIT_CANNOT_LISTEN = 4
#: uvicorn's exit status when the app's start-up (loading, warm-up) failed
UVICORN_STARTUP_FAILURE = 3


def configure(p: argparse.ArgumentParser) -> None:
    from ...io import images
    from ...serve.batcher import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_MS

    p.add_argument("model", metavar="MODEL",
                   help="model file (.onnx, TorchScript .pt/.pth/.ts, .keras) or zoo:resnet20 / zoo:resnet32 "
                        "(the published CIFAR ResNets, from --weights or $TTAKIT_MODELS)")
    p.add_argument("--policy", "-p", default="identity + hflip", metavar="SPEC_OR_FILE",
                   help="the views to run: a spec or a policy file (.yaml, .yml, .json). Default: 'identity + hflip'")
    p.add_argument("--merge", "-m", default=None, metavar="NAME",
                   help="how to merge the views. Default: the policy file's own, else mean")
    g = p.add_argument_group("model")
    add_model_options(g, normalize_default="0, no normalisation (the zoo ResNets use their own)")
    add_runtime_option(g)
    g.add_argument("--weights", metavar="DIR", default=None,
                   help="folder of the zoo ResNet checkpoints. Default: $TTAKIT_MODELS")
    g.add_argument("--device", default=None, metavar="DEVICE", help="cpu, cuda or cuda:N. Default: cpu")
    g.add_argument("--classes", default=None, metavar="FILE",
                   help="class names, one per line (the zoo models know theirs)")
    g.add_argument("--size", nargs="+", default=None, metavar=("H", "W"),
                   help="resize every image file to H x W. Default: what the model expects (32 32 for the zoo)")
    g.add_argument("--mode", choices=images.MODES, default="RGB", type=str.upper, help="RGB or L. Default: RGB")
    add_adapt_option(g, "serve")
    s = p.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on. Default: 127.0.0.1 (this machine)")
    s.add_argument("--port", type=int, default=8000,
                   help="port to listen on; 0: a free one (the ready line says which). Default: 8000")
    s.add_argument("--workers", type=positive_int, default=1,
                   help="server processes, each with its own model, batcher and share of the CPU cores; /metrics "
                        "adds up every worker's counts. Default: 1")
    s.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="torch threads of each worker process. Default: the CPU cores shared among the workers, "
                        "less one left to the HTTP work when batching (at least 1); 1 with --no-batching")
    s.add_argument("--max-batch", type=positive_int, default=DEFAULT_MAX_BATCH, metavar="N",
                   help=f"most images per engine run. Default: {DEFAULT_MAX_BATCH}")
    s.add_argument("--max-wait-ms", type=float, default=DEFAULT_MAX_WAIT_MS, metavar="MS",
                   help="how long the oldest request of a batch may wait for others (requests that queued while "
                        f"the model ran the previous batch do not wait). Default: {DEFAULT_MAX_WAIT_MS:g}")
    s.add_argument("--always-wait", dest="adaptive_wait", action="store_false",
                   help="a batch on an idle model waits the whole --max-wait-ms unless full. Default: stop waiting "
                        "as soon as no other request is on its way in")
    s.add_argument("--queue", type=positive_int, default=512, metavar="N",
                   help="most images waiting; beyond it requests get 503 with Retry-After. Default: 512")
    s.add_argument("--max-in-flight", type=positive_int, default=None, metavar="N",
                   help="most /v1/* requests handled at once per worker (being read, decoded, queued or run); "
                        "beyond it 503 overloaded at once, the body unread. Default: twice --queue")
    s.add_argument("--timeout-ms", type=float, default=10000.0, metavar="MS",
                   help="per-request deadline, from when its headers arrive: a body not received by then is 408, "
                        "an answer not ready by then 504. Default: 10000")
    s.add_argument("--degrade", type=positive_int, default=None, metavar="DEPTH",
                   help="when at least DEPTH images wait, run only the first --degrade-views distinct views "
                        "(responses say degraded: true). Default: never")
    s.add_argument("--degrade-views", type=positive_int, default=1, metavar="V", help="Default: 1")
    s.add_argument("--top-k", type=positive_int, default=5, metavar="K",
                   help="probabilities per image unless the request asks (?top_k=). Default: 5")
    s.add_argument("--max-request-bytes", type=positive_int, default=16 * 1024 * 1024, metavar="B",
                   help="Default: 16 MiB")
    s.add_argument("--max-images", type=positive_int, default=64, metavar="N",
                   help="images per request. Default: 64")
    s.add_argument("--max-pixels", type=positive_int, default=4096 * 4096, metavar="P",
                   help="pixels (H x W) per image. Default: 4096 x 4096")
    s.add_argument("--api-key", default=None, metavar="KEY",
                   help="require this key (X-API-Key or Authorization: Bearer) on /v1/*. Default: $TTAKIT_API_KEY, "
                        "else none")
    s.add_argument("--no-batching", dest="batching", action="store_false",
                   help="run each request alone, one per CPU core of the worker at a time (the naive baseline, "
                        "for benchmarks)")
    s.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="level of the JSON log lines on stderr. Default: info")
    serve_ray.add_options(p)
    p.set_defaults(progress=False)


def cores_per_worker(workers: int) -> int:
    """The CPU cores each of ``workers`` processes may use (at least 1)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def torch_threads(args: argparse.Namespace) -> int:
    """--threads, else: 1 without batching (requests run side by side, one per core), else the worker's
    cores less one for the event loop, parsing and decoding (a model thread that has to share its core
    with them stalls the others at every synchronisation)."""
    if args.threads:
        return args.threads
    if not args.batching:
        return 1
    return max(1, cores_per_worker(args.workers) - 1)


def build_classifier(args: argparse.Namespace):
    """``(classifier, classes, size)``: the classifier the options describe
    (loads the model, sets torch's threads), its class names and input size
    (``bench/bench_serve.py`` runs the same offline, as the server's bound)."""
    import torch

    from ...io.images import parse_size
    from ...models.loading import load_model_file
    from ...tasks import Classifier
    from .model_data import load_model

    torch.set_num_threads(torch_threads(args))
    policy = load_policy(args.policy)
    classes = read_classes(args.classes) if args.classes else None
    size = parse_size(args.size)
    if args.model in ZOO or args.model.startswith("zoo:"):
        model, options = load_model(args)
        classes = classes or list(CIFAR10_CLASSES)
        size = size or (32, 32)
        if args.device:
            options["device"] = args.device
    else:
        from ...models.runtime import with_runtime

        model = with_runtime(load_model_file(args.model, layout=args.model_layout, device=args.device), args.runtime)
        options = {"output": args.output_kind, "batch_size": args.batch_size}
        norm = normalize(args.mean, args.std, args.mode)
        if norm is not None:
            options["preprocess"] = norm
        size = size or getattr(model, "expected_size", None)
    options.pop("progress", None)
    if adapt_value(args):  # each request's images are the adaptation's stream (ttakit.serve.batcher)
        options["adapt"] = adapt_value(args)
    clf = Classifier(model, policy, args.merge, data_layout="NHWC", classes=classes, on_error="mark", **options)
    if args.degrade is not None and clf.effective_merge.per_view:
        raise UsageError("--degrade cannot shorten a policy whose merge has per-view weights")
    return clf, classes, size


def build_app(args: argparse.Namespace, runner_factory=None, on_ready=None):
    """The app the options describe (loads the model); ``runner_factory``
    replaces the batcher, ``on_ready()`` is called once it is warmed up
    (see :func:`ttakit.serve.app.create_app`)."""
    from ...serve import Limits
    from ...serve.app import create_app

    clf, classes, size = build_classifier(args)
    limits = Limits(max_request_bytes=args.max_request_bytes, max_images=args.max_images,
                    max_pixels=args.max_pixels)
    return create_app(clf, classes=classes, size=size, mode=args.mode, max_batch=args.max_batch,
                      max_wait_ms=args.max_wait_ms, queue_size=args.queue, timeout_ms=args.timeout_ms,
                      degrade_depth=args.degrade, degrade_views=args.degrade_views,
                      api_key=args.api_key or os.environ.get("TTAKIT_API_KEY") or None, limits=limits,
                      top_k=args.top_k, batching=args.batching, model_name=args.model,
                      adaptive_wait=args.adaptive_wait, threads=cores_per_worker(args.workers),
                      max_in_flight=args.max_in_flight, runner_factory=runner_factory, on_ready=on_ready)


def app_from_env():
    """uvicorn's factory for --workers > 1: the options come in $TTAKIT_SERVE_OPTIONS."""
    from ...serve.app import configure_logging

    args = argparse.Namespace(**json.loads(os.environ[ENV]))
    configure_logging(args.log_level)
    return build_app(args, on_ready=lambda: announce(args.url, f"worker {os.getpid()} of {args.workers}"))


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: a free one), as uvicorn
    binds its own; uvicorn (or each worker) listens on it. Raises
    :class:`OSError` when the address cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


def announce(url: str, who: str = "") -> None:
    """The line a person (or a script) reads to know where the server is."""
    print(f"ttakit serve: ready on {url} ({who + '; ' if who else ''}API docs at {url}/docs)", file=sys.stderr,
          flush=True)


#: the signals that stop the server gracefully
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def signals_stop(server):
    """SIGTERM and SIGINT ask ``server`` (a uvicorn Server) to stop, before
    uvicorn's own handler is in place and after it is gone: uvicorn stops
    gracefully, then raises the signal again for the handler it found, and
    with the default one the process would die of it (status 143 for
    SIGTERM) after a clean shutdown, which a supervisor reads as a crash."""
    previous = {sig: signal.signal(sig, lambda *_: setattr(server, "should_exit", True)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def shared_metrics_folder():
    """$PROMETHEUS_MULTIPROC_DIR for the worker processes, so that /metrics
    counts every worker: the caller's when set (it must start empty), else a
    fresh temporary folder, removed at the end."""
    from ...serve.app import MULTIPROC_ENV

    if os.environ.get(MULTIPROC_ENV):
        yield os.environ[MULTIPROC_ENV]
        return
    with tempfile.TemporaryDirectory(prefix="ttakit-metrics-") as folder:
        os.environ[MULTIPROC_ENV] = folder
        try:
            yield folder
        finally:
            del os.environ[MULTIPROC_ENV]


def run(args: argparse.Namespace) -> int:
    serve_ray.check_options(args)
    if args.engine == "ray":
        return serve_ray.run(args, build_app)
    uvicorn = require("uvicorn", "serve", "ttakit serve")
    from ...serve.app import configure_logging
    configure_logging(args.log_level)
    try:  # before the model loads: a port in use is said at once
        sock = listening_socket(args.host, args.port)
    except OSError as e:
        error(f"cannot listen on {args.host}:{args.port} (--host, --port): {e.strerror or e}"
              + ("; another server is using that port: stop it or pick another --port"
                 if e.errno == errno.EADDRINUSE else ""))
        return EXIT_CANNOT_LISTEN
    uv = dict(log_level="warning", access_log=False, timeout_graceful_shutdown=60)
    with contextlib.closing(sock):
        if args.workers > 1:
            return _run_workers(args, sock, uv)
        server = uvicorn.Server(uvicorn.Config(build_app(args, on_ready=lambda: announce(url_of(sock))), **uv))
        try:
            with signals_stop(server):
                server.run(sockets=[sock])
        except SystemExit as e:  # uvicorn's own exit when the app's start-up failed (logged above)
            if e.code != UVICORN_STARTUP_FAILURE:
                raise
            server.started = False
        if not server.started:
            error("the server did not start: the model failed at start-up (see the log above)")
            return EXIT_USAGE
    return EXIT_OK


def _run_workers(args: argparse.Namespace, sock: socket.socket, uv: dict) -> int:
    """--workers N: uvicorn's supervisor, N processes listening on ``sock``;
    it stops them all on SIGTERM or SIGINT."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    args.url = url_of(sock)
    os.environ[ENV] = json.dumps({k: v for k, v in vars(args).items() if not k.startswith("_")})
    with shared_metrics_folder():
        supervisor = Multiprocess(uvicorn.Config(f"{__name__}:app_from_env", factory=True, workers=args.workers,
                                                 **uv), sockets=[sock])
        supervisor.run()
    if any(p.exitcode == UVICORN_STARTUP_FAILURE for p in supervisor.processes):
        error("a worker did not start: the model failed at start-up (see the log above)")
        return EXIT_USAGE
    return EXIT_OK


COMMAND = Command("serve", "serve a model over HTTP with test-time augmentation and request batching",
                  configure=configure, run=run, description=DESCRIPTION, epilog=EPILOG)
