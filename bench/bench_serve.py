"""Load benchmark of ``ttakit serve`` against its compute bound (loopback only).

Arms (``--arms``), each a process of its own on 127.0.0.1, with the same
model, policy, runtime and torch threads (``--runtime eager onnx``: one set
of arms per runtime):

* ``serve``: ``ttakit serve`` with cross-request micro-batching;
* ``bound``: the OFFLINE compute bound: the same classifier, built by the
  same code (``ttakit.interfaces.cli.serve.build_classifier``, so the same
  runtime and threads), running ``Classifier.predict_proba`` on the same
  images already decoded, in full batches of ``--max-batch``;
* ``naive``: the same server with ``--no-batching`` (each request runs its
  own TTA, one per core).

The default, ``--arms serve,naive --runtime eager``, is the comparison of
BENCHMARKS.md section 6; the compute bound is
``--arms serve,bound --runtime eager onnx``.

A closed-loop client keeps C requests in flight (one 32x32 PNG each) for a
fixed time, at each C of ``--concurrency``; the bound arm runs for the same
time in between. Rounds are interleaved and alternate their order, so drift
hits every arm. Reported per row: images per second, p50/p99 latency (the
bound: of one full batch), 503 rate, sent == answered, server CPU per
request, and **server / bound**: the share of the compute bound the server
reaches (the target: >= 90% at C = 32, on a quiet machine).

The client is a few lines of asyncio speaking HTTP/1.1 keep-alive with
pre-built requests (like wrk): it shares the CPU with the servers, and
httpx's per-request cost (~1-2 ms of CPU) would be a fixed tax on both.

Then a soak: a steady request rate against the first ``serve`` arm for
--soak-minutes, the server's RSS sampled every 10 s.

    python bench/bench_serve.py --arms serve,bound --runtime eager onnx --concurrency 32 --soak-minutes 0
    python bench/bench_serve.py --arms serve,bound --model tutorial --concurrency 32 --soak-minutes 0
    python bench/bench_serve.py --soak-minutes 0                      # zoo:resnet20 against the naive server
    python bench/bench_serve.py --concurrency --soak-minutes 10 --rate 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

import _common as C  # noqa: E402
from serve_support import Server, images, png_bytes, rss_mb, tiny_model_file  # noqa: E402

BOUNDARY = b"ttakit-bench-7d3f"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def predict_request(port: int, png: bytes) -> bytes:
    """A complete HTTP/1.1 ``POST /v1/predict`` with one multipart file."""
    body = (b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="files"; filename="x.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--" + BOUNDARY + b"--\r\n")
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY.decode()}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


#: uvicorn closes a keep-alive connection idle for 5 s; the client drops its own sooner
KEEP_ALIVE_S = 4.0


class Connection:
    """One keep-alive connection: send a request, read status, headers and body."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None
        self.last_used = 0.0

    async def send(self, request: bytes) -> tuple[int, dict]:
        if self.writer is not None and time.monotonic() - self.last_used > KEEP_ALIVE_S:
            self.close()  # the server may have closed it already
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            body = await self.reader.readexactly(int(headers.get("content-length", 0)))
        except Exception:
            self.close()
            raise
        self.last_used = time.monotonic()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return int(lines[0].split()[1]), {**headers, "_body": body}

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def summary(lat, codes, errors, sent, wall) -> dict:
    codes_a, lat_a = np.array(codes), np.array(lat)
    ok = lat_a[codes_a == 200] if len(codes) else np.array([])
    statuses = {str(k): int(v) for k, v in zip(*np.unique(codes_a, return_counts=True))} if len(codes) else {}
    return {"sent": sent, "answered": len(codes), "errors": errors, "ok": int(len(ok)), "wall": wall, "lat_ok": ok,
            "statuses": statuses,
            "rate_503": float((codes_a == 503).mean()) if len(codes) else 0.0,
            "other": int(((codes_a != 200) & (codes_a != 503)).sum()),
            "rps": float(len(ok) / wall), "p50_ms": float(np.percentile(ok, 50) * 1000) if len(ok) else None,
            "p99_ms": float(np.percentile(ok, 99) * 1000) if len(ok) else None}


