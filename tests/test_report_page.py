"""The HTML reports (``ttakit evaluate --out DIR`` writes DIR/index.html) and
``ttakit predict --draw``: pages opened in headless Chromium (every image
loads, nothing is requested from the network, the screenshot is not blank),
the galleries hold the inputs TTA fixed and broke, and drawings land where
the predictions are.

Chromium is Debian's ``chromium`` package (``make test`` installs it where
apt-get is available and it runs as root); without it the browser checks
skip, saying so, and the rest still runs.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ttakit
from browser_support import NO_CHROMIUM, blankness, check_page, chromium, external_references, open_page, \
    page_requests
from ttakit.errors import TTAKitWarning
from ttakit.evaluation.formatting import ci, signed
from ttakit.evaluation.plots import PLOTS_MISSING
from ttakit.interfaces.cli import main
from ttakit.report import draw

needs_chromium = pytest.mark.skipif(chromium() is None, reason=NO_CHROMIUM)


class Stripes(torch.nn.Module):
    """Ten classes from the brightness of each image's left half (weight 3)
    and right half (weight 1): a mirror swaps the halves, so it changes the
    answer on some inputs."""

    def forward(self, x):
        w = x.shape[3]
        left, right = x[:, :, :, : w // 2].mean((1, 2, 3)), x[:, :, :, w // 2:].mean((1, 2, 3))
        k = torch.arange(10, dtype=torch.float32)
        return -((left[:, None] * 10 - 0.5 - k) ** 2) * 3 - ((right[:, None] * 10 - 0.5 - k) ** 2)


@pytest.fixture(scope="module")
def classification_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 10, 120), rng.integers(0, 10, 120)
    x = np.zeros((120, 16, 16, 3), np.uint8)
    x[:, :, :8] = ((a / 10 + 0.05) * 255).astype(np.uint8)[:, None, None, None]
    x[:, :, 8:] = ((b / 10 + 0.05) * 255).astype(np.uint8)[:, None, None, None]
    x = np.clip(x.astype(int) + rng.integers(-3, 4, x.shape), 0, 255).astype(np.uint8)
    torch.jit.script(Stripes()).save(str(root / "m.pt"))
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        plain, mirrored = Stripes()(xt).argmax(1).numpy(), Stripes()(xt.flip(3)).argmax(1).numpy()
    # labels the mirrored view gets right more often than the plain one: TTA fixes some, breaks others
    y = np.where(rng.random(120) < 0.6, mirrored, plain)
    np.savez(root / "data.npz", x=x, y=y)
    out = root / "report"
    rc = main(["evaluate", str(root / "m.pt"), "--data", str(root / "data.npz"), "--policy", "identity + hflip",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    return out, x, y


def test_classification_page_has_the_galleries(classification_report):
    out, x, y = classification_report
    report = json.loads((out / "report.json").read_text())
    html = (out / "index.html").read_text()
    ex = report["examples"]
    assert ex["fixed"] and ex["broken"], "the data set up fixes and breaks"
    for item in ex["fixed"]:
        assert item["label"] == item["policy"] != item["baseline"] == np.int64(item["baseline"])
        assert len(item["votes"]) == 2 and item["label"] == y[item["index"]]
    for item in ex["broken"]:
        assert item["label"] == item["baseline"] != item["policy"]
    spreads = [i["spread"] for i in ex["uncertain"]]
    assert spreads == sorted(spreads, reverse=True)
    # each gallery image is that input, enlarged by a whole factor (16 -> 96 pixels, nearest neighbour)
    first = ex["fixed"][0]["index"]
    thumb = np.asarray(Image.open(out / "img" / f"input_{first}.png"))
    assert thumb.shape == (96, 96, 3) and (thumb[::6, ::6] == x[first]).all()
    assert f'src="img/input_{first}.png"' in html
    assert "Inputs TTA fixed" in html and "Inputs TTA broke" in html and "Most uncertain inputs" in html
    assert report["verdict"] in html


def test_plots_are_linked_only_when_written(classification_report):
    out, _, _ = classification_report
    md = (out / "report.md").read_text()
    for name in re.findall(r"\]\(([^)]+\.png)\)", md):
        assert (out / name).exists()
    assert "ECE of the baseline" in md


def test_one_view_policy_draws_no_curve_and_without_matplotlib_links_nothing(tmp_path, monkeypatch):
    x = np.random.default_rng(1).random((40, 3, 8, 8)).astype(np.float32)
    y = np.arange(40) % 10
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 10))
    rep = ttakit.evaluate(model, x, y, "hflip", out=tmp_path / "one")
    assert "lift_vs_views.png" not in rep.plots and not (tmp_path / "one" / "lift_vs_views.png").exists()
    assert "reliability.png" in rep.plots

    # matplotlib not installed: its import fails
    for name in ("matplotlib", "matplotlib.pyplot", "matplotlib.ticker"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.warns(TTAKitWarning, match=r"ttakit\[plots\]") as caught:
        rep = ttakit.evaluate(model, x, y, "identity + hflip", out=tmp_path / "none")
    assert [str(w.message) for w in caught if "plots" in str(w.message)] == [PLOTS_MISSING]
    md = (tmp_path / "none" / "report.md").read_text()
    assert ".png" not in md and not list((tmp_path / "none").glob("*.png"))


def test_a_tiny_run_prints_no_throughput_and_no_negative_zero():
    x = np.random.default_rng(2).random((10, 3, 8, 8)).astype(np.float32)
    torch.manual_seed(0)  # the verdict below depends on the weights
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 10))
    rep = ttakit.evaluate(model, x, np.arange(10), "identity + hflip")
    # no TTA's view was computed with the policy's: its time is its share (1 of 2 views), not a cache lookup
    assert rep.baseline_throughput == pytest.approx(2 * rep.throughput)
    rep.timed_seconds = 0.01  # what 10 inputs take on an idle machine
    md = rep.to_markdown()
    assert "throughput (inputs/s) | n/a (under 0.5 s to time) | n/a (under 0.5 s to time) |" in md
    assert not re.search(r"-0\.0+(?![0-9])", md) and "+0.00," not in rep.verdict()  # no negative zero
    assert signed(-1e-17) == "0.00" and signed(-0.0004) == "-0.0004" and signed(0.046) == "+0.05"
    assert ci(-2.7e-18, 0.046) == "[0.00, +4.60]"


@needs_chromium
def test_classification_page_in_a_browser(classification_report, tmp_path):
    out, _, _ = classification_report
    opened = check_page(out / "index.html", tmp_path / "shot.png")
    assert len(opened.images) >= len(json.loads((out / "report.json").read_text())["examples"]["fixed"])


@needs_chromium
def test_the_browser_check_catches_a_broken_image_and_a_network_request(tmp_path):
    """The checks can fail: a page with a missing image and an image from the network."""
    (tmp_path / "index.html").write_text(
        '<!doctype html><html><head><meta http-equiv="Content-Security-Policy" content="img-src *"></head><body>'
        '<img src="missing.png"><img src="http://example.invalid/x.png"></body></html>')
    opened = open_page(tmp_path / "index.html", tmp_path / "shot.png")
    assert [w for _, _, w, _ in opened.images] == [0, 0]
    assert any("example.invalid" in r for r in page_requests(opened.requests))
    assert external_references((tmp_path / "index.html").read_text()) == ["http://example.invalid/x.png"]
    std, busy = blankness(opened.screenshot)
    assert busy < 0.03


def test_draw_boxes_masks_and_keypoints_land_where_they_are():
    im = Image.new("RGB", (60, 40), (0, 0, 0))
    draw.draw_boxes(im, [[10, 5, 30, 25], [0, 0, 5, 5]], [1, 2], [0.9, 0.1], ["a", "bee", "c"], width=1)
    a = np.asarray(im)
    assert (a[25, 10:31] == draw.colour(2 - 1)).all() or (a[25, 12:30] == draw.colour(1)).all()
    assert (a[1:4, 1:4] == 0).all()  # the 0.1 box is under the score threshold: not drawn
    lab = np.zeros((40, 60), np.int64)
    lab[20:, 30:] = 3
    over = np.asarray(draw.overlay_mask(Image.new("RGB", (60, 40)), lab, legend=False))
    assert (over[:20].sum(2) == 0).all() and (over[30, 45] > 0).any()
    pts = draw.draw_keypoints(Image.new("RGB", (60, 40)), [[10, 10], [50, 30]], skeleton=[(0, 1)])
    p = np.asarray(pts)
    assert p[10, 10].any() and p[30, 50].any() and p[20, 30].any() and not p[35, 5].any()
    assert draw.fit_size(32, 32) == (96, 96, 3.0) and draw.fit_size(1000, 500)[:2] == (360, 180)
    heat = np.asarray(draw.heatmap(np.array([[0.0, 1.0]])))
    assert heat[0, 0].tolist() == [68, 1, 84] and heat[0, 1].tolist() == [253, 231, 37]
