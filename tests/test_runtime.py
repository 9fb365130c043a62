"""Tests for ``runtime="onnx" | "compile"`` (ttakit.models.runtime): a
PyTorch model run through ONNX Runtime or torch.compile gives the eager
model's results (within 1e-4), on every batch size, from several threads,
and falls back to eager with a RuntimeFallbackWarning where the runtime
cannot be built or disagrees."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import threading
import warnings

import numpy as np
import pytest
import torch

import ttakit
from ttakit import Segmenter
from ttakit.errors import ModelLoadError, RuntimeFallbackWarning
from ttakit.interfaces import cli
from ttakit.models import as_model
from ttakit.models import runtime as rt
from ttakit.models.onnx_model import OnnxModel
from ttakit.models.torch_model import TorchModel

# the legacy ONNX exporter and torch.jit warn about their own deprecation
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SIZE = 16


class SmallCNN(torch.nn.Module):
    def __init__(self, classes: int = 5):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(8, classes)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv1(x)))
        h = torch.relu(self.conv2(h)).mean(dim=(2, 3))
        return self.fc(h) * 4.0  # logits spread enough that views disagree


class Unexportable(SmallCNN):
    """aten::i0 has no ONNX symbolic in the TorchScript-based exporter."""

    def forward(self, x):
        return super().forward(torch.special.i0(x))


def _model(cls=SmallCNN, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = cls()
    with torch.no_grad():  # non-trivial batch-norm statistics
        m.bn.running_mean.uniform_(-0.2, 0.2)
        m.bn.running_var.uniform_(0.5, 1.5)
    return m.eval()


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


@contextlib.contextmanager
def _no_fallback():
    """A context in which a RuntimeFallbackWarning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeFallbackWarning)
        yield


def _d4_both(runtime: str, n: int, batch_size: int):
    """D4 results of the eager model and of ``runtime`` (which must not fall back)."""
    model, x = _model(), _images(n)
    eager = ttakit.Classifier(model, "d4", data_layout="NHWC", batch_size=batch_size).run(x)
    with _no_fallback():
        clf = ttakit.Classifier(model, "d4", data_layout="NHWC", batch_size=batch_size, runtime=runtime)
        res = clf.run(x)
    assert clf.adapter.decisions == {(3, SIZE, SIZE): runtime}
    return clf, res, eager


def test_onnx_d4_equals_eager_and_runs_onnx():
    # 29 images x 8 views in forward passes of 48: 6 images a chunk, the last one 5
    clf, res, eager = _d4_both("onnx", 29, 48)
    assert isinstance(clf.adapter._chosen[(3, SIZE, SIZE)], OnnxModel)
    np.testing.assert_allclose(res.scores, eager.scores, atol=1e-4, rtol=0)
    np.testing.assert_allclose(res.probs, eager.probs, atol=1e-4, rtol=0)
    assert (res.labels == eager.labels).mean() >= 0.95  # a near-tie may flip; the probabilities agree
    assert res.forward_passes == eager.forward_passes == 29 * 8


@pytest.mark.parametrize("threads, spinning", [(1, True), (2, False)])
def test_onnx_session_follows_torch_threads_and_the_spinning_setting(monkeypatch, threads, spinning):
    # ONNX Runtime's own default is one thread per physical core, whatever torch.set_num_threads says
    monkeypatch.setattr(rt, "ONNX_SPINNING", spinning)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fast = rt.with_runtime(as_model(_model()), "onnx")
        fast(torch.rand(4, 3, SIZE, SIZE))
    finally:
        torch.set_num_threads(before)
    so = fast._chosen[(3, SIZE, SIZE)].session.get_session_options()
    assert so.intra_op_num_threads == threads and so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spinning else "0")


def test_onnx_dynamic_batch_and_new_shapes():
    model = _model()
    fast = rt.with_runtime(as_model(model), "onnx")
    eager = as_model(model)
    gen = torch.Generator().manual_seed(1)
    for n in (7, 1, 3, 16):  # the first decides; the others run on the exported session
        x = torch.rand(n, 3, SIZE, SIZE, generator=gen)
        torch.testing.assert_close(fast(x), eager(x), atol=1e-4, rtol=0)
    x = torch.rand(2, 3, 24, 20, generator=gen)  # another image size: exported again for it
    torch.testing.assert_close(fast(x), eager(x), atol=1e-4, rtol=0)
    assert fast.decisions == {(3, SIZE, SIZE): "onnx", (3, 24, 20): "onnx"}


