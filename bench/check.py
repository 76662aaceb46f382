"""Benchmark the whole check per arch against its floor, in the same run: ``harness run``
from warm caches, as a user runs it, next to the bare cycle (bench/bare_cycle.py).

Per (kernel, arch), ``--runs`` interleaved rounds of

- ``bare``: the sample A/B's kernel work as one plain guest script (boot, both
  rounds' insmod with the same parameters, compactions and probes, one read of
  each evidence file, reset), QEMU start to exit;
- ``harness``: a new ``harness run --kernel K --arch A --json`` process, start to
  verdict, with the phase times its result carries (harness.phases) and what
  lies outside them (interpreter start, imports, rendering the picture).

The ratio ``harness / bare`` (medians) is the figure the check is held to
(issue 19: at most 2). Kernel builds are timed by kernel_build.py, not here:
the kernel and module are built (or found) first and a run that still had to
build is refused. ``--harness-root DIR`` times another checkout's harness (its
.venv) against the same bare cycle, for before/after figures.

    python bench/check.py [--kernel debian:5.10] [--arch x86_64 --arch arm64] [--runs 3]

Results go to bench/results/check.json with the date, the machine and the load;
entries for (kernel, arch) pairs not measured this time are kept.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bare_cycle import pack, prepared, run_cycle
from common import children_cpu_seconds, kept_entries, load, machine_info, now, write

from harness.defaults import ARCHES

RESULTS = Path(__file__).resolve().parent / "results" / "check.json"
ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 2.0


def one_check(python: Path, cwd: Path, spec: str, arch: str) -> dict[str, Any]:
    """One ``harness run`` in a new process: wall seconds, its evidence and phases."""
    before = load()
    cpu = children_cpu_seconds()
    started = time.monotonic()
    done = subprocess.run([str(python), "-m", "harness.cli", "run", "--kernel", spec,
                           "--arch", arch, "--json"], capture_output=True, text=True, cwd=cwd)
    wall = time.monotonic() - started
    cpu = children_cpu_seconds() - cpu
    if done.returncode not in (0, 1):
        sys.exit(f"harness run {spec} {arch} failed: {done.stderr.strip()[-2000:]}")
    if "building " in done.stderr:
        sys.exit(f"harness run {spec} {arch} built something: warm the caches first")
    (result,) = json.loads(done.stdout)
    seconds = result.get("seconds", {})
    return {
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),  # harness and QEMU
        "verdict": result["verdict"],
        "release": result["release"],
        "migrated_pages": result["migrated_pages"],
        "total_pages": result["total_pages"],
        "high_order_success": result["high_order_success"],
        "seconds": seconds,
        # Interpreter start, imports, kernel look-up, result.json and the picture.
        "outside_the_check": round(wall - seconds["total"], 2) if "total" in seconds else None,
        "load_before": before,
        "load_after": load(),
    }


def median_phases(runs: list[dict[str, Any]]) -> dict[str, float]:
    """The median of each phase over the runs that recorded it, in run order."""
    names = dict.fromkeys(name for run in runs for name in run["seconds"])
    return {name: round(statistics.median(run["seconds"][name] for run in runs
                                          if name in run["seconds"]), 3)
            for name in names}


def bench_cell(spec: str, arch: str, runs: int, python: Path, cwd: Path) -> dict[str, Any]:
    """Interleaved bare cycles and harness runs on one cell, and their ratio."""
    kernel, module = prepared(spec, arch)
    bare: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-check-") as scratch:
        initrd = pack(arch, module, Path(scratch) / "initrd.cpio")
        run_cycle(kernel, initrd, Path(scratch))  # warm-up: page cache
        for round_number in range(runs):
            cycle = run_cycle(kernel, initrd, Path(scratch))
            bare.append({"wall_seconds": round(cycle.wall_seconds, 2),
                         "cpu_seconds": round(cycle.cpu_seconds, 2),
                         "guest_uptime_at": cycle.phases, "moved": cycle.moved,
                         "probe_after": cycle.probe_after})
            checks.append(one_check(python, cwd, spec, arch))
            print(f"  {arch} round {round_number + 1}/{runs}: bare {cycle.wall_seconds:.2f} s, "
                  f"harness run {checks[-1]['wall_seconds']} s "
                  f"(check {checks[-1]['seconds'].get('total')} s)",
                  file=sys.stderr, flush=True)
    bare_median = statistics.median(run["wall_seconds"] for run in bare)
    bare_cpu = statistics.median(run["cpu_seconds"] for run in bare)
    cpu_median = statistics.median(run["cpu_seconds"] for run in checks)
    walls = [run["wall_seconds"] for run in checks]
    totals = [run["seconds"]["total"] for run in checks
              if "total" in run["seconds"]]
    return {
        "kernel": spec, "arch": arch, "measured_at": now(), "harness": str(cwd),
        "wall_median": statistics.median(walls), "wall_min": min(walls),
        "bare_median": bare_median,
        "ratio_median": round(statistics.median(walls) / bare_median, 2),
        "check_total_median": statistics.median(totals) if totals else None,
        "check_ratio_median": (round(statistics.median(totals) / bare_median, 2)
                               if totals else None),
        "cpu_median": cpu_median, "bare_cpu_median": bare_cpu,
        "cpu_ratio_median": round(cpu_median / bare_cpu, 2),
        "meets_target": statistics.median(walls) <= TARGET_RATIO * bare_median,
        "phases_median": median_phases(checks) if totals else {},
        "runs": checks, "bare": bare,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", action="append", default=[], metavar="SPEC")
    parser.add_argument("--arch", action="append", default=[], choices=ARCHES)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--harness-root", type=Path, default=ROOT, metavar="DIR",
                        help="the checkout whose harness (DIR/.venv) is timed")
    parser.add_argument("--section", default="checks",
                        help="where in the results file the entries go (e.g. checks_before)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    kernels = args.kernel or ["debian:5.10"]
    arches = args.arch or list(ARCHES)
    previous = json.loads(args.output.read_text()) if args.output.exists() else {}
    results: dict[str, Any] = {
        **previous, "date": now(), "machine": machine_info(),
        "method": ("interleaved rounds: the bare cycle (bench/bare_cycle.py, QEMU start to "
                   "exit) and harness run --json in a new process, warm caches"),
        "target": f"harness run <= {TARGET_RATIO} x bare cycle (medians)",
        args.section: kept_entries(args.output, args.section,
                                   [(spec, arch) for spec in kernels for arch in arches]),
    }
    python = args.harness_root.resolve() / ".venv" / "bin" / "python"
    for spec in kernels:
        for arch in arches:
            print(f"{spec} {arch}: {args.runs} rounds", file=sys.stderr, flush=True)
            results[args.section].append(
                bench_cell(spec, arch, args.runs, python, args.harness_root.resolve()))
            write(args.output, results)
    for entry in results[args.section][-len(kernels) * len(arches):]:
        print(f"{entry['kernel']} {entry['arch']}: harness run {entry['wall_median']} s, "
              f"bare cycle {entry['bare_median']} s: {entry['ratio_median']}x "
              f"(the check alone {entry['check_ratio_median']}x; CPU "
              f"{entry['cpu_median']} s against {entry['bare_cpu_median']} s: "
              f"{entry['cpu_ratio_median']}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
