"""Tests for ttakit.datasets (the CIFAR-10 binary loader).

Real-data tests read ../shared/data/cifar10 (present in CI). Nothing here
touches the network: downloads are pointed at a closed local port or at a
file:// URL.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from ttakit.datasets import CIFAR10, cifar10
from ttakit.errors import DatasetError

mod = importlib.import_module("ttakit.datasets.cifar10")  # the module, not the function

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data" / "cifar10"
BATCHES = DATA / "cifar-10-batches-bin"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RECORD = 3073
N_FILE = 10_000


def _need_shared():
    if not (BATCHES / "test_batch.bin").is_file():
        pytest.skip("../shared not found: CIFAR-10 tests need ../shared/data/cifar10 (present in CI)")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No TTAKIT_DATA, an empty private cache, no proxies."""
    monkeypatch.delenv("TTAKIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def cifar_test_set() -> CIFAR10:
    _need_shared()
    return cifar10(BATCHES, split="test")


def _tar(path: Path, members: dict, mode: str = "w:gz") -> Path:
    """Write a tarball whose members are {name: bytes or source Path}."""
    kwargs = {"compresslevel": 1} if mode.endswith("gz") else {}
    with tarfile.open(path, mode, **kwargs) as tf:
        dir_info = tarfile.TarInfo("cifar-10-batches-bin")
        dir_info.type = tarfile.DIRTYPE
        tf.addfile(dir_info)
        for name, data in members.items():
            if isinstance(data, Path):
                tf.add(data, arcname=name)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def _folder(tmp_path: Path, test_bytes: bytes | None = None, meta: bool = True) -> Path:
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    if meta:
        shutil.copyfile(BATCHES / "batches.meta.txt", folder / "batches.meta.txt")
    if test_bytes is None:
        shutil.copyfile(BATCHES / "test_batch.bin", folder / "test_batch.bin")
    else:
        (folder / "test_batch.bin").write_bytes(test_bytes)
    return folder


# ---------------------------------------------------------------------------
# The real data
# ---------------------------------------------------------------------------


def test_test_split(cifar_test_set):
    ds = cifar_test_set
    assert isinstance(ds, CIFAR10)
    assert len(ds) == 10_000
    assert ds.split == "test"
    assert ds.images.shape == (10_000, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.images.flags["C_CONTIGUOUS"]
    assert ds.labels.shape == (10_000,) and ds.labels.dtype == np.int64
    assert ds.labels.min() == 0 and ds.labels.max() == 9
    assert np.bincount(ds.labels, minlength=10).tolist() == [1000] * 10
    assert ds.classes == CLASSES
    assert "n=10000" in repr(ds)


def test_pixel_layout_matches_the_record_format(cifar_test_set):
    raw = np.fromfile(BATCHES / "test_batch.bin", dtype=np.uint8, count=2 * RECORD).reshape(2, RECORD)
    for i in range(2):
        assert cifar_test_set.labels[i] == raw[i, 0]
        planes = raw[i, 1:].reshape(3, 32, 32)  # R, G, B planes, row-major
        assert np.array_equal(cifar_test_set.images[i, :, :, 0], planes[0])
        assert np.array_equal(cifar_test_set.images[i, 5, 7], planes[:, 5, 7])
    assert 60 < cifar_test_set.images.mean() < 200  # real photos, not noise or zeros


def test_test_split_loads_fast():
    _need_shared()
    cifar10(BATCHES)  # warm the page cache
    start = time.perf_counter()
    cifar10(BATCHES)
    assert time.perf_counter() - start < 1.0


def test_train_and_all_splits(cifar_test_set):
    both = cifar10(DATA, split="all")  # train (data_batch_1..5) then test
    assert len(both) == 60_000 and both.split == "all"
    assert both.images.shape == (60_000, 32, 32, 3) and both.images.dtype == np.uint8
    assert both.labels.dtype == np.int64 and both.classes == CLASSES
    assert np.bincount(both.labels[:50_000], minlength=10).tolist() == [5000] * 10
    assert np.array_equal(both.labels[50_000:], cifar_test_set.labels)
    assert np.array_equal(both.images[50_000:], cifar_test_set.images)
    del both
    train = cifar10(DATA, split="train")
    assert len(train) == 50_000 and train.split == "train"
    assert train.images.shape == (50_000, 32, 32, 3)
    assert np.bincount(train.labels, minlength=10).tolist() == [5000] * 10


def test_bad_split_is_a_value_error():
    with pytest.raises(ValueError, match="split"):
        cifar10(BATCHES, split="validation")


# ---------------------------------------------------------------------------
# Where the data is found
# ---------------------------------------------------------------------------


def test_folder_and_parent_and_str_paths(cifar_test_set):
    for where in (DATA, str(DATA), BATCHES, str(BATCHES)):
        ds = cifar10(where)
        assert np.array_equal(ds.labels, cifar_test_set.labels)
        assert Path(ds.source) == BATCHES


@pytest.mark.parametrize("where", [DATA, BATCHES], ids=["parent", "folder"])
def test_ttakit_data_env(monkeypatch, cifar_test_set, where):
    monkeypatch.setenv("TTAKIT_DATA", str(where))
    ds = cifar10()
    assert np.array_equal(ds.labels, cifar_test_set.labels)
    assert np.array_equal(ds.images[:10], cifar_test_set.images[:10])


def test_user_cache_is_the_fallback(monkeypatch, tmp_path, cifar_test_set):
    cache = tmp_path / "xdg-cache" / "ttakit"
    cache.mkdir(parents=True)
    (cache / "cifar-10-batches-bin").symlink_to(BATCHES, target_is_directory=True)
    assert mod.cache_dir() == cache
    assert np.array_equal(cifar10().labels, cifar_test_set.labels)


@pytest.fixture(scope="module")
def small_tarball(tmp_path_factory) -> Path:
    """cifar-10-binary.tar.gz holding only the meta file and the test batch."""
    _need_shared()
    return _tar(
        tmp_path_factory.mktemp("tarball") / "cifar-10-binary.tar.gz",
        {
            "cifar-10-batches-bin/batches.meta.txt": BATCHES / "batches.meta.txt",
            "cifar-10-batches-bin/test_batch.bin": BATCHES / "test_batch.bin",
        },
    )


def test_tarball(monkeypatch, small_tarball, cifar_test_set):
    tarball = small_tarball
    for where in (tarball, tarball.parent):  # the file, or a folder holding it
        ds = cifar10(where)
        assert ds.classes == CLASSES
        assert np.array_equal(ds.labels, cifar_test_set.labels)
        assert np.array_equal(ds.images, cifar_test_set.images)
        assert Path(ds.source) == tarball
    monkeypatch.setenv("TTAKIT_DATA", str(tarball))
    assert np.array_equal(cifar10().labels, cifar_test_set.labels)
    # Only the test batch is in it: asking for train names what is missing.
    with pytest.raises(DatasetError, match=r"data_batch_1\.bin"):
        cifar10(tarball, split="train")


# ---------------------------------------------------------------------------
# Broken data
# ---------------------------------------------------------------------------


def test_truncated_file(tmp_path):
    _need_shared()
    size = RECORD * 5000 + 100
    with open(BATCHES / "test_batch.bin", "rb") as f:
        folder = _folder(tmp_path, f.read(size))
    with pytest.raises(DatasetError) as info:
        cifar10(folder)
    msg = str(info.value)
    assert str(folder / "test_batch.bin") in msg
    assert f"{size:,}" in msg and "30,730,000" in msg
    assert "re-extract" in msg or "re-download" in msg


def test_whole_records_but_too_few(tmp_path):
    _need_shared()
    with open(BATCHES / "test_batch.bin", "rb") as f:
        folder = _folder(tmp_path, f.read(RECORD * 5000))
    with pytest.raises(DatasetError, match=r"5,000 records instead of 10,000"):
        cifar10(folder)


def test_truncated_member_in_tarball(tmp_path):
    _need_shared()
    with open(BATCHES / "test_batch.bin", "rb") as f:
        short = f.read(RECORD * 100 + 7)
    tarball = _tar(
        tmp_path / "cifar-10-binary.tar.gz",
        {
            "cifar-10-batches-bin/batches.meta.txt": (BATCHES / "batches.meta.txt").read_bytes(),
            "cifar-10-batches-bin/test_batch.bin": short,
        },
    )
    with pytest.raises(DatasetError, match=r"test_batch\.bin is 307,307 bytes"):
        cifar10(tarball)


def test_truncated_tarball(tmp_path, small_tarball):
    good = small_tarball
    bad = tmp_path / "cut" / "cifar-10-binary.tar.gz"
    bad.parent.mkdir()
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        cifar10(bad)


def test_corrupt_label_byte(tmp_path):
    _need_shared()
    data = bytearray((BATCHES / "test_batch.bin").read_bytes())
    data[123 * RECORD] = 10
    folder = _folder(tmp_path, bytes(data))
    with pytest.raises(DatasetError) as info:
        cifar10(folder)
    msg = str(info.value)
    assert "test_batch.bin" in msg and "record 123" in msg and "0..9" in msg


def test_missing_meta_file(tmp_path):
    _need_shared()
    folder = _folder(tmp_path, meta=False)
    with pytest.raises(DatasetError, match=r"batches\.meta\.txt"):
        cifar10(folder)


def test_meta_with_wrong_number_of_classes(tmp_path):
    _need_shared()
    folder = _folder(tmp_path)
    (folder / "batches.meta.txt").write_text("cat\ndog\n")
    with pytest.raises(DatasetError, match=r"batches\.meta\.txt.*10 class names"):
        cifar10(folder)


def test_missing_train_batch_in_folder(tmp_path):
    _need_shared()
    folder = _folder(tmp_path)
    with pytest.raises(DatasetError, match=r"missing data_batch_1\.bin.*data_batch_5\.bin"):
        cifar10(folder, split="train")


def test_wrong_path_lists_where_it_looked(tmp_path):
    nowhere = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as info:
        cifar10(nowhere)
    msg = str(info.value)
    assert str(nowhere) in msg
    assert str(nowhere / "cifar-10-batches-bin") in msg
    assert str(nowhere / "cifar-10-binary.tar.gz") in msg
    assert "path=" in msg and "TTAKIT_DATA" in msg and "download=True" in msg


def test_not_a_tarball(tmp_path):
    junk = tmp_path / "cifar-10-binary.tar.gz"
    junk.write_bytes(b"not a tar file at all")
    with pytest.raises(DatasetError, match="not found"):
        cifar10(junk)


def test_nothing_anywhere_lists_env_and_cache(monkeypatch, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("TTAKIT_DATA", str(empty))
    with pytest.raises(DatasetError) as info:
        cifar10()
    msg = str(info.value)
    assert str(empty) in msg
    assert str(tmp_path / "xdg-cache" / "ttakit") in msg
    assert "download=True" in msg


def test_nothing_anywhere_without_env(tmp_path):
    with pytest.raises(DatasetError, match=r"\$TTAKIT_DATA \(not set\)"):
        cifar10()


# ---------------------------------------------------------------------------
# Downloading (never the real internet)
# ---------------------------------------------------------------------------


def _no_partial_files(root: Path) -> bool:
    return not root.exists() or not any(".part" in p.name for p in root.rglob("*"))


def test_download_unreachable_is_a_clean_error(monkeypatch, tmp_path):
    monkeypatch.setattr(mod, "CIFAR10_URL", "http://127.0.0.1:9/cifar-10-binary.tar.gz")
    monkeypatch.setattr(mod, "DOWNLOAD_TIMEOUT_S", 5.0)
    start = time.perf_counter()
    with pytest.raises(DatasetError) as info:
        cifar10(download=True, progress=False)
    assert time.perf_counter() - start < 10
    msg = str(info.value)
    assert "download failed" in msg and "127.0.0.1:9" in msg
    assert "TTAKIT_DATA" in msg and "path=" in msg
    assert str(tmp_path / "xdg-cache" / "ttakit") in msg
    assert _no_partial_files(tmp_path / "xdg-cache")


def _synthetic_release(path: Path) -> Path:
    """A full-size but trivially compressible stand-in for the official tarball."""
    labels = (np.arange(N_FILE) % 10).astype(np.uint8)
    records = np.zeros((N_FILE, RECORD), dtype=np.uint8)
    records[:, 0] = labels
    records[:, 1:1025] = 200  # every image pure red
    blob = records.tobytes()
    members = {f"cifar-10-batches-bin/data_batch_{i}.bin": blob for i in range(1, 6)}
    members["cifar-10-batches-bin/test_batch.bin"] = blob
    members["cifar-10-batches-bin/batches.meta.txt"] = ("\n".join(CLASSES) + "\n\n").encode()
    members["cifar-10-batches-bin/readme.html"] = b"<html></html>"
    return _tar(path, members)


def test_download_md5_mismatch(monkeypatch, tmp_path):
    (tmp_path / "served").mkdir()
    tarball = _synthetic_release(tmp_path / "served" / "cifar-10-binary.tar.gz")
    monkeypatch.setattr(mod, "CIFAR10_URL", tarball.as_uri())
    with pytest.raises(DatasetError) as info:
        cifar10(download=True, progress=False)
    msg = str(info.value)
    assert "MD5" in msg and mod.CIFAR10_MD5 in msg
    cache = tmp_path / "xdg-cache" / "ttakit"
    assert not (cache / "cifar-10-batches-bin").exists()
    assert _no_partial_files(tmp_path / "xdg-cache")


def test_download_extracts_into_the_cache(monkeypatch, tmp_path):
    (tmp_path / "served").mkdir()
    tarball = _synthetic_release(tmp_path / "served" / "cifar-10-binary.tar.gz")
    monkeypatch.setattr(mod, "CIFAR10_URL", tarball.as_uri())
    monkeypatch.setattr(mod, "CIFAR10_MD5", hashlib.md5(tarball.read_bytes()).hexdigest())
    ds = cifar10(split="test", download=True, progress=False)
    assert len(ds) == 10_000 and ds.classes == CLASSES
    assert np.bincount(ds.labels).tolist() == [1000] * 10
    assert (ds.images[:, :, :, 0] == 200).all() and (ds.images[:, :, :, 1:] == 0).all()
    cache = tmp_path / "xdg-cache" / "ttakit"
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-batches-bin"]
    assert sorted(os.listdir(cache / "cifar-10-batches-bin")) == sorted(mod.ALL_FILES)
    # Now it is cached: no download needed, even with the URL broken.
    monkeypatch.setattr(mod, "CIFAR10_URL", "http://127.0.0.1:9/gone")
    assert len(cifar10(download=True)) == 10_000


def test_download_into_an_explicit_folder(monkeypatch, tmp_path):
    (tmp_path / "served").mkdir()
    tarball = _synthetic_release(tmp_path / "served" / "cifar-10-binary.tar.gz")
    monkeypatch.setattr(mod, "CIFAR10_URL", tarball.as_uri())
    monkeypatch.setattr(mod, "CIFAR10_MD5", hashlib.md5(tarball.read_bytes()).hexdigest())
    target = tmp_path / "mydata"
    assert len(cifar10(target, download=True, progress=False)) == 10_000
    assert (target / "cifar-10-batches-bin" / "test_batch.bin").is_file()
    assert not (tmp_path / "xdg-cache").exists()
