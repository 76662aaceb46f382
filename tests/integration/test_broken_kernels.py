"""A broken kernel is never PROVEN: each zram and balloon rule fails on a kernel broken for it.

The kernels are commits of tests/broken-kernels/*.patch (tests/broken_kernels.py)
on top of the bisect test's repository's base (tests/integration/kernel_repo.py:
the debian:5.10 tree), built in place like any ``git:`` spec: the base's build
directory is the bisect test's, so each kernel costs an incremental rebuild of
the files its patch touches. Each is put through the real zram and balloon
scenarios, as ``harness run --scenario zram|balloon`` runs them, on a guest of
its own; the test ids name the kernel and the scenario. The first test is the
positive control: the unbroken base is PROVEN in both.

x86_64 only and only when the session's matrix has debian:5.10 on x86_64 (the
default), like the bisect test: the patches are of 5.10's tree, and one arch
shows the judges' rules fail (the rules and the scenarios are the same code on
arm64). Marked ``build`` only, because a skip of a ``vm`` test is a failure in CI.
The scenarios write less data than by default (16 MiB to zram, a balloon of a
fifth of the free memory): every rule still has pages to judge, in a third of
the time.
"""

import time

import pytest

from harness.check.balloon import BalloonScenario, BalloonSettings
from harness.check.runner import cell_fragments, check
from harness.check.scenario import Scenario
from harness.check.target import TargetOptions
from harness.check.zram import ZramScenario, ZramSettings
from harness.kernel.build import build_kernel
from harness.paths import cache_root
from harness.pytest_plugin import Cell, matrix, session_run_dir
from harness.report.model import ScenarioResult
from tests.broken_kernels import (
    KERNEL_QUIET,
    RULES,
    SCENARIOS,
    BrokenKernel,
    broken_kernels,
    commit,
    failed_rules,
)
from tests.integration.kernel_repo import BASE_SPEC, KernelRepo, make_kernel_repo

# One pytest-xdist worker for both modules: they build commits of the same
# repository in one build directory (tests/integration/kernel_repo.py).
pytestmark = [pytest.mark.build, pytest.mark.xdist_group("bisect-repository")]

ARCH = "x86_64"
CASES = [(kernel, scenario) for kernel in broken_kernels() for scenario in SCENARIOS]


def small_scenario(name: str) -> Scenario:
    """The scenario with the smaller settings of this module's docstring."""
    if name == "zram":
        return ZramScenario(ZramSettings(max_data_mib=16))
    return BalloonScenario(BalloonSettings(cover_share=0.2))


@pytest.fixture(scope="module")
def repo(request: pytest.FixtureRequest) -> KernelRepo:
    """The bisect test's repository (made here if that test has not run)."""
    if Cell(ARCH, BASE_SPEC) not in matrix(request.config):
        pytest.skip(f"the broken kernels are {BASE_SPEC} commits on {ARCH}, not in this matrix")
    return make_kernel_repo(cache_root() / "test-repos" / "bisect-5.10")


def run(repo: KernelRepo, commit_hash: str, scenario: str,
        request: pytest.FixtureRequest) -> ScenarioResult:
    """Build ``commit_hash`` in place (harness run's fragments, as bisect builds it) and
    run ``scenario`` on a guest of its own; print what it took and what it said."""
    started = time.monotonic()
    kernel = build_kernel(f"git:{repo.path}@{commit_hash}", ARCH, cell_fragments())
    built = time.monotonic()
    options = TargetOptions(cpus=request.config.getoption("--cpus"))
    run_dir = session_run_dir(request.config) / f"{ARCH}-{request.node.name}"
    result = check(small_scenario(scenario), kernel, options, run_dir=run_dir)
    print(f"{commit_hash[:12]} {scenario}: build {built - started:.0f} s, check "
          f"{time.monotonic() - built:.0f} s: {'PROVEN' if result.proven else 'NOT PROVEN'}: "
          + " | ".join(result.reasons))
    return result


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_unbroken_base_is_proven(scenario: str, repo: KernelRepo,
                                     request: pytest.FixtureRequest) -> None:
    """The positive control: the base commit, built and checked the same way, is
    PROVEN; so what fails below fails because of the patches."""
    result = run(repo, repo.base, scenario, request)
    assert result.proven, result.reasons


@pytest.mark.parametrize(("broken", "scenario"), CASES,
                         ids=[f"{kernel.name}-{scenario}" for kernel, scenario in CASES])
def test_rules_fail_on_a_kernel_broken_for_them(broken: BrokenKernel, scenario: str,
                                                repo: KernelRepo,
                                                request: pytest.FixtureRequest) -> None:
    """NOT PROVEN, because of the rules the kernel breaks in this scenario and no
    others; a kernel the kernel itself reports: that kind, its headline first, and
    no rule of the judge (the report cut the evidence short)."""
    result = run(repo, commit(repo, broken), scenario, request)
    assert not result.proven, f"PROVEN on the broken kernel {broken.name}: {result.reasons}"
    kind = broken.kernel_reports.get(scenario)
    report = result.kernel_report
    if kind is not None:
        assert report is not None and report.kind == kind, result.reasons
        assert result.reasons[0] == report.headline
        assert not failed_rules(scenario, result.reasons) & set(RULES[scenario]), result.reasons
        assert broken.rules(scenario) == {KERNEL_QUIET}
        return
    assert report is None, result.reasons
    failed = failed_rules(scenario, result.reasons)
    assert broken.rules(scenario) <= failed, f"rules that should have failed held: {result.reasons}"
    assert failed <= broken.allowed(scenario), (
        f"{broken.name} broke more than it should: {result.reasons}")
