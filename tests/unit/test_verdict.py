from dataclasses import replace

import pytest

from harness.check.evidence import judge_ab, side_failures
from harness.report.model import HighOrder, Side


def side(**changes: object) -> Side:
    base = Side(
        movable=True, total_pages=4096, migrated_pages=1800,
        driver_counters={"isolated": 1900, "migrated": 1850, "putback": 50,
                         "eagain": 0, "failed": 0},
        pgmigrate_success_delta=2400,
        vmstat_delta={"pgmigrate_success": 2400, "compact_isolated": 5000},
        buddy_before=(4030, 10, 2, 0, 0, 0, 0, 0, 0, 0, 0),
        buddy_after=(430, 200, 120, 60, 30, 20, 10, 8, 6, 5, 2),
        high_order=HighOrder(order=9, attempts=16, before=0, after=6),
        verify_checked=4096, verify_mismatches=0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def control(**changes: object) -> Side:
    fields: dict[str, object] = {
        "movable": False, "migrated_pages": 0,
        "driver_counters": {"isolated": 0, "migrated": 0, "putback": 0,
                            "eagain": 0, "failed": 0},
        "high_order": HighOrder(order=9, attempts=16, before=0, after=0),
    }
    return side(**{**fields, **changes})


def test_good_movable_round_is_proven() -> None:
    assert side_failures(side()) == []


@pytest.mark.parametrize("changes,needle", [
    ({"migrated_pages": 0}, "no driver page changed PFN"),
    ({"verify_mismatches": 3}, "lost their contents"),
    ({"verify_checked": 100}, "verify checked 100"),
    ({"migrated_pages": 2000}, "migrated only 1850"),
    ({"pgmigrate_success_delta": 10}, "pgmigrate_success rose by 10"),
    ({"driver_counters": {"migrated": 0}, "migrated_pages": 0}, "never succeeded"),
])
def test_each_movable_rule_can_fail(changes: dict[str, object], needle: str) -> None:
    failures = side_failures(side(**changes))
    assert any(needle in failure for failure in failures), failures


def test_control_group_must_not_move() -> None:
    assert side_failures(control()) == []
    moved = side_failures(control(migrated_pages=5))
    assert any("non-movable pages changed PFN" in failure for failure in moved), moved
    ran = side_failures(control(driver_counters={"isolated": 3, "migrated": 0}))
    assert any("never registered movable" in failure for failure in ran), ran


def test_ab_needs_a_high_order_gain() -> None:
    assert judge_ab(control(), side()).proven
    no_gain = judge_ab(control(), side(high_order=HighOrder(order=9, attempts=16,
                                                            before=0, after=0)))
    assert not no_gain.proven and "no gain" in str(no_gain)


def test_ab_reports_which_side_broke_a_rule() -> None:
    verdict = judge_ab(control(migrated_pages=2), side(verify_mismatches=1))
    assert any(f.startswith("movable=0:") for f in verdict.failures)
    assert any(f.startswith("movable=1:") for f in verdict.failures)
