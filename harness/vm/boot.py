"""Boot a kernel in QEMU and hand back a Guest: image + keys + VM + transport + watch.

This is the one place that knows both QEMU and the transports. Everything a
boot needs that is specific to this run (SSH keys, the initrd with the keys
appended) lives in the run directory or in a temporary directory removed on
exit; the VM is always torn down when the block exits.

Only an SSH-transport guest gets keys and a network: without a host key the
guest's /init starts no SSH server, so a console guest spends its single slow
TCG vCPU on nothing but reaching its shell (the boot-to-ready figure in bench/).
"""

import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qemu.qmp import QMPError

from harness.artifacts import KernelBuild
from harness.defaults import CPUS, MEMORY_MIB, TRANSPORT, TRANSPORTS
from harness.errors import HarnessError, notice
from harness.guest import BalloonControl, Guest, GuestError, GuestTimeout
from harness.guest.console import ConsoleGuest
from harness.guest.health import ConsoleLogSource, HealthWatch, WatchedGuest
from harness.image.build import SSH_READY_MARKER, build_initramfs, combine
from harness.paths import new_run_dir
from harness.phases import Phases
from harness.vm.qemu import Vm, launch

if TYPE_CHECKING:  # SSH (paramiko, cryptography) is imported only for an SSH guest:
    from harness.image.keys import RunKeys  # a tenth of a second a console run needs not

# Options that are built in but stay off unless the command line turns them on
# (page_owner: off by default on every era, Documentation/mm/page_owner.rst).
RUNTIME_SWITCHES = {"PAGE_POISONING": "page_poison=1", "PAGE_OWNER": "page_owner=on"}
BOOT_TIMEOUT_SECONDS = {"kvm": 60.0, "tcg": 180.0}
CONNECT_TIMEOUT_SECONDS = 60.0


class QmpBalloon:
    """BalloonControl over QMP: ``balloon`` and ``query-balloon``."""

    def __init__(self, vm: Vm) -> None:
        self.vm = vm

    def set_target(self, guest_bytes: int) -> None:
        self._qmp("balloon", value=guest_bytes)

    def actual(self) -> int:
        return int(self._qmp("query-balloon")["actual"])

    def _qmp(self, command: str, **arguments: Any) -> Any:
        try:
            return self.vm.qmp(command, **arguments)
        except QMPError as error:
            raise GuestError(f"QMP {command} failed: {error}; does QEMU have a "
                             "virtio-balloon device?") from None


class VmGuest(WatchedGuest):
    """A watched Guest of a QEMU VM, with the VM and this run's SSH keys (if any) at hand.

    It offers the machine's capabilities (harness.guest.OffersBalloon), so
    scenarios get them from the target instead of reaching for the VM.
    """

    def __init__(self, guest: Guest, watch: HealthWatch, vm: Vm, keys: "RunKeys | None",
                 transport: str, ready_seconds: float, ready_cpu_seconds: float,
                 connected_seconds: float) -> None:
        super().__init__(guest, watch, explain=self._how_the_vm_died)
        self.vm = vm
        self.keys = keys
        self.transport = transport
        self.ready_seconds = ready_seconds  # QEMU start -> ready marker (wall)
        self.ready_cpu_seconds = ready_cpu_seconds  # QEMU's CPU time at the ready marker
        self.connected_seconds = connected_seconds  # QEMU start -> transport usable

    def balloon(self) -> BalloonControl:
        """The VM's balloon, driven through QMP."""
        return QmpBalloon(self.vm)

    def _how_the_vm_died(self, error: GuestError) -> GuestError | None:
        """When QEMU is gone (or going), say so instead of a bare transport error."""
        if isinstance(error, GuestTimeout):
            return None
        try:
            self.vm.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            return None
        status = self.vm.process.returncode
        how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
        return GuestError(f"QEMU {how} during the step ({error}); "
                          f"last console lines: {self.vm.console_tail(5)!r}")


def runtime_parameters(kernel: KernelBuild | Path) -> tuple[str, ...]:
    """Kernel parameters that switch on what the build's .config compiled in.

    Page poisoning (the debug fragment) is built in but off by default on every
    era, so a debug kernel booted without ``page_poison=1`` would not poison a
    page; page_owner (its fragment) records no owner without ``page_owner=on``.
    A bare image has no .config to read: nothing is added.
    """
    if not isinstance(kernel, KernelBuild):
        return ()
    from harness.kernel.config import parse_dotconfig

    config = parse_dotconfig(kernel.config.read_text())
    switched = [symbol for symbol in RUNTIME_SWITCHES if config.get(symbol) == "y"]
    if ("PAGE_POISONING" in switched and config.get("KASAN") == "y"
            and not _page_poisoning_heeds_kasan(kernel)):
        switched.remove("PAGE_POISONING")
        notice(f"page poisoning stays off on {kernel.release}: this tree predates "
               "\"page_poison: play nicely with KASAN\" (v5.0), so KASAN would report "
               "poisoning's own check of every freed page")
    return tuple(RUNTIME_SWITCHES[symbol] for symbol in switched)


