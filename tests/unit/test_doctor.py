import shutil

import pytest

from harness import cli, hostdeps


def test_doctor_names_the_package_of_a_missing_qemu(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(
        hostdeps.shutil, "which",
        lambda prog: None if prog == "qemu-system-aarch64" else real_which(prog),
    )
    status = cli.main(["doctor"])
    out = capsys.readouterr().out
    assert status == 1
    assert "apt-get install qemu-system-arm" in out


def test_setup_package_list_covers_every_dependency() -> None:
    packages = set(hostdeps.all_packages())
    assert {d.package for d in hostdeps.HOST_DEPS + hostdeps.HOST_FILES} <= packages


def test_doctor_reports_an_unobtainable_kernel_source(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["doctor", "--kernel", str(tmp_path / "no-such-tree")])
    out = capsys.readouterr().out
    assert status == 1
    assert "[FAIL] kernel" in out and "no-such-tree" in out


@pytest.mark.parametrize("known,ok,says", [
    (None, True, "a test boot at the first VM decides"),
    ((False, "a test boot under KVM did not finish in 10 s"), False,
     "/dev/kvm exists but a test boot under KVM did not finish in 10 s: guests run under TCG"),
    ((True, "test boot reached userspace in 0.4 s"), True, "KVM works: test boot reached"),
])
def test_doctor_reports_what_the_kvm_test_boot_found(
    monkeypatch: pytest.MonkeyPatch, known: tuple[bool, str] | None, ok: bool, says: str
) -> None:
    """/dev/kvm can exist and still not boot a kernel: doctor says what the probe saw."""
    from harness import doctor
    from harness.vm import accel

    monkeypatch.setattr(doctor.os, "access", lambda path, mode: True)
    monkeypatch.setattr(accel, "known_kvm_result", lambda machine: known)
    finding = doctor.check_kvm()
    assert finding.ok is ok and says in finding.detail and not finding.required
