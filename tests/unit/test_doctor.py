import shutil

import pytest

from harness import cli, hostdeps
from harness.errors import HarnessError
from harness.kernel import debian
from tests.unit.debian_recorded import recorded_survey


@pytest.fixture(autouse=True)
def recorded_archive(monkeypatch: pytest.MonkeyPatch) -> debian.Survey:
    """doctor asks the archive what it offers: the recordings answer instead of the mirror."""
    found = recorded_survey(monkeypatch)
    monkeypatch.setattr(debian, "survey", lambda: found)
    return found


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


def test_doctor_lists_the_debian_kernels_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["doctor"])
    lines = [line for line in capsys.readouterr().out.splitlines() if "debian kernels" in line]
    assert lines == ["[ok  ] debian kernels: linux-source 5.10 (bullseye), 6.1 (bookworm), "
                     "6.12 (bookworm-backports, trixie), 7.2 (forky, sid, trixie-backports), "
                     "7.3 (trixie-backports)"]


def test_doctor_unreachable_archive_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import doctor

    def unreachable() -> debian.Survey:
        raise HarnessError("cannot reach the Debian mirror http://mirror.invalid (no network?)")

    monkeypatch.setattr(debian, "survey", unreachable)
    finding = doctor.check_debian_kernels()
    assert not finding.ok and not finding.required and "no network" in finding.detail