def test_export_failure_warns_and_gives_eager_results():
    model, x = _model(Unexportable), _images(9)
    eager = ttakit.Classifier(model, "d4", data_layout="NHWC").run(x)
    with pytest.warns(RuntimeFallbackWarning, match=r"exporting to ONNX failed .*i0"):
        clf = ttakit.Classifier(model, "d4", data_layout="NHWC", runtime="onnx")
        res = clf.run(x)
    assert clf.adapter.decisions == {(3, SIZE, SIZE): "eager"}
    np.testing.assert_array_equal(res.probs, eager.probs)
    with _no_fallback():  # decided once: no second warning
        np.testing.assert_array_equal(clf.run(x).probs, eager.probs)


def test_mismatch_warns_and_gives_eager_results(monkeypatch):
    real = rt.export_onnx

    class Off(OnnxModel):  # an export whose outputs are off by 1e-3
        def forward(self, x):
            return super().forward(x) + 1e-3

    def export_off(eager, x):
        good = real(eager, x)
        return Off(good.session, layout=good.layout)

    monkeypatch.setattr(rt, "export_onnx", export_off)
    model, x = _model(), _images(11)
    eager = ttakit.Classifier(model, "d4", data_layout="NHWC", batch_size=16).run(x)
    with pytest.warns(RuntimeFallbackWarning, match=r"differ .* by up to 0\.001"):
        clf = ttakit.Classifier(model, "d4", data_layout="NHWC", batch_size=16, runtime="onnx")
        res = clf.run(x)
    assert clf.adapter.decisions == {(3, SIZE, SIZE): "eager"}
    np.testing.assert_array_equal(res.probs, eager.probs)


def test_max_difference_treats_nan_and_inf_as_values():
    a = torch.tensor([[1.0, float("nan"), float("inf")]])
    assert rt.max_difference(a, a.clone()) == 0.0
    assert rt.max_difference(a, torch.tensor([[1.0, 2.0, float("inf")]])) == float("inf")
    assert rt.max_difference(a, torch.tensor([[1.0, float("nan"), -float("inf")]])) == float("inf")
    assert rt.max_difference(a, torch.tensor([[1.5, float("nan"), float("inf")]])) == 0.5


def test_threads_share_one_export_and_get_eager_results(monkeypatch):
    calls = []
    real = rt.export_onnx

    def counted(eager, x):
        calls.append(x.shape)
        return real(eager, x)

    monkeypatch.setattr(rt, "export_onnx", counted)
    model, x = _model(), _images(40)
    eager = ttakit.Classifier(model, "identity + hflip + rot90", data_layout="NHWC", batch_size=24).run(x)
    clf = ttakit.Classifier(model, "identity + hflip + rot90", data_layout="NHWC", batch_size=24, runtime="onnx")
    parts = [slice(0, 13), slice(13, 27), slice(27, 40), slice(0, 40)]
    out: dict = {}
    barrier = threading.Barrier(len(parts))

    def work(i, s):
        barrier.wait()
        out[i] = clf.run(x[s]).probs

    threads = [threading.Thread(target=work, args=(i, s)) for i, s in enumerate(parts)]
    with _no_fallback():
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(calls) == 1  # the first batch is decided once, under the lock
    for i, s in enumerate(parts):
        np.testing.assert_allclose(out[i], eager.probs[s], atol=1e-4, rtol=0)


def test_runtime_is_a_parameter():
    from sklearn.base import clone

    model, x = _model(), _images(6)
    clf = ttakit.Classifier(model, "hflip", data_layout="NHWC", runtime="onnx")
    assert clf.get_params()["runtime"] == "onnx"
    assert isinstance(clf.adapter, rt.RuntimeModel)
    copy = clone(clf)
    assert copy.runtime == "onnx" and copy.adapter is not clf.adapter
    clf.set_params(runtime="eager")
    assert isinstance(clf.adapter, TorchModel)
    assert "runtime='onnx'" in repr(copy)
    with pytest.raises(ModelLoadError, match="runtime must be one of eager, onnx, compile"):
        ttakit.Classifier(model, runtime="tensorrt")
    with pytest.raises(ModelLoadError, match="for PyTorch models"):
        ttakit.Classifier(lambda a: a.reshape(len(a), -1)[:, :3], runtime="onnx")
    np.testing.assert_allclose(copy.run(x).probs, clf.run(x).probs, atol=1e-4, rtol=0)


