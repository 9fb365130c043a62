"""``ttakit evaluate`` / ``ttakit predict`` on tables: real scikit-learn data
sets (breast_cancer, diabetes), models saved with skops, checked against a
naive loop (copies -> predict_proba -> mean) written here."""

from __future__ import annotations

import io
import json
import pickle
import sys

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
sio = pytest.importorskip("skops.io")
pytest.importorskip("sklearn")

from sklearn.datasets import load_breast_cancer, load_diabetes  # noqa: E402
from sklearn.linear_model import LogisticRegression, Ridge  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import torch  # noqa: E402

from ttakit.interfaces import cli  # noqa: E402
from ttakit.policy import Policy  # noqa: E402
from ttakit.views.rows import FeatureStats, copies  # noqa: E402

N_TRAIN = 400


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def naive(model, stats: FeatureStats, frame, views, method="predict_proba"):
    """The loop a user writes: each view's copy of the rows, decoded back to
    a DataFrame, through the model; the per-view outputs."""
    rows, decoder = stats.encode(frame)
    fn = getattr(model, method)
    return np.stack([fn(decoder(v(torch.from_numpy(rows)).numpy())) for v in views])


@pytest.fixture(scope="module")
def cancer(tmp_path_factory):
    d = tmp_path_factory.mktemp("cancer")
    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    frame = x.assign(diagnosis=y)
    frame.iloc[:N_TRAIN].to_csv(d / "train.csv", index=False)
    frame.iloc[N_TRAIN:].to_csv(d / "test.csv", index=False)
    frame.iloc[N_TRAIN:].to_parquet(d / "test.parquet")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.5)).fit(x.iloc[:N_TRAIN], y.iloc[:N_TRAIN])
    sio.dump(model, d / "model.skops")
    (d / "model.pkl").write_bytes(pickle.dumps(model))
    return d, model, x, y


def test_evaluate_spec_with_fit_data_matches_the_naive_loop(cancer, capsys, tmp_path):
    d, model, x, y = cancer
    code, out, err = run(capsys, "evaluate", d / "model.skops", "--data", d / "test.parquet", "--target", "diagnosis",
                         "--policy", "noise(0.3)", "--fit-data", d / "train.csv", "--copies", "4", "--out", tmp_path)
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    stats = FeatureStats().fit(x.iloc[:N_TRAIN])  # from the training rows, never the test rows
    test, labels = x.iloc[N_TRAIN:], y.iloc[N_TRAIN:].to_numpy()
    probs = naive(model, stats, test, copies("noise", stats, 0.3, 4)).mean(0)
    plain = model.predict_proba(test)
    acc, acc0 = float((probs.argmax(1) == labels).mean()), float((plain.argmax(1) == labels).mean())
    assert report["tta"]["accuracy"] == pytest.approx(acc)
    assert report["no_tta"]["accuracy"] == pytest.approx(acc0)
    ll = -np.log(probs[np.arange(len(labels)), labels]).mean()
    assert report["tta"]["log_loss"] == pytest.approx(ll, rel=1e-6)
    fixed = int(((plain.argmax(1) != labels) & (probs.argmax(1) == labels)).sum())
    broken = int(((plain.argmax(1) == labels) & (probs.argmax(1) != labels)).sum())
    assert (report["paired"]["fixed"], report["paired"]["broken"]) == (fixed, broken)
    p = report["paired"]["log_loss"]
    assert p["ci_low"] <= p["difference"] <= p["ci_high"]
    for name in ("accuracy", "log_loss", "auc", "brier"):
        assert f"| {name} |" in out
    assert f"fixed: {fixed}, broken: {broken}" in out


