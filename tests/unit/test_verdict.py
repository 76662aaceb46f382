from dataclasses import replace

import pytest

from harness.check.evidence import (
    ABComparison,
    HighOrderProbe,
    MigrationEvidence,
    judge,
    judge_ab,
)


def evidence(**changes: object) -> MigrationEvidence:
    base = MigrationEvidence(
        movable=True, total_pages=4096, pfn_changes=1800,
        driver_counters={"isolated": 1900, "migrated": 1850, "putback": 50,
                         "eagain": 0, "failed": 0},
        vmstat_deltas={"pgmigrate_success": 2400, "compact_isolated": 5000},
        buddy_before=[4030, 10, 2, 0, 0, 0, 0, 0, 0, 0, 0],
        buddy_after=[430, 200, 120, 60, 30, 20, 10, 8, 6, 5, 2],
        high_order=HighOrderProbe(order=9, attempts=16, before=0, after=6),
        verify_checked=4096, verify_mismatches=0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def control(**changes: object) -> MigrationEvidence:
    fields: dict[str, object] = {
        "movable": False, "pfn_changes": 0,
        "driver_counters": {"isolated": 0, "migrated": 0, "putback": 0,
                            "eagain": 0, "failed": 0},
        "high_order": HighOrderProbe(order=9, attempts=16, before=0, after=0),
    }
    return evidence(**{**fields, **changes})


def test_good_movable_round_is_proven() -> None:
    verdict = judge(evidence())
    assert verdict.proven, verdict.failures


@pytest.mark.parametrize("changes,needle", [
    ({"pfn_changes": 0}, "no driver page changed PFN"),
    ({"verify_mismatches": 3}, "lost their contents"),
    ({"verify_checked": 100}, "verify checked 100"),
    ({"pfn_changes": 2000}, "migrated only 1850"),
    ({"vmstat_deltas": {"pgmigrate_success": 10}}, "pgmigrate_success rose by 10"),
])
def test_each_movable_rule_can_fail(changes: dict[str, object], needle: str) -> None:
    verdict = judge(evidence(**changes))
    assert not verdict.proven
    assert any(needle in failure for failure in verdict.failures), verdict.failures


def test_control_group_must_not_move() -> None:
    assert judge(control()).proven
    moved = judge(control(pfn_changes=5))
    assert not moved.proven and "non-movable pages changed PFN" in str(moved)


def test_ab_needs_a_high_order_gain() -> None:
    assert judge_ab(ABComparison(control=control(), movable=evidence())).proven
    no_gain = ABComparison(control=control(), movable=evidence(
        high_order=HighOrderProbe(order=9, attempts=16, before=0, after=0)))
    verdict = judge_ab(no_gain)
    assert not verdict.proven and "no gain" in str(verdict)
