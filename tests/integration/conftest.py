"""Local fixtures for the guest transport tests: booted guests per transport, and a
no-leftover check. Kernels come from the plugin's ``kernel_build`` (the
``--arch`` x ``--kernel`` matrix).

Every VM booted here is recorded; at the end of the session no QEMU process
we started may still exist and no socket directory may be left behind.
"""

import os
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

import pytest

from harness.artifacts import KernelBuild
from harness.defaults import TRANSPORTS
from harness.pytest_plugin import MATRIX_FIXTURE, matrix
from harness.vm.boot import VmGuest, boot_guest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the ``first_cell_only`` tests of every cell but the matrix's first."""
    first = matrix(config)[0]
    dropped = [item for item in items if item.get_closest_marker("first_cell_only")
               and getattr(item, "callspec", None) is not None
               and item.callspec.params.get(MATRIX_FIXTURE, first) != first]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``transport`` by both transports (the plugin does arch x kernel)."""
    if "transport" in metafunc.fixturenames:
        metafunc.parametrize("transport", TRANSPORTS, scope="session")


@pytest.fixture(scope="session")
def booted_vms() -> Iterator[list[VmGuest]]:
    """Every VM booted in this session; checked for leftovers at the end."""
    booted: list[VmGuest] = []
    yield booted
    # Asked of our own Popen, not of /proc/PID: on a busy machine the PID of a
    # QEMU that exited is soon another process's (a CI run saw a kworker there).
    alive = [guest.vm.pid for guest in booted if guest.vm.running()]
    assert not alive, f"QEMU processes left running: {alive}"
    sockets = [guest.vm.command_pipe.parent for guest in booted
               if guest.vm.command_pipe.parent.exists()]
    assert not sockets, f"socket directories left behind: {sockets}"


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep this session's run directories (console logs, QEMU command lines) together."""
    path = tmp_path_factory.mktemp("runs")
    previous = os.environ.get("HARNESS_RUNS_DIR")
    os.environ["HARNESS_RUNS_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("HARNESS_RUNS_DIR", None)
    else:
        os.environ["HARNESS_RUNS_DIR"] = previous


BootFactory = Callable[..., AbstractContextManager[VmGuest]]


@pytest.fixture
def boot(kernel_build: KernelBuild, transport: str, runs_dir: Path,
         booted_vms: list[VmGuest]) -> BootFactory:
    """Boot a fresh VM of the kernel under test (for tests that break it)."""
    from contextlib import contextmanager

    @contextmanager
    def fresh(**options: object) -> Iterator[VmGuest]:
        with boot_guest(kernel_build, transport=transport, **options) as guest:  # type: ignore[arg-type]
            booted_vms.append(guest)
            yield guest

    return fresh


@pytest.fixture(scope="session")
def vm_guest(kernel_build: KernelBuild, transport: str, runs_dir: Path,
             booted_vms: list[VmGuest]) -> Iterator[VmGuest]:
    """One VM per kernel and transport, shared by the guest tests that leave it intact.

    Named apart from the plugin's ``guest`` (one transport, any target) because
    these tests are about the QEMU transports themselves.
    """
    with boot_guest(kernel_build, transport=transport) as booted:
        booted_vms.append(booted)
        yield booted


@pytest.fixture
def kernel_without(kernel_build: KernelBuild, tmp_path: Path) -> Callable[[str], KernelBuild]:
    """Factory: this cell's build as a user's kernel lacking CONFIG_<symbol> looks.

    The real .config is copied with that option turned off (the line olddefconfig
    writes for an unset option), so a scenario's pre-boot check meets the exact
    text a kernel built without the option has, without a second kernel build.
    """
    def without(symbol: str) -> KernelBuild:
        text, found = re.subn(rf"^CONFIG_{symbol}=.*$", f"# CONFIG_{symbol} is not set",
                              kernel_build.config.read_text(), flags=re.M)
        assert found == 1, f"CONFIG_{symbol} is not set in {kernel_build.config} to begin with"
        config = tmp_path / f"without-{symbol}" / ".config"
        config.parent.mkdir()
        config.write_text(text)
        return replace(kernel_build, config=config)

    return without


def pytest_addoption(parser: pytest.Parser) -> None:
    """--lkdtm-all: every LKDTM crash type of tests/lkdtm.py, not only the CI subset."""
    parser.addoption("--lkdtm-all", action="store_true",
                     help="test_lkdtm.py: provoke every crash type (default: the CI subset)")
