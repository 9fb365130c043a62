"""Open a report page in headless Chromium (Debian's ``chromium``) and say
what it did: which images loaded, which requests it tried to send out, and
a screenshot.

Requests: Chromium runs with every connection sent to a local proxy that
records and refuses it (a file:// page loads its own files without one), and
with its background services off; a page that asks for anything over the
network shows up in :attr:`Opened.requests`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight]);
  document.body.setAttribute('data-probe', JSON.stringify(imgs));
});
</script>"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--metrics-recording-only", "--mute-audio",
         "--no-default-browser-check", "--disable-features=MediaRouter,OptimizationHints,Translate",
         "--hide-scrollbars", "--proxy-bypass-list=<-loopback>"]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class RefusingProxy:
    """A TCP listener on 127.0.0.1 that records the first line of every
    connection (``GET http://...`` or ``CONNECT host:443``) and closes it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    first = conn.recv(2048).split(b"\r\n", 1)[0].decode("latin-1")
                except OSError:
                    first = "(no request line)"
                self.requests.append(first)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@dataclass
class Opened:
    images: list          #: [src, complete, naturalWidth, naturalHeight] per <img>
    requests: list        #: request lines the proxy saw
    screenshot: Path


def _run(args: list[str], timeout: float) -> str:
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run([*args, f"--user-data-dir={profile}"], capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "HOME": profile})
    return r.stdout


def open_page(page: Path, screenshot: Path, width: int = 1200, height: int = 1600, timeout: float = 90) -> Opened:
    """Load ``page`` (an index.html) twice in headless Chromium: once with a
    probe script in a copy beside it (the images' load state) and once as it
    is for a screenshot; both behind :class:`RefusingProxy`."""
    exe = chromium()
    page = Path(page).resolve()
    text = page.read_text()
    # the copy may run the probe: its policy adds inline scripts, nothing else
    probe = re.sub(r"(Content-Security-Policy\" content=\")", r"\1script-src 'unsafe-inline'; ", text, count=1)
    probe = probe.replace("</body>", PROBE + "</body>", 1)
    probe_path = page.with_name("_probe.html")
    probe_path.write_text(probe)
    try:
        with RefusingProxy() as proxy:
            common = [exe, *FLAGS, f"--proxy-server=http://127.0.0.1:{proxy.port}", "--virtual-time-budget=5000",
                      f"--window-size={width},{height}"]
            dom = _run([*common, "--dump-dom", probe_path.as_uri()], timeout)
            _run([*common, f"--screenshot={screenshot}", page.as_uri()], timeout)
    finally:
        probe_path.unlink()
    m = re.search(r'data-probe="([^"]*)"', dom)
    images = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&")) if m else None
    return Opened(images, proxy.requests, Path(screenshot))


def external_references(html: str) -> list[str]:
    """``src``, ``href``, ``url(...)`` and ``@import`` values of ``html``
    that name a network address (``http:``, ``https:``, ``//host``, ``ftp:``, ``ws:``)."""
    refs = re.findall(r"""(?:src|href|action|poster|srcset)\s*=\s*["']?([^"'\s>]+)""", html, flags=re.I)
    refs += re.findall(r"""url\(\s*["']?([^"')]+)""", html, flags=re.I)
    refs += re.findall(r"""@import\s+["']([^"']+)""", html, flags=re.I)
    return [r for r in refs if re.match(r"(?i)(https?:|ftp:|wss?:|//)", r.strip())]


def blankness(png: Path) -> tuple[float, float]:
    """``(standard deviation of the grey levels, share of pixels that are not
    the most common colour)`` of a screenshot: a blank page has both near 0."""
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(png).convert("L"), np.float64)
    values, counts = np.unique(a, return_counts=True)
    return float(a.std()), float(1 - counts.max() / a.size)


#: why the browser checks skip where there is no Chromium
NO_CHROMIUM = "headless Chromium is not installed (Debian: apt-get install chromium; make test installs it)"
#: hosts Chromium itself calls (its component updater, sign-in) whatever the page: not the page's requests
BROWSER_OWN = ("update.googleapis.com", "accounts.google.com", "clients2.google.com", "clients1.google.com",
               "optimizationguide-pa.googleapis.com")


def page_requests(lines: list[str]) -> list[str]:
    """The request lines :class:`RefusingProxy` saw that are not Chromium's own (:data:`BROWSER_OWN`)."""
    return [ln for ln in lines if not any(h in (ln.split(" ") + [""])[1] for h in BROWSER_OWN)]


def check_page(page: Path, screenshot: Path) -> Opened:
    """The report page's checks: no network source in the HTML and a policy
    that forbids fetching, every image loads, no request leaves, the
    screenshot is not blank."""
    html = Path(page).read_text()
    assert external_references(html) == [] and "default-src 'none'" in html
    opened = open_page(page, screenshot)
    broken = [src for src, complete, w, h in (opened.images or []) if not (complete and w > 0 and h > 0)]
    assert opened.images is not None and broken == [], broken
    assert page_requests(opened.requests) == []
    std, busy = blankness(screenshot)
    assert std > 10 and busy > 0.03, (std, busy)
    return opened


def check_page_or_skip(page: Path, screenshot: Path) -> Opened:
    """:func:`check_page`, or (without Chromium) skip the test, saying so, once the checks before it passed."""
    import pytest

    if chromium() is None:
        pytest.skip(f"{NO_CHROMIUM}; the checks before the browser passed")
    return check_page(page, screenshot)
