#!/usr/bin/env python
"""The long fuzz run (``make fuzz``): the hypothesis fuzz suites in rounds
with fresh seeds until ``--minutes`` have passed, counting the examples tried.

Each round runs ``tests/test_fuzz_*.py`` and the HTTP fuzz of ``ttakit serve``
(``tests/test_serve_fuzz.py``: a real server on 127.0.0.1, schemathesis and
hypothesis bodies) with ``TTAKIT_FUZZ_EXAMPLES`` examples per test function
and a new ``--hypothesis-seed`` (and ``TTAKIT_FUZZ_SEED`` for schemathesis);
the examples actually tried are read from ``--hypothesis-show-statistics``.
Any failing round stops the run with its output (exit 1): the failing example
is in it and in ``.hypothesis/``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="stop starting rounds after this long")
    p.add_argument("--examples", type=int, default=500, help="examples per test function per round")
    p.add_argument("--seed", type=int, default=1, help="seed of the first round")
    args = p.parse_args(argv)
    env = {**os.environ, "TTAKIT_FUZZ_EXAMPLES": str(args.examples), "OMP_NUM_THREADS": "1"}
    tests = sorted(str(t) for t in [*(REPO / "tests").glob("test_fuzz_*.py"), REPO / "tests" / "test_serve_fuzz.py"])
    t0, total, rounds = time.monotonic(), 0, 0
    per_test: dict[str, int] = {}
    while time.monotonic() - t0 < args.minutes * 60:
        seed = args.seed + rounds
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
               "--hypothesis-show-statistics", f"--hypothesis-seed={seed}", *tests]
        out = subprocess.run(cmd, cwd=REPO, env={**env, "TTAKIT_FUZZ_SEED": str(seed)}, capture_output=True, text=True)
        rounds += 1
        name = None
        for line in out.stdout.splitlines():
            m = re.match(r"^(\S+::\S+):", line.strip())
            if m:
                name = m.group(1)
            m = re.search(r"- (\d+) passing", line)
            if m and name:
                per_test[name] = per_test.get(name, 0) + int(m.group(1))
                total += int(m.group(1))
        elapsed = (time.monotonic() - t0) / 60
        print(f"round {rounds} (seed {seed}): exit {out.returncode}, {total:,} examples so far, "
              f"{elapsed:.1f} min", flush=True)
        if out.returncode != 0:  # the failures first (the statistics after them can be long)
            failures = out.stdout.find("= FAILURES =")
            print(out.stdout[failures:failures + 20000] if failures >= 0 else out.stdout[-20000:],
                  out.stderr[-5000:], sep="\n")
            return 1
    print(f"\n{rounds} rounds, {total:,} passing examples in {(time.monotonic() - t0) / 60:.1f} min, "
          f"no escape. Per test:")
    for name, n in sorted(per_test.items()):
        print(f"  {n:>9,}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
