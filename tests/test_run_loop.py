"""The one run loop (ttakit.engine.run) with tasks other than classification,
and the contracts the redesign promised: outputs whose size differs per view
or per input go through the same loop, results are written as chunks finish,
the Classifier is clonable, re-entrant and thread-safe, errors name the view
and the shape."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import ttakit
from ttakit import engine
from ttakit.errors import ModelError, ModelOutputError, PolicyError, ViewError
from ttakit.inputs import ImageInputs
from ttakit.models import CallableModel
from ttakit.policy import Policy
from ttakit.tasks import ResultBuffer, Task, TaskRun
from ttakit.views import View, hflip, rot90


def images(n=5, h=6, w=10, c=2, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).random((n, c, h, w), dtype=np.float32))


# -- a dense task: the output is the image itself, de-augmented per view -----------

class _DenseRun(TaskRun):
    def begin(self, x, start):
        self.sum, self.shapes, self.start = torch.zeros_like(x), [], start

    def add(self, i, out):
        self.shapes.append((i, tuple(out.shape)))
        back = self.views[i].invert_dense(out, tuple(self.sum.shape[-2:]))
        self.sum += back * self.weights[i]

    def end(self):
        self.task.seen.append((self.start, self.shapes))
        self.task.out.append(self.sum / sum(self.weights))

    def finish(self):
        return torch.cat(self.task.out)


class DenseTask(Task):
    def __init__(self):
        self.seen, self.out = [], []

    def start(self, views, weights, n):
        return _DenseRun(self, views, weights, n)


def test_outputs_of_different_sizes_per_view_pass_through_the_loop():
    # rot90 of a non-square input gives a (W, H) output: the loop must not stack views
    x = images()
    views = [ttakit.views.identity(), rot90(1), rot90(3), hflip()]
    task = DenseTask()
    model = CallableModel(lambda a: a * 2.0, array="torch")
    merged = engine.run(task, model, x, views, [1, 1, 1, 1], inputs=ImageInputs("NCHW"), batch_size=64)
    shapes = dict(task.seen[0][1])
    assert shapes[0] == (5, 2, 6, 10) and shapes[1] == (5, 2, 10, 6) and shapes[2] == (5, 2, 10, 6)
    # every view de-augmented back onto the input grid: the mean is the model's output on x
    torch.testing.assert_close(merged, x * 2.0)


# -- a record task: a variable number of boxes per input ------------------------------

class _BoxRun(TaskRun):
    def begin(self, x, start):
        self.size = tuple(x.shape[-2:])
        self.boxes = [[] for _ in range(x.shape[0])]
        self.start = start

    def add(self, i, records):
        assert len(records) == len(self.boxes)
        for k, rec in enumerate(records):
            if len(rec):
                self.boxes[k].append(np.asarray(self.views[i].invert_boxes(np.asarray(rec), self.size)))

    def end(self):
        for k, parts in enumerate(self.boxes):
            self.task.result[self.start + k] = np.concatenate(parts) if parts else np.zeros((0, 4))

    def finish(self):
        return self.task.result


class BoxTask(Task):
    output_structure = "records"

    def __init__(self):
        self.result = {}

    def start(self, views, weights, n):
        return _BoxRun(self, views, weights, n)


def bright_box_detector(batch: np.ndarray):
    """One box per pixel above 0.9 in channel 0 (so 0..many per image)."""
    out = []
    for img in batch:
        ys, xs = np.nonzero(img[0] > 0.9)
        out.append([[x, y, x + 1, y + 1] for y, x in zip(ys, xs)])
    return out


def test_records_of_variable_length_per_input_pass_through_the_loop():
    x = images(n=7, seed=3)
    views = [ttakit.views.identity(), hflip(), rot90(1)]
    res = engine.run(BoxTask(), CallableModel(bright_box_detector), x, views, [1, 1, 1],
                     inputs=ImageInputs("NCHW"), batch_size=4)
    counts = [len(np.nonzero(img[0] > 0.9)[0]) for img in x.numpy()]
    assert len(set(counts)) > 1  # really variable
    for k in range(len(x)):
        got = res[k]
        assert len(got) == 3 * counts[k]
        # every view's boxes came back to the same places as identity's
        ident = np.asarray(sorted(map(tuple, got[:counts[k]])))
        for v in range(1, 3):
            part = got[v * counts[k]:(v + 1) * counts[k]]
            np.testing.assert_allclose(np.asarray(sorted(map(tuple, part))), ident, atol=1e-9)


def test_record_task_refuses_a_model_that_returns_an_array():
    with pytest.raises(ModelOutputError, match="one record per input"):
        engine.run(BoxTask(), CallableModel(lambda a: a[:, 0, 0, :4]), images(), [hflip()], [1],
                   inputs=ImageInputs("NCHW"))


# -- memory: no views x batch stack, results preallocated ---------------------------

def test_a_chunk_holds_one_forward_of_outputs_not_views_times_batch():
    # with a full chunk, each view is its own forward: the model never sees V x n rows
    sizes = []

    def model(a):
        sizes.append(len(a))
        return a.reshape(len(a), -1)[:, :3]

    ttakit.Classifier(model, "d4", batch_size=8).run(images(n=20, h=6, w=6).numpy())
    assert max(sizes) <= 8 and sum(sizes) == 8 * 20


def test_result_buffer_grows_and_preallocates():
    b = ResultBuffer(None, (3,), np.float32)
    for s in range(0, 5000, 700):
        b.write(s, np.full((min(700, 5000 - s), 3), s, np.float32))
    out = b.result()
    assert out.shape == (5000, 3) and out[4999, 0] == 4900
    fixed = ResultBuffer(10, (), np.int64)
    fixed.write(0, np.arange(10))
    assert fixed.capacity == 10 and fixed.result().tolist() == list(range(10))


def test_streaming_unknown_length_gives_the_same_result_as_an_array():
    x = (np.random.default_rng(1).random((45, 3, 6, 6)) * 255).astype(np.uint8)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(108, 4))
    clf = ttakit.Classifier(model, "d4", batch_size=16)
    whole = clf.run(x)
    streamed = clf.run(iter([x[i:i + 7] for i in range(0, 45, 7)]))
    np.testing.assert_allclose(streamed.probs, whole.probs, atol=1e-6)
    np.testing.assert_allclose(streamed.spread, whole.spread, atol=1e-6)
    np.testing.assert_array_equal(streamed.labels, whole.labels)


# -- errors name the view and the shape --------------------------------------------

class Broken(View):
    name = "broken"

    def apply(self, x):
        raise ZeroDivisionError("boom")


def test_a_failing_view_is_named_with_the_input_shape():
    with pytest.raises(ViewError, match=r"view broken failed on inputs of shape \(5, 2, 6, 10\)") as e:
        ttakit.Classifier(lambda a: a.reshape(len(a), -1)[:, :3], [Broken()]).run(images())
    assert isinstance(e.value.__cause__, ZeroDivisionError)


def test_a_failing_model_is_named_with_the_views_and_shape():
    def model(a):
        raise KeyError("no such layer")

    with pytest.raises(ModelError, match=r"shape \(10, 2, 6, 10\).*views identity, hflip.*KeyError") as e:
        ttakit.Classifier(model, "identity + hflip").run(images())
    assert isinstance(e.value.__cause__, KeyError) and isinstance(e.value, RuntimeError)


# -- scikit-learn conventions, re-entrancy, threads -----------------------------------

def small_torch_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 5), torch.nn.Dropout(0.5))


def test_classifier_keeps_its_arguments_and_clones():
    sk_base = pytest.importorskip("sklearn.base")
    model = small_torch_model()
    clf = ttakit.Classifier(model, "identity + hflip", "gmean", data_layout="NHWC", batch_size=32)
    params = clf.get_params()
    assert params["policy"] == "identity + hflip" and params["merge"] == "gmean" and params["model"] is model
    assert params["data_layout"] == "NHWC" and params["batch_size"] == 32
    twin = sk_base.clone(clf)
    assert twin.get_params()["policy"] == "identity + hflip"
    x = (np.random.default_rng(0).random((9, 8, 8, 3)) * 255).astype(np.uint8)
    np.testing.assert_allclose(twin.predict_proba(x), clf.predict_proba(x), atol=1e-6)
    clf.set_params(policy="d4")
    assert clf.run(x).forward_passes == 8 * 9
    with pytest.raises(ttakit.InputError, match="no parameter 'polcy'"):
        clf.set_params(polcy="d4")


def test_output_kind_is_decided_per_call_not_remembered():
    probs_model = lambda a: torch.softmax(torch.as_tensor(a.reshape(len(a), -1)[:, :4]), -1).numpy()
    clf = ttakit.Classifier(probs_model, "hflips")
    x = images(n=4, h=5, w=5, c=3).numpy()
    assert clf.run(x).output_kind == "probs"
    clf.set_params(model=lambda a: a.reshape(len(a), -1)[:, :4] * 10)
    assert clf.run(x).output_kind == "logits"


def test_classifier_is_thread_safe():
    model = small_torch_model()
    model.train()  # dropout on: any call that ran in train mode would differ
    clf = ttakit.Classifier(model, "d4", data_layout="NHWC", batch_size=16)
    rng = np.random.default_rng(2)
    inputs = [(rng.random((13 + k, 8, 8, 3)) * 255).astype(np.uint8) for k in range(8)]
    serial = [clf.predict_proba(x) for x in inputs]
    barrier = threading.Barrier(8)

    def call(k):
        barrier.wait()
        return [clf.predict_proba(inputs[k]) for _ in range(3)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(8)))
    for k in range(8):
        for got in results[k]:
            np.testing.assert_allclose(got, serial[k], atol=1e-6)
    assert model.training  # the caller's mode is restored


# -- policy: immutable, equality covers the merge, algebra refuses to drop it ---------

def test_policy_is_immutable_and_its_merge_counts_in_equality():
    from ttakit.merge import LearnedMerge, TemperatureScaled, Mean

    p = Policy.parse("identity + hflip")
    with pytest.raises(AttributeError, match="immutable"):
        p.merge = Mean()
    tuned = p.with_merge(TemperatureScaled(Mean(), 0.8))
    assert tuned != p and tuned == p.with_merge(TemperatureScaled(Mean(), 0.8))
    assert hash(tuned) == hash(p.with_merge(TemperatureScaled(Mean(), 0.8)))
    # a temperature holds nothing about particular views: kept by algebra when both agree
    assert (tuned + tuned).merge == tuned.merge and tuned.scaled(2).merge == tuned.merge
    learned = p.with_merge(LearnedMerge([0.3, 0.7], 1.0, p.views))
    with pytest.raises(PolicyError, match="carries a tuned merge"):
        learned + Policy.parse("vflip")
    with pytest.raises(PolicyError, match="carries a tuned merge"):
        learned * Policy.parse("scale(0.9, 1.1)")
    with pytest.raises(PolicyError, match="carries a tuned merge"):
        tuned + p


def test_learned_weights_are_keyed_by_view_not_position():
    from ttakit.merge import LearnedMerge

    a, b = ttakit.views.identity(), hflip()
    m = LearnedMerge([[1.0], [3.0]], 1.0, [a, b])
    outs = torch.log_softmax(torch.randn(2, 6, 1), -1)  # any two views
    # the same views in the other order give the same merge
    fwd = m(outs, [1, 1], "logits", [a, b])
    rev = m(outs.flip(0), [1, 1], "logits", [b, a])
    torch.testing.assert_close(fwd, rev)
    with pytest.raises(PolicyError, match="no weights for view vflip"):
        m(outs, [1, 1], "logits", [a, ttakit.views.vflip()])


def test_version_1_policy_files_still_load(tmp_path):
    text = ("format: ttakit.policy\nversion: 1\nviews:\n- {view: identity, weight: 1.0}\n"
            "- {view: hflip, weight: 1.0}\n- {view: identity, weight: 1.0}\n"
            "aggregation: {merge: learned, weights: [0.25, 0.75], temperature: 0.5}\n")
    path = tmp_path / "old.yaml"
    path.write_text(text)
    p = Policy.load(path)
    assert p.merge.views == (ttakit.views.identity(), hflip())
    np.testing.assert_allclose(p.merge.weights, [0.25, 0.75])
    assert Policy.load(p.save(tmp_path / "new.yaml")) == p


def test_register_merge_makes_a_merge_usable_by_name_and_in_files(tmp_path):
    from ttakit.merge import MERGES, Merge, register_merge
    from ttakit.merge.probabilities import Mean

    class Median(Merge):
        name = "median_test"

        def accumulator(self, views, weights, kind, dim):
            return Mean().accumulator(views, weights, kind, dim)  # stand-in arithmetic

    try:
        register_merge(Median)
        with pytest.raises(PolicyError, match="already exists"):
            register_merge(Median)
        p = Policy.parse("identity + hflip").with_merge(Median())
        assert Policy.load(p.save(tmp_path / "p.json")) == p
        x = images(n=4, h=5, w=5, c=3).numpy()
        model = lambda a: a.reshape(len(a), -1)[:, :4]
        np.testing.assert_allclose(ttakit.Classifier(model, "hflips", "median_test").predict_proba(x),
                                   ttakit.Classifier(model, "hflips", "mean").predict_proba(x), atol=1e-6)
    finally:
        MERGES.pop("median_test", None)


def test_the_saved_tuning_policies_in_docs_load():
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "docs" / "results" / "tuning"
    files = sorted(folder.glob("*.yaml"))
    assert files
    for f in files:
        p = Policy.load(f)
        assert p.merge is not None and Policy.load(p.save(f"/tmp/ttakit-{f.name}")) == p


def test_sklearn_flattens_rows_in_the_data_layout():
    # an RGB model fitted on channel-last rows (images.reshape(n, -1) of NHWC data)
    lm = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    x = rng.random((300, 4, 4, 3)).astype(np.float32)
    y = (x[..., 0].mean((1, 2)) > x[..., 2].mean((1, 2))).astype(int)  # red vs blue
    est = lm.LogisticRegression(max_iter=500).fit(x.reshape(len(x), -1), y)
    alone = (est.predict(x.reshape(len(x), -1)) == y).mean()
    report = ttakit.evaluate(est, x, y, "identity", data_layout="NHWC")
    assert alone > 0.9
    assert report.policy_metrics["accuracy"] == pytest.approx(alone)
