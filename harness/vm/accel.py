"""Choose KVM or TCG by proving KVM can boot a kernel, not by seeing /dev/kvm.

On nested or paravirtualised hosts /dev/kvm can exist and open fine while a
stock kernel reset-loops under it (or QEMU aborts on an MSR). The only
trustworthy test is the real thing: boot a kernel under KVM with an
initramfs whose /init prints a marker and powers off. That takes about a
second when KVM works and a bounded timeout when it does not, so the answer
is cached per boot of the host (KVM's health does not change while the host
runs) and per QEMU binary.
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from harness import cache
from harness.errors import HarnessError, notice
from harness.vm.machine import Machine

ACCELERATORS = ("kvm", "tcg")
PROBE_TIMEOUT_SECONDS = 10.0
KVM_DEVICE = Path("/dev/kvm")


def _host_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def choose_accelerator(machine: Machine, kernel: Path, requested: str | None = None) -> str:
    """``kvm`` or ``tcg`` for booting ``kernel`` on ``machine``.

    ``requested`` (or the HARNESS_ACCEL environment variable) forces a
    choice; forcing ``kvm`` where it does not work is an error rather than a
    silent fallback.
    """
    wanted = requested or os.environ.get("HARNESS_ACCEL") or None
    if wanted is not None and wanted not in ACCELERATORS:
        raise HarnessError(f"unknown accelerator {wanted!r}: choose kvm or tcg")
    if wanted == "tcg":
        return "tcg"
    if not machine.kvm_possible():
        if wanted == "kvm":
            raise HarnessError(f"KVM cannot run {machine.arch.name} guests on this "
                               f"{os.uname().machine} host: use --accel tcg")
        return "tcg"
    if not os.access(KVM_DEVICE, os.R_OK | os.W_OK):
        reason = ("missing" if not KVM_DEVICE.exists()
                  else "not accessible (add yourself to group kvm)")
        if wanted == "kvm":
            raise HarnessError(f"/dev/kvm is {reason}")
        notice(f"/dev/kvm is {reason}; using TCG (slower)")
        return "tcg"
    usable, reason = kvm_probe(machine, kernel)
    if usable:
        return "kvm"
    if wanted == "kvm":
        raise HarnessError(f"KVM is present but cannot boot a kernel here ({reason})")
    notice(f"/dev/kvm is present but cannot boot a kernel ({reason}); using TCG (slower)")
    return "tcg"


def kvm_probe(machine: Machine, kernel: Path) -> tuple[bool, str]:
    """Whether ``kernel`` boots to userspace under KVM; cached per host boot."""
    qemu = shutil.which(machine.arch.qemu_binary)
    if qemu is None:
        return False, f"{machine.arch.qemu_binary} not installed"
    key = _probe_key(machine, Path(qemu))
    entry = cache.lookup("kvm-probe", key)
    if entry is not None:
        return _read_probe(entry)
    usable, reason = _probe(machine, kernel)
    with cache.produce("kvm-probe", key) as work:
        (work / "result.json").write_text(json.dumps({"usable": usable, "reason": reason}))
    return usable, reason


def known_kvm_result(machine: Machine) -> tuple[bool, str] | None:
    """The KVM test boot's answer for ``machine`` since the host booted, if one ran."""
    qemu = shutil.which(machine.arch.qemu_binary)
    entry = cache.lookup("kvm-probe", _probe_key(machine, Path(qemu))) if qemu else None
    return _read_probe(entry) if entry is not None else None


def _read_probe(entry: Path) -> tuple[bool, str]:
    result = json.loads((entry / "result.json").read_text())
    return bool(result["usable"]), str(result["reason"])


def _probe_key(machine: Machine, qemu: Path) -> str:
    """Same host boot, same QEMU binary, same arch: the same answer."""
    stat = qemu.stat()
    return cache.cache_key({"boot_id": _host_boot_id(), "qemu": str(qemu),
                            "size": stat.st_size, "mtime": stat.st_mtime_ns,
                            "arch": machine.arch.name})


def _probe(machine: Machine, kernel: Path) -> tuple[bool, str]:
    from harness.image.build import build_marker_initramfs

    initramfs = build_marker_initramfs(machine.arch.name)
    with tempfile.TemporaryDirectory(prefix="harness-kvm-probe-") as scratch:
        log = Path(scratch) / "console.log"
        command = [
            machine.arch.qemu_binary, *machine.arch.qemu_machine,
            "-accel", "kvm", "-m", "128", "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-serial", f"file:{log}", "-kernel", str(kernel),
            "-initrd", str(initramfs.path),
            "-append", f"console={machine.arch.serial_console} panic=-1 "
                       + " ".join(machine.kernel_params),
        ]
        started = time.monotonic()
        try:
            done = subprocess.run(command, capture_output=True, text=True,
                                  timeout=PROBE_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            return False, f"a test boot under KVM did not finish in {PROBE_TIMEOUT_SECONDS:.0f} s"
        console = log.read_text(errors="replace") if log.exists() else ""
        if initramfs.ready_marker in console:
            return True, f"test boot reached userspace in {time.monotonic() - started:.1f} s"
        errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
        detail = errors[0] if errors else f"QEMU exited with {done.returncode}"
        return False, f"a test boot under KVM never reached userspace: {detail}"
