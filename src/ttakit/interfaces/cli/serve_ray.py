"""``ttakit serve --engine ray``: the same HTTP API as a Ray Serve
deployment in replicas (the ``ttakit[ray]`` extra). Adds the options, joins
or starts Ray and deploys :mod:`ttakit.serve.ray_deployment`; ``serve``
calls it for ``--engine ray``."""

from __future__ import annotations

import argparse
import functools
import signal
import sys
import threading
from pathlib import Path

from ...errors import UsageError
from ...zoo.named import is_zoo_name, zoo_checkpoint
from .common import positive_int
from .model_data import check_zoo_layout
from .predict_ray import ENGINES, at_least

#: how often the waiting driver looks whether it was asked to stop, in seconds
STOP_POLL_S = 0.5


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scale-out (--engine ray)")
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: uvicorn in this process (or --workers processes). ray: a Ray Serve deployment of "
                        "the same API in --replicas replicas, behind Serve's HTTP proxy on --host:--port "
                        "(pip install 'ttakit[ray]'); MODEL must be readable on every node. Default: local")
    g.add_argument("--replicas", type=positive_int, default=None, metavar="N",
                   help="replicas, each loading the model once and batching with @serve.batch. Default: 1")
    g.add_argument("--address", default=None, metavar="ADDR",
                   help="join the Ray cluster at ADDR (auto, HOST:PORT or ray://HOST:PORT). Default: start a "
                        "local Ray on this machine")
    g.add_argument("--num-cpus", type=positive_int, default=None, metavar="N",
                   help="CPUs of the local Ray (without --address). Default: all")
    g.add_argument("--cpus-per-replica", type=at_least(0, inclusive=False), default=None, metavar="C",
                   help="CPUs each replica reserves (and its torch threads unless --threads, at least 1). Default: 1")
    g.add_argument("--gpus-per-replica", type=at_least(0, inclusive=True), default=None, metavar="G",
                   help="GPUs each replica reserves; with G > 0 the model runs on cuda unless --device says "
                        "otherwise. Default: 0")


def check_options(args: argparse.Namespace) -> None:
    """Refuse the Ray options without ``--engine ray``, and the options
    that do not apply with it."""
    ray_only = {"--replicas": args.replicas, "--address": args.address, "--num-cpus": args.num_cpus,
                "--cpus-per-replica": args.cpus_per_replica, "--gpus-per-replica": args.gpus_per_replica}
    if args.engine != "ray":
        given = [k for k, v in ray_only.items() if v is not None]
        if given:
            raise UsageError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} only for --engine ray")
        return
    local_only = {"--workers": args.workers != 1 and "use --replicas",
                  "--no-batching": not args.batching and "the replicas batch with @serve.batch",
                  "--always-wait": not args.adaptive_wait and "@serve.batch always waits up to --max-wait-ms"}
    given = [f"{k} ({why})" for k, why in local_only.items() if why]
    if given:
        raise UsageError(f"{', '.join(given)}: not with --engine ray")
    if args.address is not None and args.num_cpus is not None:
        raise UsageError("--num-cpus sizes a local Ray; a cluster joined with --address has its own")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def portable(args: argparse.Namespace) -> None:
    """Name the model so that a replica on any node, in any folder, loads
    the one this command was given: a zoo model's checkpoint as found here
    (in --weights or $TTAKIT_MODELS), a model file by its absolute path."""
    if is_zoo_name(args.model):
        check_zoo_layout(args)
        args.weights = str(zoo_checkpoint(args.model, args.weights))
    elif Path(args.model).expanduser().is_file():
        args.model = str(Path(args.model).expanduser().resolve())


def run(args: argparse.Namespace, build_app) -> int:
    """Deploy ``build_app(args, runner_factory=...)`` on Ray and keep it
    up until SIGINT or SIGTERM; then remove it (and stop a Ray this
    command started)."""
    check_options(args)
    from ...scale.ray_support import connect, require_ray

    portable(args)
    cpus = args.cpus_per_replica or 1.0
    gpus = args.gpus_per_replica or 0.0
    if gpus and not args.device:
        args.device = "cuda"
    args.threads = args.threads or max(1, int(cpus))
    ray = require_ray()
    from ...serve import ray_deployment  # imports Ray Serve

    started, startup = connect(args.address, num_cpus=args.num_cpus)
    stop = _stop_on_signals()  # after ray.init, which installs handlers of its own
    try:
        url = ray_deployment.deploy(
            functools.partial(build_app, args), replicas=args.replicas or 1, host=args.host, port=args.port,
            cpus_per_replica=cpus, gpus_per_replica=gpus, max_in_flight=args.max_in_flight or 2 * args.queue,
            timeout_ms=args.timeout_ms)
        print(f"ttakit serve: {args.replicas or 1} Ray Serve replica(s) of {args.model} ready at {url} "
              f"(Ray started in {startup:.1f} s)" if started else
              f"ttakit serve: {args.replicas or 1} Ray Serve replica(s) of {args.model} ready at {url}",
              file=sys.stderr, flush=True)
        while not stop.wait(STOP_POLL_S):
            pass
    finally:
        try:
            ray_deployment.shutdown()
        finally:
            if started:
                ray.shutdown()
    return 0


__all__ = ["add_options", "check_options", "run"]
