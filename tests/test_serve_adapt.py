"""Test-time adaptation in the server (``ttakit serve --adapt``,
``create_app(Classifier(..., adapt=...))``): the adaptation's stream is the
images of one request, never batched with another request's, so each
response equals ``Classifier(..., adapt=...)`` on that request's images
alone, however many requests run at once."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ttakit import Classifier
from ttakit.adapt import Norm
from ttakit.serve import Batcher

pytestmark = pytest.mark.filterwarnings("ignore:float images range above 1")


def bn_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.1, 0.1)
        net[1].running_var.uniform_(0.5, 1.0)
    return net.eval()


#: always adapts (no floor, no shift test): a request's prediction depends on every image it holds
ALWAYS = Norm(min_inputs=1, shift_threshold=0)


def requests(k=6, seed=0):
    """``k`` requests of 1 to 5 uint8 (H, W, C) images, of different brightness."""
    rng = np.random.default_rng(seed)
    return [np.clip(rng.normal(40 + 35 * i, 30, size=(1 + i % 5, 8, 8, 3)), 0, 255).astype(np.uint8)
            for i in range(k)]


def classifier(adapt=ALWAYS, **kw):
    return Classifier(bn_net(), "identity + hflip", data_layout="NHWC", output="logits", adapt=adapt, **kw)


def test_a_request_is_never_batched_with_another_when_adapting():
    reqs = requests()
    clf = classifier()
    alone = [clf.predict_proba(x) for x in reqs]
    # the test can fail: predicted together, the requests would change each other's predictions
    assert not np.allclose(clf.predict_proba(np.concatenate(reqs)), np.concatenate(alone), atol=1e-4)
    b = Batcher(clf, max_batch=64, max_wait_ms=200)
    try:
        go = threading.Event()
        futures = [None] * len(reqs)

        def send(i):
            go.wait()
            futures[i] = b.submit(reqs[i], time.monotonic() + 30)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(reqs))]
        for t in threads:
            t.start()
        go.set()
        for t in threads:
            t.join()
        outs = [f.result(30) for f in futures]
    finally:
        b.close()
    for x, got, want in zip(reqs, outs, alone):
        assert got.batch_images == len(x)
        np.testing.assert_allclose(got.probs, want, rtol=0, atol=1e-6)
    assert b.stats.batches == len(reqs)
    # without adaptation the same batcher still batches across requests
    plain = Batcher(classifier(adapt=None), max_batch=64, max_wait_ms=200)
    try:
        futs = [plain.submit(x, time.monotonic() + 30) for x in reqs]
        assert max(f.result(30).batch_images for f in futs) > max(len(x) for x in reqs)
    finally:
        plain.close()


def test_a_one_image_request_follows_the_small_batch_rule():
    """With the default adaptation a request of one image is below the
    64-input floor: it is predicted exactly as without adaptation, as
    ``Classifier(adapt="norm")`` predicts one image."""
    x = requests(1)[0][:1]
    b = Batcher(classifier(adapt="norm"), max_batch=8, max_wait_ms=0)
    try:
        got = b.submit(x, time.monotonic() + 30).result(30).probs
    finally:
        b.close()
    assert np.array_equal(got, classifier(adapt="norm").predict_proba(x))
    assert np.array_equal(got, classifier(adapt=None).predict_proba(x))


def test_concurrent_http_requests_each_get_their_own_adaptation():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ttakit.serve.app import create_app

    reqs = requests(8, seed=1)
    clf = classifier()
    want = [clf.predict_proba(x) for x in reqs]
    app = create_app(clf, max_batch=64, max_wait_ms=50, warm_up=False)
    got: dict[int, dict] = {}
    with TestClient(app) as client:
        def post(i):
            got[i] = client.post("/v1/predict?top_k=3", json={"images": reqs[i].tolist()}).json()

        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(reqs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i, body in got.items():
        assert len(body["predictions"]) == len(reqs[i])
        for j, entry in enumerate(body["predictions"]):
            probs = {t["label"]: t["prob"] for t in entry["top_k"]}
            np.testing.assert_allclose([probs[c] for c in range(3)], want[i][j], rtol=0, atol=1e-6)


def test_serve_takes_adapt_on_the_command_line(tmp_path):
    from ttakit.errors import ModelLoadError
    from ttakit.interfaces.cli import build_parser
    from ttakit.interfaces.cli.serve import build_classifier

    pt = tmp_path / "bn.pt"
    torch.jit.script(bn_net()).save(str(pt))
    args = build_parser().parse_args(["serve", str(pt), "--size", "8", "8", "--adapt", "norm"])
    with pytest.raises(ModelLoadError, match="TorchScript"):  # scripted modules run no hooks
        build_classifier(args)
    models = Path(os.environ.get("TTAKIT_MODELS") or Path(__file__).resolve().parents[2] / "shared" / "models"
                  / "cifar10-resnet")
    if not models.is_dir():
        pytest.skip("the published CIFAR ResNets (../shared) not found: the zoo half of this test needs them")
    args = build_parser().parse_args(["serve", "zoo:resnet20", "--weights", str(models), "--adapt", "tent"])
    clf, _, _ = build_classifier(args)
    assert clf.adapt == "tent" and clf._setup().adaptation.name == "tent"
