"""The benchmark protocol: a figure taken while the machine was busy is
marked ``contended`` and is never written into BENCHMARKS.md.

A benchmark runs inside a :class:`Guard`:

1. **Before** it starts, the guard watches the machine for
   :data:`QUIET_SAMPLE_S` seconds (1-minute load average, and the CPU time
   every other process used in that window, from ``/proc``).
2. **During** it, the guard reads ``/proc`` again after every interleaved
   round (:func:`_common.interleave` calls :meth:`Guard.tick`), so the CPU
   the other processes took is known for the whole run and per round.
3. **After** it, the load average is read once more.

The machine counts as **quiet** only when all of these hold (the thresholds
are module constants, recorded in every result):

- the 1-minute load average before the run is below
  :data:`LOAD_PER_CORE_MAX` (1.0) per core, and after it, less what this
  benchmark itself kept busy (its CPU seconds over its wall seconds: the load
  it adds), also below 1.0 per core;
- the other processes (everything outside this process and its children)
  plus the hypervisor's steal time took at most :data:`OTHERS_SHARE_MAX`
  (10 %) of the machine's CPU, before the run and over the whole run;
- no single other process used more than :data:`PROCESS_CPU_MAX` (10 % of
  one core) before the run or over the whole run.

Otherwise the result is ``contended`` and the reasons name what was busy
(the processes by pid and name). The others' CPU is measured as the
machine's busy time (``/proc/stat``) less this process tree's own CPU, so
short-lived processes that came and went between two readings count too.

Every reading comes from files under ``proc`` (``/proc`` by default), so
the tests run the decision on fake readings.
"""

from __future__ import annotations

import os
import re
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

#: 1-minute load average per core above which the machine is busy
LOAD_PER_CORE_MAX = 1.0
#: share of the machine's CPU (all cores) that other processes and steal may take
OTHERS_SHARE_MAX = 0.10
#: share of one core that any single other process may take
PROCESS_CPU_MAX = 0.10
#: seconds the machine is watched before a benchmark starts
QUIET_SAMPLE_S = 2.0

THRESHOLDS = {"load_per_core_max": LOAD_PER_CORE_MAX, "others_share_max": OTHERS_SHARE_MAX,
              "process_cpu_max": PROCESS_CPU_MAX, "quiet_sample_s": QUIET_SAMPLE_S}


class ContendedError(RuntimeError):
    """A contended result was about to be written into BENCHMARKS.md."""


@dataclass
class Reading:
    """One look at the machine."""

    t: float                 # seconds (monotonic)
    load1: float             # 1-minute load average
    busy: float              # CPU seconds all cores spent busy since boot (steal included)
    steal: float             # CPU seconds stolen by the hypervisor since boot
    own: float               # CPU seconds of this process and its children (live and reaped)
    others: dict = field(default_factory=dict)  # pid -> (name, CPU seconds) of every other process


def _ticks() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux
        return 100.0


_STAT = re.compile(r"^(\d+) \((.*)\) (\S) (\d+) (?:\S+ ){9}(\d+) (\d+)")


