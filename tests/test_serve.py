"""``ttakit serve`` end to end: a REAL uvicorn process on 127.0.0.1 (free
port), talked to over HTTP. Every request is bounded in number and time."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

for _mod in ("fastapi", "uvicorn", "multipart", "prometheus_client", "httpx"):
    pytest.importorskip(_mod, reason=f"the server tests need the serve extra and httpx ({_mod} is missing): "
                                     "pip install 'ttakit[serve]' httpx")

import httpx  # noqa: E402

from serve_support import Server, images, png_bytes, probs_of, tiny_model_file  # noqa: E402
from ttakit import Classifier  # noqa: E402
from ttakit.models.loading import load_model_file  # noqa: E402

pytestmark = pytest.mark.xdist_group("serve")
POLICY = "identity + hflip"
ERROR_KEYS = {"code", "message"}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return tiny_model_file(tmp_path_factory.mktemp("serve-model"))


@pytest.fixture(scope="module")
def reference(model_path):
    clf = Classifier(load_model_file(str(model_path)), POLICY, data_layout="NHWC")
    return clf.predict_proba


def running(model_path, tmp_path_factory, name, *args):
    s = Server(str(model_path), "--policy", POLICY, "--size", "32", *args,
               log=tmp_path_factory.mktemp("serve-log") / f"{name}.log")
    try:
        yield s.wait_ready()
    finally:
        s.stop()


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    yield from running(model_path, tmp_path_factory, "server", "--top-k", "3", "--max-images", "8",
                       "--max-pixels", "4096", "--max-request-bytes", "300000")


@pytest.fixture(scope="module")
def slow_server(model_path, tmp_path_factory):
    """Requests may wait only 1 s for their answer, and every batch waits
    5 s for company (a tiny model on a quiet machine answers within 1 ms
    otherwise); the queue holds 4 images; an API key is required."""
    yield from running(model_path, tmp_path_factory, "slow", "--queue", "4", "--timeout-ms", "1000",
                       "--max-wait-ms", "5000", "--always-wait", "--api-key", "s3cret")


def files(imgs, names=None):
    return [("files", (names[i] if names else f"img{i}.png", png_bytes(im), "image/png")) for i, im in enumerate(imgs)]


def concurrent_probs(url, x):
    """Every image of ``x`` in its own request, all at once; their probabilities (all 10 classes)."""
    async def go():
        async with httpx.AsyncClient(timeout=60) as c:
            async def one(i):
                r = await c.post(url + "/v1/predict?top_k=10", files=files(x[i:i + 1]))
                assert r.status_code == 200, r.text
                return probs_of(r.json()["predictions"][0])
            return await asyncio.gather(*(one(i) for i in range(len(x))))

    return np.stack(asyncio.run(go()))


def assert_error(r, status, code):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and ERROR_KEYS <= set(body["error"]), body
    assert body["error"]["code"] == code, body
    return body["error"]


def test_operations_and_policy(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").json() == {"status": "ready"}
    pol = httpx.get(server.url + "/v1/policy").json()
    assert pol["spec"] == POLICY and pol["views"] == ["identity", "hflip"] and pol["forward_passes_per_input"] == 2
    assert len(pol["policy_id"]) == 16 and pol["merge"] == "mean"
    assert httpx.get(server.url + "/docs").status_code == 200
    assert "/v1/predict" in httpx.get(server.url + "/openapi.json").json()["paths"]
    m = httpx.get(server.url + "/metrics").text
    for name in ("ttakit_requests_total", "ttakit_request_seconds_bucket", "ttakit_batch_images_bucket",
                 "ttakit_forward_passes_per_input_bucket", "ttakit_queue_depth"):
        assert name in m
    assert_error(httpx.get(server.url + "/nowhere"), 404, "not_found")
    assert_error(httpx.get(server.url + "/v1/predict"), 405, "method_not_allowed")


def test_predict_files_base64_and_arrays(server, reference):
    x = images(3, seed=1)
    want = reference(x)
    r = httpx.post(server.url + "/v1/predict", files=files(x[:1]), timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    pid = httpx.get(server.url + "/v1/policy").json()["policy_id"]
    e = body["predictions"][0]
    assert body["policy_id"] == e["policy_id"] == pid and body["failed"] == 0 and not body["degraded"]
    assert e["name"] == "img0.png" and e["label"] == int(want[0].argmax()) and len(e["top_k"]) == 3
    assert e["views"] == 2 and 0 <= e["entropy"] and 0 <= e["agreement"] <= 1
    b64 = [base64.b64encode(png_bytes(im)).decode() for im in x]
    r = httpx.post(server.url + "/v1/predict?top_k=10",
                   json={"images": [b64[0], "data:image/png;base64," + b64[1], x[2].tolist()],
                         "names": ["a", "b", "c"]}, timeout=30)
    assert r.status_code == 200, r.text
    got = np.stack([probs_of(p) for p in r.json()["predictions"]])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert [p["name"] for p in r.json()["predictions"]] == ["a", "b", "c"]
    floats = (x[:1].astype(np.float32) / 255)
    r = httpx.post(server.url + "/v1/predict", json={"images": floats.tolist(), "top_k": 10}, timeout=30)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(probs_of(r.json()["predictions"][0]), want[0], atol=1e-6)


def test_one_bad_image_in_eight_fails_only_itself(server, reference):
    x = images(8, seed=2)
    parts = files(x)
    parts[3] = ("files", ("broken.png", b"\x89PNG\r\n\x1a\n this is not a png", "image/png"))
    r = httpx.post(server.url + "/v1/predict?top_k=10", files=parts, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["failed"] == 1
    bad = body["predictions"][3]
    assert bad["error"]["code"] == "invalid_image" and "broken.png" in bad["error"]["message"] and "label" not in bad
    good = [i for i in range(8) if i != 3]
    np.testing.assert_allclose(np.stack([probs_of(body["predictions"][i]) for i in good]), reference(x[good]), rtol=0, atol=1e-6)


def test_limits_and_bad_requests(server):
    u = server.url + "/v1/predict"
    err = assert_error(httpx.post(u, files=files(images(9)), timeout=30), 413, "too_many_images")
    assert "9 images" in err["message"]
    assert_error(httpx.post(u, files=[("files", ("big.bin", b"\0" * 400_000, "image/png"))]), 413,
                 "request_too_large")
    err = assert_error(httpx.post(u, files=files(images(1, size=65), names=["huge.png"])), 413, "image_too_large")
    assert "huge.png" in err["message"] and "65x65" in err["message"]
    assert_error(httpx.post(u, content=b"hello", headers={"content-type": "text/plain"}), 415,
                 "unsupported_media_type")
    assert_error(httpx.post(u, content=b"{not json", headers={"content-type": "application/json"}), 422,
                 "invalid_request")
    assert_error(httpx.post(u, json={"images": []}), 422, "no_images")
    assert_error(httpx.post(u, json={"pictures": []}), 422, "invalid_request")
    err = assert_error(httpx.post(u, json={"images": ["@@@", [[1, 2]]]}), 422, "invalid_image")
    assert [d["name"] for d in err["details"]] == ["#0", "#1"]
    assert_error(httpx.post(u + "?top_k=0", json={"images": ["x"]}), 422, "invalid_request")


def test_64_concurrent_requests_match_predict_proba(server, reference):
    x = images(64, seed=3)
    want = reference(x)
    before = _metric(server, "ttakit_batch_images_count")

    got = concurrent_probs(server.url, x)
    # the same floats up to float32 rounding: a batch of another composition may take another
    # kernel path (differences seen: 7e-9)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    runs = _metric(server, "ttakit_batch_images_count") - before
    assert runs < 64, "requests were not batched together"


def _metric(server, name):
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(name)


def test_api_key(slow_server):
    u = slow_server.url + "/v1/policy"
    assert_error(httpx.get(u), 401, "unauthorized")
    assert_error(httpx.get(u, headers={"x-api-key": "wrong"}), 401, "unauthorized")
    assert httpx.get(u, headers={"x-api-key": "s3cret"}).status_code == 200
    assert httpx.get(u, headers={"authorization": "Bearer s3cret"}).status_code == 200
    assert httpx.get(slow_server.url + "/healthz").status_code == 200


def test_overload_is_503_at_once_and_deadline_is_504(slow_server):
    u, key = slow_server.url + "/v1/predict", {"x-api-key": "s3cret"}
    t0 = time.monotonic()
    r = httpx.post(u, files=files(images(5)), headers=key, timeout=10)  # 5 images > queue of 4
    err = assert_error(r, 503, "overloaded")
    assert r.headers["retry-after"] == "1" and time.monotonic() - t0 < 5.0 and "queue" in err["message"]
    r = httpx.post(u, files=files(images(1)), headers=key, timeout=10)  # the deadline is 1 s, the batch waits 5
    assert_error(r, 504, "deadline_exceeded")
    assert httpx.get(slow_server.url + "/healthz").status_code == 200  # and the server is fine


def test_sigterm_drains_in_flight_requests_and_more_than_max_in_flight_get_503_at_once(model_path, tmp_path):
    s = Server(str(model_path), "--policy", POLICY, "--size", "32", "--max-wait-ms", "1500", "--always-wait",
               "--max-in-flight", "4", log=tmp_path / "drain.log").wait_ready()
    try:
        results = []

        def post(i):
            r = httpx.post(s.url + "/v1/predict", files=files(images(1, seed=i)), timeout=30)
            results.append(r.status_code)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)  # the requests are in the batcher's 1.5 s window
        t0 = time.monotonic()
        r = httpx.post(s.url + "/v1/predict", files=files(images(1)), timeout=30)  # a fifth, over --max-in-flight
        assert_error(r, 503, "overloaded")
        assert r.headers["retry-after"] == "1" and time.monotonic() - t0 < 1.0
        assert httpx.get(s.url + "/readyz").status_code == 200  # operations are not bounded
        s.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        assert results == [200] * 4
        # a clean stop: a supervisor reads any other status as a crash
        assert s.proc.wait(30) == 0
    finally:
        s.stop()
    log = [json.loads(line) for line in s.log.read_text().splitlines() if line.startswith("{")]
    assert any(e["msg"] == "stopped" for e in log)
    assert sum(1 for e in log if e["msg"] == "request" and e["path"] == "/v1/predict" and e["status"] == 200) == 4


def test_two_worker_processes_answer_correctly_share_metrics_and_stop_cleanly(model_path, reference, tmp_path):
    s = Server(str(model_path), "--policy", POLICY, "--size", "32", "--workers", "2", "--log-level", "info",
               log=tmp_path / "workers.log").wait_ready()
    x = images(12, seed=5)
    try:
        got = concurrent_probs(s.url, x)
        np.testing.assert_allclose(got, reference(x), rtol=0, atol=1e-6)
        # /metrics adds up both workers, whichever answers it
        for _ in range(3):
            assert _metric(s, 'ttakit_requests_total{path="/v1/predict",status="200"}') == len(x)
            assert _metric(s, "ttakit_batch_images_sum") == len(x)
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(60) == 0
    finally:
        s.stop()
    log = [json.loads(line) for line in s.log.read_text().splitlines() if line.startswith("{")]
    assert sum(1 for e in log if e["msg"] == "ready") == 2  # one model and batcher per worker
    assert sum(1 for e in log if e["msg"] == "stopped") == 2


def test_serve_builds_the_zoo_model_and_a_file_with_runtime_options(tmp_path, monkeypatch):
    """``ttakit serve``'s own argument path for a zoo model (it shares
    ``load_model`` with evaluate/tune, which reads ``--runtime``) and for a
    model file with ``--runtime onnx``: the apps build and describe their
    policy."""
    from fastapi.testclient import TestClient

    from ttakit.interfaces.cli import build_parser
    from ttakit.interfaces.cli.serve import build_app

    models = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "cifar10-resnet"
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    pt = tmp_path / "tiny.pt"
    torch.jit.trace(net.eval(), torch.rand(1, 3, 8, 8)).save(str(pt))
    argvs = [["serve", str(pt), "--policy", "identity + hflip", "--size", "8", "8", "--runtime", "onnx"]]
    if models.is_dir():
        monkeypatch.setenv("TTAKIT_MODELS", str(models))
        argvs.append(["serve", "zoo:resnet20", "--policy", "identity + hflip"])
    for argv in argvs:
        args = build_parser().parse_args(argv)
        with TestClient(build_app(args)) as client:
            assert client.get("/v1/policy").status_code == 200


def _png(w: int, h: int, idat: bytes) -> bytes:
    """A grey 8-bit PNG of ``w`` x ``h`` pixels whose compressed rows are ``idat``."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def png_header(w: int, h: int) -> bytes:
    """A PNG whose header says ``w`` x ``h`` pixels, with no pixel data
    (a server that checks the header refuses it without decoding)."""
    return _png(w, h, zlib.compress(b""))


