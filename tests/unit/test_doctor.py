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
