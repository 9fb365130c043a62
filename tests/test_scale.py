"""ttakit.scale without Ray: the manifest, how inputs are cut into blocks,
and the Ray Data step called as the plain callable it is (the Ray runs are
in test_scale_ray.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import ttakit
from ttakit.errors import UsageError
from ttakit.scale.manifest import MANIFEST, Manifest, decode_ranges, encode_ranges
from ttakit.scale.predictor import TTAPredictor, to_table
from ttakit.scale.sources import Block, plan, read_block
from ttakit.tasks.classification import policy_id

from scale_support import TinyCNN, png

pa = pytest.importorskip("pyarrow", reason="pyarrow (comes with the ray extra) is not installed")
pq = pytest.importorskip("pyarrow.parquet")

POLICY = "identity + hflip + vflip"


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return TinyCNN().eval()


# -- the manifest ---------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0, 500)))
def test_ranges_round_trip(numbers):
    text = encode_ranges(numbers)
    assert decode_ranges(text) == numbers
    assert len(text.split(",")) <= max(1, len(numbers))  # never longer than listing them


def test_manifest_resumes_and_refuses_another_job(tmp_path):
    job = {"model": "m.pt", "policy": "d4", "inputs": 10}
    m = Manifest.open(tmp_path / "out", job, blocks=3, inputs=10, listing_failures=[("gone.png", "no such file")])
    assert (tmp_path / "out" / MANIFEST).is_file() and not m.complete
    assert m.commit(1, 4, [("a", "bad")]) and not m.commit(1, 4, [("a", "bad")])  # a second answer counts once
    again = Manifest.open(tmp_path / "out", job, blocks=3, inputs=10)
    assert again.committed == {1} and again.written == 4
    assert again.all_failures() == [("gone.png", "no such file"), ("a", "bad")]
    with pytest.raises(UsageError, match="another job.*policy: 'd4' then, 'flips' now"):
        Manifest.open(tmp_path / "out", {**job, "policy": "flips"}, blocks=3, inputs=10)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.csv").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        Manifest.open(tmp_path / "busy", job, blocks=3, inputs=10)
    again.commit(0, 3, [])
    again.commit(2, 2, [])
    assert again.complete and json.loads((tmp_path / "out" / MANIFEST).read_text())["complete"]
    lines = again.write_failures().read_text().splitlines()
    assert lines == ["id,reason", "gone.png,no such file", "a,bad"]


# -- blocks ------------------------------------------------------------------------
def test_plan_cuts_every_source_into_blocks_the_same_way(tmp_path):
    rng = np.random.default_rng(0)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    files = [tree / f"a{i}.png" for i in range(5)] + [tree / "sub" / f"b{i}.png" for i in range(2)]
    for f in files:
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(f)
    listed = tmp_path / "list.txt"
    listed.write_text("# two files\ntree/a0.png\n\n" + str(files[1]) + "\n")
    x = rng.integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", x=x)
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(5)], "image": [png(a) for a in x[:5]]}),
                   tmp_path / "s.parquet", row_group_size=2)
    data = [tree, listed, tmp_path / "s.npz", tmp_path / "s.parquet"]
    p = plan(data, block_size=3, recursive=True)
    assert p.inputs == 7 + 7 + 5  # the two listed files are in the tree already: one input each
    assert [(b.kind, len(b)) for b in p.blocks] == [("files", 3), ("files", 3), ("files", 1), ("npz", 3),
                                                    ("npz", 3), ("npz", 1), ("parquet", 3), ("parquet", 2)]
    assert [b.index for b in p.blocks] == list(range(8))
    assert plan([listed], block_size=3).inputs == 2
    assert plan(data, block_size=3, recursive=True).digest == p.digest
    assert plan(data, block_size=3, recursive=False).digest != p.digest  # the sub-folder is left out
    # every input exactly once, by id, across the blocks
    ids = [i for b in p.blocks for i in read_block(Block.from_row(b.to_row()))[0]]
    assert len(ids) == len(set(ids)) == p.inputs
    assert ids[-5:] == [f"p{i}" for i in range(5)] and f"{tmp_path / 's.npz'}#6" in ids
    # the Parquet rows of a block that starts inside a row group
    _, values = read_block(p.blocks[-1])
    assert values == [png(a) for a in x[3:5]]


# -- the step, called directly -------------------------------------------------------------
def test_step_gives_the_classifier_results_and_fails_bad_rows_alone(net):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    ref = ttakit.Classifier(net, POLICY, data_layout="NHWC").run(x)
    step = TTAPredictor(net, POLICY)
    values = [png(a) for a in x]
    values[3] = b"not an image"
    values[5] = x[5]                         # an array among encoded files
    values[8] = png(x[8][:10])               # another size
    out = step({"id": np.array([f"i{i}" for i in range(12)], dtype=object), "image": np.array(values, dtype=object)})
    bad = {3, 8}
    assert list(out) == ["id", "label", "confidence", "entropy", "spread", "agreement", "probs", "policy_id", "error"]
    assert [i for i in range(12) if out["error"][i]] == sorted(bad)
    assert "not an image" in out["error"][3] and "10x16" in out["error"][8]
    good = [i for i in range(12) if i not in bad]
    np.testing.assert_allclose(out["probs"][good], ref.probs[good], atol=1e-6, rtol=0)
    np.testing.assert_array_equal(out["label"][good], ref.labels[good])
    np.testing.assert_allclose(out["agreement"][good], ref.agreement[good], atol=1e-6)
    np.testing.assert_allclose(out["confidence"][good], ref.probs[good, ref.labels[good]], atol=1e-6)
    assert (out["label"][sorted(bad)] == -1).all() and np.isnan(out["probs"][sorted(bad)]).all()
    assert set(out["policy_id"]) == {policy_id(ttakit.Classifier(net, POLICY))}
    table = to_table(out, out["error"] == "")
    assert table.num_rows == 10 and table.column("id").to_pylist() == [f"i{i}" for i in good]
    np.testing.assert_array_equal(np.stack(table.column("probs").to_numpy(zero_copy_only=False)), out["probs"][good])


def test_step_takes_read_images_style_batches(net):
    """``ray.data.read_images(include_paths=True)`` gives ``image`` arrays
    and ``path``; NaN pixels fail that row alone."""
    rng = np.random.default_rng(2)
    x = rng.random((4, 16, 16, 3)).astype(np.float32)
    x[2, 0, 0, 0] = np.nan
    out = TTAPredictor(net, "identity + hflip", size=(16, 16))({"image": x, "path": np.array(list("abcd"))})
    assert out["id"].tolist() == list("abcd")
    assert out["error"][2] and not any(out["error"][[0, 1, 3]])
    ref = ttakit.Classifier(net, "identity + hflip", data_layout="NHWC").predict_proba(x[[0, 1, 3]])
    np.testing.assert_allclose(out["probs"][[0, 1, 3]], ref, atol=1e-6, rtol=0)


# -- the command line's checks, before any work -----------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--engine", "ray"], "pass --out DIR"),
    (["--actors", "2", "--gpus-per-actor", "1"], "--actors, --gpus-per-actor are only for --engine ray"),
    (["--engine", "ray", "--out", "d", "--top-k", "3"], "--format and --top-k apply to the local engine"),
    (["--engine", "ray", "--out", "d", "--address", "auto", "--num-cpus", "2"], "a cluster joined with --address"),
    (["--engine", "ray", "--out", "d", "--cpus-per-actor", "0"], "expected a number > 0"),
])
def test_predict_refuses_options_that_do_not_fit_the_engine(argv, message, tmp_path, capsys):
    from ttakit.interfaces import cli

    code = cli.main(["predict", str(tmp_path / "m.pt"), str(tmp_path / "x.png"), *argv])
    assert code == 2 and message in capsys.readouterr().err
