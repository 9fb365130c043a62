"""ttakit on a local Ray with 2 CPUs (the ray extra): ``ttakit predict
--engine ray`` gives exactly the Classifier's results, resumes after its
driver is SIGKILLed with every input exactly once, and reports a corrupt
image by id while writing the rest; the Ray Data step in a pipeline of
one's own.

One Ray is started for the module (start-up takes seconds); the jobs join
it with --address, as they would join a cluster. The models are tiny so
that Ray's own costs dominate, and the whole module stays well under a
minute of model time.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ttakit[ray]')")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import ttakit  # noqa: E402
from ttakit.interfaces import cli  # noqa: E402
from ttakit.scale import predict_dataset  # noqa: E402
from ttakit.scale.manifest import FAILURES, MANIFEST, decode_ranges  # noqa: E402
from ttakit.tasks.classification import policy_id  # noqa: E402

from scale_support import N_CLASSES, TinyCNN, png  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

POLICY = "identity + hflip + vflip"


@pytest.fixture(scope="module")
def ray_address():
    ctx = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    # Ray Data sets up its logging on first use, holding on to sys.stderr as it is then: do it here, not
    # inside a test whose captured stderr is closed when it ends
    ray.data.range(1).take_all()
    try:
        yield ctx.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    tiny = TinyCNN().eval()
    torch.jit.script(tiny).save(str(d / "tiny.pt"))
    torch.manual_seed(1)  # ~0.1 s a block on one core: slow enough to kill the job halfway
    torch.jit.script(TinyCNN(16, 1).eval()).save(str(d / "slower.pt"))
    return {"tiny": d / "tiny.pt", "slower": d / "slower.pt"}


def predict(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_results(folder: Path) -> tuple[list[str], np.ndarray, dict]:
    """Every part file's ids, probabilities and the other columns."""
    table = pq.read_table(folder)
    probs = np.stack(table.column("probs").to_numpy(zero_copy_only=False)) if table.num_rows else np.zeros((0, 0))
    return table.column("id").to_pylist(), probs, {c: table.column(c).to_numpy() for c in
                                                   ("label", "entropy", "agreement", "spread")}


def in_order(ids: list[str], values: np.ndarray, wanted: list[str]) -> np.ndarray:
    where = {k: i for i, k in enumerate(ids)}
    return values[[where[k] for k in wanted]]


