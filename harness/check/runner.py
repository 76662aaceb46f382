"""One arch x kernel, end to end: build, boot (or connect), load, A/B, verdict.

``harness run`` and the pytest plugin both call ``prepare`` and ``check_ab``
so the CLI and the tests prove the same thing the same way.
"""

from dataclasses import dataclass
from pathlib import Path

from harness.artifacts import KernelBuild, ModuleArtifact
from harness.check.driver import SampleDriver
from harness.check.evidence import judge_ab
from harness.check.sample import ScenarioSettings, run_ab
from harness.check.target import TargetOptions, open_target
from harness.report.model import RunResult, Side


@dataclass(frozen=True)
class Prepared:
    """What a check needs before any machine is touched."""

    kernel: KernelBuild
    module: ModuleArtifact


def prepare(arch: str, kernel_spec: str, fragments: tuple[str, ...] = (),
            force: bool = False) -> Prepared:
    """Build (or find in the caches) the kernel and the sample driver for it."""
    from harness.kernel.build import build_kernel
    from harness.module import build_module

    kernel = build_kernel(kernel_spec, arch, fragments, force=force)
    return Prepared(kernel=kernel, module=build_module(kernel, force=force))


def check_ab_on(driver: SampleDriver, kernel: KernelBuild,
                settings: ScenarioSettings = ScenarioSettings()) -> RunResult:
    """Run the A/B with a driver already installed on a guest running ``kernel``."""
    control, movable, notes = run_ab(driver, settings)
    verdict = judge_ab(control, movable)
    release = driver.guest.run("uname -r").stdout.strip()
    return RunResult(
        arch=kernel.arch, kernel=kernel.spec, release=release,
        proven=verdict.proven, reasons=verdict.failures or (_proof_summary(movable),),
        movable=movable, unmovable=control, notes=tuple(notes))


def check_ab(prepared: Prepared, target: TargetOptions = TargetOptions(),
             settings: ScenarioSettings = ScenarioSettings(),
             run_dir: Path | None = None) -> RunResult:
    """Boot (or connect to) the target and run the A/B there."""
    with open_target(prepared.kernel, target, run_dir=run_dir) as guest:
        return check_ab_on(SampleDriver.install(guest, prepared.module), prepared.kernel,
                           settings)


def _proof_summary(movable: Side) -> str:
    """One sentence saying what a proven result rests on."""
    return (f"{movable.migrated_pages} of {movable.total_pages} driver pages changed PFN, "
            f"migratepage succeeded {movable.driver_counters.get('migrated', 0)} times, "
            f"pgmigrate_success +{movable.pgmigrate_success_delta}, contents intact")
