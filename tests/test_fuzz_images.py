"""Fuzzing the image-reading path and ``ttakit predict`` with hypothesis.

Random bytes (bare or behind a real format's magic), real small images
saved in every odd mode Pillow writes (1, L, LA, P, PA, RGB, RGBA, CMYK,
I;16, I, F, animated GIF and PNG, 16-bit TIFF) at random sizes, and files
cut short. Checked for each: only ttakit errors escape the library (the
stream itself never raises); ``ttakit predict`` returns 0 or 3 and never
raises; the good image beside it is always predicted, and every input is
either predicted or named as a failure; each call within a bound on its CPU
time (process time: a busy machine does not fail it);
memory bounded (the process' peak RSS).

Bounded for ``make test`` (a few seconds); a long run:
``TTAKIT_FUZZ_EXAMPLES=5000 python -m pytest -q tests/test_fuzz_images.py -p no:xdist``.
"""

from __future__ import annotations

import io
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ttakit.errors import TTAKitError
from ttakit.interfaces import cli
from ttakit.io.images import ImageStream, plan_size, read_image

EXAMPLES = int(os.environ.get("TTAKIT_FUZZ_EXAMPLES", "25"))
SECONDS = 20.0          # per call, generous for a loaded CI machine
RSS_GROWTH_MB = 512     # the process' peak RSS may grow at most this much in one example

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize="TTAKIT_FUZZ_EXAMPLES" not in os.environ,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "animated"]
FORMATS = ["png", "tif", "gif", "bmp", "jpg", "webp", "ppm"]
MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff\xe0", b"II*\x00", b"BM", b"RIFF\x00\x00\x00\x00WEBP"]


def _image(mode: str, w: int, h: int, seed: int, scale: float) -> Image.Image | list[Image.Image]:
    rng = np.random.default_rng(seed)
    u8 = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    if mode == "1":
        return Image.fromarray(u8[..., 0] > 127)
    if mode in ("L", "P", "PA"):
        im = Image.fromarray(u8[..., 0])
        return im if mode == "L" else im.convert("P").convert(mode) if mode == "PA" else im.convert("P")
    if mode == "LA":
        return Image.fromarray(u8[..., :2], "LA")
    if mode in ("RGB", "CMYK"):
        return Image.fromarray(u8[..., :3]).convert(mode)
    if mode == "RGBA":
        return Image.fromarray(u8, "RGBA")
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray((rng.integers(0, 65536, (h, w)) * scale).astype(np.int32), "I")
    if mode == "F":
        f = (rng.random((h, w)) * scale).astype(np.float32)
        if scale > 5:
            f[0, 0] = np.nan
        return Image.fromarray(f, "F")
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for _ in range(1 + seed % 4)]


def _encode(im, fmt: str) -> bytes:
    buf = io.BytesIO()
    if isinstance(im, list):
        im[0].save(buf, format="GIF" if fmt == "gif" else "PNG", save_all=True, append_images=im[1:])
        return buf.getvalue()
    for f in (fmt, "tiff", "png"):  # not every format writes every mode
        try:
            buf = io.BytesIO()
            im.save(buf, format={"jpg": "JPEG", "tif": "TIFF"}.get(f, f.upper()))
            return buf.getvalue()
        except (OSError, ValueError, KeyError):
            continue
    raise AssertionError(f"cannot save mode {im.mode}")


files = st.one_of(
    st.tuples(st.sampled_from(MAGIC), st.binary(max_size=600)).map(lambda t: ("bytes", t[0] + t[1], "png")),
    st.builds(
        lambda mode, w, h, seed, scale, fmt, cut: ("image", (mode, w, h, seed, scale, fmt, cut), fmt),
        st.sampled_from(MODES), st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**16),
        st.sampled_from([1.0, 0.5, 7.0]), st.sampled_from(FORMATS), st.none() | st.floats(0.0, 0.99)),
)


def _write(folder: Path, spec, name: str) -> Path:
    kind, payload, fmt = spec
    if kind == "bytes":
        data = payload
    else:
        mode, w, h, seed, scale, fmt, cut = payload
        data = _encode(_image(mode, w, h, seed, scale), fmt)
        if cut is not None:
            data = data[:int(len(data) * cut)]
    path = folder / f"{name}.{fmt}"
    path.write_bytes(data)
    return path


def _good(folder: Path) -> Path:
    path = folder / "good.png"
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(path)
    return path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@SETTINGS
@given(specs=st.lists(files, min_size=1, max_size=3), mode=st.sampled_from(["RGB", "L"]))
def test_reading_any_file(specs, mode):
    start = _peak_mb()
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        paths = [_good(folder)] + [_write(folder, s, f"f{i}") for i, s in enumerate(specs)]
        t0 = time.process_time()
        for p in paths:
            try:
                arr = read_image(p, mode, (8, 8))
            except TTAKitError:
                continue
            except Exception as e:  # what Pillow raises for a bad file: must not be one of ours gone wrong
                assert not isinstance(e, (AssertionError, NameError, AttributeError, TypeError)), repr(e)
                continue
            assert arr.dtype == np.uint8 and arr.shape == (8, 8, 1 if mode == "L" else 3)
        target, failures = plan_size(paths, (8, 8))
        stream = ImageStream(paths, mode, target, failures=failures, chunk=2)
        rows = sum(len(b) for b in stream)  # never raises
        assert rows == len(stream.good)
        assert str(paths[0]) in stream.good
        assert sorted(stream.good + [p for p, _ in stream.failures]) == sorted(map(str, paths))
        assert all(why for _, why in stream.failures)
        assert time.process_time() - t0 < SECONDS
    assert _peak_mb() - start < RSS_GROWTH_MB


class _Tiny(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))[:, :1].repeat(1, 3) * torch.tensor([1.0, -1.0, 0.5])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "tiny.pt"
    torch.jit.script(_Tiny().eval()).save(str(path))
    return path


@SETTINGS
@given(specs=st.lists(files, min_size=1, max_size=3))
def test_predict_never_raises_and_loses_nothing(tiny_model, specs, capsys):
    start = _peak_mb()
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        paths = [_good(folder)] + [_write(folder, s, f"f{i}") for i, s in enumerate(specs)]
        t0 = time.process_time()
        code = cli.main(["predict", str(tiny_model), *map(str, paths), "--size", "8", "-f", "json",
                         "--no-progress"])
        out, err = capsys.readouterr()
        assert time.process_time() - t0 < SECONDS
        assert code in (0, 3), err
        assert "Traceback" not in err
        data = json.loads(out)
        predicted = [r["path"] for r in data["results"]]
        failed = [f["path"] for f in data["failures"]]
        assert str(paths[0]) in predicted
        assert sorted(predicted + failed) == sorted(map(str, paths))
        assert (code == 3) == bool(failed)
        assert all(f"cannot read {p}" in err for p in failed)
        assert np.isfinite([r["confidence"] for r in data["results"]]).all()
    assert _peak_mb() - start < RSS_GROWTH_MB