def blank_png(w: int, h: int) -> bytes:
    """A real, decodable black ``w`` x ``h`` PNG, built row by row (small however large)."""
    z = zlib.compressobj(9)
    row = b"\x00" * (w + 1)  # filter byte, then w pixels
    return _png(w, h, b"".join(z.compress(row) for _ in range(h)) + z.flush())


def test_deeply_nested_json_is_4xx_never_500(server):
    """JSON nested a thousand deep or more once raised RecursionError while
    decoding, answered 500 internal_error."""
    u = server.url + "/v1/predict"
    for depth in (900, 1000, 5000, 40_000):  # the largest body is under --max-request-bytes
        deep = "[" * depth + "]" * depth
        bodies = [deep, '{"images": [' + deep + "]}", '{"images": ["x"], "names": ' + deep + "}",
                  '{"images": ["x"], "top_k": ' + deep + "}", '{"a": ' * depth + "1" + "}" * depth]
        for body in bodies:
            r = httpx.post(u, content=body.encode(), headers={"content-type": "application/json"}, timeout=30)
            assert 400 <= r.status_code < 500, (depth, body[:40], r.status_code, r.text[:300])
            assert r.json()["error"]["code"] in ("invalid_request", "invalid_image"), r.text[:300]
    assert httpx.get(server.url + "/readyz").status_code == 200


