"""Hardening of the file layer and the command line: no input can hurt it.

Each test is one case of the hardening issue: work bounded before decoding
(pixel limit, --size cap), image modes read correctly or refused by name,
lossy conversions said once, labels from the model's class names, outputs
written atomically and never over an input, every unreadable path named
(exit 3), and one-line errors naming flags instead of tracebacks.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ttakit
from ttakit.errors import InputError
from ttakit.interfaces import cli
from ttakit.io import images, load_labelled, predict_files
from ttakit.io.images import ImageStream, read_image

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Net(torch.nn.Module):
    def __init__(self, channels=3, classes=4):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, classes, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "m.pt"
    torch.jit.script(Net().eval()).save(str(path))
    return path


def _rgb(path, rng, size=(8, 8)):
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def good(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "good"
    d.mkdir()
    return [_rgb(d / f"g{i}.png", rng) for i in range(2)]


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _png_header(w, h) -> bytes:
    """A PNG whose header says w x h (8-bit gray) with no pixel data: cheap
    to write, costly to decode."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


# -- unbounded work -------------------------------------------------------------------------
def test_pixel_limit_is_checked_from_the_header(model, good, tmp_path, capsys, recwarn):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(13000, 13000))  # 169 megapixels
    code, out, err = run(capsys, "predict", model, *good, bomb)
    assert code == 3 and "Traceback" not in err
    assert f"cannot read {bomb}: 13000x13000 is 169.0 megapixels, over the limit of 40 megapixels" in err
    assert "--max-pixels 40000000" in err
    assert [r.split(",")[0] for r in out.splitlines()[1:]] == [str(p) for p in good]
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]
    # the limit is an option; the library names its parameter
    small = tmp_path / "small.png"
    _rgb(small, np.random.default_rng(1), (20, 20))
    code, _, err = run(capsys, "predict", model, *good, small, "--max-pixels", "399", "--size", "8")
    assert code == 3 and "over the limit" in err and "--max-pixels 399" in err
    with pytest.raises(images.ImageTooLarge, match="max_pixels=399"):
        read_image(small, max_pixels=399)


def test_size_is_capped(model, good, capsys):
    code, out, err = run(capsys, "predict", model, *good, "--size", "100000")
    assert code == 2 and out == "" and "Traceback" not in err
    assert "--size 100000 100000" in err and "--max-pixels" in err
    with pytest.raises(InputError, match="max_pixels="):
        predict_files(Net(), good, size=(100000, 100000))


