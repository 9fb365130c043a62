"""The corruptions of :mod:`ttakit.shift` against their definitions: noise
statistics, kernels equal to OpenCV's / SciPy's where one exists, the colour
conversion against scikit-image's formulas (round trips), and severities
monotone in error on the real zoo ResNet-20 (a small slice of ../shared)."""

import os
from pathlib import Path

import numpy as np
import pytest

from ttakit.errors import InputError
from ttakit.shift import CORRUPTIONS, NOT_AVAILABLE, PROTOCOL, corrupt
from ttakit.shift.colour import hsv_to_rgb, rgb_to_hsv
from ttakit.shift.kernels import disk, filter_batch, gaussian_taps, motion_blur_batch, motion_taps
from ttakit.shift.params import CIFAR, IMAGENET

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
# ../shared beside the checkout, or where TTAKIT_DATA / TTAKIT_MODELS point (a worktree elsewhere)
DATA = Path(os.environ.get("TTAKIT_DATA") or SHARED / "data" / "cifar10")
MODELS = Path(os.environ.get("TTAKIT_MODELS") or SHARED / "models" / "cifar10-resnet")


def grey_images(n=64, value=0.5, size=32):
    return np.full((n, size, size, 3), value)


def test_every_corruption_keeps_shape_dtype_range_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    for name in CORRUPTIONS:
        for s in (1, 5):
            a = corrupt(x, name, s, seed=3)
            assert a.shape == x.shape and a.dtype == np.uint8, name
            assert np.array_equal(a, corrupt(x, name, s, seed=3)), name
        f = corrupt(x / 255.0, name, 3, seed=3)
        assert f.dtype == np.float64 and f.min() >= 0 and f.max() <= 1, name
        nchw = corrupt(x.transpose(0, 3, 1, 2), name, 3, seed=3, layout="NCHW")
        assert np.array_equal(nchw.transpose(0, 2, 3, 1), corrupt(x, name, 3, seed=3)), name


def test_random_corruptions_differ_between_seeds_and_images():
    x = np.tile(np.random.default_rng(1).integers(0, 256, size=(1, 32, 32, 3), dtype=np.uint8), (2, 1, 1, 1))
    for name in ("gaussian_noise", "shot_noise", "impulse_noise", "fog", "snow", "glass_blur", "motion_blur"):
        a = corrupt(x, name, 5, seed=0)
        assert not np.array_equal(a, corrupt(x, name, 5, seed=1)), name
        assert not np.array_equal(a[0], a[1]), name  # each image its own draw


def test_gaussian_noise_statistics():
    x = grey_images()
    for s, c in enumerate(CIFAR["gaussian_noise"], 1):
        d = corrupt(x, "gaussian_noise", s, seed=s) - x
        assert abs(d.mean()) < 0.002 and abs(d.std() - c) < 0.002


def test_shot_noise_is_poisson_counts():
    x = grey_images()
    for s, c in enumerate(CIFAR["shot_noise"], 1):
        y = corrupt(x, "shot_noise", s, seed=s)
        counts = y * c
        assert np.allclose(counts, np.round(counts))            # whole photon counts
        assert abs(counts.mean() - 0.5 * c) < 0.01 * c          # Poisson: mean = variance = 0.5 c
        assert abs(counts.var() / (0.5 * c) - 1) < 0.05


def test_impulse_noise_replaces_the_stated_share_by_salt_and_pepper():
    x = grey_images()
    for s, c in enumerate(CIFAR["impulse_noise"], 1):
        y = corrupt(x, "impulse_noise", s, seed=s)
        assert set(np.unique(y)) <= {0.0, 0.5, 1.0}
        hit = y != 0.5
        assert abs(hit.mean() - c) < 0.1 * c + 0.002
        assert abs((y == 1).sum() / hit.sum() - 0.5) < 0.05


