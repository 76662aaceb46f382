"""The floor of the whole check: the sample A/B's kernel work as one plain guest script.

What ``harness run`` does in the guest, with nothing of the harness in the
guest's path: a busybox /init boots, sets the same vm knobs (no proactive
compaction, no watermark boost, tiny per-CPU lists where the kernel has
them), then for movable=0 and movable=1 drops the page cache, loads the
sample driver with the same parameters (pages from MemFree, 90 % cover, one
page in 8, seed 1), reads each evidence file once before and once after one
``compact_memory`` (buddyinfo, vmstat, the fragmentation indices, the
driver's pages and stats, a 64 x order-9 try_alloc), verifies, unloads,
and finally resets the machine (QEMU runs with -no-reboot, so that ends
it). Everything it read goes to a virtio console written to a file; kernel
messages to the UART. Same kernel image, kernel parameters, machine, memory
and vCPUs as ``harness run``.

The host side only packs the initramfs (busybox, the module, the script)
and times QEMU from start to exit; it then checks that the cycle did the
experiment (the movable round moved pages, the control did not, the probe
gained), so a broken cycle is never quoted as a floor. Guest-side phase
times come from /proc/uptime (a shell builtin read, no process).

    python bench/bare_cycle.py [--kernel debian:5.10] [--arch x86_64] [--runs 3]
"""

import argparse
import json
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import children_cpu_seconds

from harness.artifacts import KernelBuild, ModuleArtifact
from harness.check.runner import cell_fragments, prepare
from harness.defaults import ARCHES, CPUS, MEMORY_MIB
from harness.image.cpio import CpioWriter
from harness.image.userspace import static_busybox
from harness.vm.boot import runtime_parameters
from harness.vm.machine import get_machine
from harness.vm.qemu import kernel_command_line, without_huge_pages

DEBUGFS = "/sys/kernel/debug/movable_sample"
TIMEOUT = 300.0
# The guest script. Page size 4 KiB: the default cells' kernels (x86_64, arm64.config).
INIT = r"""#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev
mount -t debugfs debugfs /sys/kernel/debug
exec >/dev/vport0p1 2>&1
mark() { read up _ </proc/uptime; echo "@@phase $1 $up"; }
mark ready
echo 0 >/proc/sys/vm/compaction_proactiveness
echo 0 >/proc/sys/vm/watermark_boost_factor
[ -w /proc/sys/vm/percpu_pagelist_high_fraction ] &&
    echo 1073741824 >/proc/sys/vm/percpu_pagelist_high_fraction
cat /proc/pagetypeinfo >/dev/null
mark setup
for movable in 0 1; do
    sync; echo 3 >/proc/sys/vm/drop_caches
    while read -r name value _; do [ "$name" = MemFree: ] && free=$value; done </proc/meminfo
    insmod /movable_sample.ko pages=$((free * 1024 / 4096 * 9 / 10 / 8)) \
        movable=$movable fragment=8 seed=1
    mark load$movable
    for when in before after; do
        if [ $when = after ]; then
            echo 1 >/proc/sys/vm/compact_memory
            mark compact$movable
        fi
        echo "@@read $movable $when"
        cat /proc/buddyinfo /proc/vmstat \
            /sys/kernel/debug/extfrag/unusable_index /sys/kernel/debug/extfrag/extfrag_index
        echo "@@pages"; cat DEBUGFS/pages
        echo "@@stats"; cat DEBUGFS/stats
        echo 9 64 >DEBUGFS/try_alloc; cat DEBUGFS/try_alloc
        mark read$movable$when
    done
    cat DEBUGFS/verify; mark verify$movable
    rmmod movable_sample
    mark round$movable
done
reboot -f
""".replace("DEBUGFS", DEBUGFS)
APPLETS = ("sh", "mount", "cat", "echo", "insmod", "rmmod", "sync", "reboot")


def pack(arch: str, module: ModuleArtifact, out: Path) -> Path:
    """The cycle's initramfs: busybox, its applet links, the module and /init."""
    with out.open("wb") as stream:
        archive = CpioWriter(stream)
        for directory in ("bin", "dev", "proc", "sys", "tmp"):
            archive.add_dir(directory)
        archive.add_chardev("dev/console", 5, 1, 0o600)
        archive.add_file("bin/busybox", static_busybox(get_machine(arch).arch.debian_arch),
                         0o755)
        for applet in APPLETS:
            archive.add_symlink(f"bin/{applet}", "busybox")
        archive.add_file("movable_sample.ko", module.path.read_bytes())
        archive.add_file("init", INIT.encode(), 0o755)
        archive.close()
    return out