def test_stream_batches_are_bounded_in_bytes(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    paths = [_rgb(tmp_path / f"{i}.png", rng, (32, 32)) for i in range(5)]
    monkeypatch.setattr(images, "CHUNK_BYTES", 2 * 32 * 32 * 3)
    assert [len(b) for b in ImageStream(paths)] == [2, 2, 1]


# -- silent wrong results ------------------------------------------------------------------
def test_sixteen_bit_and_float_images_are_read_in_range(model, good, tmp_path, capsys):
    rng = np.random.default_rng(3)
    v16 = rng.integers(0, 65536, (8, 8), dtype=np.uint16)
    Image.fromarray(v16).save(tmp_path / "s16.png")
    assert Image.open(tmp_path / "s16.png").mode in ("I;16", "I")
    want = np.round(v16 / 65535 * 255).astype(np.uint8)
    got = read_image(tmp_path / "s16.png")
    np.testing.assert_array_equal(got[..., 0], want)
    np.testing.assert_array_equal(got[..., 0], got[..., 2])
    Image.fromarray(v16.astype(np.int32), "I").save(tmp_path / "i32.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "i32.tif", "L")[..., 0], want)

    vf = rng.random((8, 8)).astype(np.float32)
    Image.fromarray(vf, "F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif", "L")[..., 0], np.round(vf * 255).astype(np.uint8))
    Image.fromarray(vf * 7, "F").save(tmp_path / "big.tif")
    with pytest.raises(InputError, match=r"mode F\) must hold values in \[0, 1\]"):
        read_image(tmp_path / "big.tif")
    code, out, err = run(capsys, "predict", model, *good, tmp_path / "s16.png", tmp_path / "big.tif")
    assert code == 3 and f"cannot read {tmp_path / 'big.tif'}: a floating-point image" in err
    assert len(out.splitlines()) == 4


def test_lossy_conversions_are_counted_and_said_once(model, good, tmp_path, capsys):
    rng = np.random.default_rng(4)
    px = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    for i in range(2):
        Image.fromarray(px, "RGBA").save(tmp_path / f"a{i}.png")
    Image.fromarray(px[..., :3]).convert("CMYK").save(tmp_path / "c.tif")
    frames = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(5)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    files = [*good, tmp_path / "a0.png", tmp_path / "a1.png", tmp_path / "c.tif", tmp_path / "anim.gif"]
    pred = predict_files(Net(), files, "identity")
    assert {k: len(v) for k, v in pred.notes.items()} == {"alpha": 2, "cmyk": 1, "animated": 1}
    assert pred.notes["animated"] == [(str(tmp_path / "anim.gif"), 5)]
    line = "2 images had an alpha channel (dropped), 1 CMYK (converted to RGB), 1 animated (first frame of 5 used)"
    assert pred.describe_notes() == line
    code, out, err = run(capsys, "predict", model, *files, "-f", "json")
    assert code == 0 and err.count(line) == 1
    assert json.loads(out)["summary"]["converted"]["alpha"] == [str(tmp_path / "a0.png"), str(tmp_path / "a1.png")]


def _cifar_folder(root, names):
    rng = np.random.default_rng(5)
    for c in names:
        (root / c).mkdir(parents=True)
        for i in range(2):
            _rgb(root / c / f"{i}.png", rng, (32, 32))
    return root


def test_class_folders_are_labelled_by_the_models_classes(tmp_path, model, capsys):
    root = _cifar_folder(tmp_path / "data", ["cat", "dog"])
    from ttakit.datasets import CIFAR10_CLASSES

    names = list(CIFAR10_CLASSES)
    data = load_labelled(str(root), classes=names)
    assert data.y.tolist() == [3, 3, 5, 5] and data.classes == names
    with pytest.warns(ttakit.errors.TTAKitWarning, match=r"sorted sub-folder names' positions \(cat=0, dog=1\)"):
        assert load_labelled(str(root)).y.tolist() == [0, 0, 1, 1]
    with pytest.raises(InputError, match="'dog' name no class of the model; its classes are cat, bird"):
        load_labelled(str(root), classes=["cat", "bird"])
    # the command line: --classes FILE, and its warning as one line
    cls = tmp_path / "classes.txt"
    cls.write_text("cat\nbird\n")
    code, out, err = run(capsys, "evaluate", model, "--data", root, "--classes", cls, "--no-progress")
    assert code == 2 and "name no class" in err and "cat, bird" in err
    code, out, err = run(capsys, "evaluate", model, "--data", root, "--no-progress")
    assert code == 0, err
    assert "ttakit: warning: " in err and "--classes" in err and ".py" not in err
    assert sum(line.startswith("ttakit: warning:") for line in err.splitlines()) == 1


def test_zoo_models_label_class_folders_with_cifar_names():
    from ttakit.interfaces.cli.model_data import model_classes

    class Args:
        classes = None
        model = "zoo:resnet20"

    assert model_classes(Args())[3] == "cat" and len(model_classes(Args())) == 10


# -- lost work -----------------------------------------------------------------------------
def test_names_that_are_not_utf8_and_atomic_output(model, good, tmp_path, capsys, monkeypatch):
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.png"))
    _rgb(odd, np.random.default_rng(6))
    out_csv = tmp_path / "x.csv"
    out_csv.write_text("earlier contents\n")
    code, out, err = run(capsys, "predict", model, odd, *good, "--out", out_csv)
    assert code == 0, err
    text = out_csv.read_text(encoding="utf-8")
    assert "caf\\xe9.png" in text and len(text.splitlines()) == 4
    code, out, err = run(capsys, "predict", model, odd, "-f", "json")
    assert code == 0 and json.loads(out)["results"][0]["path"].endswith("caf\\xe9.png")
    # a writer failing half-way leaves the earlier file as it was, and no temporary file
    from ttakit import files

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", boom)
    code, _, err = run(capsys, "predict", model, *good, "--out", out_csv)
    assert code == 2 and f"cannot write {out_csv}: No space left on device" in err
    assert out_csv.read_text(encoding="utf-8") == text
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_out_that_is_an_input_is_refused(model, good, capsys):
    before = good[0].read_bytes()
    for out in (good[0], good[0].parent / "new.png"):
        code, _, err = run(capsys, "predict", model, good[0].parent, "--out", out)
        assert code == 2 and "is one of the input images" in err
    assert good[0].read_bytes() == before and not (good[0].parent / "new.png").exists()


def test_unlistable_paths_are_named_and_the_others_predicted(model, good, tmp_path, capsys, monkeypatch):
    d = good[0].parent
    (d / "loop.png").symlink_to(d / "loop.png")
    (d / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (d / "sub").mkdir()
    _rgb(d / "sub" / "deep.png", np.random.default_rng(7))
    (d / "locked").mkdir()
    (d / "sub" / "up").symlink_to(d)  # a folder link back up: a loop when recursive
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(images.os, "scandir", scandir)
    long_name = tmp_path / ("x" * 300 + ".png")
    code, out, err = run(capsys, "predict", model, d, long_name, "--recursive")
    assert code == 3 and "Traceback" not in err
    for path, why in ((d / "loop.png", "symbolic link loop"), (d / "dangling.png", "dangling symbolic link"),
                      (d / "locked", "Permission denied"), (d / "sub" / "up", "symbolic link loop"),
                      (long_name, "File name too long")):
        assert f"cannot read {path}: " in err and why in err.split(f"cannot read {path}: ")[1].splitlines()[0]
    assert [r.split(",")[0] for r in out.splitlines()[1:]] == [*map(str, good), str(d / "sub" / "deep.png")]


def test_stdout_failure_is_one_line(model, good, capsys, monkeypatch):
    class Full(io.StringIO):
        def write(self, s):
            raise OSError(28, "No space left on device")

        def fileno(self):
            raise io.UnsupportedOperation

    monkeypatch.setattr(sys, "stdout", Full())
    code = cli.main(["predict", str(model), *map(str, good), "--mean", "0", "--std", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == ("ttakit: error: cannot write to standard output: No space left on "
                                         "device; use --out FILE")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_dev_full_in_a_process(model, good):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "ttakit", "predict", str(model), *map(str, good)],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().endswith("No space left on device; use --out FILE")
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


# -- tracebacks where a clear error belongs -------------------------------------------------
@pytest.mark.parametrize("content, why", [
    (b"", "is not a .npz file (it is empty)"),
    (b"garbage" * 10, "is not a .npz file (no zip header)"),
    ("pickled", "pickled data"),
    ("one", None),
    ("strings", "labels are names"),
])
def test_bad_npz_is_one_line_naming_the_file(model, tmp_path, capsys, content, why):
    path = tmp_path / "d.npz"
    x = np.zeros((4, 8, 8, 3), np.uint8)
    if content == "pickled":
        np.savez(path, x=np.array([object()] * 4, dtype=object), y=np.arange(4))
    elif content == "one":
        np.savez(path, x)  # one unnamed array: arr_0
        why = "has arrays ['arr_0']"
    elif content == "strings":
        np.savez(path, x=x, y=np.array(["a", "b", "a", "b"]))
    else:
        path.write_bytes(content)
    code, out, err = run(capsys, "evaluate", model, "--data", path, "--no-progress")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(path) in err and why in err
    if content == "strings":
        np.savez(path, x=x, y=np.array(["a", "b", "a", "b"]), classes=np.array(["b", "a"]))
        assert load_labelled(str(path)).y.tolist() == [1, 0, 1, 0]


def test_cli_errors_name_flags(model, good, tmp_path, capsys):
    from ttakit.interfaces.cli.common import in_flags

    assert in_flags("retry download=True with network") == "retry --download with network"
    assert in_flags("pass max_pixels=10 or classes=") == "pass --max-pixels 10 or --classes"
    code, _, err = run(capsys, "tune", model, "--data", "cifar10:val", "--out", tmp_path / "p.yaml")
    assert code == 2 and "split must be one of" in err and "Traceback" not in err
    code, _, err = run(capsys, "tune", model, "--data", "cifar10", "--out", tmp_path / "p.txt")
    assert code == 2 and "--out" in err and ".yaml" in err and not (tmp_path / "p.txt").exists()
    for argv in (["--budget", "0"], ["--guard-alpha", "1.5"]):
        code, _, err = run(capsys, "tune", model, "--data", "cifar10", *argv)
        assert code == 2 and "Traceback" not in err


def test_wrong_channel_count_is_one_line(tmp_path, capsys):
    gray = tmp_path / "gray.pt"
    torch.jit.script(Net(channels=1).eval()).save(str(gray))
    root = _cifar_folder(tmp_path / "data", ["a", "b"])
    code, _, err = run(capsys, "evaluate", gray, "--data", root, "--no-progress")
    lines = [ln for ln in err.splitlines() if "warning" not in ln]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "expected input" in lines[0] and "to have 1 channels" in lines[0]
    assert "RuntimeError: RuntimeError" not in lines[0]


def test_class_folder_failures_go_to_stderr_with_exit_3(model, tmp_path, capsys):
    root = _cifar_folder(tmp_path / "data", ["a", "b"])
    (root / "a" / "bad.png").write_bytes(b"nope")
    code, out, err = run(capsys, "evaluate", model, "--data", root, "--no-progress")
    assert code == 3 and f"cannot read {root / 'a' / 'bad.png'}" in err and "bad.png" not in out


class InfOnFirst(torch.nn.Module):
    """Returns inf for the image whose top-left red pixel is the brightest."""

    def forward(self, x):
        out = x.mean(dim=(2, 3)).repeat(1, 2)
        first = x[:, 0, 0, 0] == x[:, 0, 0, 0].max()
        return torch.where(first[:, None], torch.full_like(out, float("inf")), out)


def test_failed_rows_are_reported_not_written(good, tmp_path, capsys):
    from PIL import Image

    bright = np.zeros((8, 8, 3), np.uint8)
    bright[0, 0, 0] = 255
    Image.fromarray(bright).save(good[0])  # the model returns inf for this one (on identity)
    pred = predict_files(InfOnFirst(), good, "identity")
    from ttakit.io import render
    from ttakit.io.prediction import failed_rows

    assert list(failed_rows(pred.result)) == [0] and "NaN or infinite" in failed_rows(pred.result)[0]
    data = json.loads(render(pred, "json"))
    assert [r["path"] for r in data["results"]] == [str(good[1])] and data["summary"]["images"] == 1
    assert len(render(pred, "csv").splitlines()) == 2
    assert failed_rows(object()) == {}
    # through the command line: the other image is written, the failed one named, exit 3
    path = tmp_path / "inf.pt"
    torch.jit.script(InfOnFirst()).save(str(path))
    code, out, err = run(capsys, "predict", path, *good, "--policy", "identity", "--format", "json")
    assert code == 3 and good[0].name in err and "NaN or infinite" in err
    assert [r["path"] for r in json.loads(out)["results"]] == [str(good[1])]


def test_only_ttakit_errors_escape_read_image(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    stream = ImageStream([bad, tmp_path / "missing.png", tmp_path])
    assert list(stream) == [] and len(stream.failures) == 3
    with pytest.raises(InputError, match="max_pixels=40000000"):
        images.check_size((10**6, 10**6))
