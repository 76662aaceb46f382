"""pytest plugin (entry point ``pytest11``): options and fixtures over the harness.

Options: ``--arch`` and ``--kernel`` (repeatable) choose the matrix, and
``--target`` chooses where tests run (``qemu``, or ``ssh://user@host[:port]``
for a board). With HARNESS_REQUIRE_VM=1 (as .ci/run sets it) a VM test that
would be skipped fails instead, so CI can never pass without booting.
"""

import os

import pytest

DEFAULT_ARCHES = ("x86_64", "arm64")
DEFAULT_KERNELS = ("debian:5.10", "debian:6.1")


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the matrix and target options."""
    group = parser.getgroup("harness", "movable page migration harness")
    group.addoption("--arch", action="append", default=[], metavar="ARCH",
                    help=f"guest architecture (repeatable; default: {' '.join(DEFAULT_ARCHES)})")
    group.addoption("--kernel", action="append", default=[], metavar="SPEC",
                    help="kernel spec: a tree, git:REPO@REF, a tarball path or URL, debian:5.10 "
                         f"(repeatable; default: {' '.join(DEFAULT_KERNELS)})")
    group.addoption("--target", default="qemu", metavar="TARGET",
                    help="qemu (default) or ssh://user@host[:port] to test a running board")


def vm_required() -> bool:
    """True when skipping a VM test must count as a failure (CI)."""
    return os.environ.get("HARNESS_REQUIRE_VM", "") not in ("", "0")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Turn the skip of a ``vm`` test into a failure when VMs are required."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and vm_required() and item.get_closest_marker("vm") is not None:
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"VM test skipped but HARNESS_REQUIRE_VM is set: {reason}"