def test_speckle_noise_is_multiplicative():
    x = grey_images()
    d = corrupt(x, "speckle_noise", 5, seed=0) - x
    assert abs(d.std() - 0.5 * CIFAR["speckle_noise"][4]) < 0.003
    assert np.array_equal(corrupt(np.zeros((2, 32, 32, 3)), "speckle_noise", 5), np.zeros((2, 32, 32, 3)))


def test_contrast_scales_deviations_from_each_images_channel_means():
    x = np.random.default_rng(0).uniform(0.3, 0.7, size=(4, 32, 32, 3))
    for s, c in enumerate(CIFAR["contrast"], 1):
        m = x.mean(axis=(1, 2), keepdims=True)
        assert np.allclose(corrupt(x, "contrast", s), (x - m) * c + m)


def test_hsv_round_trip_and_known_colours():
    x = np.random.default_rng(0).uniform(size=(500, 3))
    assert np.allclose(hsv_to_rgb(rgb_to_hsv(x)), x)
    known = {(1, 0, 0): (0, 1, 1), (0, 1, 0): (1 / 3, 1, 1), (0, 0, 1): (2 / 3, 1, 1), (0.5, 0.5, 0.5): (0, 0, 0.5)}
    for rgb, hsv in known.items():
        assert np.allclose(rgb_to_hsv(np.array(rgb, float)), hsv)


def test_gaussian_blur_is_scipys_filter():
    from scipy import ndimage

    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3))
    y = corrupt(x, "gaussian_blur", 3)
    want = ndimage.gaussian_filter(x, (0, 0.7, 0.7, 0), mode="nearest", truncate=4.0)
    assert np.allclose(y, want)


def test_kernels_equal_opencv():
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is the reference for the kernels")
    for size, sigma in ((3, 0.4), (3, 0.1), (5, 0.5), (7, 1.3)):
        assert np.allclose(gaussian_taps(size, sigma), cv2.getGaussianKernel(size, sigma).ravel())
    for radius, alias in CIFAR["defocus_blur"] + IMAGENET["defocus_blur"]:
        half = 8 if radius <= 8 else radius
        g = np.arange(-half, half + 1)
        xx, yy = np.meshgrid(g, g)
        d = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float32)
        d /= d.sum()
        k = 3 if radius <= 8 else 5
        assert np.allclose(disk(radius, alias), cv2.GaussianBlur(d, (k, k), alias), atol=1e-6)
    img = np.random.default_rng(0).uniform(size=(32, 32)).astype(np.float32)
    ker = disk(1.5, 0.1)
    assert np.allclose(filter_batch(img[None, :, :, None], ker)[0, :, :, 0], cv2.filter2D(img, -1, ker), atol=1e-5)


def test_elastic_affine_matches_opencv():
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is the reference for the affine warp")
    from ttakit.shift.digital import _affine_from_points

    rng = np.random.default_rng(0)
    src = np.array([[26, 26], [26, 6], [6, 6]], dtype=np.float32)
    dst = src + rng.uniform(-2, 2, size=src.shape).astype(np.float32)
    assert np.allclose(_affine_from_points(src.astype(float), dst.astype(float)),
                       cv2.getAffineTransform(src, dst), atol=1e-4)


def test_motion_blur_taps_and_direction():
    taps = motion_taps(6, 1)
    assert len(taps) == 13 and np.isclose(taps.sum(), 1) and np.all(np.diff(taps) < 0)
    x = np.zeros((1, 9, 9))
    x[0, 4, 4] = 1.0
    # angle 0: offsets (rows) i * cos(0) = i: each output pixel gathers the pixels below it
    y = motion_blur_batch(x, 2, 1, np.array([0.0]))
    col = y[0, :, 4]
    assert np.isclose(col[4], motion_taps(2, 1)[0]) and np.isclose(col[3], motion_taps(2, 1)[1])
    assert np.isclose(y.sum(), 1) and np.allclose(y[0, :, [0, 1, 2, 3, 5, 6, 7, 8]], 0)


