"""The broken kernels of tests/broken-kernels/ without building them: each patch
applies to the debian:5.10 source exactly, the rule names map the zram and
balloon verdicts' own reasons one to one, and together the kernels break every
rule but the two no guest kernel can reach (tests/broken_kernels.UNREACHABLE).

tests/integration/test_broken_kernels.py then builds and boots each one and
shows that it makes its rules fail.
"""

import re
import subprocess
from pathlib import Path

import pytest

from harness.check.balloon import BalloonEvidence, judge_balloon
from harness.check.zram import ZramEvidence, judge_zram
from harness.kernel.source import obtain_source
from harness.kernel.spec import parse_spec
from harness.report.in_tree import TrackedPages
from tests.broken_kernels import (
    RULES,
    UNREACHABLE,
    BrokenKernel,
    all_rules,
    broken_kernels,
    failed_rules,
)
from tests.integration.kernel_repo import BASE_SPEC

KERNELS = broken_kernels()


def test_together_the_kernels_break_every_rule_but_the_unreachable() -> None:
    broken = {rule for kernel in KERNELS for rule in kernel.breaks}
    assert not broken & set(UNREACHABLE)
    assert broken | set(UNREACHABLE) == all_rules()


def test_each_kernel_breaks_rules_of_both_scenarios() -> None:
    """Each kernel's rules fail in their scenario's own run, so one kernel serves both."""
    for kernel in KERNELS:
        for scenario in ("zram", "balloon"):
            assert kernel.rules(scenario), f"{kernel.name} breaks nothing in {scenario}"


@pytest.mark.needs_program("patch")
@pytest.mark.parametrize("kernel", KERNELS, ids=[kernel.name for kernel in KERNELS])
def test_patch_applies_to_the_base_source_without_fuzz(kernel: BrokenKernel,
                                                       tmp_path: Path) -> None:
    """The source the integration test's repository starts from (cached once for
    every 5.10 cell; the first call fetches it)."""
    tree = obtain_source(parse_spec(BASE_SPEC)).path
    done = subprocess.run(["patch", "--dry-run", "--batch", "--fuzz=0", "-p1", "-d", str(tree),
                           "-i", str(kernel.patch)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fuzz" not in done.stdout, done.stdout


def _reasons_matching_once(scenario: str, reasons: list[str]) -> None:
    for reason in reasons:
        matching = [rule for rule, text in RULES[scenario].items() if re.fullmatch(text, reason)]
        assert len(matching) == 1, (reason, matching)
    assert failed_rules(scenario, tuple(reasons)) == set(RULES[scenario])


def test_every_zram_reason_names_exactly_one_rule() -> None:
    broken = ZramEvidence(tracked=TrackedPages(kind="zspages", before=10, after=12, moved=0,
                                               arrived=2),
                          zspages_before=11, zspages_after=13, mem_used_before=1,
                          mem_used_after=2, pgmigrate_success_delta=0, chunks=5,
                          chunks_checked=4, mismatches=1)
    moved = ZramEvidence(tracked=TrackedPages(kind="zspages", before=10, after=10, moved=3,
                                              arrived=3),
                         zspages_before=10, zspages_after=10, mem_used_before=1,
                         mem_used_after=1, pgmigrate_success_delta=2, chunks=5,
                         chunks_checked=5, mismatches=0)
    _reasons_matching_once("zram", [*judge_zram(broken).failures, *judge_zram(moved).failures])


def test_every_balloon_reason_names_exactly_one_rule() -> None:
    broken = BalloonEvidence(requested_pages=100,
                             tracked=TrackedPages(kind="balloon", before=99, after=98,
                                                  moved=0, arrived=0),
                             inflated=99, deflated=98, balloon_migrate=0,
                             pgmigrate_success_delta=0, data_intact=False)
    miscounted = BalloonEvidence(requested_pages=100,
                                 tracked=TrackedPages(kind="balloon", before=100, after=100,
                                                      moved=5, arrived=5),
                                 inflated=100, deflated=100, balloon_migrate=6,
                                 pgmigrate_success_delta=5, data_intact=True)
    _reasons_matching_once("balloon", [*judge_balloon(broken).failures,
                                       *judge_balloon(miscounted).failures])