def test_job_of_20000_images_gives_the_classifier_results(ray_address, models, tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20_000, 32, 32, 3), dtype=np.uint8)
    ids = [f"img{i:05d}" for i in range(len(x))]
    shards = tmp_path / "shards"
    shards.mkdir()
    for s in range(2):
        part = slice(s * 10_000, (s + 1) * 10_000)
        np.savez(shards / f"shard{s}.npz", x=x[part], ids=np.array(ids[part]))
    out = tmp_path / "preds"
    code, _, err = predict(capsys, "predict", models["tiny"], shards, "--policy", POLICY, "--engine", "ray",
                           "--address", ray_address, "--block-size", 2048, "--out", out, "--no-progress")
    assert code == 0, err
    assert "wrote 20000 predictions" in err and "(10 blocks;" in err
    got_ids, probs, cols = read_results(out)
    assert sorted(got_ids) == ids  # every input exactly once
    clf = ttakit.Classifier(str(models["tiny"]), POLICY, data_layout="NHWC")
    ref = clf.run(x)
    np.testing.assert_allclose(in_order(got_ids, probs, ids), clf.predict_proba(x), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(in_order(got_ids, cols["label"], ids), ref.labels)
    for k in ("entropy", "agreement", "spread"):
        np.testing.assert_allclose(in_order(got_ids, cols[k], ids), getattr(ref, k), rtol=0, atol=1e-5)
    table = pq.read_table(out, columns=["policy_id"])
    assert set(table.column("policy_id").to_pylist()) == {policy_id(clf)}
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["complete"] and manifest["committed"] == "0-9" and manifest["written"] == 20_000
    assert (out / FAILURES).read_text() == "id,reason\n"
    # run again: nothing left to do, Ray not even needed
    code, _, err = predict(capsys, "predict", models["tiny"], shards, "--policy", POLICY, "--engine", "ray",
                           "--address", ray_address, "--block-size", 2048, "--out", out, "--no-progress")
    assert code == 0 and "10 of them committed by an earlier run" in err
    # the same folder for another policy is refused, not mixed
    code, _, err = predict(capsys, "predict", models["tiny"], shards, "--policy", "d4", "--engine", "ray",
                           "--address", ray_address, "--block-size", 2048, "--out", out)
    assert code == 2 and "holds the results of another job (policy:" in err


def test_driver_killed_at_a_random_block_resumes_every_input_exactly_once(ray_address, models, tmp_path, capsys):
    seed = random.randrange(1 << 30)
    blocks = 24
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (blocks * 125, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "shard.npz", x=x)
    ids = [f"{tmp_path / 'shard.npz'}#{i}" for i in range(len(x))]
    out = tmp_path / "preds"
    argv = ["predict", models["slower"], tmp_path / "shard.npz", "--policy", POLICY, "--engine", "ray",
            "--address", ray_address, "--block-size", 125, "--out", out, "--no-progress"]
    kill_after = random.Random(seed).randint(1, blocks // 2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(ttakit.__file__).parents[1]),
                                                                      os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "ttakit", *map(str, argv)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    committed: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                committed = decode_ranges(json.loads((out / MANIFEST).read_text())["committed"])
            except (OSError, ValueError, KeyError):  # not written yet (never half-written: it is atomic)
                pass
            if len(committed) >= kill_after:
                proc.kill()  # SIGKILL: no cleanup of any kind
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -9, f"seed {seed}: the driver ended before the kill: {err.decode()[-2000:]}"
    committed = decode_ranges(json.loads((out / MANIFEST).read_text())["committed"])
    assert kill_after <= len(committed) < blocks, f"seed {seed}"

    code, _, err = predict(capsys, *argv)
    assert code == 0, err
    resumed = int(re.search(r"(\d+) of them committed by an earlier run", err).group(1))
    assert resumed == len(committed), f"seed {seed}: {err}"
    got_ids, probs, _ = read_results(out)
    assert len(got_ids) == len(set(got_ids)) == len(ids) and set(got_ids) == set(ids), f"seed {seed}"
    ref = ttakit.Classifier(str(models["slower"]), POLICY, data_layout="NHWC").predict_proba(x)
    np.testing.assert_allclose(in_order(got_ids, probs, ids), ref, rtol=0, atol=1e-6, err_msg=f"seed {seed}")
    assert not list(out.glob(".*.tmp"))


def test_corrupt_image_in_a_shard_is_reported_and_the_rest_written(ray_address, models, tmp_path, capsys):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    images = [png(a) for a in x[:30]]
    images[4] = b"\x89PNG not really"
    images[17] = images[17][:60]  # truncated after the header
    pq.write_table(pa.table({"id": [f"row{i}" for i in range(30)], "image": images}), tmp_path / "shard.parquet",
                   row_group_size=8)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    files = [tree / f"f{i}.png" for i in range(5)] + [tree / "sub" / f"g{i}.png" for i in range(5)]
    for f, a in zip(files, x[30:]):
        Image.fromarray(a).save(f)
    files[2].write_bytes(b"broken")
    listing = tmp_path / "more.txt"
    listing.write_text("tree/f0.png\nmissing.png\n")
    out = tmp_path / "preds"
    code, _, err = predict(capsys, "predict", models["tiny"], tmp_path / "shard.parquet", tree, listing, "-r",
                           "--policy", POLICY, "--engine", "ray", "--address", ray_address, "--block-size", 7, "--actors", 1,
                           "--out", out, "--no-progress")
    assert code == 3, err
    with open(out / FAILURES, newline="") as f:
        failures = {r["id"]: r["reason"] for r in csv.DictReader(f)}
    assert set(failures) == {"row4", "row17", str(files[2]), str(tmp_path / "missing.png")}
    assert all(failures.values()) and "no such file" in failures[str(tmp_path / "missing.png")]
    assert "ttakit: cannot read row4:" in err and "4 of 41 inputs could not be read" in err, err
    got_ids, probs, _ = read_results(out)
    good_rows = [i for i in range(30) if i not in (4, 17)]
    good_files = [i for i in range(10) if i != 2]
    want = [f"row{i}" for i in good_rows] + [str(files[i]) for i in good_files]
    assert sorted(got_ids) == sorted(want)
    ref = ttakit.Classifier(str(models["tiny"]), POLICY, data_layout="NHWC").predict_proba(
        np.concatenate([x[good_rows], x[30:][good_files]]))
    np.testing.assert_allclose(in_order(got_ids, probs, want), ref, rtol=0, atol=1e-6)


def test_the_ray_data_step_in_a_pipeline_of_ones_own(ray_address, models):
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (300, 16, 16, 3), dtype=np.uint8)
    ds = ray.data.from_items([{"id": f"k{i}", "image": png(a)} for i, a in enumerate(x)])
    preds = predict_dataset(ds, str(models["tiny"]), POLICY, actors=1, images_per_call=64)
    rows = preds.take_all()
    assert sorted(r["id"] for r in rows) == sorted(f"k{i}" for i in range(300))
    assert all(r["error"] == "" for r in rows)
    ref = ttakit.Classifier(str(models["tiny"]), POLICY, data_layout="NHWC").run(x)
    got = np.stack([r["probs"] for r in sorted(rows, key=lambda r: int(r["id"][1:]))])
    np.testing.assert_allclose(got, ref.probs, rtol=0, atol=1e-6)
    assert {r["policy_id"] for r in rows} == {policy_id(ttakit.Classifier(str(models["tiny"]), POLICY))}


def test_a_model_that_fails_stops_the_job_with_one_clear_line(ray_address, tmp_path, capsys):
    class OneChannel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, N_CLASSES, 3)

        def forward(self, x):
            return self.conv(x).mean(dim=(2, 3))

    torch.jit.script(OneChannel()).save(str(tmp_path / "gray.pt"))
    np.savez(tmp_path / "s.npz", x=np.zeros((10, 8, 8, 3), np.uint8))
    code, _, err = predict(capsys, "predict", tmp_path / "gray.pt", tmp_path / "s.npz", "--engine", "ray",
                           "--address", ray_address, "--actors", 1, "--out", tmp_path / "out", "--no-progress")
    assert code == 2
    assert "ttakit: error: the model failed on the images of block 0 (RuntimeError:" in err
    assert "--model-layout" in err and "Traceback" not in err
    assert decode_ranges(json.loads((tmp_path / "out" / MANIFEST).read_text())["committed"]) == set()


