"""Ray itself: importing it (an optional extra) and joining or starting a
cluster. Everything else in :mod:`ttakit.scale` imports Ray through here, so
a missing extra is one clear error, not an ImportError from deep inside."""

from __future__ import annotations

import time

from ..errors import UsageError, require

EXTRA_HINT = "pip install 'ttakit[ray]'"


def require_ray():
    """The ``ray`` module, with Ray Data; a :class:`~ttakit.errors.MissingExtraError`
    naming the extra when it is not installed."""
    require("ray.data", "ray", "running on Ray")  # the [data] part of the extra
    import ray

    return ray


def connect(address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> tuple[bool, float]:
    """Join the Ray cluster at ``address`` (``auto``, ``host:port`` or
    ``ray://host:port``), or start a local one with ``num_cpus`` CPUs (default:
    all) when ``address`` is None. A Ray already initialised in this process
    is used as it is. Returns ``(started, seconds)``: whether this call
    initialised Ray (then the caller shuts it down) and how long that took."""
    ray = require_ray()
    if ray.is_initialized():
        return False, 0.0
    t0 = time.perf_counter()
    kwargs = dict(include_dashboard=False, configure_logging=True, logging_level="warning" if quiet else "info")
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, **kwargs)
    else:
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as e:
            raise UsageError(f"cannot join the Ray cluster at {address}: {e}") from None
    return True, time.perf_counter() - t0


def cluster_slots(cpus_per_actor: float, gpus_per_actor: float) -> int:
    """How many actors of that size the cluster holds at once (at least 1)."""
    ray = require_ray()
    res = ray.cluster_resources()
    by_cpu = int(res.get("CPU", 1) // cpus_per_actor) if cpus_per_actor > 0 else 1 << 30
    by_gpu = int(res.get("GPU", 0) // gpus_per_actor) if gpus_per_actor > 0 else 1 << 30
    return max(1, min(by_cpu, by_gpu))


__all__ = ["EXTRA_HINT", "require_ray", "connect", "cluster_slots"]
