"""Fuzzing the command line's table path (issue 21): random CSV, TSV and
Parquet files (shapes, dtypes, encodings, column names, NaN and infinity,
long cells and headers, damaged bytes) through ``ttakit predict`` and
``ttakit evaluate`` with a real scikit-learn model saved with skops.

Properties: the command ends with exit 0 (every row predicted, the table
written), 3 (bad rows named on stderr, the others written) or 2 (one
``ttakit: error:`` line); never an internal error or a traceback; no line
of stderr is long (input is quoted cut); each run stays within a bound on
its CPU time and memory. The huge inputs of the issue (a 50 MB cell, a
million-column header) run once each in a child process whose peak memory
is measured.

``TTAKIT_FUZZ_EXAMPLES`` sets the number of examples (``make fuzz`` runs
many, bench/fuzz_long.py); the default keeps this file well under a minute.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pd = pytest.importorskip("pandas")
sio = pytest.importorskip("skops.io")
pytest.importorskip("pyarrow")

from sklearn.linear_model import LogisticRegression  # noqa: E402

from ttakit.interfaces import cli  # noqa: E402
from ttakit.sklearn import TTAClassifier  # noqa: E402

EXAMPLES = int(os.environ.get("TTAKIT_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("TTAKIT_FUZZ_EXAMPLES"),
                suppress_health_check=list(HealthCheck))
#: per run: CPU seconds, and the traced peak memory beyond this many times the file's size
TIME_S, MEMORY_MB, MEMORY_PER_BYTE = 10.0, 64, 20
LONGEST_LINE = 2000
COLUMNS = ["a", "b", "c"]
#: small limits, so that the fuzz reaches them with small files
LIMITS = {"TTAKIT_MAX_TABLE_COLUMNS": "60", "TTAKIT_MAX_CELL_CHARS": "5000"}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """A logistic regression fitted on a DataFrame (columns a, b, c: two
    real, one integer-coded), saved with skops, its training table, and a
    row policy file of noise and dropout views."""
    d = tmp_path_factory.mktemp("fuzz_tables")
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(0, 2, 300), "b": rng.normal(5, 1, 300), "c": rng.integers(0, 5, 300)})
    y = (x.a + x.c + rng.normal(0, 1, 300) > 2).astype(int)
    model = LogisticRegression().fit(x, y)
    sio.dump(model, d / "model.skops")
    x.assign(y=y).to_csv(d / "train.csv", index=False)
    clf = TTAClassifier(model, prefit=True, views="noise+dropout", strength=0.2, n_copies=2, guard_alpha=1.0,
                        random_state=0).fit(x, y)
    clf.save_policy(d / "policy.json")
    return d


@pytest.fixture(scope="module")
def category_model_files(tmp_path_factory):
    """A pipeline that one-hot encodes a text column (``c``: island names)
    beside two real ones, fitted on a DataFrame and saved with skops (its
    types trusted by name on the command line), with its training table."""
    from sklearn.compose import make_column_transformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    d = tmp_path_factory.mktemp("fuzz_categories")
    rng = np.random.default_rng(1)
    x = pd.DataFrame({"a": rng.normal(0, 2, 300), "b": rng.normal(5, 1, 300),
                      "c": rng.choice(["Biscoe", "Dream", "Torgersen"], 300)})
    y = ((x.a > 0) ^ (x.c == "Dream")).astype(int)
    model = make_pipeline(make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["c"]),
                                                  remainder="passthrough"), LogisticRegression()).fit(x, y)
    sio.dump(model, d / "model.skops")
    x.assign(y=y).to_csv(d / "train.csv", index=False)
    return d, [f"--trust={t}" for t in sio.get_untrusted_types(file=d / "model.skops")]


# -- random tables ----------------------------------------------------------------------------------------
names = st.one_of(st.sampled_from(COLUMNS + ["y", "", "a.1", "Unnamed: 0", " a", "A"]),
                  st.text(max_size=12), st.text(alphabet="ab,\"\n\t", max_size=6),
                  st.integers(1, 9000).map(lambda n: "n" * n))
cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**70, 2**70), st.booleans(), st.none(),
    st.text(max_size=20), st.text(alphabet="0123456789.e-+,\"\n inf", max_size=10),
    st.integers(1, 9000).map(lambda n: "x" * n), st.sampled_from(["nan", "inf", "-inf", "NaN", "", "1e999"]),
)


@st.composite
def tables(draw):
    n_rows = draw(st.integers(0, 12))
    cols = list(COLUMNS) if draw(st.booleans()) else []
    cols += draw(st.lists(names, max_size=6))
    if draw(st.integers(0, 9)) == 0:
        cols += [f"w{j}" for j in range(draw(st.integers(10, 90)))]  # wide: around the column limit
    cols = cols if draw(st.booleans()) else draw(st.permutations(cols))
    data = {}
    for j, c in enumerate(cols):
        kind = draw(st.sampled_from(["normal", "whole", "cells", "constant"]))
        if kind == "normal":
            values = list(np.random.default_rng(j).normal(size=n_rows))
        elif kind == "whole":
            values = list(np.random.default_rng(j).integers(-3, 9, n_rows))
        elif kind == "constant":
            values = [draw(cells)] * n_rows
        else:
            values = draw(st.lists(cells, min_size=n_rows, max_size=n_rows))
        data[j] = values
    frame = pd.DataFrame(data)
    frame.columns = cols
    return frame


def write(frame: "pd.DataFrame", path: Path, encoding: str, damage) -> None:
    """Write ``frame`` as ``path`` says (CSV, TSV or Parquet), in ``encoding``, then damage its bytes."""
    if path.suffix == ".parquet":
        seen: dict = {}
        names = []
        for c in map(str, frame.columns):  # Parquet files written by pandas hold unique names
            name = c
            while name in seen:
                seen[c] += 1
                name = f"{c}.{seen[c]}"
            seen.setdefault(c, 0)
            seen[name] = 0
            names.append(name)
        frame = frame.set_axis(names, axis=1)
        try:
            frame.to_parquet(path)
        except Exception:  # mixed types pyarrow cannot store: as text
            frame.astype(str).to_parquet(path)
    else:
        text = frame.to_csv(index=False, sep="\t" if path.suffix == ".tsv" else ",")
        path.write_bytes(text.encode(encoding, errors="replace"))
    if damage is not None:
        kind, where, junk = damage
        data = path.read_bytes()
        cut = int(where * len(data))
        path.write_bytes(data[:cut] if kind == "truncate" else data[:cut] + junk + data[cut:])


damages = st.one_of(st.none(), st.tuples(st.sampled_from(["truncate", "insert"]), st.floats(0, 1),
                                         st.binary(min_size=1, max_size=30)))


def bounded(argv, size: int):
    """Run the command line; its exit code, stdout and stderr, checked for
    time and memory."""
    out, err = io.StringIO(), io.StringIO()
    tracemalloc.start()
    t0 = time.process_time()
    try:
        old = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        try:
            code = cli.main([str(a) for a in argv])
        finally:
            sys.stdout, sys.stderr = old
    finally:
        elapsed = time.process_time() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    assert elapsed < TIME_S, f"took {elapsed:.1f} s"
    assert peak < MEMORY_MB + MEMORY_PER_BYTE * size / 2**20, f"peak {peak:.0f} MB for a {size:,}-byte table"
    return code, out.getvalue(), err.getvalue()


def check_clean(code: int, out: str, err: str) -> None:
    """Exit 0, 2 or 3, one ``ttakit: error:`` line for 2, short ``ttakit:`` lines only."""
    assert code in (0, 2, 3), (code, err[-2000:])
    lines = err.splitlines()
    assert "internal error" not in err and "Traceback" not in err, err[-2000:]
    assert all(line.startswith("ttakit: ") for line in lines), err[-2000:]
    assert all(len(line) <= LONGEST_LINE for line in lines), max(map(len, lines))
    if code == 2:
        assert sum(line.startswith("ttakit: error: ") for line in lines) == 1, err
    if code == 3:
        assert "could not be predicted" in err or "left out" in out or "can be evaluated" in err, err


@FUZZ
@given(frame=tables(), suffix=st.sampled_from([".csv", ".tsv", ".parquet"]),
       encoding=st.sampled_from(["utf-8", "utf-8", "latin-1", "utf-16", "cp1252"]), damage=damages,
       command=st.sampled_from(["predict", "evaluate"]), views=st.sampled_from(["file", "spec"]),
       nan=st.sampled_from(["raise", "impute"]), limits=st.booleans())
def test_random_tables_exit_cleanly(model_files, tmp_path_factory, frame, suffix, encoding, damage, command, views,
                                    nan, limits):
    fuzz_once(model_files, [], tmp_path_factory, frame, suffix, encoding, damage, command, views, nan, limits)


@FUZZ
@given(frame=tables(), suffix=st.sampled_from([".csv", ".parquet"]), damage=damages,
       command=st.sampled_from(["predict", "evaluate"]), nan=st.sampled_from(["raise", "impute"]))
def test_random_tables_through_a_pipeline_with_a_text_column(category_model_files, tmp_path_factory, frame, suffix,
                                                              damage, command, nan):
    d, trust = category_model_files
    fuzz_once(d, trust, tmp_path_factory, frame, suffix, "utf-8", damage, command, "spec", nan, False)


def fuzz_once(d, extra, tmp_path_factory, frame, suffix, encoding, damage, command, views, nan, limits) -> None:
    path = tmp_path_factory.mktemp("t") / f"table{suffix}"
    write(frame, path, encoding, damage)
    argv = [command, d / "model.skops", "--data", path, *extra]
    if views == "file":
        argv += ["--views", d / "policy.json"]
    else:
        argv += ["--views", "noise(0.3) + dropout(0.1) + resample(0.3)", "--fit-data", d / "train.csv",
                 "--copies", "2", "--nan", nan]
    if command == "evaluate":
        argv += ["--target", "y"]
    env = LIMITS if limits else {}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        code, out, err = bounded(argv, path.stat().st_size)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    check_clean(code, out, err)
    if command == "predict" and code in (0, 3):
        got = pd.read_csv(io.StringIO(out))
        assert list(got.columns[:2]) == ["row", "prediction"]
        assert got["row"].is_monotonic_increasing


# -- the huge inputs of the issue, in a child process whose memory is measured ---------------------------------
CHILD = """
import json, resource, sys
from ttakit.interfaces import cli
for argv in json.loads(sys.argv[1]):
    code = cli.main(argv)
    print("RUN", code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr, flush=True)
