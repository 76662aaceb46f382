"""pytest plugin (entry point ``pytest11``): options and fixtures over the harness.

Options: ``--arch`` and ``--kernel`` (repeatable) choose the matrix, and
``--target`` chooses where tests run (``qemu``, ``ssh://user@host[:port]``
for a board or any machine started separately, or ``labgrid://PLACE`` for a
board of a labgrid lab). Any test that uses
``kernel_build`` (directly or through ``guest``, ``movable_module``,
``movable_driver``) is parametrized over arch x kernel with ids such as
``x86_64-debian:5.10``.

Every cell's kernel is built with the in-tree scenarios' fragments (zram,
balloon) plus any ``--kernel-config FRAGMENT``: one kernel per cell then serves
every test, the sample driver's and the in-tree scenarios' alike, so a cold CI
run builds one kernel per cell instead of two.

Fixtures: ``kernel_build`` and ``movable_module`` (per session and cell),
``guest`` (one VM per test module and cell, health-watched), ``movable_driver``
(the sample driver copied onto that guest, not loaded), ``harness_results``
(add RunResults or InTreeResults; the plugin writes the JSON and the picture
at the end), ``run_scenario(scenario)`` (any scenario of harness.check, run
as ``harness run`` runs it, its evidence saved in the session's run directory).
For tests that need more than the default kernel and machine (a device of
their own, a debug kernel):
``kernel_build_with(*fragments)`` builds this cell's kernel with extra config
fragments, and ``guest_with(fragments=..., virtio_devices=...)`` boots it with
extra virtio devices, one VM per combination and test module.

With HARNESS_REQUIRE_VM=1 (as .ci/run sets it) a VM test that would be
skipped fails instead, so CI can never pass without booting.
"""

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from harness import pytest_workers
from harness.artifacts import KernelBuild, ModuleArtifact
from harness.defaults import ARCHES, CPUS, KERNELS, TARGET, TRANSPORT, TRANSPORTS
from harness.errors import HarnessError
from harness.guest import Guest

if TYPE_CHECKING:
    from harness.check.scenario import Scenario
    from harness.check.target import TargetOptions
    from harness.report.model import ScenarioResult

MATRIX_FIXTURE = "harness_cell"
RESULTS_KEY = pytest.StashKey[list]()
RUN_DIR_KEY = pytest.StashKey[Path]()
CONTROLLER = "harness-xdist-controller"  # the plugin name of pytest_workers.Controller


@dataclass(frozen=True)
class Cell:
    """One point of the test matrix."""

    arch: str
    kernel: str

    @property
    def test_id(self) -> str:
        return f"{self.arch}-{self.kernel}"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the matrix and target options."""
    group = parser.getgroup("harness", "movable page migration harness")
    group.addoption("--arch", action="append", default=[], metavar="ARCH",
                    help=f"guest architecture (repeatable; default: {' '.join(ARCHES)})")
    group.addoption("--kernel", action="append", default=[], metavar="SPEC",
                    help="kernel spec: a tree, git:REPO@REF, a tarball path or URL, debian:X.Y, "
                         "debian:latest, debian:SUITE "
                         f"(repeatable; default: {' '.join(KERNELS)})")
    group.addoption("--kernel-config", action="append", default=[], metavar="FRAGMENT",
                    help="extra config fragment for every cell's kernel (name in "
                         "kernel-configs/ or path; repeatable)")
    group.addoption("--target", default=TARGET, metavar="TARGET",
                    help=f"{TARGET} (default), ssh://user@host[:port] to test a running machine, "
                         "or labgrid://PLACE for a board of a labgrid lab (acquired for the "
                         "test module; coordinator from LG_COORDINATOR)")
    group.addoption("--transport", default=TRANSPORT, choices=TRANSPORTS,
                    help=f"how the guest fixture talks to a QEMU guest (default: {TRANSPORT})")
    group.addoption("--cpus", type=int, default=CPUS, metavar="N",
                    help=f"vCPUs of every QEMU guest (default: {CPUS})")
    group.addoption("--ssh-key", default=None, metavar="FILE",
                    help="private key for an ssh:// or labgrid:// target (default: agent and "
                         "~/.ssh)")


def vm_required() -> bool:
    """True when skipping a VM test must count as a failure (CI)."""
    return os.environ.get("HARNESS_REQUIRE_VM", "") not in ("", "0")


def matrix(config: pytest.Config) -> list[Cell]:
    """Every arch x kernel the options ask for."""
    from harness.arch import get_arch

    try:
        arches = [get_arch(name).name for name in config.getoption("--arch") or ARCHES]
    except HarnessError as error:
        raise pytest.UsageError(str(error)) from None
    kernels = config.getoption("--kernel") or list(KERNELS)
    return [Cell(arch, kernel) for kernel in kernels for arch in arches]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize every test that needs a kernel over the arch x kernel matrix."""
    if MATRIX_FIXTURE in metafunc.fixturenames:
        cells = matrix(metafunc.config)
        metafunc.parametrize(MATRIX_FIXTURE, cells, ids=[c.test_id for c in cells],
                             scope="session")


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that boots or reaches a machine as ``vm``; under pytest-xdist,
    put each cell's tests in one worker (harness.pytest_workers)."""
    grouping = config.pluginmanager.hasplugin("xdist")
    for item in items:
        if {"guest", "guest_with"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.vm)
        if grouping:
            pytest_workers.cell_group(item, MATRIX_FIXTURE)


