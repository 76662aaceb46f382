"""The stress scenario on real kernels: the isolation contract on every vCPU at once.

The first test runs ``harness.check.stress.StressScenario`` as ``harness run
--scenario stress`` does (its evidence saved in the session's run directory) and
must be PROVEN with every invariant's number and races really hit. Then each
broken driver of tests/broken-drivers/ with a ``Stress:`` line goes through a
shorter stress on the same cell and must fail exactly the rules it names (from
6.17 without its ``Stress before 6.17:`` ones: there its bug is unreachable).
The one the kernel reports and the one that leaks get a QEMU guest of their own.
"""

from pathlib import Path

import pytest

from harness.artifacts import KernelBuild, ModuleArtifact
from harness.check.runner import check
from harness.check.scenario import run_on
from harness.check.stress import StressScenario, StressSettings
from harness.check.target import TargetOptions
from harness.errors import HarnessError
from harness.guest import Guest
from harness.module import build_module
from harness.pytest_plugin import session_run_dir
from harness.report.in_tree import InTreeResult
from tests.broken_drivers import STRESS_RULES, Variant, failed_rules, variant_source
from tests.broken_drivers import variants as all_variants

STRESSED = [broken for broken in all_variants()
            if broken.stress or broken.stress_driver_isolates]
# Short, to keep the variants' CI cost small: long enough for their own rules,
# not always for a fault or an overlap to happen (the load and races rules), which
# a variant may then fail too unless it names them.
VARIANT_SETTINGS = StressSettings(seconds=6.0)
SHORT_RUN_RULES = {"load", "races"}


def _show(result: InTreeResult) -> None:
    print(f"{result.label}: {' | '.join(result.reasons)}")
    print("  " + ", ".join(f"{name} {value}" for name, value in result.figures.items()))
    print(f"  seconds {dict(result.seconds)}")


def test_stress_keeps_every_invariant_and_hits_the_races(run_scenario) -> None:  # type: ignore[no-untyped-def]
    result = run_scenario(StressScenario())
    assert isinstance(result, InTreeResult)
    _show(result)
    assert result.proven, "; ".join(result.reasons)  # a kernel report: its headline first
    figures = result.figures
    assert figures["mismatches"] == 0 and figures["page_checks"] > 0
    assert figures["overlaps"] > 0 and figures["vcpus"] >= 2


def _module(kernel_build: KernelBuild, broken: Variant, tmp_path: Path) -> ModuleArtifact:
    try:
        return build_module(kernel_build, source_dir=variant_source(broken, tmp_path))
    except HarnessError as error:
        pytest.fail(f"{broken.name} does not build: {error}", pytrace=False)


# A variant the kernel reports, or one that leaks (the guest has less memory for
# the next test: insmod failed with ENOMEM after drop-keeps-ref on 7.2), gets a
# QEMU guest of its own; the others share the cell's guest.
OWN_GUEST = [broken for broken in STRESSED
             if broken.kernel_report is not None or "no-leak" in broken.stress]
SHARED = [broken for broken in STRESSED if broken not in OWN_GUEST]


def _assert_fails_for_its_rules(broken: Variant, result: InTreeResult, movable_api: str) -> None:
    """NOT PROVEN because of the rules the variant names and no others; where its bug
    is unreachable (from 6.17 for the Stress-before-6.17 ones) no rule it could break
    fails."""
    print(f"{broken.name}:")
    _show(result)
    expected = broken.stress_expected(movable_api)
    assert result.kernel_report is None, result.reasons
    failed = set() if result.proven else failed_rules(result.reasons, STRESS_RULES)
    assert expected <= failed, f"rules that should have failed held: {result.reasons}"
    assert failed - SHORT_RUN_RULES - set(broken.stress_may_also_break) <= expected, (
        f"{broken.name} broke more than it should: {result.reasons}")


@pytest.mark.parametrize("broken", SHARED, ids=[broken.name for broken in SHARED])
def test_stress_fails_a_driver_broken_for_its_rules(
    broken: Variant, guest: Guest, kernel_build: KernelBuild, tmp_path: Path,
) -> None:
    module = _module(kernel_build, broken, tmp_path)
    result = run_on(StressScenario(VARIANT_SETTINGS, module), guest, kernel_build)
    assert isinstance(result, InTreeResult)
    _assert_fails_for_its_rules(broken, result, module.movable_api)


@pytest.mark.parametrize("broken", OWN_GUEST, ids=[broken.name for broken in OWN_GUEST])
def test_stress_fails_a_driver_broken_for_its_rules_on_a_guest_of_its_own(
    broken: Variant, kernel_build: KernelBuild, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """As above; for the variant the kernel reports, the report is the verdict: its
    kind, its headline first."""
    module = _module(kernel_build, broken, tmp_path)
    options = TargetOptions(cpus=request.config.getoption("--cpus"))
    run_dir = session_run_dir(request.config) / f"{kernel_build.arch}-{request.node.name}"
    result = check(StressScenario(VARIANT_SETTINGS, module), kernel_build, options,
                   run_dir=run_dir)
    assert isinstance(result, InTreeResult)
    if broken.kernel_report is None:
        _assert_fails_for_its_rules(broken, result, module.movable_api)
        return
    print(f"{broken.name}: {' | '.join(result.reasons)}")
    report = result.kernel_report
    assert not result.proven and report is not None, result.reasons
    assert report.kind == broken.kernel_report, report
    assert result.reasons[0] == report.headline
