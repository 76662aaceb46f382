"""The benchmarks one after the other, each step's wall time and the whole in one file.

bench/run calls this after the set-up. Warm (the default) is the set that should
take about 15 min here from warm caches: boot.py, check.py, smp.py and
peers.py's boot comparison. ``--cold`` adds what compiles kernels from nothing
and takes hours: kernel_build.py, incremental_build.py and peers.py's build
comparison (tuxmake against harness build).

    python bench/suite.py [--cold] [--peers DIR] [SPEC]

Results go to bench/results/suite.json (one entry per mode, warm or cold): the
date, the machine, the load before and after, and the seconds of every step;
each step writes its own figures to bench/results/<name>.json as well. A
step that fails stops the suite, with what ran so far recorded.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import load, machine_info, now, write

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "suite.json"


def steps(cold: bool, spec: str, peers: Path) -> list[list[str]]:
    """The scripts to run, in order, with their arguments."""
    compiles = [["kernel_build.py", "--kernel", spec, "--defconfig-kernel", spec],
                ["incremental_build.py"]] if cold else []
    comparison = [] if cold else ["--only", "boot"]
    return [*compiles,
            ["boot.py", "--kernel", spec],
            ["check.py", "--kernel", spec],
            ["smp.py", "--kernel", spec],
            ["peers.py", "--peers", str(peers), *comparison]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", action="store_true", help="also the builds from nothing")
    parser.add_argument("--peers", type=Path, default=Path("/work/peers"), metavar="DIR",
                        help="the peers' venv and trees (peers.py --peers)")
    parser.add_argument("spec", nargs="?", default="debian:5.10")
    args = parser.parse_args()
    mode = "cold" if args.cold else "warm"
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    header = {"date": now(), "machine": machine_info(), "kernel": args.spec,
              "load_before": load()}
    done: list[tuple[list[str], float, int]] = []
    started = time.monotonic()
    status = 0
    for argv in steps(args.cold, args.spec, args.peers):
        step_started = time.monotonic()
        status = subprocess.run([sys.executable, str(BENCH / argv[0]), *argv[1:]]).returncode
        done.append((argv, round(time.monotonic() - step_started, 1), status))
        total = round(time.monotonic() - started, 1)
        write(RESULTS, {**results, mode: {
            **header, "seconds": total, "load_after": load(),
            "steps": [{"step": " ".join(step), "seconds": seconds, "exit_status": code}
                      for step, seconds, code in done]}})
        if status != 0:
            break
    print(f"bench/suite ({mode}): {round(time.monotonic() - started, 1)} s; "
          + ", ".join(f"{step[0]} {seconds} s" for step, seconds, _ in done))
    return status


if __name__ == "__main__":
    sys.exit(main())
