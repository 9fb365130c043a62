"""``ttakit serve --engine ray``: the same HTTP API as a Ray Serve
deployment. One real ``ttakit serve ... --engine ray --replicas 2`` process
starts its own local Ray with 2 CPUs and Serve's proxy on a free port of
127.0.0.1; concurrent requests get exactly ``Classifier.predict_proba``'s
probabilities, errors are the FastAPI server's JSON bodies, and SIGTERM
stops it all. Bounded: 16 requests with a 60 s timeout each, start-up within
150 s on a shared machine (Ray itself takes 5-20 s)."""

from __future__ import annotations

import base64
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

for _mod in ("fastapi", "uvicorn", "multipart", "prometheus_client", "httpx"):
    pytest.importorskip(_mod, reason=f"the server tests need the serve extra and httpx ({_mod} is missing): "
                                     "pip install 'ttakit[serve]' httpx")
pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'ttakit[ray]')")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from serve_support import Server, images, png_bytes, probs_of, tiny_model_file  # noqa: E402
from ttakit import Classifier  # noqa: E402
from ttakit.errors import UsageError  # noqa: E402
from ttakit.interfaces import cli  # noqa: E402
from ttakit.interfaces.cli import serve as serve_cli  # noqa: E402
from ttakit.models.loading import load_model_file  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

POLICY = "identity + hflip"
#: the options both servers share
OPTIONS = ("--policy", POLICY, "--size", "32", "--max-images", "4", "--max-pixels", "4096")
REQUESTS = 16
#: how long the Ray server may take to start: Ray, Serve's controller and proxy, two replicas loading torch
START_TIMEOUT_S = 150.0


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return tiny_model_file(tmp_path_factory.mktemp("serve-ray-model"))


@pytest.fixture(scope="module")
def ray_server(model_path, tmp_path_factory):
    s = Server(str(model_path), *OPTIONS, "--engine", "ray", "--replicas", "2", "--num-cpus", "2",
               log=tmp_path_factory.mktemp("serve-ray-log") / "ray-serve.log")
    try:
        yield s.wait_ready(timeout=START_TIMEOUT_S)
    finally:
        s.stop(timeout=60)


@pytest.fixture(scope="module")
def fastapi_client(model_path):
    """The plain FastAPI server of the same options, in this process."""
    args = cli.build_parser().parse_args(["serve", str(model_path), *OPTIONS])
    with TestClient(serve_cli.build_app(args)) as client:
        yield client


