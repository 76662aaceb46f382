"""One scenario on one arch x kernel, end to end: check, build, boot (or connect), collect,
save the evidence, judge.

``harness run``, ``harness report`` and the pytest plugin all go through here,
so the CLI and the tests prove the same thing the same way. Every scenario
takes the same path (harness.check.scenario): its kernel needs are checked on
the .config before anything boots, it prepares on the host, the guest gets
its virtio devices, its evidence is saved in the run directory as soon as it
is collected, and the verdict is the scenario's ``judge`` of that evidence.

A kernel report once the guest is up is the scenario's verdict
(harness.check.reported): during ``collect`` the evidence keeps what was
measured before it; one printed after the last step (found as the target
closes) marks the evidence all the same. A report while booting stays a
harness error: the kernel never gave the harness its shell.
"""

from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from harness.artifacts import KernelBuild, ModuleArtifact
from harness.check.balloon import BalloonScenario
from harness.check.driver import SampleDriver
from harness.check.sample import SampleAB, ScenarioSettings, collect_ab
from harness.check.scenario import (
    TOTAL,
    Evidence,
    Scenario,
    observe,
    require,
    run_on,
    save_evidence,
    verdict,
)
from harness.check.stress import StressScenario
from harness.check.target import TargetOptions, open_target
from harness.check.zram import ZramScenario
from harness.errors import HarnessError
from harness.guest import Guest, KernelProblem
from harness.report.model import RunResult, ScenarioResult

# Every scenario, by name, in the order ``--scenario all`` runs them.
SCENARIOS: dict[str, type[Scenario]] = {
    cls.name: cls for cls in (SampleAB, ZramScenario, BalloonScenario, StressScenario)}


def scenario_named(name: str) -> Scenario:
    """A scenario with its default settings, or a HarnessError listing them."""
    try:
        return SCENARIOS[name]()
    except KeyError:
        raise HarnessError(f"unknown scenario {name!r}: choose from "
                           f"{', '.join(SCENARIOS)}") from None


def cell_fragments(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The config fragments of every cell's kernel: every scenario's, then
    ``extra`` (the user's), each once, in order.

    One kernel built with all of them serves every scenario (from 6.17 on the
    sample driver needs the balloon core too), so `harness run` and a pytest
    session build the same kernel per cell, once.
    """
    fragments = (fragment for cls in SCENARIOS.values() for fragment in cls.needs.fragments)
    return tuple(dict.fromkeys((*fragments, *extra)))


def check(scenario: Scenario, kernel: KernelBuild, target: TargetOptions = TargetOptions(),
          run_dir: Path | None = None, evidence_path: Path | None = None,
          force: bool = False) -> ScenarioResult:
    """Run ``scenario`` on a guest of ``kernel`` and judge it; its evidence is saved
    to ``evidence_path`` as soon as it is collected, and again once the target is
    down (with the teardown's time, and the report a teardown may find).

    Every phase is timed into the evidence (harness.phases): preparing on the
    host, booting (or connecting), the scenario's own steps, the teardown.
    """
    require(scenario, kernel)
    evidence = Evidence.start(scenario.name, kernel)
    timer = evidence.timer
    booted = False
    with timer.phase(TOTAL):
        timer.timed("prepare", scenario.prepare, kernel, force)
        options = replace(target, virtio_devices=(*target.virtio_devices,
                                                  *scenario.needs.virtio_devices))
        try:
            with ExitStack() as target_open:
                with timer.group("boot") as boot:
                    guest = target_open.enter_context(
                        open_target(kernel, options, run_dir=run_dir, phases=boot))
                booted = True
                observe(scenario, guest, evidence, evidence_path)
                timer.timed("teardown", target_open.close)
        except KernelProblem as problem:
            if not booted:
                raise
            evidence.interrupted(problem)
    if evidence_path is not None:
        save_evidence(evidence, evidence_path)
    return verdict(scenario, evidence)


# The sample A/B's entry points as tests call them (a driver already installed,
# or a kernel and module built by ``prepare``).


@dataclass(frozen=True)
class Prepared:
    """What the sample A/B needs before any machine is touched."""

    kernel: KernelBuild
    module: ModuleArtifact


def prepare(arch: str, kernel_spec: str, fragments: tuple[str, ...] = (),
            force: bool = False, driver_source: Path | None = None) -> Prepared:
    """Build (or find in the caches) the kernel and the sample driver for it
    (from ``driver_source``, a fork of guest-modules/, if given)."""
    from harness.kernel.build import build_kernel
    from harness.module import build_module

    kernel = build_kernel(kernel_spec, arch, fragments, force=force)
    return Prepared(kernel=kernel, module=build_module(kernel, force=force,
                                                       source_dir=driver_source))


def check_ab_on(driver: SampleDriver, kernel: KernelBuild,
                settings: ScenarioSettings = ScenarioSettings()) -> RunResult:
    """Run the A/B with a driver already installed on a guest running ``kernel``.

    A kernel report during it ends the A/B: NOT PROVEN, with the rounds
    measured before the report.
    """
    result = run_on(_Installed(driver, settings), driver.guest, kernel)
    assert isinstance(result, RunResult)
    return result


def check_ab(prepared: Prepared, target: TargetOptions = TargetOptions(),
             settings: ScenarioSettings = ScenarioSettings(),
             run_dir: Path | None = None) -> RunResult:
    """Boot (or connect to) the target and run the A/B there."""
    result = check(SampleAB(settings, prepared.module), prepared.kernel, target,
                   run_dir=run_dir)
    assert isinstance(result, RunResult)
    return result


class _Installed(SampleAB):
    """The A/B on a guest whose driver the caller installed."""

    def __init__(self, driver: SampleDriver, settings: ScenarioSettings) -> None:
        super().__init__(settings)
        self.driver = driver

    def collect(self, guest: Guest, evidence: Evidence) -> None:
        collect_ab(self.driver, evidence, self.settings)
