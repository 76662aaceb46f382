"""Every host program a test needs is installed by some set-up, and CI never skips one.

Tests say which host program they run with ``@pytest.mark.needs_program``
(tests/conftest.py); these tests hold the suite to that rule and check what the
marker does locally and in CI.
"""

import re
from pathlib import Path

import pytest

from harness import hostdeps

TESTS = Path(__file__).resolve().parent.parent
MARKED = re.compile(r"needs_program\(\"([^\"]+)\"\)")


def suite_files() -> list[Path]:
    return [path for path in TESTS.rglob("*.py") if path.name != Path(__file__).name]


def test_every_needed_program_is_in_a_hostdeps_table() -> None:
    needed = {name for path in suite_files() for name in MARKED.findall(path.read_text())}
    assert {"busybox", "vagrant", "cpio", "gcc"} <= needed
    assert [name for name in sorted(needed) if hostdeps.installer(name) is None] == []


def test_no_test_skips_on_its_own_for_a_missing_program() -> None:
    guarded = [f"{path.relative_to(TESTS)}:{number}"
               for path in suite_files()
               for number, line in enumerate(path.read_text().splitlines(), 1)
               if "which(" in line and ("skip" in line or "importorskip" in line)]
    assert guarded == [], "use @pytest.mark.needs_program, which CI turns into a failure"


def test_dev_test_installs_the_test_packages() -> None:
    packages = set(hostdeps.all_packages(tests=True))
    assert {dep.package for dep in hostdeps.TEST_DEPS} <= packages
    assert "busybox-static" not in hostdeps.all_packages()
    assert {dep.package for dep in hostdeps.CI_DEPS} <= set(hostdeps.CI_PACKAGES)


SUITE = """
import pytest

@pytest.mark.needs_program("busybox")
def test_needs_busybox():
    pass

@pytest.mark.needs_program("no-such-program")
def test_needs_an_unlisted_program():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A suite with this repository's marker, run where no host program is on PATH."""
    pytester.makeconftest("from tests.conftest import pytest_configure, pytest_runtest_setup")
    pytester.makepyfile(test_suite=SUITE)
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("HARNESS_REQUIRE_VM", raising=False)
    return pytester


def test_a_missing_program_skips_naming_package_and_installer(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-rs")
    result.assert_outcomes(skipped=1, errors=1)
    result.stdout.fnmatch_lines(["*no-such-program is in no table of harness/hostdeps.py*"])
    result.stdout.fnmatch_lines(
        ["*needs busybox (Debian package busybox-static; ./dev test installs it)"])


@pytest.mark.parametrize("variable", ["CI", "HARNESS_REQUIRE_VM"])
def test_in_ci_a_missing_program_fails(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                       variable: str) -> None:
    monkeypatch.setenv(variable, "true" if variable == "CI" else "1")
    result = suite.runpytest("-k", "busybox")
    result.assert_outcomes(errors=1, deselected=1)
    result.stdout.fnmatch_lines(["*needs busybox (*), and CI must not skip it"])
