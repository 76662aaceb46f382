"""Every kind of kernel report, provoked by LKDTM, is caught at once and judged as the kernel's.

For each crash type (tests/lkdtm.py: CRASHES) and each arch x kernel of the
matrix, a fresh guest of the cell's own kernel loads LKDTM (built out of tree
from that kernel's source) and provokes the crash, as a scenario run the way
``harness run`` runs one (``runner.check``). Each test asserts that

- the health watch named the report with the right kind and a headline of the
  expected form (``Crash.headline``), fatal exactly when the kernel panicked;
- it ended the step that provoked the crash, at most LINE_TO_FAILURE_SECONDS
  after the headline's line reached the console log (host clock, the log read
  every 10 ms), not at the step's timeout;
- the scenario is NOT PROVEN with the headline as its first reason (``harness
  run`` exits 1 for it), and what was recorded before the crash is kept.

By default the CI subset runs (DEFAULT: PANIC, BUG, WARNING, EXCEPTION,
SOFTLOCKUP, HUNG_TASK); ``--lkdtm-all`` runs every type of CRASHES, skipping
those this era's LKDTM lacks or that need a detector the cell's kernel is built
without (DEBUG_LIST, UBSAN, VMAP_STACK, a hard-lockup detector).
"""

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.artifacts import KernelBuild, ModuleArtifact
from harness.check.in_tree import in_tree_result
from harness.check.runner import check
from harness.check.scenario import Evidence, Needs, next_evidence_path
from harness.check.steps import must
from harness.check.target import TargetOptions
from harness.errors import HarnessError
from harness.guest import Guest, KernelProblem
from harness.guest.health import ConsoleLogSource
from harness.pytest_plugin import session_run_dir
from harness.report.in_tree import InTreeResult
from harness.vm.boot import VmGuest
from tests.lkdtm import CRASHES, DEFAULT, DIRECT, Crash, build_lkdtm, missing_detector, offered

pytestmark = pytest.mark.vm

# The bound: a report ends its step within 2 s of reaching the console.
LINE_TO_FAILURE_SECONDS = 2.0
# A crash that blocks its task is reported by a detector tuned to seconds
# (Crash.tune); this only keeps a detector that never fires from hanging the run.
TRIGGER_TIMEOUT_SECONDS = 60.0


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``crash`` by the CI subset, or by every type with --lkdtm-all."""
    if "crash" in metafunc.fixturenames:
        crashes = CRASHES if metafunc.config.getoption("--lkdtm-all") else DEFAULT
        metafunc.parametrize("crash", crashes, ids=[crash.name for crash in crashes])


@pytest.fixture(scope="session")
def lkdtm(kernel_build: KernelBuild,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleArtifact, frozenset[str]]:
    """lkdtm.ko for this cell's kernel, and the crash types its source offers."""
    scratch = tmp_path_factory.mktemp("lkdtm")
    try:
        module = build_lkdtm(kernel_build, scratch)
    except HarnessError as error:
        pytest.fail(f"LKDTM does not build out of tree: {error}", pytrace=False)
    return module, offered(scratch / "lkdtm")


class ConsoleClock:
    """When each line reached a VM's console log, by the host's monotonic clock."""

    def __init__(self, path: Path) -> None:
        self._source = ConsoleLogSource(path)
        self._source.read_new()  # only lines from now on
        self.arrivals: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def _follow(self) -> None:
        while not self._stop.wait(0.01):
            text = self._source.read_new()
            now = time.monotonic()
            self.arrivals += [(now, line) for line in text.splitlines()]

    @contextmanager
    def running(self) -> Iterator["ConsoleClock"]:
        """Follow the log for the block's duration."""
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()

    def arrival(self, text: str) -> float:
        """When the first line holding ``text`` arrived."""
        return next(at for at, line in self.arrivals if text in line)


