"""Load benchmark of ``ttakit serve`` against a naive server (loopback only).

Two real server processes on 127.0.0.1, same FastAPI app, same model and
policy: (a) ``ttakit serve`` with cross-request micro-batching, (b) the same
with ``--no-batching`` (each request runs its own TTA, in a thread pool).
A closed-loop async httpx client keeps C requests in flight (one PNG image
each) for a fixed time, at C = 1, 8, 32, 64, alternating the two servers
(rounds interleaved, so drift hits both). Reported per row: throughput,
p50/p99 latency, 503 rate, and sent == answered.

Then a soak: a steady request rate against (a) for --soak seconds, the
server's RSS sampled every 10 s.

    python bench/bench_serve.py                         # zoo:resnet20 when $TTAKIT_MODELS has it
    python bench/bench_serve.py --seconds 3 --soak 60   # shorter
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402

from serve_support import Server, images, png_bytes, tiny_model_file  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def closed_loop(url: str, bodies: list[bytes], concurrency: int, seconds: float, max_requests: int):
    lat, codes, errors = [], [], 0
    sent = 0
    t_end = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as c:
        async def worker(w):
            nonlocal sent, errors
            i = w
            while time.perf_counter() < t_end and sent < max_requests:
                sent += 1
                body = bodies[i % len(bodies)]
                i += concurrency
                t0 = time.perf_counter()
                try:
                    r = await c.post(url + "/v1/predict", files=[("files", ("x.png", body, "image/png"))])
                    codes.append(r.status_code)
                    if r.status_code == 503:
                        await asyncio.sleep(float(r.headers.get("retry-after", "1")) / 10)
                except httpx.HTTPError:
                    errors += 1
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        wall = time.perf_counter() - t0
    codes_a = np.array(codes)
    ok = lat_ok = np.array(lat)[: len(codes)][codes_a == 200] if len(codes) else np.array([])
    return {"sent": sent, "answered": len(codes), "errors": errors, "ok": int((codes_a == 200).sum()),
            "rate_503": float((codes_a == 503).mean()) if len(codes) else 0.0,
            "other": int(((codes_a != 200) & (codes_a != 503)).sum()),
            "rps": float(len(ok) / wall), "p50_ms": float(np.percentile(lat_ok, 50) * 1000) if len(ok) else None,
            "p99_ms": float(np.percentile(lat_ok, 99) * 1000) if len(ok) else None}


async def steady(url: str, bodies: list[bytes], rate: float, seconds: float, pid: int):
    samples, codes, errors, tasks = [(0.0, rss_mb(pid))], [], 0, []
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as c:
        async def one(i):
            nonlocal errors
            try:
                r = await c.post(url + "/v1/predict", files=[("files", ("x.png", bodies[i % len(bodies)],
                                                                        "image/png"))])
                codes.append(r.status_code)
            except httpx.HTTPError:
                errors += 1

        t0 = time.perf_counter()
        next_sample = 10.0
        i = 0
        while (now := time.perf_counter() - t0) < seconds:
            tasks.append(asyncio.create_task(one(i)))
            i += 1
            if now >= next_sample:
                samples.append((now, rss_mb(pid)))
                next_sample += 10
            await asyncio.sleep(max(0.0, i / rate - (time.perf_counter() - t0)))
        await asyncio.gather(*tasks)
        samples.append((time.perf_counter() - t0, rss_mb(pid)))
    codes_a = np.array(codes)
    return {"seconds": seconds, "rate": rate, "sent": i, "answered": len(codes), "errors": errors,
            "ok": int((codes_a == 200).sum()), "rss_start_mb": samples[0][1], "rss_end_mb": samples[-1][1],
            "rss_max_mb": max(s[1] for s in samples),
            "rss_after_first_minute_mb": next((s[1] for s in samples if s[0] >= 60), samples[-1][1]),
            "samples": samples}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="Default: zoo:resnet20 when its weights are found, else a tiny CNN")
    ap.add_argument("--policy", default="identity + hflip")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--seconds", type=float, default=6.0, help="per row and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-requests", type=int, default=20000, help="per row and round")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each server")
    ap.add_argument("--soak", type=float, default=600.0, help="seconds of steady load (0: none)")
    ap.add_argument("--soak-rate", type=float, default=50.0, help="requests per second in the soak")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model = a.model
    if model is None:
        models = os.environ.get("TTAKIT_MODELS", str(ROOT.parent / "shared/models/cifar10-resnet"))
        model = "zoo:resnet20" if list(Path(models).glob("resnet20*")) else str(tiny_model_file(tmp))
        os.environ.setdefault("TTAKIT_MODELS", models)
    bodies = [png_bytes(im) for im in images(256, seed=0)]
    common = ["--policy", a.policy, "--size", "32", "--queue", "1024", "--log-level", "warning"]
    servers = {"ttakit serve": Server(model, *common, log=tmp / "batched.log", threads=a.threads),
               "naive": Server(model, *common, "--no-batching", log=tmp / "naive.log", threads=a.threads)}
    rows = []
    try:
        for s in servers.values():
            s.wait_ready()
        print(f"model {model}, policy {a.policy!r}, {a.seconds:g} s x {a.rounds} rounds per row, "
              f"{a.threads} torch threads per server, {os.cpu_count()} CPUs", flush=True)
        for c in a.concurrency:
            acc = {name: [] for name in servers}
            for r in range(a.rounds):
                order = list(servers) if r % 2 == 0 else list(servers)[::-1]
                for name in order:
                    acc[name].append(asyncio.run(closed_loop(servers[name].url, bodies, c, a.seconds,
                                                             a.max_requests)))
            for name, runs in acc.items():
                row = {"server": name, "concurrency": c,
                       "sent": sum(x["sent"] for x in runs), "answered": sum(x["answered"] for x in runs),
                       "errors": sum(x["errors"] for x in runs), "other_status": sum(x["other"] for x in runs),
                       "rps": float(np.mean([x["rps"] for x in runs])),
                       "p50_ms": float(np.median([x["p50_ms"] for x in runs])),
                       "p99_ms": float(max(x["p99_ms"] for x in runs)),
                       "rate_503": float(np.mean([x["rate_503"] for x in runs]))}
                rows.append(row)
                print(json.dumps(row), flush=True)
        soak = None
        if a.soak > 0:
            servers["naive"].stop()
            s = servers["ttakit serve"]
            soak = asyncio.run(steady(s.url, bodies, a.soak_rate, a.soak, s.proc.pid))
            print(json.dumps({k: v for k, v in soak.items() if k != "samples"}), flush=True)
    finally:
        for s in servers.values():
            s.stop()
    print()
    print("| concurrency | server | req/s | p50 ms | p99 ms | 503 rate | sent = answered |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['server']} | {r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['rate_503']:.1%} | {r['sent']} = {r['answered']}{' ✓' if r['sent'] == r['answered'] else ' ✗'} |")
    for c in a.concurrency:
        b = next(r for r in rows if r["concurrency"] == c and r["server"] == "ttakit serve")
        n = next(r for r in rows if r["concurrency"] == c and r["server"] == "naive")
        print(f"concurrency {c}: {b['rps'] / n['rps']:.2f}x the naive throughput, p99 {b['p99_ms']:.0f} vs "
              f"{n['p99_ms']:.0f} ms")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "soak": soak, "model": model, "policy": a.policy}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
