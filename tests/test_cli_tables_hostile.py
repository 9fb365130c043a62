"""The table path of the command line under odd input (issue 21, items 6 and
8-10): column dtypes that differ from the fit, huge cells and headers, wide
tables, NaN and infinite rows. Real data (breast_cancer), a real model saved
with skops, the command line run in this process."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
sio = pytest.importorskip("skops.io")
pytest.importorskip("pyarrow")

from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from ttakit.interfaces import cli  # noqa: E402

N_TRAIN = 400
#: no line of standard error may be longer than this, whatever the input
LONGEST_LINE = 2000


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert all(len(line) <= LONGEST_LINE for line in err.splitlines()), max(map(len, err.splitlines()))
    return code, out, err


@pytest.fixture(scope="module")
def cancer(tmp_path_factory):
    d = tmp_path_factory.mktemp("cancer")
    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    x = x.iloc[:, :6]  # six columns: a small model, quick tests
    frame = x.assign(diagnosis=y)
    frame.iloc[:N_TRAIN].to_csv(d / "train.csv", index=False)
    test = frame.iloc[N_TRAIN:].reset_index(drop=True)
    test.to_csv(d / "test.csv", index=False)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x.iloc[:N_TRAIN], y.iloc[:N_TRAIN])
    sio.dump(model, d / "model.skops")
    return d, model, test


def spec(d, *more):
    return ["--views", "noise(0.5)", "--fit-data", d / "train.csv", "--copies", "4", *more]


# -- item 6: the column roles come from the fit, not from the dtype of the rows predicted ---------------
def test_whole_number_columns_read_as_int64_are_not_rounded(cancer, capsys, tmp_path):
    d, model, test = cancer
    whole = test.copy()
    whole["mean radius"] = whole["mean radius"].round().astype("int64")  # fitted as float; CSV readers make it int64
    whole.to_csv(tmp_path / "whole.csv", index=False)
    whole.astype({"mean radius": "float64"}).to_parquet(tmp_path / "whole.parquet")
    assert pd.read_csv(tmp_path / "whole.csv")["mean radius"].dtype == np.int64
    outs = []
    for name in ("whole.csv", "whole.parquet"):
        code, out, err = run(capsys, "predict", d / "model.skops", "--data", tmp_path / name, "--target",
                             "diagnosis", *spec(d))
        assert code == 0, err
        outs.append(pd.read_csv(io.StringIO(out)))
    pd.testing.assert_frame_equal(outs[0], outs[1])  # the same values give the same predictions


# -- item 8: no message echoes a whole cell ------------------------------------------------------------------
def test_a_huge_cell_is_refused_by_its_limit_and_not_echoed(cancer, capsys, tmp_path):
    d, model, test = cancer
    bad = test.astype({"mean texture": object})
    bad.loc[3, "mean texture"] = "z" * 3_000_000
    bad.to_csv(tmp_path / "huge.csv", index=False)
    code, out, err = run(capsys, "predict", d / "model.skops", "--data", tmp_path / "huge.csv", *spec(d))
    assert code == 2 and out == ""
    assert "max_cell_chars" in err and "'mean texture' in row 3" in err and "TTAKIT_MAX_CELL_CHARS" in err
    assert len(err) < 1000


def test_a_long_cell_under_the_limit_is_cut_in_the_message(cancer, capsys, tmp_path, monkeypatch):
    d, model, test = cancer
    monkeypatch.setenv("TTAKIT_MAX_CELL_CHARS", str(10**8))
    bad = test.astype({"mean texture": object})
    bad.loc[3, "mean texture"] = "x" * 500_000
    bad.to_csv(tmp_path / "long.csv", index=False)
    code, out, err = run(capsys, "predict", d / "model.skops", "--data", tmp_path / "long.csv", *spec(d))
    assert code == 2 and "error:" in err and len(err) < 1500
    # a label the model does not know, and a target name, quoted cut
    labels = test.astype({"diagnosis": object})
    labels.loc[0, "diagnosis"] = "y" * 500_000
    labels.to_csv(tmp_path / "label.csv", index=False)
    code, out, err = run(capsys, "evaluate", d / "model.skops", "--data", tmp_path / "label.csv", "--target",
                         "diagnosis", *spec(d))
    assert code == 2 and "are not classes of the model" in err and len(err) < 1500
    code, out, err = run(capsys, "evaluate", d / "model.skops", "--data", d / "test.csv", "--target", "z" * 10**6,
                         *spec(d))
    assert code == 2 and "is not a column of the table" in err and len(err) < 2000


# -- item 9: the header is checked against the model before the rows are read ---------------------------
def test_a_table_too_wide_is_refused_from_its_header(cancer, capsys, tmp_path, monkeypatch):
    d, *_ = cancer
    wide = tmp_path / "wide.csv"
    width = 300_000  # over the default max_table_columns
    with open(wide, "w") as f:
        f.write(",".join(f"c{j}" for j in range(width)) + "\n")
        for _ in range(3):
            f.write(",".join(["1"] * width) + "\n")
    t0 = time.process_time()
    code, out, err = run(capsys, "predict", d / "model.skops", "--data", wide, *spec(d))
    assert code == 2 and "max_table_columns" in err and "TTAKIT_MAX_TABLE_COLUMNS" in err
    assert time.process_time() - t0 < 5  # not the 25 s of reading it all
    pq_wide = tmp_path / "wide.parquet"
    pd.DataFrame(np.zeros((2, 50)), columns=[f"c{j}" for j in range(50)]).to_parquet(pq_wide)
    monkeypatch.setenv("TTAKIT_MAX_TABLE_COLUMNS", "20")
    code, out, err = run(capsys, "predict", d / "model.skops", "--data", pq_wide, *spec(d))
    assert code == 2 and "max_table_columns=20" in err and ": 50 is over" in err


def test_missing_columns_are_named_before_the_rows_are_read(cancer, capsys, tmp_path):
    d, *_ = cancer
    path = tmp_path / "garbage.csv"
    # the header lacks a model column; the rows after it would not even parse as UTF-8
    path.write_bytes(b"mean radius,mean texture,diagnosis\n" + b"\xff\xfe\x00,\"\n" * 1000)
    code, out, err = run(capsys, "predict", d / "model.skops", "--data", path, *spec(d))
    assert code == 2 and "lacks column(s) the model was fitted on" in err and "mean perimeter" in err


def test_a_huge_column_name_is_refused_while_the_header_is_read(cancer, capsys, tmp_path):
    d, *_ = cancer
    path = tmp_path / "name.csv"
    path.write_text("a," + "n" * 2_000_000 + "\n1,2\n")
    code, out, err = run(capsys, "predict", d / "model.skops", "--data", path, *spec(d))
    assert code == 2 and "max_cell_chars" in err and len(err) < 1000


# -- item 10: NaN and infinite rows are named, the others predicted, exit 3 -----------------------------
def test_nan_and_inf_rows_are_named_and_the_others_written(cancer, capsys, tmp_path):
    d, model, test = cancer
    bad = test.copy()
    bad.loc[2, "mean area"] = np.nan
    bad.loc[5, "mean smoothness"] = np.inf
    bad.loc[7, "mean radius"] = -np.inf
    bad.to_csv(tmp_path / "bad.csv", index=False)
    code, out, err = run(capsys, "predict", d / "model.skops", "--data", tmp_path / "bad.csv", "--target",
                         "diagnosis", *spec(d))
    assert code == 3
    assert "cannot predict row 2: NaN in column 'mean area'" in err
    assert "row 5: infinity in column 'mean smoothness'" in err and "row 7: infinity" in err
    assert "3 of 169 rows could not be predicted" in err
    assert "on_error" not in err and "--nan impute" in err  # flags only, no Python option
    got = pd.read_csv(io.StringIO(out))
    assert list(got["row"]) == [i for i in range(len(test)) if i not in (2, 5, 7)]
    code, out, err = run(capsys, "predict", d / "model.skops", "--data", d / "test.csv", "--target", "diagnosis",
                         *spec(d))
    assert code == 0
    clean = pd.read_csv(io.StringIO(out)).set_index("row").loc[got["row"]].reset_index()
    pd.testing.assert_frame_equal(got, clean)  # the good rows as they are alone
    code, out, err = run(capsys, "evaluate", d / "model.skops", "--data", tmp_path / "bad.csv", "--target",
                         "diagnosis", *spec(d))
    assert code == 3 and "166 rows, TTA" in out and "3 of 169 rows left out" in out
    assert "cannot predict row 2" in err


def test_a_table_of_only_bad_rows_exits_3_with_an_empty_table(cancer, capsys, tmp_path):
    d, model, test = cancer
    bad = test.head(4).copy()
    bad["mean area"] = np.nan
    bad.to_csv(tmp_path / "all_bad.csv", index=False)
    code, out, err = run(capsys, "predict", d / "model.skops", "--data", tmp_path / "all_bad.csv", *spec(d),
                         "--out", tmp_path / "p.csv")
    assert code == 3 and "4 of 4 rows could not be predicted" in err
    assert len(pd.read_csv(tmp_path / "p.csv")) == 0
    code, out, err = run(capsys, "evaluate", d / "model.skops", "--data", tmp_path / "all_bad.csv", "--target",
                         "diagnosis", *spec(d))
    assert code == 3 and "none of the 4 rows can be evaluated" in err


def test_nan_impute_predicts_every_row(cancer, capsys, tmp_path):
    d, model, test = cancer
    bad = test.copy()
    bad.loc[2, "mean area"] = np.nan
    bad.to_csv(tmp_path / "nan.csv", index=False)
    code, out, err = run(capsys, "predict", d / "model.skops", "--data", tmp_path / "nan.csv", *spec(d, "--nan",
                                                                                                     "impute"))
    assert code == 0, err
    assert len(pd.read_csv(io.StringIO(out))) == len(test)


def test_an_estimator_that_raises_without_tta_is_a_model_error_not_an_internal_one():
    """Found by `make fuzz`: a pipeline whose OneHotEncoder raised TypeError on a
    damaged text column escaped the no-TTA path as an internal error (exit 1)."""
    import numpy as np
    import pytest

    from ttakit.errors import ModelError
    from ttakit.tasks.rows import predict_rows

    class Broken:
        classes_ = np.array([0, 1])

        def predict_proba(self, x):
            raise TypeError("ufunc 'isnan' not supported for the input types")

    with pytest.raises(ModelError, match="TypeError: ufunc 'isnan'"):
        predict_rows(Broken(), np.zeros((3, 2)), None)
