"""Side by side with the peers, on the same kernel source (debian:5.10's, x86_64):
booting to a command with virtme-ng against ``harness boot -- true``, and a
kernel build with tuxmake against ``harness build``.

- boot: virtme-ng (PyPI ``virtme-ng``) builds its kernel with its own config
  helper (``vng --kconfig``: defconfig plus what its 9p-root guest needs) in
  a copy of the tree (it builds in place; the harness cache stays untouched),
  once; then ``vng --run TREE --disable-kvm --exec true`` (TCG, 2 vCPUs,
  256 MiB, as the harness boots) against ``harness boot --arch x86_64
  --kernel debian:5.10 -- true`` (its cached kernel: tinyconfig plus the
  cell's fragments), in interleaved rounds, wall time from start to exit.
- build: tuxmake (PyPI ``tuxmake``, ``--runtime null``, the host's gcc) of
  the same tree with the closest config there is, the harness kernel's own
  final .config (``--kconfig FILE``, targets config and default: ``make``),
  against ``harness build --force`` into a private empty build cache; both
  with ccache disabled, so both compile everything, one after the other
  under the machine's kernel-build lock (``--lock``).

The peers run from their own venv (``--peers DIR``: DIR/venv/bin/vng and
tuxmake), not the project's dependencies. A peer that cannot run here is
recorded with its exact reason, not dropped.

    python bench/peers.py [--peers /work/peers] [--runs 5] [--only boot|build]

Results go to bench/results/peers.json with the date, the machine and the load.
"""

import argparse
import fcntl
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
from typing import Any

from common import load, machine_info, now, write
from kernel_build import harness_build, private_builds

from harness.check.runner import cell_fragments
from harness.kernel.build import build_kernel
from harness.kernel.source import obtain_source
from harness.kernel.spec import parse_spec

RESULTS = Path(__file__).resolve().parent / "results" / "peers.json"
SPEC, ARCH = "debian:5.10", "x86_64"
HARNESS = [sys.executable, "-m", "harness.cli"]
# What virtme-ng-init prints (on the console vng shows with --verbose, which the harness
# always logs too) once the command ran with status 0: on this kernel vng then exits 255
# (its init finds no script I/O ports, so the status cannot come back).
VNG_RAN = "script exited with code 0"
CONFIG_ARGS = [arg for fragment in cell_fragments() for arg in ("--config", fragment)]


def timed(command: list[str], **kwargs: Any) -> tuple[float, subprocess.CompletedProcess[str]]:
    """(wall seconds, the finished process) of ``command``."""
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    return time.monotonic() - started, done


def tail(done: subprocess.CompletedProcess[str]) -> str:
    """The last lines a failed command printed: the reason recorded for it."""
    text = (done.stderr or "") + (done.stdout or "")
    return " | ".join(text.strip().splitlines()[-4:]) or f"exit status {done.returncode}"


@contextmanager
def build_lock(path: Path) -> Iterator[float]:
    """Hold the machine's kernel-build lock (flock(1)'s), yield seconds waited for it."""
    started = time.monotonic()
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield time.monotonic() - started


def pristine_copy(tree: Path) -> Path:
    """``tree``: a copy of the harness's unpacked source of SPEC (made once), so no
    peer writes into the shared cache."""
    if not tree.exists():
        shutil.copytree(obtain_source(parse_spec(SPEC)).path, tree, symlinks=True)
    return tree


def vng_kernel(tree: Path, vng: Path, lock: Path) -> dict[str, Any]:
    """virtme-ng's kernel, configured by its own helper and built in ``tree`` (once)."""
    facts: dict[str, Any] = {"tree": str(pristine_copy(tree))}
    if not (tree / ".config").exists():
        seconds, done = timed([str(vng), "--kconfig"], cwd=tree)
        if done.returncode != 0:
            return {**facts, "skipped": f"vng --kconfig failed: {tail(done)}"}
        facts["kconfig_seconds"] = round(seconds, 1)
    if not (tree / "modules.order").exists():  # vng --run wants the modules too
        with build_lock(lock) as waited:
            seconds, done = timed(["make", f"-j{len(os.sched_getaffinity(0))}", "bzImage",
                                   "modules"],
                                  cwd=tree, env={**os.environ, "CCACHE_DISABLE": "1"})
        if done.returncode != 0:
            return {**facts, "skipped": f"building vng's kernel failed: {tail(done)}"}
        facts.update(build_seconds=round(seconds, 1), lock_waited=round(waited, 1))
    facts["modules"] = len((tree / "modules.order").read_text().split())  # 0: none built
    return facts


