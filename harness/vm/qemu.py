"""One QEMU process per guest, always torn down, with everything kept for later.

``launch()`` is a context manager: whatever happens inside it (success,
failure, timeout, KeyboardInterrupt) QEMU is stopped (QMP ``quit``, then
SIGTERM, then SIGKILL), and its socket directory is removed. QEMU also gets
SIGKILL from the kernel if this Python process dies outright
(PR_SET_PDEATHSIG), so no orphan survives even ``kill -9`` of the harness.

Each VM has a run directory (kept): the UART console log the health watch
reads, the exact QEMU command line, QEMU's own stderr. The QMP socket and the
command console's FIFOs live in a short private temp directory instead,
because unix socket paths are limited to 108 bytes and run directories can
be deep.
"""

import ctypes
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qemu.qmp.legacy import QEMUMonitorProtocol

from harness.artifacts import Initramfs, KernelBuild
from harness.defaults import CPUS, MEMORY_MIB
from harness.errors import HarnessError, MissingTool
from harness.paths import new_run_dir
from harness.vm.accel import choose_accelerator
from harness.vm.machine import Machine, get_machine

# The guest kernels are built for at most this many CPUs (CONFIG_NR_CPUS in
# kernel-configs/base.config).
MAX_CPUS = 8
GUEST_SSH_PORT = 22
CONSOLE_LOG = "console.log"
COMMAND_LINE = "qemu-cmdline.txt"
QEMU_STDERR = "qemu-stderr.log"

_PR_SET_PDEATHSIG = 1
_PR_SET_THP_DISABLE = 41
# The first line of a run directory's qemu-cmdline.txt (a shell comment).
COMMAND_LINE_NOTE = ("# QEMU runs with transparent huge pages off for its memory "
                     "(prctl PR_SET_THP_DISABLE, harness/vm/qemu.py without_huge_pages())")


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", 0))
        except OSError as error:
            raise HarnessError(
                f"no free TCP port on 127.0.0.1 for SSH forwarding: {error}"
            ) from None
        return int(probe.getsockname()[1])


def without_huge_pages() -> None:
    """Runs in QEMU's process before exec: no transparent huge pages for its memory.

    QEMU asks the host to back guest RAM with huge pages (MADV_HUGEPAGE), so
    the guest's first write to any 2 MiB makes the host allocate and zero all
    of it. The sample driver keeps one page in 8 spread over all of memory, so
    the first insmod had the host zero nearly the whole guest: on a host that
    is itself a VM returning freed memory to its hypervisor (free page
    reporting, as the CI machine), 0.4-0.6 s of that insmod in some boots and
    not in others. With 4 KiB pages the host backs only what the guest
    touches. Measured on the CI machine, debian:5.10, medians of 5 boots each
    (x86_64 / arm64): boot, insmod of 6,600 pages and rmmod, teardown took
    1.03/0.58/0.01 s and 0.47/0.63/0.01 s with huge pages, 1.00/0.16/0.035 s and
    0.48/0.19/0.034 s with a memfd for RAM (4 KiB shared pages, which the host
    also frees more slowly), 0.97/0.13/0.018 s and 0.45/0.18/0.018 s this way.
    The flag is inherited across exec (PR_SET_THP_DISABLE), so it is not in
    QEMU's command line; qemu-cmdline.txt says so. bench/ runs its bare QEMU
    the same way.
    """
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0)