async def closed_loop(port: int, requests: list[bytes], concurrency: int, seconds: float, max_requests: int,
                      pid: int):
    lat, codes, errors, sent = [], [], 0, 0
    cpu0, client0 = cpu_seconds(pid), time.process_time()
    t_end = time.perf_counter() + seconds

    async def worker(w):
        nonlocal sent, errors
        conn, i = Connection(port), w
        while time.perf_counter() < t_end and sent < max_requests:
            sent += 1
            t0 = time.perf_counter()
            try:
                status, headers = await conn.send(requests[i % len(requests)])
                codes.append(status)
                lat.append(time.perf_counter() - t0)
                if status == 503:
                    await asyncio.sleep(float(headers.get("retry-after", "1")) / 10)
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
            i += concurrency
        conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    out = summary(lat, codes, errors, sent, time.perf_counter() - t0)
    return {**out, "server_cpu": cpu_seconds(pid) - cpu0, "client_cpu": time.process_time() - client0}


async def steady(port: int, requests: list[bytes], rate: float, seconds: float, pid: int, connections: int = 256):
    """Open loop: request i is due at i/rate s whatever the answers, on one of
    at most ``connections`` keep-alive connections; its latency counts from
    when it was due (a late send is the server's delay too)."""
    samples, codes, lat, errors, tasks, idle = [(0.0, rss_mb(pid))], [], [], 0, [], []
    free = asyncio.Semaphore(connections)

    async def one(i, due):
        nonlocal errors
        async with free:
            conn = idle.pop() if idle else Connection(port)
            try:
                status, _ = await conn.send(requests[i % len(requests)])
                codes.append(status)
                lat.append(time.perf_counter() - due)
                idle.append(conn)
            except (OSError, asyncio.IncompleteReadError):
                errors += 1

    t0 = time.perf_counter()
    next_sample, i = 10.0, 0
    while (now := time.perf_counter() - t0) < seconds:
        tasks.append(asyncio.create_task(one(i, t0 + i / rate)))
        i += 1
        if now >= next_sample:
            samples.append((round(now, 1), rss_mb(pid)))
            next_sample += 10
            tasks = [t for t in tasks if not t.done()]
        await asyncio.sleep(max(0.0, i / rate - (time.perf_counter() - t0)))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    samples.append((round(wall, 1), rss_mb(pid)))
    for c in idle:
        c.close()
    out = summary(lat, codes, errors, i, wall)
    out.pop("lat_ok")
    return {"seconds": seconds, "rate": rate, **out, "rss_start_mb": samples[0][1], "rss_end_mb": samples[-1][1],
            "rss_max_mb": max(s[1] for s in samples),
            "rss_after_first_minute_mb": next((s[1] for s in samples if s[0] >= 60), samples[-1][1]),
            "samples": samples}


def tutorial_model_file(folder: Path) -> Path:
    """The founding tutorial's CNN as TorchScript (fixed-seed weights: the timing does not depend on them)."""
    import torch

    from ttakit.zoo import tutorial_cnn_torch

    path = Path(folder) / "tutorial_cnn.pt"
    torch.manual_seed(0)
    torch.jit.script(tutorial_cnn_torch().eval()).save(str(path))
    return path


def pooled(runs: list[dict], name: str, concurrency: int) -> dict:
    """One row from several rounds: throughput over their summed time, percentiles over every answer."""
    lat = np.concatenate([r["lat_ok"] for r in runs]) if runs else np.array([])
    row = {"server": name, "concurrency": concurrency}
    for k in ("sent", "answered", "errors", "other", "ok"):
        row[k] = int(sum(r[k] for r in runs))
    row["rps"] = row["ok"] / sum(r["wall"] for r in runs)
    row["p50_ms"] = float(np.percentile(lat, 50) * 1000) if len(lat) else None
    row["p99_ms"] = float(np.percentile(lat, 99) * 1000) if len(lat) else None
    row["rate_503"] = float(sum(r["rate_503"] * r["answered"] for r in runs) / max(1, row["answered"]))
    # CPU per answered request: what the throughput would be bound by on cores of its own
    row["server_cpu_ms"] = 1000 * sum(r["server_cpu"] for r in runs) / max(1, row["answered"])
    row["client_cpu_ms"] = 1000 * sum(r["client_cpu"] for r in runs) / max(1, row["answered"])
    batches = sum(r.get("batches", 0) for r in runs)
    row["mean_batch"] = sum(r.get("batched_images", 0) for r in runs) / batches if batches else None
    return row


