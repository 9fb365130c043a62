"""Row views, the row modality, the regression task and the meta-estimators' semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ttakit import engine
from ttakit.errors import InputError, PolicyError
from ttakit.inputs.rows import RowInputs
from ttakit.models import CallableModel
from ttakit.policy import Policy
from ttakit.sklearn import TTAClassifier, TTARegressor
from ttakit.tasks.regression import RegressionTask, weighted_median
from ttakit.views.rows import FAMILIES, FeatureStats, RowNoise, copies, row_patterns


def table(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return np.c_[rng.normal(50, 10, n),              # numeric
                 rng.integers(0, 6, n),              # integer (children)
                 rng.integers(0, 2, n),              # binary -> categorical
                 rng.uniform(18, 90, n).round(),     # integer (age)
                 rng.uniform(0, 1, n)]               # numeric in [0, 1]


STATS = FeatureStats().fit(table())


def test_roles_inferred_and_overridden():
    assert STATS.role_list == ("numeric", "integer", "categorical", "integer", "numeric")
    s = FeatureStats(roles={1: "categorical", 4: "ignore"}).fit(table())
    assert s.role_list[1] == "categorical" and s.role_list[4] == "ignore"
    with pytest.raises(InputError, match="unknown role"):
        FeatureStats(roles={0: "weird"}).fit(table())
    with pytest.raises(InputError, match="not a column"):
        FeatureStats(roles={9: "numeric"}).fit(table())


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(sorted(FAMILIES)), strength=st.floats(0, 5), seed=st.integers(0, 2**31),
       data_seed=st.integers(0, 1000))
def test_views_respect_integer_bounded_and_categorical_features(name, strength, seed, data_seed):
    x = torch.from_numpy(table(64, data_seed) * np.array([1, 1, 1, 1, 3]))  # column 4 partly out of range
    y = FAMILIES[name](STATS, strength, seed)(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    for j, role in enumerate(STATS.role_list):
        changed = y[:, j] != x[:, j]
        if role in ("integer", "categorical"):
            assert torch.equal(y[:, j], y[:, j].round())
        if role == "categorical":
            assert set(y[:, j].tolist()) <= set(STATS.levels[j][0].tolist()) | set(x[:, j].tolist())
        if role in ("numeric", "integer"):
            assert (y[changed, j] >= STATS.low[j]).all() and (y[changed, j] <= STATS.high[j]).all()


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(sorted(FAMILIES)), strength=st.floats(0.01, 1), seed=st.integers(0, 1000),
       perm_seed=st.integers(0, 1000))
def test_views_are_seeded_values_and_depend_only_on_each_row(name, strength, seed, perm_seed):
    cls = FAMILIES[name]
    a, b = cls(STATS, strength, seed), cls(STATS, strength, seed)
    assert a == b and hash(a) == hash(b) and a is not b
    assert cls(STATS, strength, seed + 1) != a
    assert len(Policy([a, b, cls(STATS, strength, seed + 1)]).unique()) == 2
    x = torch.from_numpy(table(50, seed))
    perm = torch.from_numpy(np.random.default_rng(perm_seed).permutation(50))
    y = a(x)
    assert torch.equal(b(x), y)
    assert torch.equal(a(x[perm]), y[perm])          # order, subset and chunk invariant
    assert torch.equal(a(x[:7]), y[:7])


def test_copies_differ_and_noise_has_the_robust_scale():
    x = torch.from_numpy(np.zeros((1, 5)) + STATS.centre).repeat(1, 1)
    x = torch.from_numpy(table(4000, 3))
    ys = [v(x) for v in copies("noise", STATS, 0.1, 4)]
    assert not torch.equal(ys[0], ys[1])
    d = (ys[0] - x)[:, 0].numpy()
    assert 0.6 * 0.1 * STATS.scale[0] < d.std() < 1.4 * 0.1 * STATS.scale[0]
    assert len(set(row_patterns(x).tolist())) > 2000


def test_row_view_refuses_bad_arguments_and_shapes():
    with pytest.raises(PolicyError):
        RowNoise(STATS, -1)
    with pytest.raises(PolicyError):
        RowNoise(STATS, 0.1, seed=-3)
    with pytest.raises(InputError, match="not fitted|must be fitted"):
        RowNoise(FeatureStats(), 0.1)
    with pytest.raises(InputError, match="expects rows"):
        RowNoise(STATS, 0.1).check_input(torch.zeros(3, 2))


def test_row_inputs_validate_in_one_place():
    inp = RowInputs(5)
    assert inp.prepare(np.ones((3, 5), np.float32), torch.device("cpu")).dtype == torch.float64
    with pytest.raises(InputError, match="2-D"):
        list(inp.chunks(np.ones(5), 2))
    with pytest.raises(InputError, match="fitted on 5 features"):
        inp.prepare(np.ones((3, 4)), torch.device("cpu"))
    with pytest.raises(InputError, match="dtype"):
        inp.prepare(np.array([["a"] * 5]), torch.device("cpu"))
    x = np.ones((3, 5))
    x[1, 2] = np.nan
    bad, why = inp.invalid(inp.prepare(x, torch.device("cpu")))
    assert bad.tolist() == [False, True, False] and "NaN" in why
    imp = RowInputs(5, nan="impute", fill=np.arange(5.0))
    t = imp.prepare(x, torch.device("cpu"))
    assert t[1, 2] == 2 and imp.invalid(t) is None
    assert [len(c) for c, _ in RowInputs(chunk_rows=4).chunks(np.ones((10, 2)), 1000)] == [4, 4, 2]


def _run_regression(views, weights, merge="mean", on_error="raise", x=None):
    x = table(30) if x is None else x
    model = CallableModel(lambda a: a[:, 0] * 2 + a[:, 1])
    return engine.run(RegressionTask(merge, keep_views=True, on_error=on_error), model, x, views, weights,
                      inputs=RowInputs(5, chunk_rows=8), batch_size=8 * len(views))


def test_regression_task_mean_median_and_spread():
    views = copies("noise", STATS, 0.3, 5)
    w = [1.0, 2.0, 1.0, 1.0, 3.0]
    res = _run_regression(views, w)
    vp = res.view_preds
    ww = np.array(w)[:, None]
    mean = (vp * ww).sum(0) / ww.sum()
    np.testing.assert_allclose(res.pred, mean, rtol=1e-12)
    np.testing.assert_allclose(res.std, np.sqrt((ww * (vp - mean) ** 2).sum(0) / ww.sum()), rtol=1e-9, atol=1e-9)
    med = _run_regression(views, [1.0] * 5, "median")
    np.testing.assert_allclose(med.pred, np.median(med.view_preds, 0))
    even = weighted_median(torch.tensor([[1.0], [4.0], [2.0], [3.0]]), torch.ones(4))
    assert even.item() == 2.5
    lo, hi = res.interval(0.9)
    assert (lo <= res.pred).all() and (hi >= res.pred).all()


def test_regression_task_marks_failed_rows():
    x = table(30)
    x[4, 0] = np.inf
    res = _run_regression(copies("noise", STATS, 0.1, 2), [1.0, 1.0], on_error="mark", x=x)
    assert res.failed.tolist().count(True) == 1 and np.isnan(res.pred[4]) and 4 in res.errors
    with pytest.raises(InputError, match="index 4"):
        _run_regression(copies("noise", STATS, 0.1, 2), [1.0, 1.0], x=x)


def test_all_copies_of_a_chunk_go_to_the_estimator_in_one_call():
    x, y = load_breast_cancer(return_X_y=True)
    clf = TTAClassifier(make_pipeline(StandardScaler(), LogisticRegression()), views="noise", strength=0.3, n_copies=4,
                        holdout=0.5, random_state=0, chunk_rows=50).fit(x, y)
    clf.policy_ = Policy(copies("noise", clf.stats_, 0.3, 4)).unique()  # force TTA for the test
    sizes = []
    inner = clf.estimator_.predict_proba
    clf.estimator_.predict_proba = lambda a: (sizes.append(len(a)), inner(a))[1]
    clf.predict_proba(x[:120])
    assert sizes == [200, 200, 80]


def test_merged_prediction_equals_a_naive_loop_over_copies():
    x, y = load_breast_cancer(return_X_y=True)
    clf = TTAClassifier(make_pipeline(StandardScaler(), LogisticRegression()), random_state=0).fit(x[:400], y[:400])
    views = copies("jitter", clf.stats_, 0.05, 3) + copies("dropout", clf.stats_, 0.1, 2)
    clf.policy_ = Policy(views, [1, 1, 1, 2, 2]).unique()
    naive = sum(w * clf.estimator_.predict_proba(v(torch.from_numpy(x[400:])).numpy())
                for v, w in zip(views, [1, 1, 1, 2, 2])) / 7
    np.testing.assert_allclose(clf.predict_proba(x[400:]), naive, rtol=1e-5, atol=1e-6)
    xr, yr = load_diabetes(return_X_y=True)
    reg = TTARegressor(Ridge(), random_state=0).fit(xr[:300], yr[:300])
    reg.policy_ = Policy(copies("noise", reg.stats_, 0.2, 4)).unique()
    naive = np.mean([reg.estimator_.predict(v(torch.from_numpy(xr[300:])).numpy()) for v in reg.policy_.views], 0)
    np.testing.assert_allclose(reg.predict(xr[300:]), naive, rtol=1e-10)


def test_guard_falls_back_when_noise_hurts():
    # a sharp threshold on feature 0: any noise moves rows across it
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3))
    y = (x[:, 0] > 0).astype(int)
    from sklearn.tree import DecisionTreeClassifier

    clf = TTAClassifier(DecisionTreeClassifier(random_state=0), views="noise", strength=[1.0, 2.0],
                        random_state=0).fit(x, y)
    assert clf.fell_back_ and clf.policy_.is_identity
    np.testing.assert_array_equal(clf.predict_proba(x), clf.estimator_.predict_proba(x))


def test_no_tta_is_exactly_the_estimator_and_prefit_is_respected():
    xr, yr = load_diabetes(return_X_y=True)
    ridge = Ridge().fit(xr, yr)
    reg = TTARegressor(ridge, prefit=True, views="none").fit(xr, yr)
    assert reg.estimator_ is ridge and reg.fell_back_
    np.testing.assert_array_equal(reg.predict(xr), ridge.predict(xr))
    p, s = reg.predict(xr, return_std=True)
    assert (s == 0).all()


def test_dataframes_keep_columns_and_dtypes():
    pd = pytest.importorskip("pandas")
    from sklearn.compose import make_column_transformer
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({"age": rng.integers(18, 90, n), "income": rng.lognormal(10, 1, n),
                       "city": rng.choice(["paris", "lyon", "nice"], n), "member": rng.random(n) < 0.3})
    y = ((df["age"] > 50) ^ (df["city"] == "nice")).astype(int).to_numpy()
    pre = make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["city", "member"]),
                                  remainder="passthrough")
    clf = TTAClassifier(make_pipeline(pre, LogisticRegression(max_iter=3000)), random_state=0).fit(df, y)
    assert clf.stats_.role_list == ("integer", "numeric", "categorical", "categorical")
    clf.policy_ = Policy(copies("resample", clf.stats_, 0.5, 3) + copies("noise", clf.stats_, 0.5, 3)).unique()
    seen = []
    inner = clf.estimator_.predict_proba
    clf.estimator_.predict_proba = lambda X: (seen.append(X), inner(X))[1]
    test = df.iloc[:20].copy()
    test.loc[test.index[0], "city"] = "brest"  # unseen in training
    p = clf.predict_proba(test)
    assert p.shape == (20, 2) and np.isfinite(p).all()
    got = seen[-1]
    assert list(got.columns) == list(df.columns) and list(got.dtypes) == list(df.dtypes)
    assert set(got["city"]) <= {"paris", "lyon", "nice", "brest"} and got["age"].between(18, 89).all()
    assert "brest" in set(got["city"])


def test_tabular_study_runs_at_tiny_settings():
    from ttakit.experiments import tabular

    out = tabular.run({"datasets": ["iris", "diabetes"], "models": ["logistic"], "folds": 2, "n_copies": 2})
    assert len(out["cells"]) == 2 and "accuracy" in out["cells"][0] and "rmse" in out["cells"][1]
    assert "| iris | logistic | accuracy |" in out["table"]


def test_reproduce_tabular_command_writes_a_report(tmp_path, capsys):
    from ttakit.interfaces import cli

    code = cli.main(["reproduce", "tabular", "--datasets", "iris", "cars_mpg", "--models", "logistic",
                     "--folds", "2", "--repeats", "1", "--copies", "2", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "Of 2 cells" in out and "| iris | logistic | log_loss |" in out
    assert "| cars_mpg | logistic | rmse |" in (tmp_path / "report.md").read_text()