# ../shared beside the checkout, or where TTAKIT_MODELS points (a worktree elsewhere)
RESNETS = Path(os.environ.get("TTAKIT_MODELS") or Path(__file__).resolve().parents[2] / "shared" / "models"
               / "cifar10-resnet")


@pytest.mark.skipif(not (RESNETS / "resnet20-12fca82f.th").is_file(),
                    reason="needs the ResNet-20 checkpoint of ../shared/models/cifar10-resnet (or $TTAKIT_MODELS)")
def test_a_zoo_model_runs_with_its_normalisation_and_class_names(ray_address, tmp_path, capsys, monkeypatch):
    from ttakit.datasets import CIFAR10_CLASSES
    from ttakit.zoo import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD, load_cifar_resnet

    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", x=x)
    monkeypatch.delenv("TTAKIT_MODELS", raising=False)
    out = tmp_path / "preds"
    code, _, err = predict(capsys, "predict", "zoo:resnet20", tmp_path / "s.npz", "--weights", RESNETS, "--policy",
                           POLICY, "--engine", "ray", "--address", ray_address, "--actors", 1, "--out", out,
                           "--no-progress")
    assert code == 0, err
    ids = [f"{tmp_path / 's.npz'}#{i}" for i in range(len(x))]
    got_ids, probs, cols = read_results(out)
    want = ttakit.Classifier(load_cifar_resnet(20, root=RESNETS), POLICY, data_layout="NHWC",
                             preprocess=ttakit.Normalize(CIFAR_RESNET_MEAN, CIFAR_RESNET_STD), output="logits").run(x)
    np.testing.assert_allclose(in_order(got_ids, probs, ids), want.probs, rtol=0, atol=1e-6)
    names = pq.read_table(out, columns=["id", "class"]).to_pydict()
    assert [names["class"][names["id"].index(i)] for i in ids] == [CIFAR10_CLASSES[k] for k in want.labels]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["job"]["model"] == "zoo:resnet20" and manifest["job"]["weights"].endswith("resnet20-12fca82f.th")
    # the same folder for the other zoo model is another job; an unknown one is refused before Ray is asked
    code, _, err = predict(capsys, "predict", "zoo:resnet32", tmp_path / "s.npz", "--weights", RESNETS, "--engine",
                           "ray", "--address", ray_address, "--out", out, "--policy", POLICY)
    assert code == 2 and "holds the results of another job" in err
    code, _, err = predict(capsys, "predict", "zoo:resnet99", tmp_path / "s.npz", "--engine", "ray", "--out",
                           tmp_path / "other")
    assert code == 2 and "unknown zoo model 'zoo:resnet99'; available: zoo:resnet20, zoo:resnet32" in err