def _page_poisoning_heeds_kasan(kernel: KernelBuild) -> bool:
    """Whether the tree has upstream 4117992df66a (v5.0, backported to some stable trees).

    Without it KASAN flags page poisoning's memchr_inv() of freed pages as a
    use-after-free while booting (measured on 4.8.15 arm64): the fix is looked
    for in the tree's own mm/page_poison.c, not guessed from the version.
    """
    source = kernel.build_dir / "source" / "mm" / "page_poison.c"
    try:
        return "kasan_disable_current" in source.read_text(errors="replace")
    except OSError:
        return True  # cannot tell: keep the debug set whole


def connect_transport(vm: Vm, keys: "RunKeys | None", transport: str,
                      timeout: float = CONNECT_TIMEOUT_SECONDS) -> Guest:
    """Open ``transport`` (console or ssh) to a VM that printed its ready marker."""
    if transport == "console":
        return ConsoleGuest.connect_pipes(vm.command_pipe, connect_timeout=timeout)
    if vm.ssh_port is None or keys is None:
        raise HarnessError("this VM was booted without network and SSH keys: "
                           "SSH is not available (boot it with transport='ssh')")
    from harness.guest.ssh import connect_ssh

    return connect_ssh(f"ssh://root@127.0.0.1:{vm.ssh_port}", key=keys.client_key,
                       host_key=keys.host_public_key, timeout=timeout,
                       retry_until_ready=True)


@contextmanager
def boot_guest(
    kernel: KernelBuild | Path,
    arch: str | None = None,
    transport: str = TRANSPORT,
    modules: Sequence[Path] = (),
    memory_mib: int = MEMORY_MIB,
    cpus: int = CPUS,
    extra_devices: Sequence[str] = (),
    cmdline_extra: Sequence[str] = (),
    run_dir: Path | None = None,
    accelerator: str | None = None,
    boot_timeout: float | None = None,
    phases: Phases | None = None,
) -> Iterator[VmGuest]:
    """Boot ``kernel`` and yield a health-watched Guest over ``transport``.

    ``arch`` defaults to the KernelBuild's. ``modules`` are put in the image
    and loaded by /init. The boot itself counts as a step: a kernel problem
    printed while booting raises KernelProblem before anything runs, and one
    printed after the last step raises when the block ends. ``phases`` gets
    the boot's steps timed (the image, QEMU's start, the kernel up to the
    ready marker, the transport's connection).
    """
    steps = phases or Phases({})
    if transport not in TRANSPORTS:
        raise HarnessError(f"unknown transport {transport!r}: choose console or ssh")
    if arch is None:
        if not isinstance(kernel, KernelBuild):
            raise HarnessError("booting a bare kernel image needs an explicit arch")
        arch = kernel.arch
    elif isinstance(kernel, KernelBuild) and kernel.arch != arch:
        raise HarnessError(f"kernel {kernel.spec} is built for {kernel.arch}, not {arch}")
    run_dir = run_dir or new_run_dir(arch)
    ssh = transport == "ssh"
    with tempfile.TemporaryDirectory(prefix="harness-boot-") as scratch:
        with steps.phase("image"):
            initramfs = build_initramfs(arch, modules)
            keys = None
            if ssh:
                from harness.image.keys import make_run_keys

                keys = make_run_keys(run_dir / "keys")
            initrd = (combine(initramfs, [keys.overlay], Path(scratch) / "initrd.cpio")
                      if keys is not None else initramfs)
        started = time.monotonic()
        with ExitStack() as running:
            vm = steps.timed("qemu start", running.enter_context, launch(
                kernel, initrd, arch, memory_mib=memory_mib, cpus=cpus,
                extra_devices=extra_devices,
                cmdline_extra=(*runtime_parameters(kernel), *cmdline_extra),
                run_dir=run_dir, accelerator=accelerator, network=ssh))
            watch = HealthWatch(ConsoleLogSource(vm.console_log))
            timeout = boot_timeout or BOOT_TIMEOUT_SECONDS[vm.accelerator]
            try:
                steps.timed("to ready marker", vm.wait_for_console, initrd.ready_marker,
                            timeout)
                ready, ready_cpu = time.monotonic() - started, vm.cpu_seconds()
                if ssh:
                    steps.timed("to ssh marker", vm.wait_for_console, SSH_READY_MARKER,
                                timeout)
            except HarnessError:
                watch.check()  # a panic during boot is the better message
                raise
            watch.check()
            inner = steps.timed("connect", connect_transport, vm, keys, transport)
            guest = VmGuest(inner, watch, vm, keys, transport, ready, ready_cpu,
                            time.monotonic() - started)
            try:
                yield guest
                watch.check()
            finally:
                guest.close()