def _stage(call, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Run a stage; a HarnessError fails the test with its one line, no traceback."""
    try:
        return call(*args, **kwargs)
    except HarnessError as error:
        pytest.fail(str(error), pytrace=False)


def cell_fragments(config: pytest.Config) -> tuple[str, ...]:
    """The fragments every cell's kernel gets: the in-tree scenarios', then the user's."""
    from harness.check import runner

    return runner.cell_fragments(config.getoption("--kernel-config"))


@pytest.fixture(scope="session")
def kernel_build(kernel_build_with: Callable[..., KernelBuild]) -> KernelBuild:
    """The kernel of this matrix cell, built or taken from the cache."""
    return kernel_build_with()


@pytest.fixture(scope="session")
def movable_module(kernel_build: KernelBuild) -> ModuleArtifact:
    """The sample driver built against this cell's kernel."""
    from harness.module import build_module

    return _stage(build_module, kernel_build)


@pytest.fixture(scope="session")
def kernel_build_with(harness_cell: Cell,
                      pytestconfig: pytest.Config) -> Callable[..., KernelBuild]:
    """Factory: this cell's kernel built with extra config fragments (names in
    kernel-configs/ or paths) on top of the cell's own, once per set of fragments;
    with none (or only the cell's), it is ``kernel_build``'s kernel."""
    from harness.kernel.build import build_kernel

    builds: dict[tuple[str, ...], KernelBuild] = {}

    def build(*extra: str) -> KernelBuild:
        fragments = tuple(dict.fromkeys((*cell_fragments(pytestconfig), *extra)))
        if fragments not in builds:
            builds[fragments] = _stage(build_kernel, harness_cell.kernel, harness_cell.arch,
                                       fragments)
        return builds[fragments]

    return build


def _target_options(config: pytest.Config,
                    virtio_devices: Sequence[str] = ()) -> "TargetOptions":
    """The --target/--transport/--ssh-key options, with extra virtio devices."""
    from harness.check.target import TargetOptions

    key = config.getoption("--ssh-key")
    return TargetOptions(target=config.getoption("--target"),
                         transport=config.getoption("--transport"),
                         ssh_key=Path(key) if key else None,
                         cpus=config.getoption("--cpus"),
                         virtio_devices=tuple(virtio_devices))


@pytest.fixture(scope="module")
def guest_with(request: pytest.FixtureRequest,
               kernel_build_with: Callable[..., KernelBuild]) -> Iterator[Callable[..., Guest]]:
    """Factory: a health-watched Guest of this cell's kernel built with ``fragments``,
    with extra ``virtio_devices`` on a QEMU target; one VM per combination, shared
    by the test module and torn down after its last test."""
    from harness.check.target import open_target

    with ExitStack() as stack:
        guests: dict[tuple[tuple[str, ...], tuple[str, ...]], Guest] = {}

        def boot(fragments: Sequence[str] = (), virtio_devices: Sequence[str] = ()) -> Guest:
            key = (tuple(fragments), tuple(virtio_devices))
            if key not in guests:
                kernel = kernel_build_with(*key[0])
                name = "-".join((kernel.arch, kernel.release, request.node.name,
                                 *key[0], *key[1]))
                run_dir = session_run_dir(request.config) / name
                guests[key] = _stage(stack.enter_context, open_target(
                    kernel, _target_options(request.config, key[1]), run_dir=run_dir))
            return guests[key]

        try:
            yield boot
            stack.close()  # inside the try: a kernel problem at teardown fails cleanly
        except HarnessError as error:
            pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="module")
