"""Benchmark the whole check per arch: ``harness run`` from warm caches, as a user runs it.

Per (kernel, arch), ``--runs`` times, a new ``harness run --kernel K --arch A
--json`` process: wall seconds from start to verdict (boot, driver load, both
A/B rounds with their compactions and probes, reports, teardown) and the
evidence it printed, so a figure is never quoted without the verdict it timed.
Kernel builds are timed by kernel_build.py, not here: a cache miss would swamp
the check, so the kernel and the module are built (or found) first and a run
that still had to build is refused.

    python bench/check.py [--kernel debian:5.10] [--arch x86_64 --arch arm64] [--runs 3]

Results go to bench/results/check.json with the date, the machine and the load;
entries for (kernel, arch) pairs not measured this time are kept.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import kept_entries, load, machine_info, now, write

from harness.check.runner import cell_fragments, prepare
from harness.defaults import ARCHES
from harness.errors import HarnessError

RESULTS = Path(__file__).resolve().parent / "results" / "check.json"
HARNESS = [sys.executable, "-m", "harness.cli"]


def ensure_built(spec: str, arch: str) -> None:
    """Build (or find) the kernel and the module first, so only the check is timed."""
    try:
        prepare(arch, spec, cell_fragments())  # the kernel harness run builds for the cell
    except HarnessError as error:
        sys.exit(f"cannot prepare {spec} {arch}: {error}")


def one_check(spec: str, arch: str) -> dict[str, object]:
    """One ``harness run`` in a new process: wall seconds and its evidence."""
    before = load()
    started = time.monotonic()
    done = subprocess.run([*HARNESS, "run", "--kernel", spec, "--arch", arch, "--json"],
                          capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode not in (0, 1):
        sys.exit(f"harness run {spec} {arch} failed: {done.stderr.strip()[-2000:]}")
    if "building " in done.stderr:
        sys.exit(f"harness run {spec} {arch} built something: warm the caches first")
    (result,) = json.loads(done.stdout)
    return {
        "wall_seconds": round(wall, 1),
        "verdict": result["verdict"],
        "release": result["release"],
        "migrated_pages": result["migrated_pages"],
        "total_pages": result["total_pages"],
        "pgmigrate_success_delta": result["pgmigrate_success_delta"],
        "high_order_success": result["high_order_success"],
        "load_before": before,
        "load_after": load(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", action="append", default=[], metavar="SPEC")
    parser.add_argument("--arch", action="append", default=[], choices=ARCHES)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    kernels = args.kernel or ["debian:5.10"]
    arches = args.arch or list(ARCHES)
    results: dict[str, object] = {
        "date": now(), "machine": machine_info(),
        "method": "harness run --json, warm caches, new process",
        "checks": kept_entries(args.output, "checks",
                               [(spec, arch) for spec in kernels for arch in arches]),
    }
    for spec in kernels:
        for arch in arches:
            print(f"{spec} {arch}: {args.runs} checks", file=sys.stderr, flush=True)
            ensure_built(spec, arch)
            runs = [one_check(spec, arch) for _ in range(args.runs)]
            walls = [run["wall_seconds"] for run in runs]
            results["checks"].append({  # type: ignore[attr-defined]
                "kernel": spec, "arch": arch, "measured_at": now(),
                "wall_median": statistics.median(walls),
                "wall_min": min(walls), "runs": runs})
            write(args.output, results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
