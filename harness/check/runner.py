"""One arch x kernel, end to end: build, boot (or connect), load, A/B, verdict.

``harness run`` and the pytest plugin both call ``prepare`` and ``check_ab``
so the CLI and the tests prove the same thing the same way. The in-tree
scenarios (zram, balloon) go through ``check_in_tree``: the kernel's .config
is checked before anything boots, and the guest gets the scenario's devices.

A kernel report once the guest is up is the scenario's verdict
(harness.check.reported): each scenario turns one during its own steps into a
NOT PROVEN result with what it measured before; here, one outside them (while
the driver is copied in, or printed after the last step and found as the
target closes) marks the result all the same. A report while booting stays a
harness error: the kernel never gave the harness its shell.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from harness.artifacts import KernelBuild, ModuleArtifact
from harness.check import balloon, zram
from harness.check.driver import SampleDriver
from harness.check.evidence import judge_ab
from harness.check.reported import R, reported
from harness.check.sample import ABRounds, ScenarioSettings, run_ab
from harness.check.target import TargetOptions, open_target
from harness.errors import HarnessError
from harness.guest import Guest, KernelProblem
from harness.report.in_tree import InTreeResult
from harness.report.model import RunResult, Side

SAMPLE = "sample"


@dataclass(frozen=True)
class InTreeScenario:
    """What ``check_in_tree`` needs to know about one in-tree scenario."""

    name: str
    fragments: tuple[str, ...]  # kernel-configs/ fragments that turn its options on
    virtio_devices: tuple[str, ...]  # extra virtio devices a QEMU guest needs
    require: Callable[[KernelBuild], None]  # raises HarnessError on a missing option
    run: Callable[[Guest, KernelBuild], InTreeResult]


IN_TREE = {
    zram.SCENARIO: InTreeScenario(
        zram.SCENARIO, zram.FRAGMENTS, zram.VIRTIO_DEVICES, zram.require_zram_config,
        lambda guest, kernel: zram.run_zram(guest, kernel=kernel.spec, arch=kernel.arch)),
    balloon.SCENARIO: InTreeScenario(
        balloon.SCENARIO, balloon.FRAGMENTS, balloon.VIRTIO_DEVICES,
        balloon.require_balloon_config,
        lambda guest, kernel: balloon.run_balloon(guest, kernel=kernel.spec,
                                                  arch=kernel.arch)),
}
SCENARIOS = (SAMPLE, *IN_TREE)


def in_tree_scenario(name: str) -> InTreeScenario:
    """The in-tree scenario called ``name``, or a HarnessError listing them."""
    try:
        return IN_TREE[name]
    except KeyError:
        raise HarnessError(f"unknown in-tree scenario {name!r}: "
                           f"choose from {', '.join(IN_TREE)}") from None


def cell_fragments(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The config fragments of every cell's kernel: every in-tree scenario's, then
    ``extra`` (the user's), each once, in order.

    One kernel built with all of them serves every scenario (from 6.17 on the
    sample driver needs the balloon core too), so `harness run` and a pytest
    session build the same kernel per cell, once.
    """
    fragments: dict[str, None] = {}
    for scenario in IN_TREE.values():
        fragments.update(dict.fromkeys(scenario.fragments))
    return tuple(dict.fromkeys((*fragments, *extra)))


@dataclass(frozen=True)
class Prepared:
    """What a check needs before any machine is touched."""

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
    release = driver.guest.run("uname -r").stdout.strip()
    rounds = ABRounds()
    if kernel.origin:
        rounds.notes.append(f"kernel {kernel.spec} is {kernel.origin}")
    try:
        run_ab(driver, rounds, settings)
    except KernelProblem as problem:
        partial = RunResult(arch=kernel.arch, kernel=kernel.spec, release=release,
                            proven=False, reasons=(), movable=rounds.movable,
                            unmovable=rounds.control, notes=tuple(rounds.notes))
        return reported(partial, problem, rounds.stopped())
    control, movable = rounds.control, rounds.movable
    assert control is not None and movable is not None  # run_ab returned: both rounds ran
    verdict = judge_ab(control, movable)
    return RunResult(
        arch=kernel.arch, kernel=kernel.spec, release=release,
        proven=verdict.proven, reasons=verdict.failures or (_proof_summary(movable),),
        movable=movable, unmovable=control, notes=tuple(rounds.notes))


def check_ab(prepared: Prepared, target: TargetOptions = TargetOptions(),
             settings: ScenarioSettings = ScenarioSettings(),
             run_dir: Path | None = None) -> RunResult:
    """Boot (or connect to) the target and run the A/B there."""
    kernel = prepared.kernel
    nothing = RunResult(arch=kernel.arch, kernel=kernel.spec, release="", proven=False,
                        reasons=(), movable=None)
    return _on_target(kernel, target, run_dir, nothing, lambda guest: check_ab_on(
        SampleDriver.install(guest, prepared.module), kernel, settings))


def _on_target(kernel: KernelBuild, options: TargetOptions, run_dir: Path | None,
               nothing: R, scenario: Callable[[Guest], R]) -> R:
    """Boot (or connect), run ``scenario`` on the guest; mark its result (or
    ``nothing``, if it had none yet) with a kernel report found outside its steps."""
    result: R | None = None
    booted = False
    try:
        with open_target(kernel, options, run_dir=run_dir) as guest:
            booted = True
            result = scenario(guest)
    except KernelProblem as problem:
        if not booted:
            raise
        if result is None:
            return reported(nothing, problem, "before the scenario's first measurement")
        return reported(result, problem, "after the scenario's last step; its measurements "
                                         "are kept")
    assert result is not None  # the block ran to its end
    return result


def _proof_summary(movable: Side) -> str:
    """One sentence saying what a proven result rests on."""
    return (f"{movable.migrated_pages} of {movable.total_pages} driver pages changed PFN, "
            f"migratepage succeeded {movable.driver_counters.get('migrated', 0)} times, "
            f"pgmigrate_success +{movable.pgmigrate_success_delta}, contents intact")


def check_in_tree(kernel: KernelBuild, name: str, target: TargetOptions = TargetOptions(),
                  run_dir: Path | None = None) -> InTreeResult:
    """Check ``kernel``'s .config for the scenario, then boot (or connect) and run it."""
    scenario = in_tree_scenario(name)
    scenario.require(kernel)
    options = replace(target, virtio_devices=(*target.virtio_devices,
                                              *scenario.virtio_devices))
    nothing = InTreeResult(scenario=name, arch=kernel.arch, kernel=kernel.spec, release="",
                           proven=False, reasons=())
    return _on_target(kernel, options, run_dir, nothing,
                      lambda guest: scenario.run(guest, kernel))
