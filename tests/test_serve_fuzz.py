"""Fuzzing ``ttakit serve`` over HTTP: a REAL uvicorn process on 127.0.0.1
(free port, small limits), sent

* schemathesis's cases from the server's own OpenAPI document, positive and
  negative (schema-violating) data, every check;
* hypothesis-generated JSON bodies: nesting up to 50,000 deep, NaN /
  Infinity / 1e999 / 5,000-digit numbers, lone surrogates, real and broken
  images (base64, data URLs, nested arrays), names and top_k of every type,
  bodies padded to around the size limit, cut short or with a flipped byte,
  in UTF-8 (with and without BOM), UTF-16, UTF-32 and Latin-1, under odd
  Content-Types;
* hypothesis-generated multipart bodies: odd boundaries, parts without
  names or file names, file names of 10,000 characters or bytes that are
  not UTF-8, up to 12 parts (over --max-images), parts up to 300 KB, real
  images of many formats and sizes (over --max-pixels included), missing
  final boundaries, bare LF line ends, preambles, cut short;
* hypothesis-generated raw HTTP: Content-Length missing, short, long,
  negative, twice or garbage; chunked bodies, good and broken; other
  methods and paths; Expect: 100-continue; a client that stops sending.

After every request: no 5xx; a ``/v1/*`` error is the documented JSON
``{"error": {"code", "message"}}`` with the status its code documents; a
200 has one well-formed prediction per image, probabilities in [0, 1];
the server process alive and ready; its resident memory within
:data:`RSS_GROWTH_MB` of what it was after warm-up.

Bounded for ``make test`` (well under a minute, request and example counts
fixed, derandomized); ``make fuzz`` (bench/fuzz_long.py) runs it in rounds
with ``TTAKIT_FUZZ_EXAMPLES`` examples per test and a fresh seed
(``TTAKIT_FUZZ_SEED``) each round.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

for _mod in ("fastapi", "uvicorn", "multipart", "prometheus_client", "httpx"):
    pytest.importorskip(_mod, reason=f"the server fuzz needs the serve extra and httpx ({_mod} is missing): "
                                     "pip install 'ttakit[serve]' httpx")

from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from serve_support import Server, images, png_bytes, rss_mb, tiny_model_file  # noqa: E402
from ttakit.serve.app import ERROR_CODES  # noqa: E402

pytestmark = [pytest.mark.xdist_group("serve"), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

LONG = "TTAKIT_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("TTAKIT_FUZZ_EXAMPLES", "40"))
SEED = int(os.environ.get("TTAKIT_FUZZ_SEED", "1"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not LONG, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])

MAX_BYTES = 1_000_000    # --max-request-bytes of the fuzzed server
MAX_IMAGES = 8           # --max-images
MAX_PIXELS = 1_000_000   # --max-pixels
RSS_GROWTH_MB = 200      # the server's RSS may grow at most this much over the whole run
DEADLINE_MS = 3000       # --timeout-ms: a body must arrive, and its answer be ready, within it
SECONDS = 30             # per request on the client's side, generous for a loaded machine


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-fuzz")
    s = Server(str(tiny_model_file(folder)), "--policy", "identity + hflip", "--size", "32",
               "--max-request-bytes", str(MAX_BYTES), "--max-images", str(MAX_IMAGES),
               "--max-pixels", str(MAX_PIXELS), "--queue", "64", "--timeout-ms", str(DEADLINE_MS),
               "--log-level", "warning",
               log=folder / "server.log")
    try:
        s.wait_ready(timeout=240)  # a long fuzz run may share a loaded machine
        import httpx

        for body in ({"images": [B64[0]]}, {"images": [images(1)[0].tolist()]}):  # every path once, then measure
            assert httpx.post(s.url + "/v1/predict", json=body, timeout=SECONDS).status_code == 200
        s.rss0 = rss_mb(s.proc.pid)
        yield s
    finally:
        s.stop()


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _files() -> list[bytes]:
    """Image files of many formats, modes and sizes, good and broken."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    big = Image.fromarray(rng.integers(0, 256, (1000, 1000), dtype=np.uint8))   # at --max-pixels exactly
    over = Image.new("L", (1001, 1000))                                          # one row of pixels over it
    png = png_bytes(np.asarray(rgb))
    return [png, _encode(rgb.convert("RGBA").resize((64, 48)), "PNG"), _encode(rgb.convert("L").resize((7, 5)), "PNG"),
            _encode(rgb.resize((1, 1)), "PNG"), _encode(rgb, "JPEG"), _encode(rgb.convert("P"), "GIF"),
            _encode(rgb, "BMP"), _encode(rgb, "WEBP"), _encode(rgb, "TIFF"),
            _encode(Image.fromarray(rng.integers(0, 65535, (8, 8), dtype=np.uint16)), "PNG"),
            _encode(Image.fromarray(rng.random((8, 8), dtype=np.float32)), "TIFF"),
            _encode(big, "PNG"), _encode(over, "PNG"), png[: len(png) // 2], png[:30], b"\x89PNG\r\n\x1a\n", b"",
            b"GIF89a" + bytes(20), b"not an image at all"]


FILES = _files()
B64 = [base64.b64encode(f).decode() for f in FILES]
A_FILE = st.integers(0, len(FILES) - 1).map(lambda i: FILES[i])


def check_api_response(status: int, headers, body: bytes, sent_images: int | None = None) -> None:
    """What every answer of the app must be (see the module docstring)."""
    assert status < 500, (status, body[:500])
    ctype = headers.get("content-type", "")
    assert ctype.startswith("application/json"), (status, ctype, body[:300])
    doc = json.loads(body)
    if status != 200:
        assert set(doc) == {"error"}, doc
        err = doc["error"]
        assert isinstance(err["message"], str) and len(err["message"]) < 2000, err
        assert ERROR_CODES.get(err["code"]) == status or (err["code"] == "invalid_request" and status in (400, 422)), \
            (status, err)
        return
    preds = doc["predictions"]
    if sent_images is not None:
        assert len(preds) == sent_images, (sent_images, doc)
    assert [p["index"] for p in preds] == list(range(len(preds)))
    assert doc["failed"] == sum("error" in p for p in preds) < len(preds)
    for p in preds:
        if "error" in p:
            assert p["error"]["code"] in ("invalid_image", "image_too_large"), p
            continue
        probs = [t["prob"] for t in p["top_k"]]
        assert all(0.0 <= q <= 1.0 for q in probs) and probs == sorted(probs, reverse=True), p
        assert p["label"] == p["top_k"][0]["label"] and 0 <= p["label"] < 10, p


def check_alive(server) -> None:
    import httpx

    assert server.proc.poll() is None, f"the server died:\n{server.log.read_text()[-3000:]}"
    assert httpx.get(server.url + "/readyz", timeout=SECONDS).status_code == 200
    grown = rss_mb(server.proc.pid) - server.rss0
    assert grown < RSS_GROWTH_MB, f"the server's RSS grew by {grown:.0f} MB"


def post(server, body: bytes, ctype: str | None, query: str = "") -> None:
    import httpx

    headers = {"content-type": ctype.encode("latin-1")} if ctype is not None else {}
    r = httpx.post(server.url + "/v1/predict" + query, content=body, headers=headers, timeout=SECONDS)
    check_api_response(r.status_code, r.headers, r.content)
    check_alive(server)


# -- JSON bodies -------------------------------------------------------------------------------------------------

# (large values come from .map, so that hypothesis's statistics and messages name them briefly)
ATOMS = st.sampled_from(["null", "true", "false", "0", "-0", "1", "255", "256", "-1", "0.5", "1.0", "1e999", "-1e999",
                         "NaN", "Infinity", "-Infinity", "1e-99999", '""', '"x"', '"\\ud800"',
                         '"\\u0000"', '"data:image/png;base64,"', '"data:,"', '"@@@"', '"===="']) \
    | st.just(5000).map(lambda n: "1" * n)  # more digits than Python's int() reads
STRINGS = st.text(max_size=30).map(json.dumps) | st.text(max_size=30).map(lambda t: json.dumps(t, ensure_ascii=False))
A_B64 = st.integers(0, len(B64) - 1).map(lambda i: B64[i])
IMAGE_TEXT = st.one_of(
    A_B64.map(json.dumps),
    A_B64.map(lambda b: json.dumps("data:image/png;base64," + b)),
    A_B64.map(lambda b: json.dumps(b[: len(b) // 2 + 1])),  # cut (and so often not valid base64)
    st.tuples(st.integers(0, 40), st.integers(0, 40), st.sampled_from([1, 3, 4]), st.sampled_from(["u8", "f", "neg"]))
    .map(lambda s: json.dumps(_array(*s))),
)
DEEP = st.tuples(st.integers(1, 50_000), st.sampled_from(["[]", "{}"])).map(
    lambda d: "[" * d[0] + "]" * d[0] if d[1] == "[]" else '{"a":' * d[0] + "1" + "}" * d[0])
VALUES = st.recursive(
    ATOMS | STRINGS | IMAGE_TEXT | DEEP,
    lambda inner: st.lists(inner, max_size=6).map(lambda xs: "[" + ",".join(xs) + "]")
    | st.lists(st.tuples(st.sampled_from(['"images"', '"names"', '"top_k"']) | STRINGS, inner), max_size=5)
    .map(lambda kv: "{" + ",".join(f"{k}:{v}" for k, v in kv) + "}"),
    max_leaves=12)


def _array(h: int, w: int, c: int, kind: str) -> list:
    rng = np.random.default_rng(h * 1000 + w * 10 + c)
    if kind == "u8":
        return rng.integers(0, 256, (h, w, c)).tolist()
    return (rng.random((h, w, c)) * (1 if kind == "f" else -3)).tolist()


@st.composite
def json_bodies(draw) -> str:
    if draw(st.integers(0, 4)) == 0:
        return draw(VALUES)  # anything at all
    fields = ['"images":' + draw(st.lists(IMAGE_TEXT | VALUES, max_size=MAX_IMAGES + 2)
                                 .map(lambda xs: "[" + ",".join(xs) + "]") | VALUES)]
    if draw(st.booleans()):
        fields.append('"names":' + draw(st.lists(STRINGS, max_size=MAX_IMAGES + 1)
                                        .map(lambda xs: "[" + ",".join(xs) + "]") | VALUES))
    if draw(st.booleans()):
        fields.append('"top_k":' + draw(st.sampled_from(["1", "3", "10", "1000", "1001", "0", "-5", "2.0", "true"])
                                        | VALUES))
    order = draw(st.permutations(fields))
    return "{" + ",".join(order) + "}"


ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1"]
JSON_TYPES = ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
              "application/json;charset=latin-1", 'application/json; charset="utf-16"', "application/json; boundary=x",
              "text/json", None]
QUERIES = ["", "", "?top_k=1", "?top_k=10", "?top_k=0", "?top_k=1001", "?top_k=abc", "?top_k=", "?top_k=1&top_k=2",
           "?top_k=99999999999999999999999", "?other=%ff"]


@st.composite
def mangled(draw, body: bytes) -> bytes:
    """``body`` as it is, padded around the size limit, cut short, a byte flipped, or garbage in front."""
    how = draw(st.sampled_from(["as is"] * 4 + ["pad", "cut", "flip", "prefix"]))
    if how == "pad":
        return body + b" " * max(0, MAX_BYTES + draw(st.integers(-2, 1)) - len(body))
    if how == "cut" and body:
        return body[: draw(st.integers(0, len(body) - 1))]
    if how == "flip" and body:
        i = draw(st.integers(0, len(body) - 1))
        return body[:i] + bytes([body[i] ^ draw(st.integers(1, 255))]) + body[i + 1:]
    if how == "prefix":
        return draw(st.binary(min_size=1, max_size=8)) + body
    return body


@FUZZ
@given(data=st.data())
def test_json_bodies_never_give_5xx(server, data):
    text = data.draw(json_bodies(), label="json")
    encoding = data.draw(st.sampled_from(ENCODINGS), label="encoding")
    body = data.draw(mangled(text.encode(encoding, errors="surrogatepass" if "utf" in encoding else "replace")),
                     label="body")
    post(server, body, data.draw(st.sampled_from(JSON_TYPES)), data.draw(st.sampled_from(QUERIES)))


# -- multipart bodies -------------------------------------------------------------------------------------------

BOUNDARIES = st.sampled_from([b"b0undary", b"x" * 70, b"----WebKitFormBoundary7MA4YWxkTrZu0gW", b"a'()+_,-./:=?",
                              b"x" * 200]) | st.lists(st.integers(0x21, 0xFF).filter(lambda c: c != 0x7F), min_size=1,
                                                      max_size=40).map(bytes)  # what a header value may hold
FILENAMES = st.none() | st.sampled_from([b"a.png", b"", b"../../etc/passwd", b"x" * 10_000, "猫.png".encode(),
                                          b'a\\"b.png', b"a\\b.png", b"\xff\xfe.png", b"a;b=c.png",
                                          b"%ZZ.png"]) | st.binary(max_size=40).filter(lambda b: b'"' not in b)


@st.composite
def parts(draw) -> bytes:
    name = draw(st.sampled_from([b"files"] * 4 + [b"top_k", b"other", b"", b'fi"les']))
    filename = draw(FILENAMES)
    disposition = b'form-data; name="' + name + b'"'
    if filename is not None:
        disposition += draw(st.sampled_from([b'; filename="' + filename + b'"', b"; filename*=UTF-8''%E7%8C%AB.png",
                                             b"; filename=" + filename]))
    head = [draw(st.sampled_from([b"Content-Disposition: " + disposition] * 5
                                 + [b"Content-Disposition: attachment", b"X-Nothing: 1"]))]
    if draw(st.booleans()):
        head.append(b"Content-Type: " + draw(st.sampled_from([b"image/png", b"application/octet-stream",
                                                               b"text/plain; charset=utf-8", b"\xff\xfe"])))
    if draw(st.integers(0, 9)) == 0:
        head.append(b"X-Long: " + b"h" * draw(st.sampled_from([100, 10_000, 70_000])))
    content = draw(A_FILE | st.binary(max_size=2000) | st.sampled_from([b"3", b"0", b"1001", b"x"])
                   | st.sampled_from([70_000, 300_000]).map(bytes))
    return b"\r\n".join(head) + b"\r\n\r\n" + content


@st.composite
def multipart_bodies(draw) -> tuple[bytes, str | None]:
    boundary = draw(BOUNDARIES)
    items = draw(st.lists(parts(), max_size=MAX_IMAGES + 4))
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in items) + b"--" + boundary + b"--\r\n"
    how = draw(st.sampled_from(["as is"] * 4 + ["no end", "lf", "preamble", "mangle"]))
    if how == "no end":
        body = body[: -len(boundary) - 6]
    elif how == "lf":
        body = body.replace(b"\r\n", b"\n")
    elif how == "preamble":
        body = b"preamble\r\n" + body + b"epilogue"
    elif how == "mangle":
        body = draw(mangled(body))
    b = boundary.decode("latin-1")
    ctype = draw(st.sampled_from([f"multipart/form-data; boundary={b}"] * 4
                                 + [f'multipart/form-data; boundary="{b}"', "multipart/form-data",
                                    "multipart/form-data; boundary=", f"multipart/mixed; boundary={b}",
                                    f"Multipart/Form-Data; BOUNDARY={b}; charset=utf-8", None]))
    return body, ctype


@FUZZ
@given(data=st.data())
def test_multipart_bodies_never_give_5xx(server, data):
    body, ctype = data.draw(multipart_bodies(), label="multipart")
    post(server, body, ctype, data.draw(st.sampled_from(QUERIES)))


# -- raw HTTP ----------------------------------------------------------------------------------------------------

STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def raw_exchange(port: int, request: bytes, half_close: bool) -> bytes:
    """Send ``request`` on a fresh connection (``half_close``: then stop
    sending, as a client that gives up), read until the server closes or
    stops answering; what came back."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=SECONDS) as s:
        try:
            s.sendall(request)
            if half_close:
                s.shutdown(socket.SHUT_WR)
            while chunk := s.recv(65536):
                out.append(chunk)
        except socket.timeout:
            raise
        except OSError:  # the server closed the connection first (reset, broken pipe, not connected)
            pass
    return b"".join(out)


def read_response(s: socket.socket) -> tuple[int, bytes, bytes]:
    """One response from ``s``: status, head, body (as long as its Content-Length says)."""
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += s.recv(65536) or b"\r\n\r\n"
    head, _, body = reply.partition(b"\r\n\r\n")
    length = re.search(rb"content-length: (\d+)", head, re.I)
    while length and len(body) < int(length.group(1)):
        more = s.recv(65536)
        assert more, reply
        body += more
    return int(head.split()[1]), head, body


@st.composite
def raw_requests(draw) -> tuple[bytes, bool]:
    body = draw(st.sampled_from([b"", b"x" * 100]) | st.just(0).map(lambda i: json.dumps({"images": [B64[i]]}).encode())
                | json_bodies().map(str.encode))
    method = draw(st.sampled_from(["POST"] * 6 + ["GET", "PUT", "DELETE", "OPTIONS", "HEAD", "FOO"]))
    path = draw(st.sampled_from(["/v1/predict"] * 5 + ["/v1/predict?top_k=3", "/v1/policy", "/healthz", "/metrics",
                                                       "//v1/predict", "/v1/predict/../predict", "/%00",
                                                       "/v1/predict?" + "a" * 10_000, "/v1/%ff"]))
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if draw(st.integers(0, 5)):
        head.append("Content-Type: application/json")
    length = draw(st.sampled_from(["exact"] * 4 + ["short", "long", "missing", "negative", "garbage", "twice"]))
    lengths = {"exact": [len(body)], "short": [max(0, len(body) - 7)], "long": [len(body) + 1000], "missing": [],
               "negative": [-1], "garbage": ["12abc"], "twice": [len(body), len(body) + 1]}[length]
    chunked = draw(st.integers(0, 5)) == 0
    if chunked:  # chunked instead, well-formed or not
        head.append("Transfer-Encoding: chunked")
        size = draw(st.sampled_from([len(body), len(body) + 5, max(0, len(body) - 3)]))
        body = f"{size:x}\r\n".encode() + body + draw(st.sampled_from([b"\r\n0\r\n\r\n", b"\r\n", b"zz\r\n"]))
        lengths = draw(st.sampled_from([[], lengths]))
    head += [f"Content-Length: {n}" for n in lengths]
    head += draw(st.lists(st.sampled_from(["Expect: 100-continue", "Content-Encoding: gzip", "X-Long: " + "h" * 20_000,
                                           "X-Request-Id: " + "r" * 500, "Authorization: Bearer x"]), max_size=2))
    request = "\r\n".join(head).encode() + b"\r\n\r\n" + body
    # a request that may be incomplete is followed by the client giving up (a stalled one waits for the
    # deadline: test_a_stalled_body_is_408_at_the_deadline)
    return request, chunked or length in ("long", "missing", "garbage", "negative") or draw(st.booleans())


@FUZZ
@given(data=st.data())
def test_raw_http_never_gives_5xx_nor_hangs(server, data):
    request, half_close = data.draw(raw_requests(), label="request")
    reply = raw_exchange(server.port, request, half_close)
    statuses = [int(m.group(1)) for m in STATUS_LINE.finditer(reply)]
    assert all(s < 500 for s in statuses), reply[:1000]
    method, path = request.split(b" ", 2)[:2]
    if statuses and reply.startswith(b"HTTP/1.1 ") and path.startswith(b"/v1/"):
        head, _, body = reply.partition(b"\r\n\r\n")
        headers = dict(line.decode("latin-1").lower().split(": ", 1) for line in head.split(b"\r\n")[1:]
                       if b": " in line)
        predict = method == b"POST" and path.split(b"?")[0] == b"/v1/predict"
        if headers.get("content-type", "").startswith("application/json") and statuses[0] != 100 and body \
                and (predict or statuses[0] != 200):  # a 200 of /v1/policy is no prediction
            check_api_response(statuses[0], headers, body[: int(headers.get("content-length", len(body)))])
    check_alive(server)


def test_a_stalled_body_is_408_at_the_deadline(server):
    """A client that sends half its body and stops holds the connection
    (and a place among --max-in-flight) until the deadline only."""
    body = json.dumps({"images": [B64[0]]}).encode()
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=SECONDS) as s:
        s.sendall(head + body[: len(body) // 2])
        status, _, rest = read_response(s)
    waited = time.monotonic() - t0
    assert status == 408, rest[:500]
    assert json.loads(rest)["error"]["code"] == "request_timeout"
    assert DEADLINE_MS / 1000 - 0.1 < waited < DEADLINE_MS / 1000 + 10, waited
    check_alive(server)


# -- schemathesis ------------------------------------------------------------------------------------------------

#: a request the schema allows may still be refused for what the schema cannot say: an image that does not
#: decode (422), one over --max-pixels or a body over --max-request-bytes (413); one the schema forbids is
#: refused with 4xx, and more images than --max-images (the schema's maxItems) is 413 too_many_images
SCHEMATHESIS_CONFIG = """\
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "413", "422"]

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "404", "405", "413", "415", "422"]
"""


def test_schemathesis_positive_and_negative_data_find_no_5xx_nor_schema_violation(server, tmp_path):
    st_cli = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    if not os.path.exists(st_cli):
        pytest.skip("schemathesis is not installed (pip install schemathesis)")
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    n = max(20, EXAMPLES // 2) if not LONG else EXAMPLES
    cmd = [st_cli, "--config-file", str(config), "run", server.url + "/openapi.json", "--mode", "all",
           "--checks", "all", "--max-examples", str(n), "--seed", str(SEED), "--phases", "examples,coverage,fuzzing",
           "--request-timeout", str(SECONDS), "--workers", "1", "--no-shrink", "--generation-database", "none"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=180 + 4 * n, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-2000:]
    check_alive(server)


# -- the multipart fast path reads a body as Starlette's parser does ---------------------------------------------

SAFE = st.text(st.sampled_from("abcXYZ019._-+() "), min_size=1, max_size=20).map(lambda t: t.strip() or "x")
#: one change to a plain body: some keep it plain, others make it a body only Starlette's parser reads
MISSES = ["none"] * 6 + ["lower-case header", "no space", "FILES", "other name", "padded name", "top_k bad",
                        "top_k twice", "delimiter inside", "epilogue", "BOUNDARY=", "quoted boundary"]


@st.composite
def plain_multipart(draw) -> tuple[bytes, bytes]:
    """Bodies of the plain shape the fast path reads, and near misses."""
    boundary = draw(st.text(st.sampled_from("0aZ'()+_,-./:=?"), min_size=1, max_size=70)).encode()
    miss = draw(st.sampled_from(MISSES))
    items = []
    for _ in range(draw(st.integers(1, MAX_IMAGES + 1))):
        name = draw(SAFE).encode()
        head = b'Content-Disposition: form-data; name="files"; filename="' + name + b'"'
        if draw(st.booleans()):
            head += b"\r\nContent-Type: " + draw(st.sampled_from([b"image/png", b"application/octet-stream"]))
        items.append([head, draw(st.integers(0, 2).map(lambda i: FILES[i]) | st.binary(max_size=64))])
    if draw(st.booleans()) or miss.startswith("top_k"):
        top_k = b'Content-Disposition: form-data; name="top_k"'
        items.insert(draw(st.integers(0, len(items))), [top_k, b"x" if miss == "top_k bad" else b"3"])
        if miss == "top_k twice":
            items.append([top_k, b"007"])
    k = draw(st.integers(0, len(items) - 1))
    swap = {"lower-case header": (b"Content-Disposition:", b"content-disposition:"),
            "no space": (b"Content-Disposition: ", b"Content-Disposition:"), "FILES": (b'"files"', b'"FILES"'),
            "other name": (b'"files"', b'"other"'), "padded name": (b'filename="', b'filename=" ')}.get(miss)
    if swap:
        items[k][0] = items[k][0].replace(*swap)
    if miss == "delimiter inside":
        items[k][1] += b"\r\n--" + boundary + draw(st.sampled_from([b"x", b" ", b"--"]))
    body = b"".join(b"--" + boundary + b"\r\n" + h + b"\r\n\r\n" + d + b"\r\n" for h, d in items)
    body += b"--" + boundary + b"--"
    body += b"\r\nepilogue" if miss == "epilogue" else draw(st.sampled_from([b"", b"\r\n"]))
    param = {"BOUNDARY=": b"BOUNDARY=" + boundary, "quoted boundary": b'boundary="' + boundary + b'"'}.get(
        miss, b"boundary=" + boundary)
    return b"multipart/form-data; " + param, body


async def _starlette_parse(ctype: bytes, body: bytes):
    from starlette.requests import Request

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-type", ctype)], "query_string": b""}
    form = await Request(scope, receive).form(max_files=MAX_IMAGES + 1, max_fields=100)
    files = [(v.filename, await v.read()) for _, v in form.multi_items() if hasattr(v, "read")]
    return files, [v for k, v in form.multi_items() if k == "top_k" and not hasattr(v, "read")]


@settings(max_examples=max(200, EXAMPLES), deadline=None, derandomize=not LONG, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=plain_multipart() | plain_multipart() | plain_multipart()
       | multipart_bodies().map(lambda bc: ((bc[1] or "").encode("latin-1"), bc[0])))
def test_the_multipart_fast_path_reads_what_starlette_reads(case):
    import asyncio

    from ttakit.serve.multipart import simple_multipart

    ctype, body = case
    fast = simple_multipart(ctype, body, MAX_IMAGES + 1)
    event("fast path" if fast is not None else "Starlette's parser")
    if fast is None:
        return  # Starlette's parser reads it
    files, top_k = fast
    want_files, want_top_k = asyncio.run(_starlette_parse(ctype, body))
    assert files == want_files and ([top_k] if top_k is not None else []) == want_top_k, (files, want_files)


def test_what_common_clients_send_takes_the_fast_path():
    """httpx (requests and curl write the same) and the bench's client: the
    plain shape, read by the fast path, as Starlette reads it."""
    import asyncio

    import httpx

    from ttakit.serve.multipart import simple_multipart

    r = httpx.Request("POST", "http://127.0.0.1/v1/predict", data={"top_k": "3"},
                      files=[("files", ("cat.png", FILES[0], "image/png")), ("files", ("my dog.jpg", FILES[4]))])
    body, ctype = r.read(), r.headers["content-type"].encode()
    fast = simple_multipart(ctype, body, MAX_IMAGES + 1)
    assert fast == ([("cat.png", FILES[0]), ("my dog.jpg", FILES[4])], "3")
    assert asyncio.run(_starlette_parse(ctype, body)) == (fast[0], ["3"])