class ProvokedCrash:
    """A scenario that loads LKDTM and provokes one crash: the kernel's report is
    its outcome. Judged alone (nothing reported) it is NOT PROVEN with a reason
    saying so; the test wants the report rule's reason (the headline) instead."""

    name = "lkdtm"
    needs = Needs()

    def __init__(self, crash: Crash, module: ModuleArtifact) -> None:
        self.crash = crash
        self.module = module
        self.clock: ConsoleClock | None = None
        self.failed_at: float | None = None  # when the step raised the report

    def prepare(self, kernel: KernelBuild, force: bool) -> None:
        """Nothing: the module is built by the fixture."""

    def collect(self, guest: Guest, evidence: Evidence) -> None:
        """Load LKDTM, tune the detector, provoke the crash."""
        assert isinstance(guest, VmGuest), "LKDTM runs on a QEMU guest of the harness"
        evidence.doing("loading LKDTM")
        guest.put(self.module.path, "/tmp/lkdtm.ko")
        must(guest, "insmod /tmp/lkdtm.ko")
        evidence.facts["offered"] = must(guest, f"cat {DIRECT}").split()
        for command in self.crash.tune:
            must(guest, command)
        evidence.doing(f"LKDTM's {self.crash.name}")
        with ConsoleClock(guest.vm.console_log).running() as self.clock:
            try:
                guest.run(f"sh -c 'echo {self.crash.name} > {DIRECT}'",
                          timeout=TRIGGER_TIMEOUT_SECONDS)
            except KernelProblem:
                self.failed_at = time.monotonic()
                raise

    def judge(self, evidence: Evidence) -> InTreeResult:
        """Nothing reported: a miss."""
        return in_tree_result(evidence,
                              reasons=(f"the kernel reported nothing for {self.crash.name}",))


def test_lkdtm_crash_is_reported_at_once_as_its_kind(
    crash: Crash, lkdtm: tuple[ModuleArtifact, frozenset[str]], kernel_build: KernelBuild,
    request: pytest.FixtureRequest,
) -> None:
    """The report's kind and headline, the step ended within 2 s of its line, NOT PROVEN."""
    module, types = lkdtm
    if crash.name not in types:
        pytest.skip(f"{kernel_build.release}'s LKDTM has no {crash.name}")
    if (missing := missing_detector(crash, kernel_build)) is not None:
        pytest.skip(missing)
    scenario = ProvokedCrash(crash, module)
    run_dir = session_run_dir(request.config)
    started = time.monotonic()
    saved = next_evidence_path(run_dir, f"{kernel_build.arch}-lkdtm")
    result = check(scenario, kernel_build,
                   TargetOptions(transport=request.config.getoption("--transport"),
                                 cpus=request.config.getoption("--cpus")),
                   run_dir=run_dir / f"{kernel_build.arch}-{request.node.name}",
                   evidence_path=saved)
    elapsed = time.monotonic() - started
    report = result.kernel_report
    assert report is not None and not result.proven, result.reasons
    assert scenario.clock is not None and scenario.failed_at is not None, (
        f"the report did not end the step that provoked it: {report}")
    waited = scenario.failed_at - scenario.clock.arrival(report.headline)
    print(f"LKDTM {crash.name} on {kernel_build.arch} {kernel_build.release}: {report.kind} | "
          f"{report.headline} | line to failure {waited:.2f} s | test {elapsed:.1f} s")
    assert (report.kind, report.fatal) == (crash.kind, crash.fatal), report
    assert re.search(crash.headline, report.headline), report.headline
    assert result.reasons[0] == report.headline
    assert crash.name in (report.step or ""), report.step
    evidence = Evidence.from_dict(json.loads(saved.read_text()))
    assert evidence.kernel_report == report
    assert crash.name in evidence.facts["offered"], "kept from before the crash"
    assert waited <= LINE_TO_FAILURE_SECONDS, (
        f"the step ended {waited:.2f} s after the report's line reached the console")