"""


def child(runs) -> tuple[list[tuple[int, float]], str]:
    """Run the command lines ``runs`` one after the other in one child
    process: each one's exit code and the process's peak memory (MB) after it."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps([[str(a) for a in argv] for argv in runs])],
                       capture_output=True, text=True, env=env, timeout=300)
    done = [(int(line.split()[1]), int(line.split()[2]) / 1024) for line in r.stderr.splitlines()
            if line.startswith("RUN ")]
    assert len(done) == len(runs), r.stderr[-3000:]
    return done, r.stderr


def test_huge_cells_and_headers_cost_little_memory(model_files, tmp_path):
    """Each huge input is refused by its limit, in one short line, for at most
    its own size in memory over a 20-row table's run (the million-column
    header cost 1.8 GB before issue 21). The peak only grows, so each run's
    bound holds if the last one's does."""
    d = model_files
    small = tmp_path / "small.csv"
    pd.read_csv(d / "train.csv").head(20).to_csv(small, index=False)
    wide = tmp_path / "wide.csv"  # a million columns, three rows: 14 MB
    with open(wide, "w") as f:
        f.write(",".join(f"c{j}" for j in range(1_000_000)) + "\n")
        for _ in range(3):
            f.write(",".join(["1"] * 1_000_000) + "\n")
    cell = tmp_path / "cell.csv"  # a 50 MB cell in a column the model takes
    with open(cell, "w") as f:
        f.write("a,b,c\n1,2,3\n" + "x" * 50_000_000 + ",2,3\n")
    name = tmp_path / "name.csv"  # a 50 MB column name
    with open(name, "w") as f:
        f.write("a,b,c," + "n" * 50_000_000 + "\n1,2,3,4\n")
    huge = [(wide, "max_table_columns"), (cell, "max_cell_chars"), (name, "max_cell_chars")]
    runs = [["predict", d / "model.skops", "--data", path, "--views", d / "policy.json"]
            for path in [small] + [p for p, _ in huge]]
    done, err = child(runs)
    assert done[0][0] == 0, err[-3000:]
    base = done[0][1]
    errors = [line for line in err.splitlines() if line.startswith("ttakit: error:")]
    assert len(errors) == len(huge), err[-3000:]
    for (code, peak), (path, limit), line in zip(done[1:], huge, errors):
        assert code == 2 and limit in line and len(line) < 1000, line[:2000]
        assert peak - base < 64 + 2 * path.stat().st_size / 2**20, (path.name, peak, base)
