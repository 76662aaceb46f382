"""What SMP costs: boot to ready and whole checks with 1 and 2 vCPUs, in one run.

Per arch, ``--runs`` interleaved rounds (so load from other jobs hits each vCPU
count alike), each with 1 then 2 vCPUs (``--cpus``):

- ``ready``: a console guest's launch -> the image's ready marker (boot.py's
  ``harness_ready``), wall and QEMU CPU seconds;
- per scenario (default ``sample`` and ``stress``): a new ``harness run --kernel K
  --arch A --scenario S --cpus N --json`` process, wall seconds from start to
  verdict, with the verdict and its first reason, so a figure is never quoted
  without what it timed (with 1 vCPU the stress is NOT PROVEN by design: no race
  can be hit, and its reason says so).

The kernel and the module are built (or found) first; a run that still had to
build is refused. Results go to bench/results/smp.json with the date, the
machine and the load.

    python bench/smp.py [--kernel debian:5.10] [--arch x86_64 --arch arm64] [--runs 3]
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bare_cycle import prepared
from boot import harness_ready
from common import load, machine_info, now, write
from kernel_build import HARNESS

from harness.defaults import ARCHES

RESULTS = Path(__file__).resolve().parent / "results" / "smp.json"
VCPUS = (1, 2)


def one_run(spec: str, arch: str, scenario: str, cpus: int) -> dict[str, object]:
    """One ``harness run`` in a new process: wall seconds and what it concluded."""
    started = time.monotonic()
    done = subprocess.run([*HARNESS, "run", "--kernel", spec, "--arch", arch,
                           "--scenario", scenario, "--cpus", str(cpus), "--json"],
                          capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode not in (0, 1):
        sys.exit(f"harness run {spec} {arch} {scenario} --cpus {cpus} failed: "
                 f"{done.stderr.strip()[-2000:]}")
    if "building " in done.stderr:
        sys.exit(f"harness run {spec} {arch} built something: warm the caches first")
    (result,) = json.loads(done.stdout)
    return {"wall_seconds": round(wall, 1), "verdict": result["verdict"],
            "reason": (result["reasons"] or [""])[0]}


def summary(samples: list[float]) -> dict[str, object]:
    return {"min": round(min(samples), 2), "median": round(statistics.median(samples), 2),
            "samples": [round(sample, 2) for sample in samples]}


def bench_arch(spec: str, arch: str, scenarios: list[str], runs: int) -> dict[str, object]:
    """Every round of one arch; medians per vCPU count."""
    kernel, _ = prepared(spec, arch)
    ready: dict[int, list[float]] = {cpus: [] for cpus in VCPUS}
    ready_cpu: dict[int, list[float]] = {cpus: [] for cpus in VCPUS}
    checks: dict[tuple[str, int], list[dict[str, object]]] = {
        (scenario, cpus): [] for scenario in scenarios for cpus in VCPUS}
    load_before = load()
    for round_number in range(runs):
        for cpus in VCPUS:
            wall, cpu = harness_ready(kernel, arch, "tcg", cpus)
            ready[cpus].append(wall)
            ready_cpu[cpus].append(cpu)
            for scenario in scenarios:
                checks[scenario, cpus].append(one_run(spec, arch, scenario, cpus))
            print(f"  {arch} round {round_number + 1}/{runs}, {cpus} vCPU: ready {wall:.2f} s; "
                  + ", ".join(f"{scenario} {checks[scenario, cpus][-1]['wall_seconds']} s "
                              f"{checks[scenario, cpus][-1]['verdict']}"
                              for scenario in scenarios), file=sys.stderr, flush=True)
    return {
        "kernel": spec, "arch": arch, "release": kernel.release, "measured_at": now(),
        "load_before": load_before, "load_after": load(), "runs": runs,
        "vcpus": {str(cpus): {
            "ready": summary(ready[cpus]), "ready_cpu": summary(ready_cpu[cpus]),
            "checks": {scenario: {
                "wall": summary([float(str(run["wall_seconds"]))
                                 for run in checks[scenario, cpus]]),
                "runs": checks[scenario, cpus]} for scenario in scenarios},
        } for cpus in VCPUS},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="debian:5.10", metavar="SPEC")
    parser.add_argument("--arch", action="append", default=[], choices=ARCHES)
    parser.add_argument("--scenario", action="append", default=[])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    arches = args.arch or list(ARCHES)
    scenarios = args.scenario or ["sample", "stress"]
    results: dict[str, object] = {
        "date": now(), "machine": machine_info(),
        "method": "interleaved rounds: console boot to ready, then harness run --json per "
                  "scenario in a new process, 1 then 2 vCPUs, TCG multi-threaded, warm caches",
        "results": []}
    for arch in arches:
        results["results"].append(  # type: ignore[attr-defined]
            bench_arch(args.kernel, arch, scenarios, args.runs))
        write(args.output, results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
