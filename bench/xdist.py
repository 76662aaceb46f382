"""One pytest worker against two: the whole `.ci/run` both ways, in one bench run.

pytest-xdist (``-n N``) pays off only where one test leaves a core idle: a TCG
guest with 2 vCPUs keeps up to two host threads busy, a kernel build two make
jobs, but booting, waiting for the guest's shell, SSH round trips and the
harness's own Python leave one core idle much of the time. This measures it as
CI would meet it: `bash .ci/run` in a fresh clone of HEAD (bench/ci.py's
``run_ci``), warm caches, first with ``-n 0`` (no workers: one process) and
then with ``-n N``; the order is fixed so that both find the caches the first
one left.

    python bench/xdist.py [--workers N] [-- PYTEST ARGS]

Results go to bench/results/xdist.json: each run's wall time and pytest
counts, and ``speedup`` = serial seconds / distributed seconds.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ci import REPO, run_ci
from common import machine_info, now, write

RESULTS = REPO / "bench" / "results" / "xdist.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (-n)")
    parser.add_argument("pytest_args", nargs="*", help="passed to .ci/run (after --)")
    args = parser.parse_args()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip()
    runs: dict[str, dict[str, object]] = {}
    for workers in (0, args.workers):
        with tempfile.TemporaryDirectory(prefix="harness-xdist-bench-") as scratch:
            clone = Path(scratch) / "clone"
            subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
            env = {**os.environ, "CI": "true"}
            entry = run_ci(clone, env, [*args.pytest_args, "-n", str(workers)])
            log_copy = REPO / "runs" / f"xdist-n{workers}.log"
            log_copy.parent.mkdir(exist_ok=True)
            log_copy.write_bytes((clone / "runs" / "ci.log").read_bytes())
            entry["log"] = str(log_copy)
            runs[f"n{workers}"] = entry
            print(f"-n {workers}: {entry['minutes']} min, exit {entry['exit_status']}, "
                  f"pytest {entry['pytest']}", flush=True)
    serial, distributed = runs["n0"], runs[f"n{args.workers}"]
    speedup = round(float(serial["seconds"]) / float(distributed["seconds"]), 2)  # type: ignore[arg-type]
    write(RESULTS, {"date": now(), "machine": machine_info(), "commit": head,
                    "method": "bash .ci/run in a fresh clone of HEAD, CI=true, warm caches; "
                              f"-n 0 first, then -n {args.workers}",
                    "pytest_args": args.pytest_args, "runs": runs, "speedup": speedup})
    print(f"speedup with {args.workers} workers: {speedup}")
    failed = any(entry["exit_status"] != 0 for entry in runs.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