def test_unavailable_and_bad_arguments_are_clear():
    x = np.zeros((1, 32, 32, 3), np.uint8)
    for name, why in NOT_AVAILABLE.items():
        with pytest.raises(InputError, match="not available"):
            corrupt(x, name, 1)
    with pytest.raises(InputError, match="unknown corruption"):
        corrupt(x, "rain", 1)
    for bad in (0, 6, 2.5, True):
        with pytest.raises(InputError, match="severity"):
            corrupt(x, "fog", bad)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        corrupt(np.full((1, 8, 8, 3), 2.0), "fog", 1)
    with pytest.raises(InputError, match="batch"):
        corrupt(np.zeros((32, 32, 3)), "fog", 1)


def test_larger_images_use_the_imagenet_table():
    x = np.full((2, 96, 96, 3), 0.5)
    d = corrupt(x, "gaussian_noise", 1, seed=0) - x
    assert abs(d.std() - IMAGENET["gaussian_noise"][0]) < 0.005
    d = corrupt(x, "gaussian_noise", 1, seed=0, table="cifar") - x
    assert abs(d.std() - CIFAR["gaussian_noise"][0]) < 0.005


@pytest.mark.skipif(not ((DATA / "cifar-10-batches-bin").is_dir() and MODELS.is_dir()),
                    reason="../shared CIFAR-10 and the published ResNets not found (present in CI)")
def test_severities_are_monotone_in_error_on_the_zoo_resnet20():
    import ttakit
    from ttakit.datasets import cifar10
    from ttakit.zoo import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD, load_cifar_resnet

    test = cifar10(DATA, split="test")
    idx = np.random.default_rng(0).permutation(len(test.labels))[:300]
    x, y = test.images[idx], test.labels[idx]
    clf = ttakit.Classifier(load_cifar_resnet(20, root=MODELS), None, data_layout="NHWC",
                            preprocess=ttakit.Normalize(CIFAR_RESNET_MEAN, CIFAR_RESNET_STD))
    clean = np.mean(clf.predict(x) != y)
    for name in PROTOCOL:
        errs = [np.mean(clf.predict(corrupt(x, name, s, seed=1)) != y) for s in (1, 3, 5)]
        assert errs[0] <= errs[1] + 0.02 <= errs[2] + 0.04, (name, errs)  # 2-point slack: 300 images
        assert errs[2] > clean + 0.05, (name, errs, clean)


@pytest.mark.skipif(not ((DATA / "cifar-10-batches-bin").is_dir() and MODELS.is_dir()),
                    reason="../shared CIFAR-10 and the published ResNets not found (present in CI)")
def test_reproduce_shift_writes_a_paired_report(tmp_path, capsys):
    import json

    from ttakit.interfaces.cli import main

    out = tmp_path / "shift"
    docs = tmp_path / "docs" / "shift.md"
    code = main(["reproduce", "shift", "--depth", "20", "--n-images", "128", "--memo-images", "6", "--batch-size",
                 "64", "--severities", "5", "--corruptions", "contrast", "--methods", "none,views,norm,memo",
                 "--data", str(DATA), "--weights", str(MODELS), "--out", str(out), "--docs", str(docs)])
    assert code == 0
    text = docs.read_text()
    assert "ttakit reproduce shift --depth 20 --severities 5 --corruptions contrast" in text
    assert "| norm |" in text and "| memo (6 images) |" in text and "frost" in text
    res = json.loads((out / "shift.json").read_text())
    per = res["models"]["resnet20"]
    assert len(per["none"]["correct"]["contrast/5"]) == 128 and len(per["memo"]["correct"]["contrast/5"]) == 6
    summary = res["summary"]["resnet20"]
    assert summary["norm"]["severities"]["5"]["error"] < summary["none"]["severities"]["5"]["error"]
