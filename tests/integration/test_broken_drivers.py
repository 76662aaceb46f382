"""A broken driver is never PROVEN: each verdict rule fails on a driver broken for it.

Every variant in tests/broken-drivers/ (see tests/broken_drivers.py) is built
for each arch x kernel of the matrix and put through the real A/B; the test
ids name the rules it must make fail. The first test is the positive control:
the unpatched driver, forked and built the same way, is PROVEN on the same
guest (tests/integration/test_migration.py proves the shipped one).

Variants that leave the guest intact share the plugin's guest (any target);
those the kernel reports (a WARNING, an Oops) get a QEMU guest of their own,
on each transport, through ``check_ab`` as ``harness run`` does, and one of
them also goes through ``harness run --driver-source`` for its exit status.
"""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.artifacts import KernelBuild, ModuleArtifact
from harness.check.driver import SampleDriver
from harness.check.evidence import side_failures
from harness.check.runner import Prepared, check_ab, check_ab_on
from harness.check.target import TargetOptions
from harness.errors import HarnessError
from harness.guest import Guest
from harness.module import build_module
from harness.pytest_plugin import cell_fragments, session_run_dir
from harness.report.json_report import read_results
from harness.report.model import RunResult
from tests.broken_drivers import (
    Variant,
    driver_copy,
    failed_rules,
    variant,
    variant_source,
)
from tests.broken_drivers import variants as all_variants

pytestmark = [pytest.mark.vm, pytest.mark.needs_program("patch")]

# The variants of the A/B's rules (the others break only the stress scenario's).
AB_VARIANTS = [broken for broken in all_variants() if broken.breaks]
QUIET = [broken for broken in AB_VARIANTS if broken.kernel_report is None]
REPORTED = [broken for broken in AB_VARIANTS if broken.kernel_report is not None]
# The compaction step's timeout is 300 s (harness.check.steps.compact_memory):
# a report must end the A/B long before it, not at it. Booting and the
# movable=0 round take about 15 s under TCG.
QUICK_SECONDS = 90.0


@pytest.fixture(scope="session")
def fork_module(kernel_build: KernelBuild) -> Callable[[Path], ModuleArtifact]:
    """Factory: a fork of the driver built for this cell's kernel by the harness's own
    module build (cached by the fork's content, like the shipped driver)."""
    def build(source: Path) -> ModuleArtifact:
        try:
            return build_module(kernel_build, source_dir=source)
        except HarnessError as error:
            pytest.fail(f"{source.name} does not build: {error}", pytrace=False)

    return build


def _show(broken: Variant, result: RunResult) -> None:
    """What each rule said (and the notes), for the log (-rP) and the README's table."""
    print(f"{broken.name} on {result.arch} {result.kernel}: " + " | ".join(result.reasons)
          + "".join(f"\n  note: {note}" for note in result.notes if "afterwards" in note))


def test_an_unbroken_fork_is_proven(guest: Guest, kernel_build: KernelBuild, tmp_path: Path,
                                    fork_module: Callable[[Path], ModuleArtifact]) -> None:
    """The positive control: a copy of guest-modules/ built from a directory of its
    own, as the variants are, on the guest they share, is PROVEN. So what fails
    below fails because of the patches, not of the fork or the guest."""
    module = fork_module(driver_copy(tmp_path, "unbroken"))
    result = check_ab_on(SampleDriver.install(guest, module), kernel_build)
    assert result.proven, result.reasons


@pytest.mark.parametrize("broken", QUIET, ids=[broken.test_id for broken in QUIET])
def test_rule_fails_on_a_driver_broken_for_it(
    broken: Variant, guest: Guest, kernel_build: KernelBuild, tmp_path: Path,
    fork_module: Callable[[Path], ModuleArtifact],
) -> None:
    """NOT PROVEN, because of the rules the variant breaks and no others."""
    module = fork_module(variant_source(broken, tmp_path))
    result = check_ab_on(SampleDriver.install(guest, module), kernel_build)
    _show(broken, result)
    failed = failed_rules(result.reasons)
    assert not result.proven, f"PROVEN on the broken driver {broken.name}: {result.reasons}"
    assert result.kernel_report is None, result.reasons
    assert set(broken.breaks) <= failed, f"rules that should have failed held: {result.reasons}"
    assert failed <= {*broken.breaks, *broken.may_also_break}, (
        f"{broken.name} broke more than it should: {result.reasons}")


@pytest.mark.parametrize("broken", REPORTED, ids=[broken.test_id for broken in REPORTED])
def test_kernel_report_during_the_ab_is_not_proven(
    broken: Variant, transport: str, kernel_build: KernelBuild, tmp_path: Path,
    fork_module: Callable[[Path], ModuleArtifact], request: pytest.FixtureRequest,
) -> None:
    """The report's headline is the first reason, the movable=0 round is kept, and
    the A/B ends as soon as the report is on the console, not at a step timeout."""
    prepared = Prepared(kernel=kernel_build, module=fork_module(variant_source(broken, tmp_path)))
    options = TargetOptions(transport=transport, cpus=request.config.getoption("--cpus"))
    run_dir = session_run_dir(request.config) / f"{kernel_build.arch}-{request.node.name}"
    started = time.monotonic()
    result = check_ab(prepared, options, run_dir=run_dir)
    elapsed = time.monotonic() - started
    _show(broken, result)
    print(f"{broken.name}: NOT PROVEN after {elapsed:.1f} s ({transport})")
    report = result.kernel_report
    assert not result.proven and report is not None, result.reasons
    assert report.kind == broken.kernel_report, report
    assert result.reasons[0] == report.headline
    assert "compact_memory" in (report.step or ""), report.step
    _assert_control_round_kept(result)
    assert elapsed < QUICK_SECONDS, f"the A/B took {elapsed:.0f} s: it waited for a timeout"


def _assert_control_round_kept(result: RunResult) -> None:
    """The movable=0 round was measured in full and holds on its own; the report
    cut the movable=1 round short, so it has no figures."""
    assert result.unmovable is not None and not side_failures(result.unmovable), result.unmovable
    assert result.movable is None


def test_harness_run_exits_1_on_a_driver_that_oopses(
    kernel_build: KernelBuild, tmp_path: Path, pytestconfig: pytest.Config,
) -> None:
    """``harness run --driver-source`` with the oops variant: exit 1 (a verdict, not a
    harness error), the kernel's headline printed, and result.json keeping the
    movable=0 round and the report."""
    oops = variant("oops-in-migrate")
    source = variant_source(oops, tmp_path)
    runs = tmp_path / "runs"
    configs = [word for name in cell_fragments(pytestconfig) for word in ("--config", name)]
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--arch", kernel_build.arch,
         "--kernel", kernel_build.spec, *configs, "--cpus", str(pytestconfig.getoption("--cpus")),
         "--driver-source", str(source)],
        # Wide enough that rich does not wrap the headline in the table's caption.
        env={**os.environ, "HARNESS_RUNS_DIR": str(runs), "COLUMNS": "200"},
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    (result,) = read_results(runs / "latest" / "result.json")
    report = result.kernel_report
    assert report is not None and report.kind == oops.kernel_report, result.reasons
    assert result.reasons[0] == report.headline
    assert report.headline in done.stdout, done.stdout
    assert f"sample driver built from {source}" in result.notes
    _assert_control_round_kept(result)
