"""Shared test settings: every test gets a private cache and runs directory, and
host programs are required through one marker.

``@pytest.mark.needs_program("busybox")`` skips a test when the program is
missing, naming its package and the set-up command that installs it
(harness/hostdeps.py's tables). In CI (CI=true, or HARNESS_REQUIRE_VM=1 as
.ci/run sets it) every such program is installed, so a missing one fails the
test instead: a CI run cannot pass by skipping what it was meant to check.
"""

import os
import shutil
from pathlib import Path

import pytest

from harness.hostdeps import installer
from harness.pytest_plugin import vm_required


def host_programs_required() -> bool:
    """True in CI, where a missing host program is a failure, not a skip."""
    return os.environ.get("CI", "").lower() in ("1", "true") or vm_required()


def pytest_configure(config: pytest.Config) -> None:
    """Register this suite's markers."""
    config.addinivalue_line(
        "markers", "first_cell_only: the test runs on the first cell of the --arch x "
        "--kernel matrix only (the others are deselected): what it checks does not "
        "depend on the arch or the kernel")
    config.addinivalue_line(
        "markers", "needs_program(name): the test runs the host program `name` "
        "(listed in harness/hostdeps.py); skip without it, fail in CI")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip (or in CI fail) a test whose host program is missing."""
    for mark in item.iter_markers("needs_program"):
        program = mark.args[0]
        found = installer(program)
        if found is None:
            pytest.fail(f"needs_program({program!r}): {program} is in no table of "
                        "harness/hostdeps.py, so no set-up installs it", pytrace=False)
        if shutil.which(program) is not None:
            continue
        dep, command = found
        reason = f"needs {program} (Debian package {dep.package}; {command} installs it)"
        if host_programs_required():
            pytest.fail(f"{reason}, and CI must not skip it", pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the harness cache at a temporary directory for one test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(cache))
    return cache
