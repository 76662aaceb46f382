"""QEMU command lines, accelerator choice and launch errors (no VM is booted)."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness import errors
from harness.errors import HarnessError, MissingTool
from harness.paths import new_run_dir
from harness.vm import accel, machine, qemu
from harness.vm.boot import runtime_parameters
from harness.vm.machine import get_machine
from tests.unit.kernels import kernel_with_config


def _command(arch: str, tmp_path: Path, ssh_port: int | None = 2222) -> list[str]:
    return qemu.qemu_command(
        get_machine(arch), tmp_path / "Image", tmp_path / "initrd", "tcg", 256, 1,
        tmp_path / "console.log", tmp_path, ssh_port, ["virtio-balloon-pci"], ["quiet"],
    )


def _append(command: list[str]) -> str:
    return command[command.index("-append") + 1]


def test_fast_boot_options_and_local_only_forwarding(tmp_path: Path) -> None:
    command = _command("x86_64", tmp_path)
    for option in ("-nodefaults", "-no-user-config", "-no-reboot"):
        assert option in command
    assert command[command.index("-display") + 1] == "none"
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in " ".join(command)
    assert "virtio-net-pci,netdev=net0,romfile=" in command
    assert command[-2:] == ["-device", "virtio-balloon-pci"]
    assert _append(command).split() == ["console=ttyS0", "panic=-1", "rdinit=/init", "quiet"]


def test_arm64_uses_virtio_mmio_cortex_a57_and_the_rseq_tunable(tmp_path: Path) -> None:
    command = _command("arm64", tmp_path)
    assert "cortex-a57" in command and "virtio-net-device,netdev=net0" in command
    assert "virtio-serial-device,max_ports=1" in command
    assert "GLIBC_TUNABLES=glibc.pthread.rseq=0" in _append(command).split()
    assert "console=ttyAMA0" in _append(command).split()
    assert "GLIBC_TUNABLES" not in _append(_command("x86_64", tmp_path))


def test_without_huge_pages_marks_the_child_only() -> None:
    """The flag QEMU's process gets before exec, seen by the child's kernel (prctl
    PR_GET_THP_DISABLE), not by the harness itself."""
    read_flag = [sys.executable, "-c",
                 "import ctypes; print(ctypes.CDLL(None).prctl(42, 0, 0, 0, 0))"]
    child = subprocess.run(read_flag, capture_output=True, text=True,
                           preexec_fn=qemu.without_huge_pages, check=True)
    assert child.stdout == "1\n"
    assert subprocess.run(read_flag, capture_output=True, text=True).stdout == "0\n"


def test_no_network_means_no_forwarding(tmp_path: Path) -> None:
    assert not any("hostfwd" in word for word in _command("x86_64", tmp_path, ssh_port=None))


def test_free_port_is_bindable() -> None:
    """The port is free now (QEMU's hostfwd will bind it) and nothing listens on it:
    a connection is refused, so an SSH client cannot reach a stranger there."""
    port = qemu.free_local_port()
    assert 1024 <= port <= 65535  # an ephemeral port, not a privileged one
    with socket.socket() as client:
        assert client.connect_ex(("127.0.0.1", port)) != 0
    with socket.socket() as check:
        check.bind(("127.0.0.1", port))
        assert check.getsockname() == ("127.0.0.1", port)


def test_no_free_port_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Exhausted(socket.socket):
        def bind(self, address: object) -> None:
            raise OSError(98, "Address already in use")

    monkeypatch.setattr(qemu.socket, "socket", Exhausted)
    with pytest.raises(HarnessError, match="no free TCP port on 127.0.0.1"):
        qemu.free_local_port()


def test_run_dirs_are_unique_with_a_latest_link(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path))
    first, second = new_run_dir("x86_64"), new_run_dir("x86_64")
    assert first != second and first.is_dir()
    assert (tmp_path / "latest").resolve() == second.resolve()


def test_launch_refuses_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="kernel image .* does not exist"), \
            qemu.launch(tmp_path / "nope", tmp_path / "initrd", "x86_64"):
        pass
    image = tmp_path / "bzImage"
    image.write_bytes(b"x")
    with pytest.raises(HarnessError, match="initramfs .* does not exist"), \
            qemu.launch(image, tmp_path / "initrd", "x86_64"):
        pass


def test_launch_names_the_package_of_a_missing_qemu(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu.shutil, "which", lambda name: None)
    with pytest.raises(MissingTool, match="apt-get install qemu-system-arm"), \
            qemu.launch(tmp_path / "Image", tmp_path / "initrd", "arm64"):
        pass


def test_accelerator_override_and_cross_arch(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("HARNESS_ACCEL", "tcg")
    assert accel.choose_accelerator(get_machine("x86_64"), tmp_path) == "tcg"
    monkeypatch.delenv("HARNESS_ACCEL")
    arm64 = get_machine("arm64")
    if not arm64.kvm_possible():
        assert accel.choose_accelerator(arm64, tmp_path) == "tcg"
        with pytest.raises(HarnessError, match="KVM cannot run arm64"):
            accel.choose_accelerator(arm64, tmp_path, "kvm")
    with pytest.raises(HarnessError, match="unknown accelerator"):
        accel.choose_accelerator(arm64, tmp_path, "hvf")


def test_failed_kvm_probe_falls_back_once_with_a_notice(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, isolated_cache: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    machine = get_machine("x86_64")
    calls = []

    def probe(machine_: object, kernel: Path) -> tuple[bool, str]:
        calls.append(kernel)
        return False, "reset loop"

    monkeypatch.setattr(accel, "_probe", probe)
    monkeypatch.setattr(machine.__class__, "kvm_possible", lambda self: True)
    monkeypatch.setattr(accel.os, "access", lambda path, mode: True)
    monkeypatch.setattr(errors, "_noticed", set())
    assert accel.choose_accelerator(machine, tmp_path / "k1") == "tcg"
    assert accel.choose_accelerator(machine, tmp_path / "k2") == "tcg"
    assert len(calls) == 1  # cached for this boot of the host
    assert capsys.readouterr().err.count("cannot boot a kernel (reset loop); using TCG") == 1
    with pytest.raises(HarnessError, match="KVM is present but cannot boot"):
        accel.choose_accelerator(machine, tmp_path / "k3", "kvm")


def test_page_poisoning_built_in_is_switched_on_at_boot(tmp_path: Path) -> None:
    """Built-in page poisoning stays off without page_poison=1: the boot adds it."""
    poisoned = kernel_with_config(tmp_path, "CONFIG_PAGE_POISONING=y\nCONFIG_DEBUG_VM=y\n")
    assert runtime_parameters(poisoned) == ("page_poison=1",)
    plain = kernel_with_config(tmp_path, "# CONFIG_PAGE_POISONING is not set\n")
    assert runtime_parameters(plain) == ()
    assert runtime_parameters(tmp_path / "bzImage") == ()


def test_page_owner_built_in_is_switched_on_at_boot(tmp_path: Path) -> None:
    """page_owner records nothing without page_owner=on: the boot adds it."""
    owned = kernel_with_config(tmp_path, "CONFIG_PAGE_OWNER=y\n")
    assert runtime_parameters(owned) == ("page_owner=on",)


@pytest.mark.parametrize(("page_poison_c", "expected"), [
    ("memset(addr, PAGE_POISON, PAGE_SIZE);", ()),  # 4.8.15's: KASAN would flag the check
    ("kasan_disable_current();\nmemset(addr, PAGE_POISON, PAGE_SIZE);", ("page_poison=1",)),
])
def test_page_poisoning_stays_off_under_kasan_without_the_upstream_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    page_poison_c: str, expected: tuple[str, ...],
) -> None:
    monkeypatch.setattr(errors, "_noticed", set())
    kernel = kernel_with_config(tmp_path, "CONFIG_PAGE_POISONING=y\nCONFIG_KASAN=y\n")
    (tmp_path / "source" / "mm").mkdir(parents=True)
    (tmp_path / "source" / "mm" / "page_poison.c").write_text(page_poison_c)
    assert runtime_parameters(kernel) == expected
    assert ("page poisoning stays off on 4.8.15" in capsys.readouterr().err) == (not expected)


def test_every_vcpu_is_a_socket_of_its_own_under_multi_threaded_tcg(tmp_path: Path) -> None:
    """x86_64 guests learn CPUs only from SeaBIOS's MP table, which lists one CPU per
    package: with QEMU's default topology (N cores, one socket) Linux saw 1 CPU of 2."""
    command = qemu.qemu_command(
        get_machine("x86_64"), tmp_path / "Image", tmp_path / "initrd", "tcg", 256, 2,
        tmp_path / "console.log", tmp_path, None, [], [])
    assert command[command.index("-smp") + 1] == "2,sockets=2,cores=1,threads=1"
    assert command[command.index("-accel") + 1] == "tcg,thread=multi"


def _arm64_image(path: Path, page_size_bits: int) -> Path:
    """An arm64 Image header (Documentation/arch/arm64/booting.rst): flags at byte 24,
    bits 1-2 the page size (1 4K, 2 16K, 3 64K), the magic ARM\\x64 at byte 56."""
    header = bytearray(64)
    header[24:32] = (page_size_bits << 1 | 1).to_bytes(8, "little")  # bit 0: little-endian
    header[56:60] = b"ARM\x64"
    path.write_bytes(bytes(header) + b"\0" * 1024)
    return path


@pytest.mark.parametrize("bits,page_size,cpu", [(1, 4096, "cortex-a57"),
                                                (2, 16384, "cortex-a76"),
                                                (3, 65536, "cortex-a57")])
def test_an_arm64_image_boots_on_a_cpu_with_its_page_size(
        tmp_path: Path, bits: int, page_size: int, cpu: str) -> None:
    """cortex-a57 has no 16 KiB translation granule: a 16K-page kernel would stop
    before its first console line, so its Image's header picks cortex-a76."""
    image = _arm64_image(tmp_path / "Image", bits)
    assert machine.arm64_image_page_size(image) == page_size
    command = qemu.qemu_command(
        get_machine("arm64").for_image(image), image, tmp_path / "initrd", "tcg", 256, 1,
        tmp_path / "console.log", tmp_path, None, [], [])
    assert command[command.index("-cpu") + 1] == cpu
    assert command[command.index("-machine") + 1] == "virt,gic-version=2"


def test_an_image_whose_header_says_nothing_keeps_the_default_cpu(tmp_path: Path) -> None:
    """A compressed Image (QEMU boots those too) or one with the page size unset."""
    gzipped = tmp_path / "Image.gz"
    gzipped.write_bytes(b"\x1f\x8b" + b"\0" * 100)
    unset = _arm64_image(tmp_path / "Image", 0)
    for image in (gzipped, unset):
        assert get_machine("arm64").for_image(image) == get_machine("arm64")
    assert get_machine("x86_64").for_image(gzipped) == get_machine("x86_64")