def test_names_come_back_as_sent_and_messages_quote_them_cut(server):
    """``name`` is the name as the client sent it (it was its Python repr,
    quotes included), whatever its characters; messages quote it, cut."""
    u = server.url + "/v1/predict"
    good = base64.b64encode(png_bytes(images(1)[0])).decode()
    names = ["it's \"cat\".png", "猫.png", "\ud800 lone surrogate", "#0", "x" * 10_000]
    body = json.dumps({"images": [good, good, good, good, "@@@"], "names": names})  # the surrogate escaped
    r = httpx.post(u, content=body.encode(), headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    assert [p["name"] for p in got] == names
    msg = got[4]["error"]["message"]
    assert msg.startswith("image 'xxxx") and "10,000 characters" in msg and len(msg) < 400, msg
    r = httpx.post(u, files=[("files", ("my cat's photo.png", png_bytes(images(1)[0]), "image/png"))], timeout=30)
    assert r.status_code == 200 and r.json()["predictions"][0]["name"] == "my cat's photo.png", r.text


def test_openapi_requires_at_least_one_file(server):
    body = httpx.get(server.url + "/openapi.json").json()["paths"]["/v1/predict"]["post"]["requestBody"]
    files_schema = body["content"]["multipart/form-data"]["schema"]["properties"]["files"]
    assert files_schema["minItems"] == 1 and files_schema["maxItems"] == 8  # the server's --max-images
    images_schema = body["content"]["application/json"]["schema"]["properties"]["images"]
    assert images_schema["minItems"] == 1 and images_schema["maxItems"] == 8


def test_images_over_the_default_pixel_limit_are_413_from_the_header(slow_server):
    """Under the default --max-pixels (4096 x 4096), images of 12000² and
    20000² pixels (over ttakit's own 40,000,000 and over Pillow's ceiling)
    were answered 422 invalid_image, not the documented 413."""
    u, key = slow_server.url + "/v1/predict", {"x-api-key": "s3cret"}
    for side in (5000, 12000, 20000):
        r = httpx.post(u, files=[("files", (f"side{side}.png", png_header(side, side), "image/png"))], headers=key,
                       timeout=30)
        err = assert_error(r, 413, "image_too_large")
        assert f"side{side}.png" in err["message"] and str(4096 * 4096) in err["message"], err


def test_max_pixels_above_40_million_is_honoured_end_to_end(model_path, tmp_path):
    """``--max-pixels 100000000``: a 7000 x 7000 PNG (49,000,000 pixels) is
    predicted (it got 422 "ImageTooLarge": the decoder used ttakit's
    default of 40,000,000), 11000 x 10000 is 413, and an image over
    Pillow's own ceiling (about 179,000,000) is 413 too. The server
    listens on a free port (--port 0) and prints it when ready; SIGINT
    stops it with status 0."""
    s = Server(str(model_path), "--policy", POLICY, "--size", "32", "--max-pixels", "100000000", "--queue", "8",
               port=0, log=tmp_path / "pixels.log").wait_ready()
    try:
        assert s.port != 0 and s.url == f"http://127.0.0.1:{s.port}"
        u = s.url + "/v1/predict"
        r = httpx.post(u, files=[("files", ("big.png", blank_png(7000, 7000), "image/png"))], timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0]["label"] is not None
        for w, h in ((11000, 10000), (20000, 20000)):
            r = httpx.post(u, files=[("files", ("over.png", png_header(w, h), "image/png"))], timeout=30)
            assert "100000000" in assert_error(r, 413, "image_too_large")["message"]
        s.proc.send_signal(signal.SIGINT)  # Ctrl-C stops it cleanly too
        assert s.proc.wait(30) == 0
    finally:
        s.stop()


def test_a_port_in_use_is_a_clear_error_with_its_own_exit_status(model_path, tmp_path):
    """Another program listens on the port: one ``ttakit: error:`` line
    naming it, exit status 4 (it was 3, "inputs unreadable", after logging
    "ready"), before the model is loaded, and no "ready"."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
        p = subprocess.run([sys.executable, "-m", "ttakit", "serve", str(model_path), "--port", str(port)],
                           capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 4, (p.returncode, p.stderr[-2000:])
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("ttakit: error:")]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "--port" in lines[0], p.stderr[-2000:]
    assert '"ready"' not in p.stderr and "ready on" not in p.stderr


def test_the_server_prints_where_it_listens(server):
    assert server.ready_url() == server.url


def test_the_decoder_uses_the_servers_pixel_limit_not_ttakits_default():
    """In the decoder alone: 7000 x 7000 under a 100,000,000 limit is an
    image (the header check once used ttakit's default of 40,000,000)."""
    from ttakit.serve.decode import ImageProblem, Limits, allow_pixels, decode_bytes

    png = blank_png(7000, 7000)
    limits = Limits(max_request_bytes=len(png), max_pixels=100_000_000)
    allow_pixels(limits.max_pixels)
    got = decode_bytes(png, "big.png", limits, size=(32, 32))
    assert not isinstance(got, ImageProblem), got
    assert got.shape == (32, 32, 3) and got.dtype == np.uint8 and (got == 0).all()
    small = decode_bytes(png, "big.png", Limits(max_pixels=48_999_999))
    assert isinstance(small, ImageProblem) and small.code == "image_too_large" and small.status == 413


def test_the_onnx_runtime_runs_on_the_servers_threads(tmp_path):
    """``--runtime onnx`` runs ONNX Runtime on --threads threads (it took
    every core, its idle threads spinning on the one left to HTTP)."""
    from ttakit.interfaces.cli import build_parser
    from ttakit.interfaces.cli.serve import build_classifier
    from ttakit.models.onnx_model import OnnxModel

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    pt = tmp_path / "tiny.pt"
    torch.jit.trace(net.eval(), torch.rand(1, 3, 8, 8)).save(str(pt))
    args = build_parser().parse_args(["serve", str(pt), "--size", "8", "8", "--runtime", "onnx", "--threads", "1"])
    clf, _, _ = build_classifier(args)
    clf.predict_proba(images(4, size=8))
    sessions = [m.session for m in clf.model._chosen.values() if isinstance(m, OnnxModel)]
    assert sessions and all(s.get_session_options().intra_op_num_threads == 1 for s in sessions)


def test_a_batch_of_answers_wakes_the_event_loop_once():
    """The model thread hands a batch's answers to the loop in one wake-up
    (not one per request); each request still gets its own answer, an error
    its error, and a request given up cancels its runner future."""
    from concurrent.futures import Future

    from ttakit.serve.app import _Answers

    async def main():
        loop = asyncio.get_running_loop()
        answers = _Answers(loop)
        wakeups = []
        real = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda *a: (wakeups.append(a), real(*a))[1]
        futures = [Future() for _ in range(17)]
        waiters = [answers.watch(f) for f in futures]

        def model_thread():  # the loop cannot run while this thread answers: one burst
            for i, f in enumerate(futures[:16]):
                if i == 3:
                    f.set_exception(ValueError("bad input"))
                else:
                    f.set_result(i)

        t = threading.Thread(target=model_thread)
        t.start()
        t.join()
        got = await asyncio.gather(*waiters[:16], return_exceptions=True)
        assert len(wakeups) == 1
        assert [g for i, g in enumerate(got) if i != 3] == [i for i in range(16) if i != 3]
        assert isinstance(got[3], ValueError)
        waiters[16].cancel()  # a request past its deadline
        await asyncio.sleep(0)
        assert futures[16].cancelled()
        done = loop.create_future()
        assert answers.watch(done) is done  # a runner's asyncio future is awaited as it is

    asyncio.run(main())


def test_the_gil_switch_interval_is_short_while_serving(model_path):
    """The model thread takes the GIL back after every operator; while the
    app serves, the event loop lets go of it within SWITCH_INTERVAL_S, and
    the process's interval is restored once it stops."""
    from fastapi.testclient import TestClient

    from ttakit.serve import create_app
    from ttakit.serve.app import SWITCH_INTERVAL_S

    before = sys.getswitchinterval()
    assert before > SWITCH_INTERVAL_S  # Python's default, 5 ms
    with TestClient(create_app(Classifier(load_model_file(str(model_path)), POLICY, data_layout="NHWC"),
                               size=(32, 32))) as client:
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
        r = client.post("/v1/predict", json={"images": images(3, seed=2).tolist()})
        assert r.status_code == 200 and r.json()["failed"] == 0
    assert sys.getswitchinterval() == before