def command(kernel: KernelBuild, initrd: Path, uart: Path, output: Path) -> list[str]:
    """The plain QEMU command: the harness's machine, memory, vCPUs and kernel
    parameters, the UART and one virtio console to files, nothing else."""
    machine = get_machine(kernel.arch).for_image(kernel.image)
    return [machine.arch.qemu_binary, *machine.arch.qemu_machine,
            "-accel", "tcg,thread=multi", "-m", str(MEMORY_MIB),
            "-smp", f"{CPUS},sockets={CPUS},cores=1,threads=1",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(kernel.image), "-initrd", str(initrd),
            "-append", kernel_command_line(machine, runtime_parameters(kernel)),
            "-serial", f"file:{uart}",
            "-device", f"{machine.virtio('serial')},max_ports=2",
            "-chardev", f"file,id=out,path={output}",
            "-device", "virtserialport,chardev=out,name=bare.out"]


@dataclass(frozen=True)
class Cycle:
    """One bare cycle: wall seconds QEMU ran, and what the guest printed."""

    wall_seconds: float
    cpu_seconds: float  # QEMU's, user + system
    phases: dict[str, float]  # guest uptime at each mark
    moved: dict[int, int]  # pages with a new PFN, per movable value
    probe_after: dict[int, int]  # order-9 successes after compaction, per movable value


def _pages(block: str) -> dict[int, int]:
    return {int(index): int(pfn) for index, pfn in
            (line.split() for line in block.strip().splitlines())}


def parse(text: str, wall: float, cpu: float) -> Cycle:
    """What the guest printed, reduced to what shows the experiment happened."""
    phases = {name: float(up) for name, up in re.findall(r"^@@phase (\S+) (\S+)$", text, re.M)}
    reads = dict(re.findall(r"^@@read (\d \w+)\n(.*?)(?=^@@phase )", text, re.M | re.S))
    moved, probe = {}, {}
    for movable in (0, 1):
        before, after = (reads[f"{movable} {when}"] for when in ("before", "after"))
        pages = [_pages(block.split("@@pages\n")[1].split("@@stats\n")[0])
                 for block in (before, after)]
        moved[movable] = sum(1 for index, pfn in pages[1].items() if pages[0].get(index) != pfn)
        probe[movable] = int(after.split("succeeded")[1].split()[0])
    return Cycle(wall_seconds=wall, cpu_seconds=cpu, phases=phases, moved=moved, probe_after=probe)


def run_cycle(kernel: KernelBuild, initrd: Path, scratch: Path) -> Cycle:
    """Start QEMU, wait for it to end, check the experiment ran."""
    uart, output = scratch / "uart.log", scratch / "out.log"
    cpu = children_cpu_seconds()
    started = time.monotonic()
    done = subprocess.run(command(kernel, initrd, uart, output), stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=TIMEOUT, preexec_fn=without_huge_pages)
    wall = time.monotonic() - started
    cpu = children_cpu_seconds() - cpu
    text = output.read_text(errors="replace")
    if done.returncode != 0 or "@@phase round1" not in text:
        raise RuntimeError(f"the bare cycle did not finish (QEMU {done.returncode}): "
                           f"{text[-500:]!r} {uart.read_text(errors='replace')[-500:]!r}")
    cycle = parse(text, wall, cpu)
    if cycle.moved[0] or not cycle.moved[1] or cycle.probe_after[1] <= cycle.probe_after[0]:
        raise RuntimeError(f"the bare cycle did not show migration: {cycle}")
    return cycle


def prepared(spec: str, arch: str) -> tuple[KernelBuild, ModuleArtifact]:
    """The kernel and module ``harness run`` uses for the cell (from the caches)."""
    cell = prepare(arch, spec, cell_fragments())
    return cell.kernel, cell.module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="debian:5.10", metavar="SPEC")
    parser.add_argument("--arch", action="append", default=[], choices=ARCHES)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for arch in args.arch or list(ARCHES):
        kernel, module = prepared(args.kernel, arch)
        with tempfile.TemporaryDirectory(prefix="bare-cycle-") as scratch:
            initrd = pack(arch, module, Path(scratch) / "initrd.cpio")
            print(shlex.join(command(kernel, initrd, Path("uart.log"), Path("out.log"))),
                  file=sys.stderr)
            cycles = [run_cycle(kernel, initrd, Path(scratch)) for _ in range(args.runs)]
        walls = [cycle.wall_seconds for cycle in cycles]
        print(json.dumps({"arch": arch, "wall_median": round(statistics.median(walls), 2),
                          "cpu_median": round(statistics.median(c.cpu_seconds for c in cycles), 2),
                          "walls": [round(wall, 2) for wall in walls],
                          "phases": cycles[-1].phases, "moved": cycles[-1].moved,
                          "probe_after": cycles[-1].probe_after}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
