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