def _in_qemu_child() -> None:
    """Runs in the child before exec: SIGKILL QEMU when the harness process dies,
    and no huge pages for its memory."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    without_huge_pages()


@dataclass
class Vm:
    """A running QEMU guest and where to reach it."""

    arch: str
    accelerator: str
    run_dir: Path
    console_log: Path  # UART: kernel messages and the ready marker
    command_pipe: Path  # FIFO pair <path>.in/.out of the virtio console (hvc0) shell
    ssh_port: int | None  # host port forwarded to the guest's SSH, on 127.0.0.1
    command_line: list[str]
    process: subprocess.Popen[bytes]
    _qmp: QEMUMonitorProtocol | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        """QEMU's process id."""
        return self.process.pid

    def running(self) -> bool:
        """True while QEMU has not exited."""
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        """CPU time QEMU has used so far (user + system): a boot cost that host load
        inflates far less than wall time."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def qmp(self, command: str, **arguments: Any) -> Any:
        """Send one QMP command (e.g. ``query-status``, ``balloon``) and return its result."""
        if self._qmp is None or not self.running():
            raise HarnessError(f"QEMU ({self.arch}) is not running: cannot send {command}")
        return self._qmp.cmd(command, **arguments)

    def console_text(self) -> str:
        """Everything the guest printed on the UART so far."""
        return self.console_log.read_text(errors="replace") if self.console_log.exists() else ""

    def console_tail(self, lines: int = 15) -> str:
        """The last ``lines`` console lines, for error messages."""
        return "\n".join(self.console_text().splitlines()[-lines:])

    def wait_for_console(self, marker: str, timeout: float) -> float:
        """Block until ``marker`` appears on the UART; return seconds waited.

        Raises HarnessError with the last console lines when QEMU exits first
        or the timeout passes.
        """
        started = time.monotonic()
        offset = 0
        pending = ""
        while True:
            if self.console_log.exists():
                with self.console_log.open("rb") as log:
                    log.seek(offset)
                    chunk = log.read()
                offset += len(chunk)
                pending = (pending + chunk.decode(errors="replace"))[-(len(marker) + 4096):]
                if marker in pending:
                    return time.monotonic() - started
            if not self.running():
                raise HarnessError(
                    f"QEMU exited (status {self.process.returncode}) before the guest printed "
                    f"{marker!r}; {self._why()}"
                )
            if time.monotonic() - started > timeout:
                raise HarnessError(
                    f"the guest did not print {marker!r} within {timeout:.0f} s; "
                    f"last console lines: {self.console_tail(8)!r} (full log: {self.console_log})"
                )
            time.sleep(0.005)

    def _why(self) -> str:
        stderr = (self.run_dir / QEMU_STDERR)
        text = stderr.read_text(errors="replace").strip() if stderr.exists() else ""
        if text:
            return f"QEMU said: {text.splitlines()[-1]}"
        return f"last console lines: {self.console_tail(8)!r} (full log: {self.console_log})"

    def kill(self) -> None:
        """Kill QEMU at once (SIGKILL), as a crash would; teardown still cleans up."""
        if self.running():
            self.process.kill()
            self.process.wait()


def _kernel_image(kernel: KernelBuild | Path) -> Path:
    image = kernel.image if isinstance(kernel, KernelBuild) else Path(kernel)
    if not image.is_file():
        raise HarnessError(f"kernel image {image} does not exist: build it with `harness build`")
    return image


def kernel_command_line(machine: Machine, extra: Sequence[str] = ()) -> str:
    """The kernel parameters every harness boot uses, then ``extra``."""
    params = [
        f"console={machine.arch.serial_console}",
        # panic=-1 reboots at once on a panic, and -no-reboot turns that
        # reboot into QEMU exiting, so a dead guest never hangs a test.
        "panic=-1",
        "rdinit=/init",
        *machine.kernel_params,
        *extra,
    ]
    return " ".join(params)


def qemu_command(machine: Machine, image: Path, initrd: Path, accelerator: str,
                 memory_mib: int, cpus: int, console_log: Path, sockets: Path,
                 ssh_port: int | None, extra_devices: Sequence[str],
                 cmdline_extra: Sequence[str]) -> list[str]:
    """The full QEMU command line (pure: no process is started)."""
    command = [
        machine.arch.qemu_binary, *machine.arch.qemu_machine,
        # Multi-threaded TCG: each vCPU gets a host thread, so two vCPUs really
        # run at the same moment (QEMU 7.2 supports it for both guest arches).
        "-accel", "tcg,thread=multi" if accelerator == "tcg" else accelerator,
        # One CPU per socket: x86_64 guests have no ACPI, so the firmware's MP
        # table is all they learn CPUs from, and SeaBIOS lists only the first
        # CPU of each package there (QEMU's default -smp N is N cores in one).
        "-m", str(memory_mib), "-smp", f"{cpus},sockets={cpus},cores=1,threads=1",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(image), "-initrd", str(initrd),
        "-append", kernel_command_line(machine, cmdline_extra),
        "-chardev", f"file,id=uart,path={console_log}",
        "-serial", "chardev:uart",
        "-qmp", f"unix:{sockets / 'qmp.sock'},server=on,wait=off",
        # One port: the default 31 make the guest set up 64 virtqueues, which
        # costs as much boot time under TCG as all other devices together.
        "-device", f"{machine.virtio('serial')},max_ports=1",
        # FIFOs, not a socket: QEMU drops virtio console output the host has
        # no room for, and a FIFO's room can be raised to 1 MiB by the reader
        # (harness.guest.console.PipeStream).
        "-chardev", f"pipe,id=hvc,path={sockets / 'hvc0'}",
        "-device", "virtconsole,chardev=hvc,name=harness.command",
        "-device", machine.virtio("rng"),
    ]
    if ssh_port is not None:
        command += [
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:{GUEST_SSH_PORT}",
            # romfile= drops the PXE option ROM, which firmware would otherwise run.
            "-device", f"{machine.virtio('net')},netdev=net0"
                       + (",romfile=" if machine.virtio_suffix == "-pci" else ""),
        ]
    for device in extra_devices:
        command += ["-device", device]
    return command


@contextmanager
def launch(
    kernel: KernelBuild | Path,
    initramfs: Initramfs | Path,
    arch: str,
    memory_mib: int = MEMORY_MIB,
    cpus: int = CPUS,
    extra_devices: Sequence[str] = (),
    cmdline_extra: Sequence[str] = (),
    run_dir: Path | None = None,
    accelerator: str | None = None,
    network: bool = True,
) -> Iterator[Vm]:
    """Start QEMU for ``kernel`` and ``initramfs``; stop it when the block exits.

    ``extra_devices`` are ``-device`` values (e.g. ``virtio-balloon-pci``);
    ``cmdline_extra`` kernel parameters appended to the harness's own.
    ``network`` adds user networking with SSH forwarded to a free port on
    127.0.0.1. The block gets a ``Vm`` right after QEMU started: callers wait
    for the guest with ``vm.wait_for_console(marker, timeout)``.
    """
    machine = get_machine(arch)
    if shutil.which(machine.arch.qemu_binary) is None:
        raise MissingTool(machine.arch.qemu_binary, machine.arch.qemu_package,
                          f"booting {machine.arch.name} guests")
    image = _kernel_image(kernel)
    machine = machine.for_image(image)
    initrd = initramfs.path if isinstance(initramfs, Initramfs) else Path(initramfs)
    if not initrd.is_file():
        raise HarnessError(f"initramfs {initrd} does not exist: build it with build_initramfs()")
    if memory_mib < 64:
        raise HarnessError(f"{memory_mib} MiB is too little memory for a guest (use >= 64)")
    if not 1 <= cpus <= MAX_CPUS:
        raise HarnessError(f"{cpus} vCPUs: give --cpus between 1 and {MAX_CPUS}")
    accel = choose_accelerator(machine, image, accelerator)
    run_dir = run_dir or new_run_dir(machine.arch.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    sockets = Path(tempfile.mkdtemp(prefix="hx-"))
    process: subprocess.Popen[bytes] | None = None
    vm: Vm | None = None
    try:
        for direction in ("in", "out"):
            os.mkfifo(sockets / f"hvc0.{direction}", 0o600)
        for _attempt in range(3):
            ssh_port = free_local_port() if network else None
            console_log = run_dir / CONSOLE_LOG
            console_log.unlink(missing_ok=True)
            command = qemu_command(machine, image, initrd, accel, memory_mib, cpus, console_log,
                                   sockets, ssh_port, extra_devices, cmdline_extra)
            (run_dir / COMMAND_LINE).write_text(f"{COMMAND_LINE_NOTE}\n{shlex.join(command)}\n")
            with (run_dir / QEMU_STDERR).open("wb") as stderr:
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=stderr,
                                           start_new_session=True,
                                           preexec_fn=_in_qemu_child)
            vm = Vm(arch=machine.arch.name, accelerator=accel, run_dir=run_dir,
                    console_log=console_log, command_pipe=sockets / "hvc0",
                    ssh_port=ssh_port, command_line=command, process=process)
            vm._qmp = _connect_qmp(vm, sockets / "qmp.sock")
            if vm._qmp is not None:
                break
            stderr_text = (run_dir / QEMU_STDERR).read_text(errors="replace")
            if "hostfwd" in stderr_text or "host forwarding" in stderr_text:
                continue  # another process took the port between our probe and QEMU's bind
            raise HarnessError(_startup_failure(machine, stderr_text, process.returncode))
        else:
            raise HarnessError("QEMU could not bind a forwarded SSH port on 127.0.0.1 "
                               "after 3 attempts")
        yield vm
    finally:
        if vm is not None:
            _stop(vm)
        elif process is not None and process.poll() is None:
            process.kill()
            process.wait()
        shutil.rmtree(sockets, ignore_errors=True)


def _connect_qmp(vm: Vm, path: Path, timeout: float = 10.0) -> QEMUMonitorProtocol | None:
    """Connect to QEMU's QMP socket once it exists; None when QEMU exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not vm.running():
            return None
        if path.exists():
            monitor = QEMUMonitorProtocol(str(path))
            try:
                monitor.connect()
            except Exception:  # noqa: BLE001 - any connect failure means "retry"
                with suppress(Exception):
                    monitor.close()
            else:
                monitor.settimeout(10.0)
                return monitor
        time.sleep(0.01)
    raise HarnessError(f"QEMU's QMP socket did not answer within {timeout:.0f} s")


