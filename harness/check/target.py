"""Where a check runs: a QEMU guest booted for it, or a running machine.

All yield a health-watched Guest, so scenarios never know which they got.
A board (or any machine started separately) is reached with
``ssh://user@host[:port]``, or as a place of a labgrid lab with
``labgrid://PLACE`` (harness.labgrid: acquired for the check, released
after it); a board's kernel log is watched through ``dmesg`` and its kernel
must be the one ``--kernel`` names, whichever way it is reached.
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
from harness.labgrid import SCHEME, PlaceAddress, open_board
from harness.phases import Phases

QEMU = "qemu"
LABGRID = f"{SCHEME}://"


@dataclass(frozen=True)
class TargetOptions:
    """How to reach the machine under test."""

    target: str = TARGET  # "qemu", ssh://user@host[:port] or labgrid://PLACE
    transport: str = TRANSPORT  # for qemu: console or ssh
    memory_mib: int = MEMORY_MIB
    cpus: int = CPUS  # vCPUs of a QEMU guest (a board has what it has)
    ssh_key: Path | None = None  # for ssh:// and labgrid://; default: agent and ~/.ssh
    # virtio devices a QEMU guest gets on top of the defaults, by kind ("balloon"):
    # the arch's machine profile names the QEMU device (virtio-balloon-pci on
    # x86_64, virtio-balloon-device on arm64). A board has what it has.
    virtio_devices: tuple[str, ...] = ()


def validate_target(target: str) -> str:
    """Reject a target spelling early, before any kernel is built (and without
    importing what reaching it needs)."""
    if target.startswith(LABGRID):
        PlaceAddress.parse(target)
    elif target != QEMU and not target.startswith("ssh://"):
        raise HarnessError(f"unknown target {target!r}: use qemu, ssh://user@host[:port] "
                           "or labgrid://PLACE")
    return target


@contextmanager
def _watched_board(remote: Guest, where: str, kernel: KernelBuild) -> Iterator[Guest]:
    """A board's Guest, health-watched through its dmesg, once it is seen to run
    ``kernel`` (a board boots what the lab gave it; the check must not judge another)."""
    guest = WatchedGuest(remote, HealthWatch(DmesgSource(remote)))
    release = must(guest, "uname -r").strip()
    if release != kernel.release:
        raise HarnessError(
            f"{where} runs kernel {release}, but --kernel {kernel.spec} builds "
            f"{kernel.release}: point --kernel at the tree the board booted")
    yield guest
    guest.watch.check()


@contextmanager
def open_target(kernel: KernelBuild, options: TargetOptions, run_dir: Path | None = None,
                phases: Phases | None = None) -> Iterator[Guest]:
    """Yield a watched Guest running ``kernel``; tear down whatever was started.
    ``phases`` gets the steps of reaching it timed (a boot's, or the connection)."""
    validate_target(options.target)
    steps = phases or Phases({})
    if options.target == QEMU:
        with steps.phase("imports"):  # QEMU's code only when asked for (qemu.qmp: asyncio)
            from harness.vm.boot import boot_guest
            from harness.vm.machine import get_machine

        machine = get_machine(kernel.arch)
        with boot_guest(kernel, transport=options.transport,
                        memory_mib=options.memory_mib, cpus=options.cpus,
                        run_dir=run_dir, phases=steps,
                        extra_devices=[machine.virtio(kind)
                                       for kind in options.virtio_devices]) as vm_guest:
            yield vm_guest
        return
    if options.target.startswith(LABGRID):
        address = PlaceAddress.parse(options.target)
        with (open_board(address, key=options.ssh_key) as board,
              _watched_board(board, board.where, kernel) as guest):
            yield guest
        return
    from harness.guest.ssh import connect_ssh  # paramiko only when a board is asked for

    remote = steps.timed("connect", connect_ssh, options.target, key=options.ssh_key)
    try:
        with _watched_board(remote, options.target, kernel) as guest:
            yield guest
    finally:
        remote.close()