def _proc_table(proc: Path, hz: float) -> dict[int, tuple[str, int, float]]:
    """pid -> (name, parent pid, CPU seconds) of every process under ``proc``."""
    table = {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            m = _STAT.match((d / "stat").read_text())
        except OSError:  # gone meanwhile
            continue
        if m:
            table[int(m.group(1))] = (m.group(2), int(m.group(4)), (int(m.group(5)) + int(m.group(6))) / hz)
    return table


def _descendants(table: dict, root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {root}, [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def read(proc: str | Path = "/proc", pid: int | None = None, reaped: float | None = None) -> Reading:
    """The machine now, as seen from process ``pid`` (default: this one).
    ``reaped`` is the CPU of its children already waited for (default: from
    ``getrusage``)."""
    proc = Path(proc)
    hz = _ticks()
    pid = os.getpid() if pid is None else pid
    load1 = float((proc / "loadavg").read_text().split()[0])
    cpu = next(line for line in (proc / "stat").read_text().splitlines() if line.startswith("cpu "))
    f = [int(v) for v in cpu.split()[1:]]
    f += [0] * (8 - len(f))
    user, nice, system, idle, iowait, irq, softirq, steal = f[:8]
    busy = (user + nice + system + irq + softirq + steal) / hz  # guest time is inside user
    table = _proc_table(proc, hz)
    mine = _descendants(table, pid)
    if reaped is None:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        reaped = ru.ru_utime + ru.ru_stime
    own = sum(table[p][2] for p in mine if p in table) + reaped
    others = {p: (name, s) for p, (name, _, s) in table.items() if p not in mine}
    return Reading(time.monotonic(), load1, busy, steal / hz, own, others)


def window(a: Reading, b: Reading, cores: int) -> dict:
    """What happened between readings ``a`` and ``b``: the others' share of
    the machine (steal included), this tree's busy cores, the other
    processes above :data:`PROCESS_CPU_MAX` (share of one core)."""
    wall = max(b.t - a.t, 1e-9)
    own = max(b.own - a.own, 0.0)
    others = max(b.busy - a.busy - own, 0.0)
    heavy = []
    for pid, (name, s) in b.others.items():
        if pid in a.others and a.others[pid][0] == name:
            frac = (s - a.others[pid][1]) / wall
            if frac > PROCESS_CPU_MAX:
                heavy.append({"pid": pid, "name": name, "cpu": round(frac, 3)})
    heavy.sort(key=lambda h: -h["cpu"])
    return {"seconds": round(wall, 3), "others_share": round(others / (wall * cores), 4),
            "steal_share": round((b.steal - a.steal) / (wall * cores), 4),
            "own_cores": round(own / wall, 3), "heavy": heavy}


def assess_before(cores: int, before: dict) -> list[str]:
    """Why the machine was busy before the run (empty: quiet). ``before`` is
    the quiet check's :func:`window` with its ``load``."""
    reasons = []
    if before["load"] / cores >= LOAD_PER_CORE_MAX:
        reasons.append(f"load average before the run {before['load']:.2f} on {cores} cores "
                       f"(>= {LOAD_PER_CORE_MAX:g} per core)")
    return reasons + _others(before, "before the run")


def assess_during(cores: int, load_after: float, during: dict) -> list[str]:
    """Why the machine was busy during the run (empty: quiet)."""
    reasons = []
    rest = load_after - during["own_cores"]
    if rest / cores >= LOAD_PER_CORE_MAX:
        reasons.append(f"load average after the run {load_after:.2f}, {rest:.2f} without this benchmark's "
                       f"{during['own_cores']:.2f} busy cores, on {cores} cores (>= {LOAD_PER_CORE_MAX:g} per core)")
    return reasons + _others(during, "during the run")


def _others(w: dict, when: str) -> list[str]:
    reasons = []
    if w["others_share"] > OTHERS_SHARE_MAX:
        reasons.append(f"other processes and steal took {w['others_share']:.0%} of the CPU {when} "
                       f"(> {OTHERS_SHARE_MAX:.0%})")
    for h in w["heavy"][:5]:
        reasons.append(f"process {h['pid']} ({h['name']}) used {h['cpu']:.0%} of a core {when} "
                       f"(> {PROCESS_CPU_MAX:.0%})")
    return reasons


class Guard:
    """Watches the machine around one benchmark (see the module's notes).
    ``reader()`` gives a :class:`Reading` (default: :func:`read` of /proc)."""

    def __init__(self, reader=read, cores: int | None = None, sample_s: float = QUIET_SAMPLE_S, sleep=time.sleep):
        self._read = reader
        self.cores = cores or os.cpu_count() or 1
        self.sample_s = sample_s
        self._sleep = sleep
        self.before: dict | None = None
        self.readings: list[Reading] = []

    def start(self) -> dict:
        """Watch the machine for ``sample_s`` seconds before the run; the
        quiet check's window (also kept as :attr:`before`)."""
        a = self._read()
        self._sleep(self.sample_s)
        b = self._read()
        self.before = {**window(a, b, self.cores), "load": a.load1}
        self.readings = [b]
        return self.before

    def tick(self) -> None:
        """Read the machine between two rounds."""
        if self.readings:
            self.readings.append(self._read())

    def finish(self) -> dict:
        """The run's conditions: ``contended`` and its ``reasons``, loads,
        the others' share over the run and per round, the thresholds."""
        if self.before is None:
            raise RuntimeError("Guard.finish() without Guard.start()")
        end = self._read()
        rs = self.readings + [end]
        during = window(rs[0], end, self.cores)
        reasons = assess_before(self.cores, self.before) + assess_during(self.cores, end.load1, during)
        return {"contended": bool(reasons), "reasons": reasons, "cores": self.cores,
                "load_before": self.before["load"], "load_after": end.load1, "before": self.before,
                "during": during,
                "others_share_per_round": [window(a, b, self.cores)["others_share"] for a, b in zip(rs, rs[1:])],
                "thresholds": dict(THRESHOLDS)}


def describe(conditions: dict) -> str:
    """One paragraph on the run's conditions."""
    c = conditions
    head = (f"machine: load {c['load_before']:.2f} before / {c['load_after']:.2f} after on {c['cores']} cores; "
            f"other processes + steal took {c['before']['others_share']:.1%} of the CPU before, "
            f"{c['during']['others_share']:.1%} during the run (this benchmark: {c['during']['own_cores']:.2f} "
            "busy cores)")
    if not c["contended"]:
        return head + "\nconditions: QUIET (bench/protocol.py thresholds met)"
    return head + "\nconditions: CONTENDED, not a figure to publish:\n" + "\n".join(f"  - {r}" for r in c["reasons"])


BEGIN = "<!-- bench:{name} begin: written by bench/protocol.py, re-run the command to update -->"
END = "<!-- bench:{name} end -->"


def record(path: str | Path, name: str, command: str, text: str, conditions: dict, when: str | None = None) -> Path:
    """Write ``text`` (the benchmark's result tables) with ``command`` into
    ``path`` (BENCHMARKS.md) between the markers of ``name``, replacing an
    earlier block or appending one. Raises :class:`ContendedError`, leaving
    the file as it was, when ``conditions`` are contended."""
    if conditions.get("contended", True):
        reasons = conditions.get("reasons", [])
        why = "; ".join(reasons[:3]) + (f"; {len(reasons) - 3} more" if len(reasons) > 3 else "") if reasons \
            else "no conditions were measured"
        raise ContendedError(f"not writing {name} into {path}: the machine was busy ({why})")
    path = Path(path)
    when = when or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    c = conditions
    block = "\n".join([
        BEGIN.format(name=name),
        f"Command: `{command}`",
        "",
        f"Taken {when} on a quiet machine: load {c['load_before']:.2f} before / {c['load_after']:.2f} after on "
        f"{c['cores']} cores; other processes + steal {c['during']['others_share']:.1%} of the CPU during the run.",
        "",
        "```",
        text.rstrip(),
        "```",
        END.format(name=name),
    ])
    old = path.read_text() if path.exists() else ""
    b, e = BEGIN.format(name=name), END.format(name=name)
    if b in old and e in old and old.index(b) < old.index(e):
        new = old[:old.index(b)] + block + old[old.index(e) + len(e):]
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + block + "\n"
    path.write_text(new)
    return path
