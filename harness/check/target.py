"""Where a check runs: a QEMU guest booted for it, or a running machine over SSH.

Both yield a health-watched Guest, so scenarios never know which they got.
A board (or any machine started separately) is reached with
``ssh://user@host[:port]``; its kernel log is watched through ``dmesg``.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.artifacts import KernelBuild
from harness.check.steps import must
from harness.defaults import CPUS, MEMORY_MIB, TARGET, TRANSPORT
from harness.errors import HarnessError
from harness.guest import Guest
from harness.guest.health import DmesgSource, HealthWatch, WatchedGuest
from harness.phases import Phases

QEMU = "qemu"


@dataclass(frozen=True)
class TargetOptions:
    """How to reach the machine under test."""

    target: str = TARGET  # "qemu" or ssh://user@host[:port]
    transport: str = TRANSPORT  # for qemu: console or ssh
    memory_mib: int = MEMORY_MIB
    cpus: int = CPUS  # vCPUs of a QEMU guest (a board has what it has)
    ssh_key: Path | None = None  # for ssh:// targets; default: agent and ~/.ssh
    # virtio devices a QEMU guest gets on top of the defaults, by kind ("balloon"):
    # the arch's machine profile names the QEMU device (virtio-balloon-pci on
    # x86_64, virtio-balloon-device on arm64). A board has what it has.
    virtio_devices: tuple[str, ...] = ()


def validate_target(target: str) -> str:
    """Reject a target spelling early, before any kernel is built."""
    if target != QEMU and not target.startswith("ssh://"):
        raise HarnessError(f"unknown target {target!r}: use qemu or ssh://user@host[:port]")
    return target


@contextmanager
def open_target(kernel: KernelBuild, options: TargetOptions, run_dir: Path | None = None,
                phases: Phases | None = None) -> Iterator[Guest]:
    """Yield a watched Guest running ``kernel``; tear down whatever was started.
    ``phases`` gets the steps of reaching it timed (a boot's, or the connection)."""
    validate_target(options.target)
    steps = phases or Phases({})
    if options.target == QEMU:
        from harness.vm.boot import boot_guest  # QEMU only when asked for
        from harness.vm.machine import get_machine

        machine = get_machine(kernel.arch)
        with boot_guest(kernel, transport=options.transport,
                        memory_mib=options.memory_mib, cpus=options.cpus,
                        run_dir=run_dir, phases=steps,
                        extra_devices=[machine.virtio(kind)
                                       for kind in options.virtio_devices]) as vm_guest:
            yield vm_guest
        return
    from harness.guest.ssh import connect_ssh  # paramiko only when a board is asked for

    remote = steps.timed("connect", connect_ssh, options.target, key=options.ssh_key)
    try:
        guest = WatchedGuest(remote, HealthWatch(DmesgSource(remote)))
        release = must(guest, "uname -r").strip()
        if release != kernel.release:
            raise HarnessError(
                f"{options.target} runs kernel {release}, but --kernel {kernel.spec} builds "
                f"{kernel.release}: point --kernel at the tree the board booted")
        yield guest
        guest.watch.check()
    finally:
        remote.close()