def test_predict_with_a_saved_policy_equals_the_meta_estimator(cancer, capsys, tmp_path):
    from ttakit.sklearn import TTAClassifier

    d, model, x, y = cancer
    clf = TTAClassifier(model, prefit=True, views="none").fit(x.iloc[:N_TRAIN], y.iloc[:N_TRAIN])
    # a policy that is not "no TTA", as a tuned one would be, saved with its statistics
    views = copies("noise", clf.stats_, 0.2, 3) + copies("dropout", clf.stats_, 0.1, 2, first_seed=1000)
    clf.policy_ = Policy(views, [1 / 3] * 3 + [1 / 2] * 2)
    clf.save_policy(tmp_path / "policy.json")
    code, _, err = run(capsys, "predict", d / "model.skops", "--data", d / "test.csv", "--target", "diagnosis",
                       "--policy", tmp_path / "policy.json", "--out", tmp_path / "pred.parquet")
    assert code == 0, err
    got = pd.read_parquet(tmp_path / "pred.parquet")
    test = x.iloc[N_TRAIN:]
    want = clf.predict_proba(test)
    np.testing.assert_allclose(got[["p_0", "p_1"]].to_numpy(), want, atol=1e-6)
    assert list(got["row"]) == list(range(len(test)))
    assert (got["prediction"].to_numpy() == clf.predict(test)).all()
    per_view = naive(model, clf.stats_, test, views)
    ref = (per_view[:3].mean(0) + per_view[3:].mean(0)) / 2
    np.testing.assert_allclose(want, ref, atol=1e-6)


def test_regression_reports_rmse_mae_coverage_and_predicts_the_spread(capsys, tmp_path):
    x, y = load_diabetes(return_X_y=True, as_frame=True)
    frame = x.assign(progression=y)
    frame.iloc[:300].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[300:].to_csv(tmp_path / "test.csv", index=False)
    model = Ridge(alpha=0.1).fit(x.iloc[:300], y.iloc[:300])
    sio.dump(model, tmp_path / "ridge.skops")
    common = ["--policy", "jitter(0.1)", "--fit-data", tmp_path / "train.csv", "--copies", "5"]
    code, out, err = run(capsys, "evaluate", tmp_path / "ridge.skops", "--data", tmp_path / "test.csv",
                         "--target", "progression", *common, "--out", tmp_path / "rep")
    assert code == 0, err
    for name in ("rmse", "mae", "coverage"):
        assert f"| {name} |" in out
    assert "improved:" in out
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    stats = FeatureStats().fit(x.iloc[:300])
    per_view = naive(model, stats, x.iloc[300:], copies("jitter", stats, 0.1, 5), "predict")
    pred, target = per_view.mean(0), y.iloc[300:].to_numpy()
    assert report["tta"]["rmse"] == pytest.approx(np.sqrt(np.mean((pred - target) ** 2)))
    code, out, err = run(capsys, "predict", tmp_path / "ridge.skops", "--data", tmp_path / "test.csv",
                         "--target", "progression", *common)
    assert code == 0, err
    got = pd.read_csv(io.StringIO(out))
    np.testing.assert_allclose(got["prediction"], pred, rtol=1e-9)
    np.testing.assert_allclose(got["std"], per_view.std(0), rtol=1e-6, atol=1e-9)


def test_untrusted_skops_types_are_listed_and_refused_until_trusted(capsys, tmp_path):
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    x.assign(diagnosis=y).to_csv(tmp_path / "all.csv", index=False)
    sio.dump(HistGradientBoostingClassifier(max_iter=5).fit(x, y), tmp_path / "hgb.skops")
    argv = ["evaluate", tmp_path / "hgb.skops", "--data", tmp_path / "all.csv", "--target", "diagnosis",
            "--policy", "dropout(0.1)", "--fit-data", tmp_path / "all.csv", "--copies", "2"]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert "not trusted by default" in err and "TreePredictor" in err and "--trust" in err
    trusted = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
    code, out, err = run(capsys, *argv, "--trust", trusted)
    assert code == 0, err
    assert "| accuracy |" in out


