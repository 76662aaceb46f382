"""Initramfs pieces: the newc writer, the /init template, per-run keys, ELF lookups."""

import io
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.arch import get_arch
from harness.artifacts import Initramfs
from harness.errors import HarnessError
from harness.image import build
from harness.image.cpio import CpioWriter
from harness.image.userspace import busybox_applets, elf_interpreter, elf_needed


def _archive() -> bytes:
    buffer = io.BytesIO()
    archive = CpioWriter(buffer)
    archive.add_dir("dev")
    archive.add_chardev("dev/console", 5, 1)
    archive.add_file("/init", b"#!/bin/sh\necho hi\n", 0o755)
    archive.add_symlink("sh", "bin/busybox")
    archive.close()
    return buffer.getvalue()


def test_newc_header_of_device_node() -> None:
    data = _archive()
    assert len(data) % 4 == 0
    # second entry: dev/console, a character device 5:1 owned by root
    second = data.index(b"070701", 6)
    fields = [int(data[second + 6 + 8 * i: second + 14 + 8 * i], 16) for i in range(13)]
    mode, uid, gid, rdevmajor, rdevminor = fields[1], fields[2], fields[3], fields[9], fields[10]
    assert mode == 0o020600 and (uid, gid) == (0, 0) and (rdevmajor, rdevminor) == (5, 1)
    assert data.endswith(b"\0" * (-len(data) % 4)) and b"TRAILER!!!" in data[-128:]


@pytest.mark.needs_program("cpio")
def test_cpio_tool_reads_the_archive() -> None:
    listing = subprocess.run(["cpio", "-itv"], input=_archive(), capture_output=True,
                             check=True).stdout.decode()
    lines = listing.splitlines()
    assert lines[1].startswith("crw-------") and lines[1].endswith("dev/console")
    assert lines[2].startswith("-rwxr-xr-x") and lines[2].endswith("init")
    assert lines[3].startswith("lrwxrwxrwx") and lines[3].endswith("sh -> bin/busybox")


def test_duplicate_entry_is_refused() -> None:
    archive = CpioWriter(io.BytesIO())
    archive.add_dir("etc")
    with pytest.raises(ValueError, match="duplicate"):
        archive.add_dir("/etc")


def test_archives_are_reproducible() -> None:
    assert _archive() == _archive()


def test_init_script_covers_the_guest_contract() -> None:
    script = build.init_script(get_arch("arm64"), ["sample.ko"])
    ssh = build.ssh_script(get_arch("arm64"))
    for needle in ("mount -a", "mount -t devpts", "insmod /lib/modules/harness/sample.ko",
                   "/dev/hvc0", f'echo "{build.READY_MARKER}"', f"sh {build.SSH_SCRIPT_PATH} &"):
        assert needle in script, needle
    for needle in ("renice 19 -p $$", "ip addr add 10.0.2.15/24 dev eth0",
                   "ip route add default via 10.0.2.2",
                   "dropbear -r /etc/dropbear/host_key -p 22", ":0016 ",
                   f'echo "{build.SSH_READY_MARKER}"'):
        assert needle in ssh, needle
    assert "{{" not in script + ssh and "{%" not in script + ssh
    fstab = build._ETC_FILES["etc/fstab"].split()
    for kind in ("proc", "sysfs", "devtmpfs", "debugfs"):
        assert kind in fstab
    assert fstab.index("debugfs") > fstab.index("sysfs")  # mounted inside /sys


@pytest.mark.needs_program("busybox")
def test_busybox_applets_read_from_the_binary(tmp_path: Path) -> None:
    binary = Path(shutil.which("busybox") or "")
    listed = subprocess.run([binary, "--list"], capture_output=True, text=True,
                            check=True).stdout.split()
    assert busybox_applets(binary) == listed
    fake = tmp_path / "busybox"
    fake.write_bytes(b"\x7fELF not busybox")
    with pytest.raises(HarnessError, match="not a busybox binary"):
        busybox_applets(fake)


def test_missing_template_variable_is_an_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t.j2").write_text("{{ nope }}")
    monkeypatch.setattr(build, "images_dir", lambda: tmp_path)
    with pytest.raises(Exception, match="nope"):
        build.render_template("t.j2")
    with pytest.raises(HarnessError, match="missing"):
        build.render_template("absent.j2")


def test_bad_module_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="not a .ko"):
        build.build_initramfs("x86_64", modules=[tmp_path / "missing.ko"])


def test_combine_concatenates_base_then_overlays(tmp_path: Path) -> None:
    base = tmp_path / "base.cpio"
    base.write_bytes(b"BASE")
    overlay = tmp_path / "keys.cpio"
    overlay.write_bytes(b"KEYS")
    combined = build.combine(Initramfs(base, "x86_64", "m"), [overlay], tmp_path / "boot.cpio")
    assert combined.path.read_bytes() == b"BASEKEYS" and combined.ready_marker == "m"


@pytest.mark.needs_program("dropbearkey")
@pytest.mark.needs_program("cpio")
def test_run_keys_overlay(tmp_path: Path) -> None:
    from harness.image.keys import make_run_keys

    keys = make_run_keys(tmp_path)
    assert keys.host_public_key.startswith("ssh-ed25519 ")
    assert keys.client_key.stat().st_mode & 0o077 == 0
    listing = subprocess.run(["cpio", "-itv"], input=keys.overlay.read_bytes(),
                             capture_output=True, check=True).stdout.decode()
    assert "etc/dropbear/host_key" in listing and "root/.ssh/authorized_keys" in listing
    again = make_run_keys(tmp_path / "other")
    assert again.host_public_key != keys.host_public_key


@pytest.mark.needs_program("readelf")
def test_elf_lookups_on_a_host_program() -> None:
    program = Path(shutil.which("ls") or "/bin/ls").resolve()
    assert "libc.so.6" in elf_needed(program)
    assert (elf_interpreter(program) or "").startswith("/lib")
