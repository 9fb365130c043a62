"""ttakit.KeypointDetector: points come back through every view, left and
right swap back under mirroring views, confidence-weighted mean and spread."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ttakit
from ttakit.errors import ModelOutputError

pytestmark = pytest.mark.filterwarnings("ignore:float images range")


def two_dots(batch):
    """Keypoint 0 ('left') = the bright pixel in channel 0, keypoint 1
    ('right') = the bright pixel in channel 1, as the model would label
    them by side: the point with the smaller x is 'left'. Confidence 1."""
    out = []
    for img in np.asarray(batch):
        pts = []
        for c in (0, 1):
            ys, xs = np.nonzero(img[c] > 0.5)
            pts.append([xs[0] + 0.5, ys[0] + 0.5])
        pts = sorted(pts)  # by x: a mirrored image swaps which dot is 'left'
        out.append([[*p, 1.0] for p in pts])
    return torch.tensor(out, dtype=torch.float32)


def image(h=9, w=13):
    x = np.zeros((2, 2, h, w), np.float32)
    x[:, 0, 4, 3] = 1.0  # left dot at (3.5, 4.5)
    x[:, 1, 2, 9] = 1.0  # right dot at (9.5, 2.5)
    return x, np.array([[3.5, 4.5], [9.5, 2.5]])


@pytest.mark.parametrize("policy", ["identity + hflip", "d4", "hflips * shift(dx=[-1, 1], fill=constant)"])
def test_points_and_flip_pairs_come_back(policy):
    x, truth = image()
    res = ttakit.KeypointDetector(two_dots, policy, flip_pairs=[(0, 1)]).run(x)
    if policy == "d4":  # 'left' by x is not preserved by quarter turns: only mirrors swap; skip the check
        assert res.points.shape == (2, 2, 2)
        return
    np.testing.assert_allclose(res.points[0], truth, atol=1e-9)
    np.testing.assert_allclose(res.spread, 0, atol=1e-6)
    # without the pairs, hflip's left and right are averaged into the middle
    bad = ttakit.KeypointDetector(two_dots, "identity + hflip").run(x)
    assert np.abs(bad.points[0] - truth).max() > 1 and bad.spread.max() > 1


def test_confidence_weighted_mean_spread_and_normalised_points():
    x, _ = image()

    def model(batch):
        rows = []
        for img in np.asarray(batch):
            flipped = img[0, 4, 3] < 0.5  # the hflip view
            rows.append([[13 - 4.0, 3.0, 0.25]] if flipped else [[2.0, 3.0, 0.75]])
        return torch.tensor(rows)

    res = ttakit.KeypointDetector(model, "identity + hflip").run(x)
    # identity says x=2 (conf 0.75); hflip's point maps back to x=4 (conf 0.25)
    np.testing.assert_allclose(res.points[0, 0], [0.75 * 2 + 0.25 * 4, 3.0])
    np.testing.assert_allclose(res.spread[0, 0], np.sqrt(0.75 * 0.5 ** 2 + 0.25 * 1.5 ** 2))
    np.testing.assert_allclose(res.confidence[0, 0], 0.5)
    flat = ttakit.KeypointDetector(model, "identity + hflip", weight_by_confidence=False).run(x)
    np.testing.assert_allclose(flat.points[0, 0], [3.0, 3.0])
    norm = lambda b: torch.tensor([[[0.25, 0.5]]] * len(b))
    res = ttakit.KeypointDetector(norm, "rot90s", normalized=True).run(x)
    assert res.points.shape == (2, 1, 2)


def test_bad_outputs():
    with pytest.raises(ModelOutputError, match=r"\(n, P, 2\)"):
        ttakit.KeypointDetector(lambda b: torch.zeros(len(b), 4)).run(np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(ModelOutputError, match="outside"):
        ttakit.KeypointDetector(lambda b: torch.zeros(len(b), 2, 2), "hflip", flip_pairs=[(0, 5)]).run(
            np.zeros((1, 3, 4, 4), np.float32))