def guest(guest_with: Callable[..., Guest]) -> Guest:
    """A health-watched Guest running this cell's kernel, shared by a test module.

    A kernel problem (panic, Oops, BUG, WARNING, ...) fails the step where it
    appeared; the VM is torn down after the module's last test.
    """
    return guest_with()


@pytest.fixture(scope="module")
def movable_driver(guest: Guest, movable_module: ModuleArtifact):  # type: ignore[no-untyped-def]
    """The sample driver copied onto the guest (tests load it with their parameters)."""
    from harness.check.driver import SampleDriver

    return _stage(SampleDriver.install, guest, movable_module)


@pytest.fixture(scope="session")
def harness_results(pytestconfig: pytest.Config) -> list:
    """Append RunResults (and InTreeResults) here; the session's JSON and picture
    are made from them."""
    return pytestconfig.stash[RESULTS_KEY]


@pytest.fixture
def run_scenario(request: pytest.FixtureRequest, kernel_build: KernelBuild,
                 guest_with: Callable[..., Guest],
                 harness_results: list) -> Callable[["Scenario"], "ScenarioResult"]:
    """Factory: run a scenario (harness.check.scenario) on this cell's guest, with the
    virtio devices it needs, the way ``harness run`` does: the kernel's .config checked
    first, its evidence saved in the session's run directory (``evidence/``, so
    ``harness report`` can judge it again), its result added to ``harness_results``."""
    from harness.check.scenario import next_evidence_path, require, run_on

    def run(scenario: "Scenario") -> "ScenarioResult":
        _stage(require, scenario, kernel_build)
        _stage(scenario.prepare, kernel_build, False)
        guest = guest_with(virtio_devices=scenario.needs.virtio_devices)
        path = next_evidence_path(session_run_dir(request.config),
                                  f"{kernel_build.arch}-{kernel_build.release}-{scenario.name}")
        result = _stage(run_on, scenario, guest, kernel_build, path)
        harness_results.append(result)
        return result

    return run


MARKERS = (
    "vm: boots a real kernel in QEMU (or talks to a board); needs the build stage",
    "build: builds real kernels (minutes each when cold, cached afterwards)",
)


def pytest_configure(config: pytest.Config) -> None:
    """Register the plugin's markers and start the session with no results.

    The markers are registered here, not in an ini file, so a test suite outside
    this repository can use them (and the ``vm`` marker the plugin adds itself)
    under ``--strict-markers``.
    """
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    config.stash[RESULTS_KEY] = []
    if pytest_workers.distributing(config):
        config.pluginmanager.register(pytest_workers.Controller(config.stash[RESULTS_KEY]),
                                      CONTROLLER)


def session_run_dir(config: pytest.Config) -> Path:
    """The session's run directory for VM logs and reports, made on first use (in a
    pytest-xdist worker: the controller's)."""
    if RUN_DIR_KEY not in config.stash:
        from harness.paths import new_run_dir

        config.stash[RUN_DIR_KEY] = (pytest_workers.worker_run_dir(config)
                                     or new_run_dir("pytest"))
    return config.stash[RUN_DIR_KEY]


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    """Write the JSON result and the picture, and say where they are."""
    if pytest_workers.is_worker(config):
        return
    results = config.stash.get(RESULTS_KEY, [])
    controller = config.pluginmanager.get_plugin(CONTROLLER)
    run_dir = controller.used_run_dir() if controller else config.stash.get(RUN_DIR_KEY, None)
    if run_dir is None:
        return
    terminalreporter.write_line(f"harness run directory: {run_dir}")
    if not results:
        return
    from harness.report.chart import write_chart
    from harness.report.json_report import write_json

    terminalreporter.write_line(f"harness result: {write_json(results, run_dir / 'result.json')}")
    terminalreporter.write_line(
        f"harness picture: {write_chart(results, run_dir / 'buddyinfo.png')}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Turn the skip of a ``vm`` test into a failure when VMs are required; in a
    pytest-xdist worker, send the results the test added along with its report."""
    outcome = yield
    report = outcome.get_result()
    if pytest_workers.is_worker(item.config):
        pytest_workers.attach_new_results(item.config, item.config.stash[RESULTS_KEY], report)
    if report.skipped and vm_required() and item.get_closest_marker("vm") is not None:
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"VM test skipped but HARNESS_REQUIRE_VM is set: {reason}"
