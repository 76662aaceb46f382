"""Local fixtures for the guest tests: kernels, booted guests, and a no-leftover check.

Kernels: with ``--kernel SPEC`` (the plugin's option, repeatable) each spec is
built (or taken from the cache) for each ``--arch``; without it the scratch
4.8.15 builds under /work/scratch are used when they exist, else the tests
skip (and fail under HARNESS_REQUIRE_VM=1).

Every VM booted here is recorded; at the end of the session no QEMU process
we started may still exist and no socket directory may be left behind.
"""

import os
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from harness.arch import get_arch
from harness.artifacts import KernelBuild
from harness.pytest_plugin import DEFAULT_ARCHES
from harness.vm.boot import TRANSPORTS, VmGuest, boot_guest

SCRATCH = Path("/work/scratch")


def scratch_kernel(arch: str) -> KernelBuild | None:
    """A KernelBuild for the scratch O= build of ``arch``, or None when it is not built."""
    profile = get_arch(arch)
    build_dir = SCRATCH / f"build-4.8-{arch}"
    image = build_dir / profile.image_path
    release_file = build_dir / "include" / "config" / "kernel.release"
    if not image.is_file() or not release_file.is_file():
        return None
    release = release_file.read_text().strip()
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", release)
    version = tuple(int(part) for part in match.groups()) if match else (0, 0, 0)
    make_args = [f"ARCH={profile.kernel_arch}"]
    if profile.cross_compile:
        make_args.append(f"CROSS_COMPILE={profile.cross_compile}")
    return KernelBuild(
        arch=arch, spec=str(build_dir), release=release,
        version=(version[0], version[1], version[2]), image=image, build_dir=build_dir,
        config=build_dir / ".config", system_map=build_dir / "System.map",
        make_args=tuple(make_args), module_fixups=(), cached=True, seconds=0.0,
    )


def _kernel_params(config: pytest.Config) -> list[tuple[str | None, str]]:
    arches = config.getoption("--arch") or list(DEFAULT_ARCHES)
    specs = config.getoption("--kernel") or [None]
    return [(spec, arch) for spec in specs for arch in arches]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``kernel_choice`` by spec x arch and ``transport`` by both transports."""
    if "kernel_choice" in metafunc.fixturenames:
        params = _kernel_params(metafunc.config)
        metafunc.parametrize("kernel_choice", params, scope="session",
                             ids=[f"{arch}-{spec or 'scratch-4.8'}" for spec, arch in params])
    if "transport" in metafunc.fixturenames:
        metafunc.parametrize("transport", TRANSPORTS, scope="session")


@pytest.fixture(scope="session")
def booted_vms() -> Iterator[list[VmGuest]]:
    """Every VM booted in this session; checked for leftovers at the end."""
    booted: list[VmGuest] = []
    yield booted
    alive = [guest.vm.pid for guest in booted if Path(f"/proc/{guest.vm.pid}").exists()]
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


@pytest.fixture(scope="session")
def kernel(kernel_choice: tuple[str | None, str]) -> KernelBuild:
    """The kernel under test: built from --kernel, or the scratch 4.8.15 build."""
    spec, arch = kernel_choice
    if spec is not None:
        from harness.kernel.build import build_kernel

        return build_kernel(spec, arch)
    found = scratch_kernel(arch)
    if found is None:
        pytest.skip(f"no scratch {arch} kernel in {SCRATCH} and no --kernel given")
    return found


BootFactory = Callable[..., AbstractContextManager[VmGuest]]


@pytest.fixture
def boot(kernel: KernelBuild, transport: str, runs_dir: Path,
         booted_vms: list[VmGuest]) -> BootFactory:
    """Boot a fresh VM of the kernel under test (for tests that break it)."""
    from contextlib import contextmanager

    @contextmanager
    def fresh(**options: object) -> Iterator[VmGuest]:
        with boot_guest(kernel, transport=transport, **options) as guest:  # type: ignore[arg-type]
            booted_vms.append(guest)
            yield guest

    return fresh


@pytest.fixture(scope="session")
def guest(kernel: KernelBuild, transport: str, runs_dir: Path,
          booted_vms: list[VmGuest]) -> Iterator[VmGuest]:
    """One VM per kernel and transport, shared by the tests that leave it intact."""
    with boot_guest(kernel, transport=transport) as booted:
        booted_vms.append(booted)
        yield booted
