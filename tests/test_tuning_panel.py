"""The tuning panel (``ttakit reproduce tuning-panel``) on its smallest case,
digits: every split's figures equal the tuned policy run through the
classifier on the held-out images, and the report says what it measured."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from ttakit.evaluation import PredictionCache  # noqa: E402
from ttakit.experiments import tuning_panel as tp  # noqa: E402


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    cfg = tp.PanelConfig(cases=("digits",), digits_splits=3, cache_dir=str(tmp_path_factory.mktemp("panel")))
    probs, y, pool = tp.case_cache("digits", cfg, log=lambda m: None)
    return cfg, probs, y, pool


def test_a_split_scores_the_tuned_policy_on_inputs_it_did_not_see(digits):
    cfg, probs, y, pool = digits
    model, x, y2, kw = tp._digits(cfg)
    np.testing.assert_array_equal(y, y2)
    r = tp.run_split(probs, y, pool, 450, 7, cfg)
    perm = np.random.default_rng(7).permutation(len(y))
    held = np.sort(perm[450:])
    assert r["n_held"] == len(held) == len(y) - 450
    # the same figures through the classifier on the held-out images
    from ttakit.policy import Policy

    cache = PredictionCache(model, x[held], data_layout="NHWC", progress=False, **kw)
    assert r["identity"] == pytest.approx((cache.predict("identity").argmax(1) == y[held]).mean())
    tuned = cache.predict(Policy.parse(r["policy"]))
    assert r["tuned"] == pytest.approx((tuned.argmax(1) == y[held]).mean())
    assert r["oracle"] >= r["identity"]  # the oracle's path starts with no TTA


def test_the_cache_is_reused_and_the_report_states_its_terms(digits, tmp_path):
    cfg, probs, y, pool = digits
    again, _, _ = tp.case_cache("digits", cfg, log=lambda m: pytest.fail("recomputed"))
    np.testing.assert_array_equal(again, probs)
    result = tp.run(tp.PanelConfig(cases=("digits",), digits_splits=3, cache_dir=cfg.cache_dir), log=lambda m: None)
    (case,) = result["cases"]
    assert case["splits"] == 3 and 0 <= case["fall_back_rate"] <= 1
    out = tp.write(result, tmp_path / "tuning-panel")
    text = (tmp_path / "tuning-panel.md").read_text()
    assert (out / "panel.json").exists() and "| digits | 450 |" in text and "oracle" in text.lower()


def test_the_command_writes_the_report(digits, tmp_path, capsys):
    from ttakit.interfaces.cli import main

    cfg = digits[0]
    code = main(["reproduce", "tuning-panel", "--cases", "digits", "--digits-splits", "2", "--cache-dir",
                 cfg.cache_dir, "--out", str(tmp_path / "tp")])
    assert code == 0
    assert "| digits | 450 |" in capsys.readouterr().out
    assert (tmp_path / "tp.md").exists() and (tmp_path / "tp" / "panel.json").exists()


# -- the dense cases, on a tiny synthetic pool ------------------------------------------------------------------

def _synthetic_dense_case():
    """40 label maps of 8x8; each view predicts the truth with its own 25% of
    pixels flipped, and the vote of three views beats one."""
    from ttakit.evaluation.dense_subsets import SegmentationSubsets
    from ttakit.experiments.tuning_panel_dense import DenseCase

    rng = np.random.default_rng(0)
    gt = rng.integers(0, 2, (40, 8, 8))
    noisy = {v: np.where(rng.random(gt.shape) < 0.25, 1 - gt, gt) for v in ("identity", "hflip", "vflip")}

    def merged(policy, name, options):
        votes = np.mean([noisy[repr(v)] for v in policy.views], 0)
        return SegmentationSubsets((votes > 0.5).astype(np.int64), gt, 2)

    case = DenseCase("segmentation", "mean IoU", "hflip, vflip", (("vote", {}),), ("vote", {}), 24, merged, 40,
                     "synthetic")
    return case, merged, gt


def test_a_dense_split_scores_the_tuned_views_and_merge_on_the_held_out_images():
    from ttakit.experiments.tuning_panel_dense import render_dense, run_dense_split, summarise_dense
    from ttakit.policy import Policy

    case, merged, gt = _synthetic_dense_case()
    r = run_dense_split(case, 3)
    held = np.sort(np.random.default_rng(3).permutation(40)[24:])
    assert r["n_tune"] == 24 and r["n_held"] == len(held) == 16
    assert r["identity"] == pytest.approx(100 * merged(Policy.parse("identity"), "vote", {}).score(held))
    assert r["tuned"] == pytest.approx(100 * merged(Policy.parse(r["policy"]), "vote", {}).score(held))
    assert r["oracle"] >= r["identity"] and r["oracle"] >= r["tuned"] - 1e-9
    assert r["fell_back"] == (r["policy"] == "identity")
    rows = [r, run_dense_split(case, 4)]
    s = summarise_dense(case, rows)
    assert s["splits"] == 2 and s["kept_gain"] == pytest.approx(np.mean([x["tuned"] - x["identity"] for x in rows]))
    text = "\n".join(render_dense([s]))
    assert "| segmentation: synthetic | mean IoU | 24 | 16 | 2 |" in text and "0.2 points" in text
    report = tp.render({"config": {"candidates": "standard", "budget": 8, "splits": 2}, "cases": [], "tables": [],
                        "conformal": {}, "dense": [s], "seconds": 1.0})
    assert "## Detection and segmentation" in report and "Not in this panel" not in report
