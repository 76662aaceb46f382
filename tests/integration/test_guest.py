"""Real guests, both arches, both transports: commands, files, crashes, dead VMs."""

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from harness.artifacts import KernelBuild
from harness.guest import GuestError, KernelProblem
from harness.vm.boot import VmGuest

from .conftest import BootFactory

pytestmark = pytest.mark.vm


def test_uname_matches_the_built_release(vm_guest: VmGuest, kernel_build: KernelBuild) -> None:
    result = vm_guest.run("uname -r")
    assert result.ok and result.stdout == kernel_build.release + "\n"


def test_qemu_runs_without_transparent_huge_pages(vm_guest: VmGuest) -> None:
    """harness.vm.qemu.without_huge_pages: the host kernel says so of QEMU's process,
    and the run directory's command line says so too."""
    status = Path(f"/proc/{vm_guest.vm.pid}/status").read_text()
    assert "THP_enabled:\t0\n" in status
    recorded = (vm_guest.vm.run_dir / "qemu-cmdline.txt").read_text().splitlines()
    assert recorded[0].startswith("# QEMU runs with transparent huge pages off")


def test_exit_statuses_are_exact(vm_guest: VmGuest) -> None:
    commands = ("true", "false", "sh -c 'exit 3'")
    statuses = [vm_guest.run(command).exit_status for command in commands]
    assert statuses == [0, 1, 3]


def test_one_mebibyte_goes_in_and_out_unchanged(vm_guest: VmGuest, tmp_path: Path) -> None:
    data = os.urandom(1 << 20)
    sent, received = tmp_path / "sent.bin", tmp_path / "received.bin"
    sent.write_bytes(data)
    vm_guest.put(sent, "/tmp/random.bin")
    digest = hashlib.sha256(data).hexdigest()
    assert vm_guest.run("sha256sum /tmp/random.bin").stdout.split()[0] == digest
    vm_guest.get("/tmp/random.bin", received)
    assert hashlib.sha256(received.read_bytes()).hexdigest() == digest


def test_ten_thousand_lines_arrive_whole(vm_guest: VmGuest) -> None:
    result = vm_guest.run("seq 10000")
    assert result.ok and result.stdout.splitlines() == [str(n) for n in range(1, 10001)]


def test_kernel_messages_stay_out_of_command_output(vm_guest: VmGuest) -> None:
    marker = f"harness-kmsg-{time.monotonic_ns()}"
    result = vm_guest.run(f"echo {marker} > /dev/kmsg; echo done")
    assert result.stdout == "done\n"
    deadline = time.monotonic() + 5
    while marker not in vm_guest.vm.console_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker in vm_guest.vm.console_text()


def test_a_kernel_panic_fails_the_step_with_the_panic_text(boot: BootFactory) -> None:
    with boot() as guest:
        with pytest.raises(KernelProblem) as caught:
            guest.run("echo c > /proc/sysrq-trigger", timeout=60)
        # 4.8 crashes with a NULL dereference and panics on it (kind Oops); newer
        # kernels call panic() at once (kind panic): the guest is gone either way.
        assert caught.value.fatal and caught.value.kind in ("Oops", "panic")
        assert "Kernel panic - not syncing" in caught.value.excerpt
        assert "sysrq" in caught.value.excerpt.lower()
        assert not guest.vm.running()  # panic=-1 and -no-reboot ended QEMU


def test_killing_qemu_mid_command_is_reported(boot: BootFactory) -> None:
    with boot() as guest:
        killer = threading.Timer(1.0, guest.vm.kill)
        killer.start()
        started = time.monotonic()
        try:
            with pytest.raises(GuestError, match="QEMU was killed by signal 9"):
                guest.run("sleep 60", timeout=90)
        finally:
            killer.cancel()
        assert time.monotonic() - started < 30