def test_pickles_need_allow_pickle_whose_help_says_the_risk(cancer, capsys):
    d, *_ = cancer
    argv = ["predict", d / "model.pkl", "--data", d / "test.csv", "--target", "diagnosis", "--policy", "noise(0.1)",
            "--fit-data", d / "train.csv", "--copies", "2"]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert "is a pickle: loading it can run any code" in err and "--allow-pickle" in err
    code, out, err = run(capsys, *argv, "--allow-pickle")
    assert code == 0, err
    assert out.startswith("row,prediction,p_0,p_1")
    code, out, _ = run(capsys, "predict", "--data", "x.csv", "--help")  # the help of tables
    assert "RISK: unpickling runs whatever code" in " ".join(out.split())


def test_bad_columns_and_missing_statistics_are_named(cancer, capsys, tmp_path):
    d, *_ = cancer
    base = ["evaluate", d / "model.skops", "--data", d / "test.csv"]
    code, _, err = run(capsys, *base, "--target", "diagnosys", "--policy", "noise", "--fit-data", d / "train.csv")
    assert code == 2 and "--target 'diagnosys' is not a column of the table" in err and "diagnosis" in err
    code, _, err = run(capsys, *base, "--target", "diagnosis", "--policy", "noise")
    assert code == 2 and "needs --fit-data" in err
    code, _, err = run(capsys, *base, "--policy", "noise", "--fit-data", d / "train.csv")
    assert code == 2 and "needs --target" in err
    code, _, err = run(capsys, *base, "--target", "diagnosis")
    assert code == 2 and "needs --policy" in err
    code, _, err = run(capsys, "evaluate", d / "model.skops", "--data", "cifar10", "--target", "diagnosis")
    assert code == 2 and "give it a table" in err
    pd.read_csv(d / "test.csv").drop(columns=["mean area"]).to_csv(tmp_path / "short.csv", index=False)
    code, _, err = run(capsys, "evaluate", d / "model.skops", "--data", tmp_path / "short.csv", "--target",
                       "diagnosis", "--policy", "noise", "--fit-data", d / "train.csv")
    assert code == 2 and "lacks column(s) the model was fitted on: 'mean area'" in err


def test_parquet_without_pyarrow_names_the_extra(cancer, capsys, monkeypatch):
    d, *_ = cancer
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    code, _, err = run(capsys, "evaluate", d / "model.skops", "--data", d / "test.parquet", "--target", "diagnosis",
                       "--policy", "noise", "--fit-data", d / "train.csv")
    assert code == 2
    assert "Parquet (test.parquet; CSV needs nothing more) needs pyarrow" in err and "ttakit[tables]" in err
    assert len(err.strip().splitlines()) == 1


def test_row_policy_files_round_trip_categories_and_refuse_tampering(tmp_path):
    from ttakit.errors import PolicyError
    from ttakit.policy.rows import RowPolicy, load_row_policy, row_policy, save_row_policy

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"size": rng.normal(10, 3, 60), "count": rng.integers(0, 9, 60),
                          "island": rng.choice(["Biscoe", "Dream", "Torgersen"], 60)})
    stats = FeatureStats().fit(frame)
    policy = row_policy("noise(0.2) + resample(0.5) + identity", stats, n_copies=3, seed=7)
    for suffix in (".json", ".yaml"):
        path = save_row_policy(RowPolicy(policy, stats, "classification"), tmp_path / f"p{suffix}")
        back = load_row_policy(path)
        assert back.policy == policy and back.stats.fingerprint == stats.fingerprint
        rows, decoder = back.stats.encode(frame)
        for v_new, v_old in zip(back.policy.views, policy.views):
            a = decoder(v_new(torch.from_numpy(rows)).numpy())
            b = decoder(v_old(torch.from_numpy(stats.encode(frame)[0])).numpy())
            pd.testing.assert_frame_equal(a, b)
    text = (tmp_path / "p.json").read_text()
    d = json.loads(text)
    d["stats"]["scale"][0] *= 2
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(PolicyError, match="fingerprint"):
        load_row_policy(tmp_path / "bad.json")
    with pytest.raises(PolicyError, match="not a ttakit row policy"):
        (tmp_path / "plain.json").write_text(json.dumps({"format": "ttakit.policy", "views": []}))
        load_row_policy(tmp_path / "plain.json")
