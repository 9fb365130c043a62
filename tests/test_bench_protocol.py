"""The benchmark protocol (bench/protocol.py): the quiet/contended decision
on fake machine readings, the reading of a fake /proc, and the refusal to
write a contended result into BENCHMARKS.md."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import protocol as P  # noqa: E402

CORES = 2


def reading(t, load=0.2, busy=0.0, steal=0.0, own=0.0, others=None):
    return P.Reading(t=t, load1=load, busy=busy, steal=steal, own=own, others=dict(others or {}))


class FakeMachine:
    """Readings in order; each ``reader()`` call returns the next one."""

    def __init__(self, readings):
        self.readings = list(readings)

    def __call__(self):
        return self.readings.pop(0)


def guard(readings):
    return P.Guard(reader=FakeMachine(readings), cores=CORES, sample_s=2.0, sleep=lambda s: None)


def run(readings, ticks: int = 1) -> dict:
    g = guard(readings)
    g.start()
    for _ in range(ticks):
        g.tick()
    return g.finish()


def quiet_readings():
    # 2 s quiet check, then 10 s of run in which this benchmark keeps both cores busy
    return [reading(0, busy=100.0), reading(2, busy=100.02),
            reading(7, load=1.6, busy=110.02, own=10.0), reading(12, load=2.1, busy=120.05, own=20.0)]


def test_a_quiet_machine_is_quiet():
    c = run(quiet_readings())
    assert c["contended"] is False and c["reasons"] == []
    assert c["during"]["own_cores"] == pytest.approx(2.0)
    assert c["during"]["others_share"] == pytest.approx(0.03 / 20, abs=1e-4)
    assert len(c["others_share_per_round"]) == 2


def test_high_load_before_is_contended():
    rs = quiet_readings()
    rs[0] = reading(0, load=2.0, busy=100.0)  # exactly 1 per core: busy
    c = run(rs)
    assert c["contended"] and any("before the run 2.00" in r for r in c["reasons"])


def test_load_after_counts_only_what_the_benchmark_did_not_add():
    rs = quiet_readings()
    rs[-1] = reading(12, load=3.9, busy=120.05, own=20.0)  # 3.9 - 2 busy cores = 1.9 < 2: quiet
    assert not run(rs)["contended"]
    rs = quiet_readings()
    rs[-1] = reading(12, load=4.1, busy=120.05, own=20.0)  # 2.1 left: busy
    c = run(rs)
    assert c["contended"] and any("after the run 4.10" in r for r in c["reasons"])


def test_other_processes_during_the_run_are_contended_even_when_short_lived():
    # the machine was busier than this benchmark by 3 CPU seconds over 10 s on 2 cores (15 %),
    # by processes that no reading saw (they came and went between two readings)
    rs = quiet_readings()
    rs[-1] = reading(12, load=2.1, busy=123.02, own=20.0)
    c = run(rs)
    assert c["contended"]
    assert c["during"]["others_share"] == pytest.approx(0.15, abs=1e-3)
    assert any("15% of the CPU during the run" in r for r in c["reasons"])


def test_steal_counts_as_contention():
    rs = quiet_readings()
    rs[-1] = reading(12, load=2.1, busy=123.02, steal=3.0, own=20.0)
    c = run(rs)
    assert c["contended"] and c["during"]["steal_share"] == pytest.approx(0.15)


@pytest.mark.parametrize("cpu_seconds, contended", [(1.0, False), (1.2, True)])
def test_one_heavy_process_is_named(cpu_seconds, contended):
    # one other process over the 10 s run: 1.0 s is 10 % of a core (allowed), 1.2 s is 12 %
    others_a = {4242: ("trainer", 50.0)}
    others_b = {4242: ("trainer", 50.0 + cpu_seconds)}
    rs = [reading(0, busy=100.0, others=others_a), reading(2, busy=100.0, others=others_a),
          reading(7, load=1.6, busy=110.0, own=10.0, others=others_a),
          reading(12, load=2.1, busy=120.0 + cpu_seconds, own=20.0, others=others_b)]
    c = run(rs)
    named = [r for r in c["reasons"] if "4242 (trainer)" in r]
    assert bool(named) is contended
    if contended:
        assert "12% of a core during the run" in named[0]


def test_a_pid_reused_by_another_program_is_not_compared():
    rs = [reading(0, busy=100.0, others={7: ("a", 0.0)}), reading(2, busy=100.0, others={7: ("b", 5.0)}),
          reading(12, load=1.0, busy=120.0, own=20.0, others={7: ("b", 5.0)})]
    c = run(rs, ticks=0)
    assert c["before"]["heavy"] == [] and not c["contended"]


def test_finish_without_start_is_an_error():
    with pytest.raises(RuntimeError):
        P.Guard(reader=FakeMachine([]), cores=CORES).finish()


def _fake_proc(root: Path, busy_ticks: int, procs: dict) -> Path:
    """A /proc with loadavg, stat and one stat file per process:
    pid -> (name, ppid, utime, stime) in clock ticks."""
    root.mkdir(exist_ok=True)
    (root / "loadavg").write_text("0.42 0.30 0.20 1/100 999\n")
    (root / "stat").write_text(f"cpu  {busy_ticks} 0 0 5000 0 0 0 7 0 0\ncpu0 1 0 0 1 0 0 0 0 0 0\n")
    for pid, (name, ppid, ut, st) in procs.items():
        d = root / str(pid)
        d.mkdir(exist_ok=True)
        (d / "stat").write_text(f"{pid} ({name}) S {ppid} 1 1 0 -1 4194560 10 0 0 0 {ut} {st} 0 0 20 0 1 0\n")
    (root / "self").mkdir(exist_ok=True)  # not a pid: ignored
    return root


def test_read_splits_this_process_tree_from_the_others(tmp_path):
    hz = P._ticks()
    proc = _fake_proc(tmp_path / "proc", 1000, {
        100: ("bench) x", 1, 50, 50),  # this process (a name with a parenthesis)
        101: ("worker", 100, 20, 0),    # its child
        102: ("grandchild", 101, 10, 0),
        200: ("other", 1, 30, 0),
    })
    r = P.read(proc, pid=100, reaped=1.5)
    assert r.load1 == pytest.approx(0.42)
    assert r.busy == pytest.approx(1007 / hz) and r.steal == pytest.approx(7 / hz)
    assert r.own == pytest.approx(130 / hz + 1.5)
    assert r.others == {200: ("other", pytest.approx(30 / hz))}


def test_record_refuses_a_contended_result_and_leaves_the_file(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n")
    c = run([reading(0, load=9.0, busy=100.0), reading(2, load=9.0, busy=103.0),
             reading(12, load=9.0, busy=120.0, own=5.0)], ticks=0)
    with pytest.raises(P.ContendedError, match="busy"):
        P.record(path, "wbf", "python bench/bench_wbf.py", "table", c)
    with pytest.raises(P.ContendedError, match="no conditions"):
        P.record(path, "wbf", "python bench/bench_wbf.py", "table", {})
    assert path.read_text() == "# Benchmarks\n"


def test_record_writes_a_quiet_result_and_replaces_it_on_a_rerun(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\ntext after\n")
    c = run(quiet_readings())
    P.record(path, "wbf", "python bench/bench_wbf.py --repeats 3", "speed-up 9.9", c, when="then")
    P.record(path, "rows", "python bench/bench_rows.py", "ratio 1.1", c, when="then")
    P.record(path, "wbf", "python bench/bench_wbf.py --repeats 5", "speed-up 7.7", c, when="now")
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\ntext after\n")
    assert text.count("bench:wbf begin") == 1 and "speed-up 7.7" in text and "speed-up 9.9" not in text
    assert "`python bench/bench_wbf.py --repeats 5`" in text and "ratio 1.1" in text
    assert text.index("bench:wbf begin") < text.index("bench:rows begin")  # replaced in place