def test_concurrent_requests_over_two_replicas_match_predict_proba(ray_server, model_path):
    x = images(2 * REQUESTS, seed=5)
    want = Classifier(load_model_file(str(model_path)), POLICY, data_layout="NHWC").predict_proba(x)

    def ask(i):  # request i: images 2i and 2i+1, as PNG files or as JSON arrays
        pair = x[2 * i:2 * i + 2]
        if i % 2:
            r = httpx.post(ray_server.url + "/v1/predict?top_k=10", timeout=60,
                           files=[("files", (f"{i}-{j}.png", png_bytes(im), "image/png")) for j, im in enumerate(pair)])
        else:
            r = httpx.post(ray_server.url + "/v1/predict", json={"images": pair.tolist(), "top_k": 10}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["failed"] == 0 and body["views"] == 2 and not body["degraded"]
        return [probs_of(e) for e in body["predictions"]]

    with ThreadPoolExecutor(REQUESTS) as pool:
        got = np.array([p for pair in pool.map(ask, range(REQUESTS)) for p in pair])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def _bad_requests():
    """(code, method, path, httpx keyword arguments) of requests the API refuses."""
    blank = base64.b64encode(png_bytes(np.zeros((100, 100, 3), np.uint8))).decode()  # 10,000 pixels > 4096
    return [
        ("no_images", "post", "/v1/predict", {"json": {"images": []}}),
        ("unsupported_media_type", "post", "/v1/predict", {"content": b"hi", "headers": {"content-type": "text/plain"}}),
        ("invalid_request", "post", "/v1/predict", {"content": b"{", "headers": {"content-type": "application/json"}}),
        ("invalid_image", "post", "/v1/predict", {"json": {"images": ["bm90IGFuIGltYWdl"]}}),
        ("image_too_large", "post", "/v1/predict", {"json": {"images": [blank]}}),
        ("too_many_images", "post", "/v1/predict", {"json": {"images": ["x"] * 5}}),
        ("invalid_request", "post", "/v1/predict?top_k=0", {"json": {"images": ["x"]}}),
        ("not_found", "get", "/v1/nothing", {}),
        ("method_not_allowed", "get", "/v1/predict", {}),
    ]


def test_errors_are_the_fastapi_servers_json(ray_server, fastapi_client):
    for code, method, path, kw in _bad_requests():
        got = getattr(httpx, method)(ray_server.url + path, timeout=30, **kw)
        want = getattr(fastapi_client, method)(path, **kw)
        assert got.status_code == want.status_code >= 400, (path, got.text, want.text)
        assert got.headers["content-type"] == "application/json"
        assert got.json() == want.json(), path
        assert got.json()["error"]["code"] == code


def test_policy_and_readiness_match(ray_server, fastapi_client):
    got, want = httpx.get(ray_server.url + "/v1/policy", timeout=30).json(), fastapi_client.get("/v1/policy").json()
    assert got == want
    assert httpx.get(ray_server.url + "/readyz", timeout=30).json() == {"status": "ready"}


def test_sigterm_stops_serve_and_ray(ray_server):
    assert ray_server.stop(timeout=60) == 0, ray_server.log.read_text()[-3000:]
    with pytest.raises(httpx.TransportError):
        httpx.get(ray_server.url + "/healthz", timeout=5)


@pytest.mark.parametrize("argv, problem", [
    (["--engine", "ray", "--workers", "2"], "--workers"),
    (["--engine", "ray", "--no-batching"], "--no-batching"),
    (["--engine", "ray", "--always-wait"], "--always-wait"),
    (["--engine", "ray", "--address", "auto", "--num-cpus", "2"], "--num-cpus"),
    (["--replicas", "2"], "only for --engine ray"),
])
def test_options_that_do_not_apply_are_refused(model_path, argv, problem):
    args = cli.build_parser().parse_args(["serve", str(model_path), *argv])
    with pytest.raises(UsageError, match=problem):
        serve_cli.run(args)



# ../shared beside the checkout, or where TTAKIT_MODELS points (a worktree elsewhere)
RESNETS = Path(os.environ.get("TTAKIT_MODELS") or Path(__file__).resolve().parents[2] / "shared" / "models"
               / "cifar10-resnet")


@pytest.mark.skipif(not (RESNETS / "resnet20-12fca82f.th").is_file(),
                    reason="needs the ResNet-20 checkpoint of ../shared/models/cifar10-resnet (or $TTAKIT_MODELS)")
def test_a_zoo_model_reaches_each_replica_with_its_checkpoint_and_normalisation(tmp_path, monkeypatch):
    """What ``serve --engine ray`` hands to Serve, pickled as Ray ships it and
    built where a replica would be: in another folder, without
    $TTAKIT_MODELS (Ray itself is not started: its start-up is the module's
    server's test)."""
    import pickle
    import threading

    from ttakit import Normalize
    from ttakit.datasets import CIFAR10_CLASSES
    from ttakit.interfaces.cli import serve_ray
    from ttakit.scale import ray_support
    from ttakit.serve import ray_deployment
    from ttakit.zoo import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD, load_cifar_resnet

    shipped = {}
    stop = threading.Event()
    stop.set()
    monkeypatch.setattr(ray_support, "connect", lambda *a, **k: (False, 0.0))
    monkeypatch.setattr(ray_deployment, "deploy", lambda build, **kw: shipped.setdefault("build", pickle.dumps(build))
                        and "http://127.0.0.1:0")
    monkeypatch.setattr(ray_deployment, "shutdown", lambda: None)
    monkeypatch.setattr(serve_ray, "_stop_on_signals", lambda: stop)
    monkeypatch.chdir(RESNETS.parent)
    args = cli.build_parser().parse_args(["serve", "zoo:resnet20", "--engine", "ray", "--weights", RESNETS.name,
                                          "--policy", POLICY, "--max-images", "4"])
    assert serve_cli.run(args) == 0
    monkeypatch.delenv("TTAKIT_MODELS", raising=False)
    monkeypatch.chdir(tmp_path)
    build = pickle.loads(shipped["build"])
    x = images(4, seed=7)
    with TestClient(build(runner_factory=None)) as client:
        r = client.post("/v1/predict", json={"images": x.tolist(), "top_k": 10})
    assert r.status_code == 200, r.text
    want = Classifier(load_cifar_resnet(20, root=RESNETS), POLICY, data_layout="NHWC", output="logits",
                      preprocess=Normalize(CIFAR_RESNET_MEAN, CIFAR_RESNET_STD)).run(x)
    got = np.array([probs_of(e) for e in r.json()["predictions"]])
    np.testing.assert_allclose(got, want.probs, rtol=0, atol=1e-6)
    assert [e["class"] for e in r.json()["predictions"]] == [CIFAR10_CLASSES[k] for k in want.labels]
