"""Benchmark the kernel build stage: cold and warm `harness build`, and defconfig for scale.

Per (kernel, arch) it records
- the cold build wall time of the minimal config (tinyconfig + fragments):
  measured now by ``harness build`` into an empty private build cache with
  ccache disabled, so nothing is reused and the shared entries stay; or, for
  the kernels named by ``--cold-from-metadata SPEC``, the time the existing
  cache entry recorded when it was built (ccache on, so it may include ccache
  hits: the entry's flag and date are copied along);
- the warm time of a cache hit: ``harness build --json`` run as a user would
  (a new process each time), wall clock and the command's own ``seconds``;
and, for the trees named by ``--defconfig-kernel``, a cold x86_64 defconfig
build of the same tree (same toolchain quirks, ccache disabled) to show what
the minimal config saves (``defconfigs``, one entry per tree).

    python bench/kernel_build.py --kernel debian:5.10 --kernel debian:6.1 \\
        --kernel /path/to/linux-4.8.15 --defconfig-kernel /path/to/linux-4.8.15 \\
        [--cold-from-metadata debian:6.1 ...]

Results go to bench/results/kernel-build.json with the date and the machine.
Entries for (kernel, arch) pairs not measured this time are kept from the file
(each entry carries its own ``measured_at``), so the matrix can be measured a
few kernels at a time. Machines shared with other jobs give noisy numbers: the
load average before and after each measurement is recorded next to it.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common import kept_entries, load, machine_info, now, write

from harness.defaults import ARCHES, KERNELS
from harness.kernel.build import BUILDS, BuildPlan, plan_build, srcarch
from harness.kernel.config import Fragment, configure, parse_fragment
from harness.kernel.quirks import config_lines
from harness.paths import cache_root

RESULTS = Path(__file__).resolve().parent / "results" / "kernel-build.json"
HARNESS = [sys.executable, "-m", "harness.cli"]


def harness_build(spec: str, arch: str, *extra: str, env: dict[str, str] | None = None
                  ) -> tuple[float, dict[str, object]]:
    """Run `harness build --json` in a new process; (wall seconds, its JSON)."""
    started = time.monotonic()
    done = subprocess.run([*HARNESS, "build", "--arch", arch, "--kernel", spec, "--json",
                           *extra], capture_output=True, text=True, env=env)
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"harness build {spec} {arch} failed: {done.stderr.strip()[-2000:]}")
    return wall, json.loads(done.stdout)


@contextmanager
def private_builds() -> Iterator[dict[str, str]]:
    """An environment whose kernel-build cache is empty but shares every other cache.

    A cold measurement must not replace the shared entries other jobs may be
    using right now (``--force`` would), nor re-download sources: the private
    cache root links the real one's downloads, Debian packages and unpacked
    sources, and starts with no kernel builds. It is deleted afterwards.
    """
    root = Path(tempfile.mkdtemp(prefix="cache.", dir=bench_dir()))
    try:
        for kind in cache_root().iterdir():
            if kind.name not in (BUILDS, "bench"):
                (root / kind.name).symlink_to(kind)
        yield {**os.environ, "HARNESS_CACHE_DIR": str(root)}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure(spec: str, arch: str, warm_runs: int) -> dict[str, object]:
    """Cold build (ccache off) into a private cache, then its warm hits."""
    with private_builds() as env:
        before = load()
        wall, result = harness_build(spec, arch, env={**env, "CCACHE_DISABLE": "1"})
        meta = json.loads((Path(str(result["build_dir"])).parent / "build.json").read_text())
        cold = {"seconds": round(wall, 1), "build_seconds": meta["build_seconds"],
                "method": "harness build into an empty kernel-build cache, CCACHE_DISABLE=1",
                "ccache": False, "load_before": before, "load_after": load(),
                "release": result["release"], "image_bytes": meta["image_bytes"]}
        return {"cold": cold, "warm": warm(spec, arch, warm_runs, env)}


def from_metadata(spec: str, arch: str, warm_runs: int) -> dict[str, object]:
    """Cold time as the shared cache entry recorded it, and warm hits on that entry."""
    _, result = harness_build(spec, arch)
    meta = json.loads((Path(str(result["build_dir"])).parent / "build.json").read_text())
    cold = {"seconds": meta["build_seconds"], "method": "build.json of the cache entry",
            "ccache": meta["ccache"], "built_at": meta["built_at"],
            "release": result["release"], "image_bytes": meta["image_bytes"]}
    return {"cold": cold, "warm": warm(spec, arch, warm_runs, dict(os.environ))}


def warm(spec: str, arch: str, runs: int, env: dict[str, str]) -> dict[str, object]:
    """Cache hits as a user sees them: a fresh process each time."""
    walls, inner = [], []
    for _ in range(runs):
        wall, result = harness_build(spec, arch, env=env)
        if not result["cached"]:
            sys.exit(f"expected a cache hit for {spec} {arch}")
        walls.append(round(wall, 3))
        inner.append(result["seconds"])
    return {"wall_seconds": walls, "wall_median": statistics.median(walls),
            "command_seconds": inner, "load": load()}


def defconfig(plan: BuildPlan) -> dict[str, object]:
    """A cold defconfig build of the same tree with the same quirks, outside the cache."""
    with tempfile.TemporaryDirectory(prefix="defconfig-", dir=bench_dir()) as scratch:
        out = Path(scratch) / "build"
        out.mkdir()
        quirks = Path(scratch) / "quirks.config"
        quirks.write_text(config_lines(plan.quirks))
        env = {**os.environ, "CCACHE_DISABLE": "1", "LC_ALL": "C"}
        jobs = len(os.sched_getaffinity(0))
        with (Path(scratch) / "build.log").open("w") as log:
            def make(targets: object, status: object = None) -> None:
                subprocess.run(["make", "-C", str(plan.source.path), f"O={out}",
                                *plan.make_args, *targets],  # type: ignore[misc]
                               check=True, stdout=log, stderr=subprocess.STDOUT, env=env)

            before = load()
            started = time.monotonic()
            configure(plan.source.path, out, srcarch(plan.arch), make,
                      [Fragment("quirks", quirks, parse_fragment(quirks.read_text(), "quirks"))],
                      log, base="defconfig")
            make([f"-j{jobs}"])
            seconds = time.monotonic() - started
        image = out / plan.arch.image_path
        return {"seconds": round(seconds, 1), "image_bytes": image.stat().st_size,
                "method": "make defconfig + quirks + olddefconfig, make -j, CCACHE_DISABLE=1",
                "load_before": before, "load_after": load()}


def bench_dir() -> Path:
    path = cache_root() / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", action="append", default=[], metavar="SPEC")
    parser.add_argument("--arch", action="append", default=[], choices=ARCHES)
    parser.add_argument("--cold-from-metadata", action="append", default=[], metavar="SPEC",
                        help="take this kernel's cold time from its cache entry (repeatable)")
    parser.add_argument("--warm-runs", type=int, default=5)
    parser.add_argument("--defconfig-kernel", action="append", default=[], metavar="SPEC",
                        help="also build defconfig of this kernel for x86_64 (repeatable)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    # Only defconfig builds when only they are asked for.
    kernels = args.kernel or ([] if args.defconfig_kernel else list(KERNELS))
    arches = args.arch or list(ARCHES)

    results: dict[str, object] = {
        "date": now(), "machine": machine_info(),
        "builds": kept_entries(args.output, "builds",
                               [(spec, arch) for spec in kernels for arch in arches]),
        "defconfigs": kept_entries(args.output, "defconfigs",
                                   [(spec, "x86_64") for spec in args.defconfig_kernel]),
    }
    for spec in kernels:
        for arch in arches:
            recorded = spec in args.cold_from_metadata
            print(f"{spec} {arch}: {'recorded' if recorded else 'measuring'} cold, "
                  f"{args.warm_runs} warm", file=sys.stderr, flush=True)
            measured = (from_metadata if recorded else measure)(spec, arch, args.warm_runs)
            entry = {"kernel": spec, "arch": arch, "measured_at": now(), **measured}
            results["builds"].append(entry)  # type: ignore[attr-defined]
            write(args.output, results)
    for spec in args.defconfig_kernel:
        print(f"{spec} x86_64: defconfig", file=sys.stderr, flush=True)
        results["defconfigs"].append({  # type: ignore[attr-defined]
            "kernel": spec, "arch": "x86_64", "measured_at": now(),
            **defconfig(plan_build(spec, "x86_64"))})
        write(args.output, results)
    compare_with_defconfig(results)
    write(args.output, results)
    print(json.dumps(results, indent=2))
    return 0


def compare_with_defconfig(results: dict[str, object]) -> None:
    """Set each defconfig entry's ratio from its tree's latest minimal x86_64 cold build."""
    for compared in results["defconfigs"]:  # type: ignore[attr-defined]
        minimal = next((b["cold"] for b in results["builds"]  # type: ignore[attr-defined]
                        if b["kernel"] == compared["kernel"] and b["arch"] == "x86_64"), None)
        if minimal is not None:
            compared["minimal_cold_seconds"] = minimal["seconds"]
            compared["minimal_over_defconfig"] = round(minimal["seconds"] / compared["seconds"],
                                                       3)


if __name__ == "__main__":
    sys.exit(main())