def _startup_failure(machine: Machine, stderr: str, status: int | None) -> str:
    """A one-line reason QEMU refused to start, naming the package when one is missing."""
    last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {status}"
    lowered = stderr.lower()
    if "unsupported machine type" in lowered or "machine type" in lowered and "not" in lowered:
        return (f"{machine.arch.qemu_binary} lacks the machine in {machine.arch.qemu_machine}: "
                f"install a newer {machine.arch.qemu_package} ({last})")
    if re.search(r"\b(bios|firmware)\b|option rom", lowered):
        return f"QEMU cannot load its firmware: install seabios ({last})"
    return f"QEMU failed to start: {last}"


def _stop(vm: Vm) -> None:
    """QMP quit, then SIGTERM, then SIGKILL; always reap the process and close QMP."""
    if vm.running() and vm._qmp is not None:
        with suppress(Exception):
            vm._qmp.cmd("quit")
    for sig, grace in ((None, 3.0), (signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        if sig is not None and vm.running():
            with suppress(ProcessLookupError):
                vm.process.send_signal(sig)
        with suppress(subprocess.TimeoutExpired):
            vm.process.wait(timeout=grace)
        if not vm.running():
            break
    if vm._qmp is not None:
        with suppress(Exception):
            vm._qmp.close()
        vm._qmp = None
    with suppress(OSError):
        (vm.run_dir / "qemu-exit-status.txt").write_text(f"{vm.process.returncode}\n")