def batch_counts(port: int) -> tuple[float, float]:
    """The server's engine runs and the images they held so far (its /metrics)."""
    from urllib.request import urlopen

    values = {}
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(("ttakit_batch_images_count ", "ttakit_batch_images_sum ")):
                name, value = line.split()
                values[name] = float(value)
    return values.get("ttakit_batch_images_count", 0.0), values.get("ttakit_batch_images_sum", 0.0)


def pick_model(name: str | None, tmp: Path) -> str:
    if name == "tutorial":
        return str(tutorial_model_file(tmp))
    if name is not None:
        return name
    models = os.environ.get("TTAKIT_MODELS", str(ROOT.parent / "shared/models/cifar10-resnet"))
    os.environ.setdefault("TTAKIT_MODELS", models)
    return "zoo:resnet20" if list(Path(models).glob("resnet20*")) else str(tiny_model_file(tmp))


class BoundArm:
    """The offline bound in a process of its own (see the module docstring),
    started like the servers (same environment, same serve options); each
    :meth:`measure` runs full batches for a number of seconds."""

    def __init__(self, model: str, *options: str, log: Path, threads: int = 1):
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "OMP_NUM_THREADS": str(threads), **C.MALLOC_ENV}  # as serve_support.Server starts the servers
        self._err = open(log, "wb")
        self.proc = subprocess.Popen([sys.executable, __file__, "--bound-worker", model, *options],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, env=env,
                                     text=True, cwd=ROOT)
        self.log = Path(log)

    def wait_ready(self) -> "BoundArm":
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the bound arm did not start ({line!r}):\n{self.log.read_text()[-3000:]}")
        return self

    def measure(self, seconds: float) -> dict:
        self.proc.stdin.write(f"{seconds}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._err.close()


def bound_worker(serve_argv: list[str]) -> int:
    """The bound arm's process: the server's classifier (same code, options,
    runtime and threads), the bench's images decoded as the server decodes
    them, then for each number of seconds read on stdin, full batches of
    ``--max-batch`` through ``Classifier.predict_proba`` for that long; one
    JSON line per measure on stdout."""
    from ttakit.engine import tune_allocator
    from ttakit.interfaces.cli import build_parser
    from ttakit.interfaces.cli.serve import build_classifier
    from ttakit.serve.decode import Limits, decode_bytes

    tune_allocator()  # as the ttakit command does in the server's process
    args = build_parser().parse_args(["serve", *serve_argv])
    clf, _, size = build_classifier(args)
    x = np.stack([decode_bytes(png, "x.png", Limits(), args.mode, size) for png in bench_pngs()])
    batch = args.max_batch
    starts = list(range(0, len(x) - batch + 1, batch)) or [0]
    for start in starts:  # warm-up, as the server warms up before it is ready
        clf.predict_proba(x[start:start + batch])
    print("ready", flush=True)
    for line in sys.stdin:
        seconds, n, lat, k = float(line), 0, [], 0
        cpu0, t0 = time.process_time(), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            xb = x[starts[k % len(starts)]:][:batch]
            t = time.perf_counter()
            clf.predict_proba(xb)
            lat.append(time.perf_counter() - t)
            n, k = n + len(xb), k + 1
        wall = time.perf_counter() - t0
        print(json.dumps({"images": n, "wall": wall, "cpu": time.process_time() - cpu0, "lat": lat}), flush=True)
    return 0


def bench_pngs() -> list[bytes]:
    """The images every arm predicts: 256 random 32x32 PNGs (fixed seed)."""
    return [png_bytes(im) for im in images(256, seed=0)]


def pooled_bound(runs: list[dict], name: str, concurrency: int) -> dict:
    """One bound row from several rounds (latency: of one full batch)."""
    lat = np.concatenate([r["lat"] for r in runs])
    images = sum(r["images"] for r in runs)
    return {"server": name, "concurrency": concurrency, "ok": images, "sent": images, "answered": images,
            "errors": 0, "other": 0, "rate_503": 0.0, "rps": images / sum(r["wall"] for r in runs),
            "p50_ms": float(np.percentile(lat, 50) * 1000), "p99_ms": float(np.percentile(lat, 99) * 1000),
            "server_cpu_ms": 1000 * sum(r["cpu"] for r in runs) / max(1, images), "client_cpu_ms": 0.0}


def main(argv=None) -> int:
    if argv is None and sys.argv[1:2] == ["--bound-worker"]:
        return bound_worker(sys.argv[2:])
    C.ensure_env()  # the header's "malloc env: set"; the arms get it from their own env (above) in any case
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None,
                    help="zoo:resnet20, 'tutorial' (the tutorial CNN, fixed-seed weights) or a model file. "
                         "Default: zoo:resnet20 when its weights are found, else a tiny CNN")
    ap.add_argument("--policy", default="identity + hflip")
    ap.add_argument("--runtime", nargs="+", default=["eager"], choices=["eager", "onnx", "compile"],
                    help="one set of arms per runtime (ttakit serve --runtime). Default: eager")
    ap.add_argument("--arms", default="serve,naive",
                    help="comma-separated, of serve, bound, naive (see above). Default: serve,naive")
    ap.add_argument("--concurrency", type=int, nargs="*", default=[1, 8, 32, 64],
                    help="closed-loop rows (none: only the soak)")
    ap.add_argument("--seconds", type=float, default=5.0, help="per row, arm and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-requests", type=int, default=20000, help="per row, server and round")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of each arm. Default: ttakit serve's own (see its --threads; the bound "
                         "arm takes the batching server's)")
    ap.add_argument("--server-option", action="append", default=[], metavar="OPT",
                    help="an extra option for the batching server and the bound arm (repeat), e.g. "
                         "--server-option=--max-batch=16")
    ap.add_argument("--soak-minutes", type=float, default=10.0, help="minutes of steady load on serve (0: none)")
    ap.add_argument("--rate", type=float, default=40.0, help="requests per second in the soak")
    ap.add_argument("--json", default=None, help="also write the results here")
    C.add_protocol_args(ap)
    a = ap.parse_args(argv)
    kinds = [k.strip() for k in a.arms.split(",") if k.strip()]
    if not set(kinds) <= {"serve", "bound", "naive"} or "serve" not in kinds:
        ap.error("--arms: serve and any of bound, naive")
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model = pick_model(a.model, tmp)
    pngs = bench_pngs()
    common = ["--policy", a.policy, "--size", "32", "--queue", "1024", "--log-level", "warning"]
    if a.threads:
        common += ["--threads", str(a.threads)]
    arms: dict = {}
    for rt in a.runtime:
        opts = [*common, "--runtime", rt]
        arms[f"serve/{rt}"] = Server(model, *opts, *a.server_option, log=tmp / f"serve-{rt}.log", env=C.MALLOC_ENV)
        if a.concurrency and "bound" in kinds:
            arms[f"bound/{rt}"] = BoundArm(model, *opts, *a.server_option, log=tmp / f"bound-{rt}.log")
        if a.concurrency and "naive" in kinds:
            arms[f"naive/{rt}"] = Server(model, *opts, "--no-batching", log=tmp / f"naive-{rt}.log", env=C.MALLOC_ENV)
    rows, soak = [], None
    try:
        for arm in arms.values():
            arm.wait_ready()
        C.begin("bench_serve: ttakit serve against its offline bound and a per-request server", a)
        print(f"model {model}, policy {a.policy!r}, runtimes {a.runtime}, {a.seconds:g} s x {a.rounds} rounds per "
              f"row, {os.cpu_count()} CPUs, batching server options {a.server_option}; every arm's process runs "
              f"with {' '.join(f'{k}={v}' for k, v in C.MALLOC_ENV.items())}", flush=True)
        for c in a.concurrency:
            acc = {name: [] for name in arms}
            for r in range(a.rounds):
                for name in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
                    arm = arms[name]
                    if isinstance(arm, BoundArm):
                        acc[name].append(arm.measure(a.seconds))
                        continue
                    reqs = [predict_request(arm.port, png) for png in pngs]
                    before = batch_counts(arm.port)
                    run = asyncio.run(closed_loop(arm.port, reqs, c, a.seconds, a.max_requests, arm.proc.pid))
                    after = batch_counts(arm.port)
                    acc[name].append({**run, "batches": after[0] - before[0], "batched_images": after[1] - before[1]})
                C.tick()
            for name, runs in acc.items():
                rows.append(pooled_bound(runs, name, c) if name.startswith("bound/") else pooled(runs, name, c))
                print(json.dumps(rows[-1]), flush=True)
        if a.soak_minutes > 0:
            for name in list(arms)[1:]:
                arms[name].stop()
            s = next(iter(arms.values()))
            reqs = [predict_request(s.port, png) for png in pngs]
            soak = asyncio.run(steady(s.port, reqs, a.rate, a.soak_minutes * 60, s.proc.pid))
            print(json.dumps({k: v for k, v in soak.items() if k != "samples"}), flush=True)
    finally:
        for arm in arms.values():
            arm.stop()
    print()
    C.say("| concurrency | arm | images/s | p50 ms | p99 ms | 503 rate | sent = answered | CPU ms/image | mean batch |")
    C.say("|---|---|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        ok = r["sent"] == r["answered"] and not r["errors"]
        mean = f"{r['mean_batch']:.1f}" if r.get("mean_batch") else "full"
        C.say(f"| {r['concurrency']} | {r['server']} | {r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['rate_503']:.1%} | {r['sent']} = {r['answered']}{' ✓' if ok else ' ✗'} | "
              f"{r['server_cpu_ms']:.2f} | {mean} |")
    C.say("(bound rows: p50/p99 of one full batch of --max-batch images; mean batch: images per engine run, from "
          "the server's /metrics)")
    for c in a.concurrency:
        for rt in a.runtime:
            got = {k: next((r for r in rows if r["concurrency"] == c and r["server"] == f"{k}/{rt}"), None)
                   for k in ("serve", "bound", "naive")}
            b, bound, naive = got["serve"], got["bound"], got["naive"]
            parts = [f"concurrency {c}, {rt}: serve {b['rps']:.1f} images/s, p50 {b['p50_ms']:.1f} ms, "
                     f"p99 {b['p99_ms']:.1f} ms"]
            if bound:
                parts.append(f"{b['rps'] / bound['rps']:.1%} of the offline bound ({bound['rps']:.1f} images/s)")
            if naive:
                parts.append(f"{b['rps'] / naive['rps']:.2f}x the naive throughput (p99 {naive['p99_ms']:.0f} ms, "
                             f"server CPU {naive['server_cpu_ms']:.2f} vs {b['server_cpu_ms']:.2f} ms per request)")
            C.say("; ".join(parts))
    if soak:
        C.say(f"soak: {soak['sent']} sent at {soak['rate']:g}/s for {soak['seconds']:g} s, {soak['answered']} answered "
              f"(by status {soak['statuses']}, {soak['errors']} client errors); RSS {soak['rss_start_mb']:.1f} MB at the start, "
              f"{soak['rss_after_first_minute_mb']:.1f} MB after a minute, {soak['rss_end_mb']:.1f} MB at the end "
              f"(max {soak['rss_max_mb']:.1f})")
    C.finish(a, {"rows": rows, "soak": soak, "model": model, "policy": a.policy, "runtimes": a.runtime}, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
