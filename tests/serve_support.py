"""Starting a real ``ttakit serve`` process on 127.0.0.1 for the server
tests and the load benchmark: a free port, JSON logs to a file, waits for
/readyz, and is always stopped (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


class TinyNet(torch.nn.Module):
    """A small fixed-seed CNN: (N, 3, H, W) -> 10 logits."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def tiny_model_file(folder: Path) -> Path:
    path = Path(folder) / "tiny.pt"
    if not path.exists():
        torch.jit.script(TinyNet().eval()).save(str(path))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``ttakit serve MODEL ARGS...`` on a free port of 127.0.0.1."""

    def __init__(self, model: str, *args: str, log: Path, env: dict | None = None, threads: int = 1,
                 port: int | None = None):
        """``port=0``: the server picks a free port, and :meth:`wait_ready`
        reads which from the line it prints once ready."""
        self.port = free_port() if port is None else port
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(log)
        e = dict(os.environ)
        e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
        e["OMP_NUM_THREADS"] = str(threads)
        e.update(env or {})
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "ttakit", "serve", model, "--host", "127.0.0.1",
                                      "--port", str(self.port), *args], stdout=self._out, stderr=subprocess.STDOUT,
                                     env=e, cwd=ROOT)

    def wait_ready(self, timeout: float = 90.0) -> "Server":
        import httpx

        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if self.port == 0:
                url = self.ready_url()
                if url is None:
                    time.sleep(0.2)
                    continue
                self.url, self.port = url, int(url.rsplit(":", 1)[1])
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server was not ready within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def ready_url(self) -> str | None:
        """The address from the server's "ttakit serve: ready on URL" line, once printed."""
        m = re.search(r"^ttakit serve: ready on (http://\S+) ", self.log.read_text(errors="replace"), re.M)
        return m.group(1) if m else None

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()
        return self.proc.returncode


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid``, in MB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def png_bytes(img: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def images(n: int, seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def probs_of(entry: dict, c: int = 10) -> np.ndarray:
    """An answer's probabilities as a vector of ``c`` classes (NaN where its top-k left them out)."""
    p = np.full(c, np.nan, np.float32)
    for t in entry["top_k"]:
        p[t["label"]] = t["prob"]
    return p