def bench_boot(peers: Path, runs: int, lock: Path) -> dict[str, Any]:
    """vng --run -- true against harness boot -- true, interleaved."""
    vng = peers / "venv" / "bin" / "vng"
    if not vng.exists():
        return {"skipped": f"no {vng}: python3 -m venv {peers}/venv && "
                           f"{peers}/venv/bin/pip install virtme-ng tuxmake"}
    tree = peers / "linux-5.10-vng"
    result = vng_kernel(tree, vng, lock)
    if "skipped" in result:
        return result
    env = {**os.environ, "PATH": f"{vng.parent}:{os.environ['PATH']}"}
    vng_command = [str(vng), "--run", str(tree), "--disable-kvm", "--cpus", "2",
                   "--memory", "256M", "--verbose", "--exec", "true"]
    harness_command = [*HARNESS, "boot", "--arch", ARCH, "--kernel", SPEC, *CONFIG_ARGS,
                       "--", "true"]
    times: dict[str, list[float]] = {"vng": [], "harness": []}
    for _ in range(runs):
        for name, command in (("vng", vng_command), ("harness", harness_command)):
            seconds, done = timed(command, env=env, cwd=tempfile.gettempdir(),
                                  stdin=subprocess.DEVNULL)
            if done.returncode != 0 and not (name == "vng" and VNG_RAN in done.stdout
                                              + done.stderr):
                return {**result, "skipped": f"{name} did not run `true`: {tail(done)}"}
            if done.returncode != 0:  # vng: the command ran, its status did not come back
                result["vng_exit_status"] = done.returncode
                result["vng_note"] = tail(done)
            times[name].append(round(seconds, 2))
    medians = {name: statistics.median(samples) for name, samples in times.items()}
    return {**result, "vng_command": " ".join(vng_command),
            "harness_command": " ".join(harness_command[2:]), "seconds": times,
            "median": medians, "harness_over_vng": round(medians["harness"] / medians["vng"], 2)}


def bench_build(peers: Path, lock: Path) -> dict[str, Any]:
    """tuxmake against harness build, both compiling everything, same tree and config."""
    tuxmake = peers / "venv" / "bin" / "tuxmake"
    if not tuxmake.exists():
        return {"skipped": f"no {tuxmake}: {peers}/venv/bin/pip install tuxmake"}
    kernel = build_kernel(SPEC, ARCH, cell_fragments())  # the cached build: its .config
    source = pristine_copy(peers / "linux-5.10")
    nocache = {**os.environ, "CCACHE_DISABLE": "1"}
    with tempfile.TemporaryDirectory(prefix="tuxmake-", dir=peers) as scratch:
        # The tree's path in the command is the copy's; the harness builds the same
        # content from its cache.
        command = [str(tuxmake), "--runtime", "null", "--target-arch", ARCH, "--toolchain",
                   "gcc", "--kconfig", str(kernel.config), "--directory", str(source),
                   "--build-dir", f"{scratch}/build", "--output-dir", f"{scratch}/out",
                   "--jobs", str(len(os.sched_getaffinity(0))), "config", "default"]
        with build_lock(lock) as waited:
            load_before = load()
            tux_seconds, done = timed(command, env=nocache)
            tux_config = Path(scratch, "build", ".config")
            same_config = tux_config.exists() and (tux_config.read_text()
                                                  == kernel.config.read_text())
            with private_builds() as env:
                harness_seconds, built = harness_build(
                    SPEC, ARCH, *CONFIG_ARGS, "--force", env={**env, "CCACHE_DISABLE": "1"})
            load_after = load()
    result: dict[str, Any] = {
        "tuxmake_command": " ".join(command[1:]).replace(scratch, "TMP"),
        "lock_waited": round(waited, 1), "load_before": load_before, "load_after": load_after,
        "harness_seconds": round(harness_seconds, 1), "harness_make_seconds": built["seconds"],
    }
    if done.returncode != 0:
        return {**result, "skipped": f"tuxmake failed: {tail(done)}"}
    return {**result, "tuxmake_seconds": round(tux_seconds, 1),
            "same_config": same_config,
            "harness_over_tuxmake": round(harness_seconds / tux_seconds, 2)}


def update(path: Path, key: str, entry: dict[str, Any]) -> None:
    """Put ``entry`` under ``key`` in the results file, keeping the other part (read
    now: the boot and the build comparisons may run as separate processes)."""
    results = json.loads(path.read_text()) if path.exists() else {}
    results.update({"date": now(), "machine": machine_info(), "kernel": SPEC, "arch": ARCH,
                    key: {"measured_at": now(), **entry}})
    write(path, results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=Path, default=Path("/work/peers"), metavar="DIR",
                        help="where the peers' venv (DIR/venv) and vng's tree copy live")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lock", type=Path, default=Path("/tmp/kbuild.lock"),
                        help="the machine's kernel-build lock (flock)")
    parser.add_argument("--only", choices=("boot", "build"),
                        help="measure one comparison, keep the other's from the file")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.only != "build":
        update(args.output, "boot", bench_boot(args.peers, args.runs, args.lock))
    if args.only != "boot":
        update(args.output, "build", bench_build(args.peers, args.lock))
    print(args.output.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
