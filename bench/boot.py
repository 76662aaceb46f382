"""Benchmark guest boots: launch -> ready marker and -> usable SSH, next to the floor.

Per architecture and accelerator it records, over ``--runs`` interleaved rounds:

- ``floor``: bare ``qemu-system-*`` with the same kernel, machine,
  accelerator, memory and kernel parameters, only the UART, and an initramfs
  whose /init just prints a marker (harness.image.build_marker_initramfs).
  Seconds from starting QEMU to that marker on the console.
- ``naive``: the same without ``-nodefaults``, i.e. what
  ``qemu-system-* -M ... -kernel -initrd -append`` gives (default NIC with its
  option ROM, default firmware), for scale.
- ``harness_ready``: a console guest's ``boot_guest()`` launch -> the guest
  image's ready marker (every device, the full /init; a console guest starts
  no network and no SSH server).
- ``harness_ssh``: an SSH guest's launch -> an SSH session that has run ``true``
  (a boot of its own: network, keys, dropbear).

Rounds interleave the variants so load from other jobs hits them alike; the
summary gives min and median, and ratios to the floor of both. Next to wall
time it records QEMU's CPU seconds at the marker (``*_cpu``): on a shared
machine wall time mostly measures the other jobs, CPU time much less so. Results go to
bench/results/boot.json with the date, the machine and the load average.

    python bench/boot.py --image x86_64=/path/bzImage --image arm64=/path/Image
    python bench/boot.py --kernel debian:6.1 --runs 7
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from common import load, machine_info

from harness.artifacts import KernelBuild
from harness.defaults import CPUS, MEMORY_MIB
from harness.image.build import build_initramfs, build_marker_initramfs
from harness.vm.accel import kvm_probe
from harness.vm.boot import boot_guest
from harness.vm.machine import Machine, get_machine
from harness.vm.qemu import kernel_command_line, without_huge_pages

RESULTS = Path(__file__).resolve().parent / "results" / "boot.json"
TARGET_RATIO = 1.3
TIMEOUT = 180.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_to_marker(command: list[str], log: Path, marker: str) -> tuple[float, float]:
    """Start ``command`` (console to ``log``); (wall seconds, QEMU CPU seconds) at ``marker``."""
    log.unlink(missing_ok=True)
    started = time.monotonic()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, preexec_fn=without_huge_pages)
    try:
        while time.monotonic() - started < TIMEOUT:
            if log.exists() and marker in log.read_text(errors="replace"):
                return time.monotonic() - started, cpu_seconds(process.pid)
            if process.poll() is not None:
                raise RuntimeError(f"QEMU exited before {marker!r}: {' '.join(command)}")
            time.sleep(0.002)
        raise RuntimeError(f"no {marker!r} within {TIMEOUT} s: {' '.join(command)}")
    finally:
        process.kill()
        process.wait()


def floor_command(machine: Machine, image: Path, initrd: Path, accelerator: str, log: Path,
                  naive: bool) -> list[str]:
    """QEMU with nothing but the UART (or, ``naive``, with QEMU's defaults)."""
    command = [machine.arch.qemu_binary, *machine.arch.qemu_machine]
    if not naive:
        command += ["-nodefaults", "-no-user-config"]
    return command + [
        "-accel", accelerator, "-m", str(MEMORY_MIB), "-display", "none",
        "-no-reboot", "-kernel", str(image), "-initrd", str(initrd),
        "-append", kernel_command_line(machine), "-serial", f"file:{log}",
    ]


def harness_ready(kernel: KernelBuild | Path, arch: str, accelerator: str,
                  cpus: int = CPUS) -> tuple[float, float]:
    """A console guest's (launch -> ready marker, QEMU CPU seconds then)."""
    with boot_guest(kernel, arch=arch, transport="console", accelerator=accelerator,
                    cpus=cpus, boot_timeout=TIMEOUT) as guest:
        return guest.ready_seconds, guest.ready_cpu_seconds


def harness_ssh(kernel: KernelBuild | Path, arch: str, accelerator: str) -> float:
    """An SSH guest's launch -> an SSH session that has run ``true``."""
    with boot_guest(kernel, arch=arch, transport="ssh", accelerator=accelerator,
                    boot_timeout=TIMEOUT) as guest:
        before_true = time.monotonic()
        if not guest.run("true").ok:
            raise RuntimeError("`true` failed over SSH")
        return guest.connected_seconds + time.monotonic() - before_true


def summary(samples: list[float]) -> dict[str, object]:
    return {"min": round(min(samples), 3), "median": round(statistics.median(samples), 3),
            "samples": [round(sample, 3) for sample in samples]}


def bench_one(kernel: KernelBuild | Path, arch: str, accelerator: str,
              runs: int) -> dict[str, object]:
    machine = get_machine(arch)
    image = kernel.image if isinstance(kernel, KernelBuild) else kernel
    marker_image = build_marker_initramfs(arch)
    build_initramfs(arch)  # warm the cache so no round pays for packing
    times: dict[str, list[float]] = {name: [] for name in (
        "floor", "floor_cpu", "naive", "harness_ready", "harness_ready_cpu", "harness_ssh")}
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as scratch:
        log = Path(scratch) / "console.log"
        harness_ssh(kernel, arch, accelerator)  # warm-up: page cache, probe cache
        for round_number in range(runs):
            for naive in (False, True):
                command = floor_command(machine, image, marker_image.path, accelerator, log,
                                        naive)
                wall, cpu = time_to_marker(command, log, marker_image.ready_marker)
                if naive:
                    times["naive"].append(wall)
                else:
                    times["floor"].append(wall)
                    times["floor_cpu"].append(cpu)
            ready, ready_cpu = harness_ready(kernel, arch, accelerator)
            ssh = harness_ssh(kernel, arch, accelerator)
            times["harness_ready"].append(ready)
            times["harness_ready_cpu"].append(ready_cpu)
            times["harness_ssh"].append(ssh)
            print(f"  {arch} {accelerator} round {round_number + 1}/{runs}: floor "
                  f"{times['floor'][-1]:.2f} s ({times['floor_cpu'][-1]:.2f} s CPU), ready "
                  f"{ready:.2f} s ({ready_cpu:.2f} s CPU), ssh {ssh:.2f} s", file=sys.stderr)
    result: dict[str, object] = {
        "arch": arch, "accelerator": accelerator,
        "kernel": str(image), "release": kernel.release if isinstance(kernel, KernelBuild)
        else None, "memory_mib": MEMORY_MIB, "runs": runs,
        "load_before": load_before, "load_after": load(),
    }
    for name, samples in times.items():
        result[name] = summary(samples)
    pick: dict[str, Callable[[list[float]], float]] = {"min": min,
                                                        "median": statistics.median}
    for name, statistic in pick.items():
        ratio = statistic(times["harness_ready"]) / statistic(times["floor"])
        result[f"ready_over_floor_{name}"] = round(ratio, 3)
        cpu_ratio = statistic(times["harness_ready_cpu"]) / statistic(times["floor_cpu"])
        result[f"ready_over_floor_cpu_{name}"] = round(cpu_ratio, 3)
    median_ratio = statistics.median(times["harness_ready"]) / statistics.median(times["floor"])
    result["meets_target"] = median_ratio <= TARGET_RATIO
    return result


def median(result: dict[str, object], name: str) -> float:
    """The median seconds of one measured variant in a result."""
    variant = result[name]
    assert isinstance(variant, dict)
    return float(variant["median"])


def accelerators(machine: Machine, image: Path, wanted: list[str]) -> list[tuple[str, str]]:
    """(accelerator, reason it is skipped or '') for each wanted accelerator."""
    choices = []
    for accelerator in wanted:
        if accelerator == "kvm":
            if not machine.kvm_possible():
                choices.append(("kvm", f"KVM cannot run {machine.arch.name} on this host"))
                continue
            usable, reason = kvm_probe(machine, image)
            choices.append(("kvm", "" if usable else reason))
        else:
            choices.append((accelerator, ""))
    return choices


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", action="append", default=[], metavar="ARCH=PATH",
                        help="a built kernel image per arch (repeatable)")
    parser.add_argument("--kernel", metavar="SPEC",
                        help="build (or take from the cache) SPEC for every --arch")
    parser.add_argument("--arch", action="append", default=[],
                        help="architectures for --kernel (default: x86_64 arm64)")
    parser.add_argument("--accel", action="append", default=[], choices=("kvm", "tcg"),
                        help="accelerators to measure (default: both; KVM when it works)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    kernels: list[tuple[str, KernelBuild | Path]] = []
    for item in args.image:
        arch, _, path = item.partition("=")
        kernels.append((arch, Path(path)))
    if args.kernel:
        from harness.kernel.build import build_kernel

        for arch in args.arch or ["x86_64", "arm64"]:
            kernels.append((arch, build_kernel(args.kernel, arch)))
    if not kernels:
        parser.error("give --image ARCH=PATH or --kernel SPEC")

    results: list[dict[str, object]] = []
    for arch, kernel in kernels:
        machine = get_machine(arch)
        image = kernel.image if isinstance(kernel, KernelBuild) else kernel
        for accelerator, skipped in accelerators(machine, image, args.accel or ["kvm", "tcg"]):
            if skipped:
                print(f"{arch} {accelerator}: skipped ({skipped})", file=sys.stderr)
                results.append({"arch": arch, "accelerator": accelerator, "skipped": skipped})
                continue
            results.append(bench_one(kernel, arch, accelerator, args.runs))

    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "target": f"harness_ready <= {TARGET_RATIO} x floor (median)",
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    for result in results:
        if "skipped" not in result:
            print(f"{result['arch']:7} {result['accelerator']}: "
                  f"floor {median(result, 'floor'):.2f} s, "
                  f"ready {median(result, 'harness_ready'):.2f} s "
                  f"({result['ready_over_floor_median']}x), "
                  f"ssh {median(result, 'harness_ssh'):.2f} s (medians of {result['runs']})")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