def test_segmenter_runs_onnx():
    class Seg(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 6, 3, padding=1)
            self.b = torch.nn.Conv2d(6, 3, 3, padding=1)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    torch.manual_seed(0)
    model = Seg().eval()
    x = np.random.default_rng(2).random((5, 3, SIZE, SIZE), dtype=np.float32)
    eager = Segmenter(model, "d4").run(x)
    with _no_fallback():
        seg = Segmenter(model, "d4", runtime="onnx")
        res = seg.run(x)
    assert seg.get_params()["runtime"] == "onnx" and seg.adapter.decisions == {(3, SIZE, SIZE): "onnx"}
    np.testing.assert_allclose(res.probs, eager.probs, atol=1e-4, rtol=0)


def test_compile_failure_warns_and_gives_eager_results(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no backend for this test")

    monkeypatch.setattr(torch, "compile", broken)
    model, x = _model(), _images(5)
    eager = ttakit.Classifier(model, "d4", data_layout="NHWC").run(x)
    with pytest.warns(RuntimeFallbackWarning, match="torch.compile failed .*no backend for this test"):
        res = ttakit.Classifier(model, "d4", data_layout="NHWC", runtime="compile").run(x)
    np.testing.assert_array_equal(res.probs, eager.probs)


def test_compile_without_a_compiler_warns(monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CXX", raising=False)
    assert "C++ compiler" in rt.compile_unavailable(torch.device("cpu"))
    model, x = _model(), _images(3)
    with pytest.warns(RuntimeFallbackWarning, match="needs a C\\+\\+ compiler"):
        res = ttakit.Classifier(model, "hflip", data_layout="NHWC", runtime="compile").run(x)
    np.testing.assert_array_equal(res.probs, ttakit.Classifier(model, "hflip", data_layout="NHWC").run(x).probs)


@pytest.mark.skipif(os.environ.get("TTAKIT_TEST_COMPILE") != "1",
                    reason="torch.compile takes 30-60 s for a small CNN on these 2 CPUs; "
                           "set TTAKIT_TEST_COMPILE=1 to run it")
def test_compile_d4_equals_eager():  # pragma: no cover - opt-in
    _, res, eager = _d4_both("compile", 13, 40)  # the last chunk smaller: dynamic=True, no recompile needed
    np.testing.assert_allclose(res.probs, eager.probs, atol=1e-4, rtol=0)


def test_cli_predict_runtime(tmp_path, capsys):
    from PIL import Image

    torch.manual_seed(0)
    ts = tmp_path / "cnn.pt"
    torch.jit.script(_model()).save(str(ts))
    folder = tmp_path / "images"
    folder.mkdir()
    for i, arr in enumerate(_images(4, seed=3)):
        Image.fromarray(arr).save(folder / f"im{i}.png")
    outs = {}
    for runtime in ("eager", "onnx"):
        with _no_fallback():
            code = cli.main(["predict", str(ts), str(folder), "--policy", "d4", "--runtime", runtime])
        out, err = capsys.readouterr()
        assert code == 0, err
        outs[runtime] = list(csv.DictReader(io.StringIO(out)))
    assert [r["path"] for r in outs["eager"]] == [r["path"] for r in outs["onnx"]]
    for a, b in zip(outs["eager"], outs["onnx"]):
        for k in a:
            if k.startswith("prob"):
                assert abs(float(a[k]) - float(b[k])) <= 1e-4
    onnx_file = tmp_path / "cnn.onnx"
    torch.onnx.export(_model(), torch.rand(2, 3, SIZE, SIZE), str(onnx_file), dynamo=False)
    code = cli.main(["predict", str(onnx_file), str(folder), "--runtime", "onnx"])
    assert code != 0 and "is for PyTorch models" in capsys.readouterr().err


def test_cli_evaluate_runtime(tmp_path, capsys):
    torch.manual_seed(0)
    ts = tmp_path / "cnn.pt"
    torch.jit.script(_model()).save(str(ts))
    data = tmp_path / "data.npz"
    np.savez(data, x=_images(24, seed=4), y=np.random.default_rng(4).integers(0, 5, 24))
    reports = {}
    for runtime in ("eager", "onnx"):
        with _no_fallback():
            code = cli.main(["evaluate", str(ts), "--data", str(data), "--policy", "d4", "--runtime", runtime,
                             "--no-progress"])
        out, err = capsys.readouterr()
        assert code == 0, err
        reports[runtime] = [line for line in out.splitlines() if "/s)" not in line]  # timings differ
    assert any("accuracy" in line for line in reports["eager"]) and reports["onnx"] == reports["eager"]
