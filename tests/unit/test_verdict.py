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


# Each rule at its threshold (proven) and one step past it (that rule alone fails):
# a `>` written for `>=` (or the reverse) in evidence.py fails one of these.
@pytest.mark.parametrize("at,past,needle", [
    ({"migrated_pages": 1, "driver_counters": {"migrated": 1},
      "pgmigrate_success_delta": 1},
     {"migrated_pages": 0, "driver_counters": {"migrated": 1},
      "pgmigrate_success_delta": 1}, "no driver page changed PFN"),
    ({"migrated_pages": 1850}, {"migrated_pages": 1851},
     "1851 pages changed PFN but the driver migrated only 1850"),
    ({"pgmigrate_success_delta": 1850}, {"pgmigrate_success_delta": 1849},
     "pgmigrate_success rose by 1849, less than the driver's 1850 migrations"),
    ({"verify_checked": 4096}, {"verify_checked": 4095}, "verify checked 4095 of 4096 pages"),
    ({"verify_checked": 4096}, {"verify_checked": 4097}, "verify checked 4097 of 4096 pages"),
    ({"verify_mismatches": 0}, {"verify_mismatches": 1}, "1 pages lost their contents"),
], ids=["moved", "moves-within-migrations", "pgmigrate", "checked-fewer", "checked-more",
        "mismatch"])
def test_each_movable_rule_at_its_threshold(at: dict[str, object], past: dict[str, object],
                                            needle: str) -> None:
    assert side_failures(side(**at)) == []
    assert side_failures(side(**past)) == [needle]


def test_migratepage_must_have_succeeded_at_least_once() -> None:
    """migrated > 0: one success is enough; none fails (and then no page may have moved)."""
    assert side_failures(side(migrated_pages=1, driver_counters={"migrated": 1},
                              pgmigrate_success_delta=1)) == []
    assert side_failures(side(migrated_pages=0, driver_counters={"migrated": 0},
                              pgmigrate_success_delta=0)) == [
        "no driver page changed PFN", "the driver's migratepage callback never succeeded"]


@pytest.mark.parametrize("past,needle", [
    ({"migrated_pages": 1}, "1 non-movable pages changed PFN"),
    ({"driver_counters": {"isolated": 1, "migrated": 0}},
     "callbacks ran for pages never registered movable"),
    ({"driver_counters": {"isolated": 0, "migrated": 1}},
     "callbacks ran for pages never registered movable"),
])
def test_each_control_rule_one_step_past_zero(past: dict[str, object], needle: str) -> None:
    assert side_failures(control()) == []
    assert side_failures(control(**past)) == [needle]


def test_the_gain_must_be_at_least_one_allocation() -> None:
    gain_of_one = judge_ab(control(high_order=HighOrder(order=9, attempts=16, before=0,
                                                        after=5)), side())
    assert gain_of_one.proven, gain_of_one
    none = judge_ab(control(high_order=HighOrder(order=9, attempts=16, before=0, after=6)),
                    side())
    assert none.failures == ("order-9 allocations after compaction: 6 with movable pages "
                             "vs 6 without (no gain)",)
