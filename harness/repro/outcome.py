"""Did the allocation behave as the driver's pages predict? Pure: facts in, verdict out.

With pages the kernel cannot move (movable=0) and no free block of the order
left, the allocation must fail and the allocator must say so in its own words
(``page allocation failure: order:N``); with movable pages (movable=1) the same
request must succeed, and it must be compaction moving the driver's pages that
made the room. A kernel report (Oops, WARNING, ...) is never expected.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

EXPECTED, UNEXPECTED = 0, 1  # exit statuses, as harness run's (2: a harness error)


@dataclass(frozen=True)
class Outcome:
    """The verdict on one repro: did it behave as expected, and why (or why not)."""

    expected: bool
    reasons: tuple[str, ...]

    @property
    def exit_status(self) -> int:
        return EXPECTED if self.expected else UNEXPECTED


def judge(facts: Mapping[str, Any]) -> Outcome:
    """The rules, each a reason when it fails (all of them are checked):

    - the kernel reported no trouble (a report is its headline, first);
    - before the allocation no free block of the order was left (else the
      allocation tests the free lists, not fragmentation);
    - movable=0: the allocation failed, and the allocator printed its failure
      report for that order;
    - movable=1: it succeeded, the allocator printed no failure report for that
      order, and the driver's migratepage moved pages (compaction made the room).
    """
    report = facts.get("kernel_report")
    if report is not None:
        return Outcome(False, (f"the kernel reported {report['kind']}: {report['headline']}",))
    order = facts["order"]
    failures: list[str] = []
    left = facts["free_blocks_at_least_order"]["before"]
    if left:
        failures.append(f"{left} free blocks of order >= {order} were left before the "
                        "allocation: it did not depend on compaction")
    reported = [r for r in facts["failure_reports"] if r["order"] == order]
    succeeded = facts["allocation_succeeded"]
    migrated = facts["driver_counters"].get("migrated", 0)
    if not facts["movable"]:
        if succeeded:
            failures.append(f"the order-{order} allocation succeeded with pages the kernel "
                            "cannot move")
        if not reported:
            failures.append(f"no 'page allocation failure: order:{order}' report on the console")
        summary = (f"order-{order} allocation failed with unmovable driver pages; the "
                   f"allocator reported it (mode {reported[0]['mode']})" if reported else "")
    else:
        if not succeeded:
            failures.append(f"the order-{order} allocation failed with movable driver pages")
        if reported:
            failures.append(f"the allocator reported an order-{order} failure with movable "
                            "driver pages")
        if not migrated:
            failures.append("no driver page migrated: compaction did not make the room")
        summary = (f"order-{order} allocation succeeded after compaction migrated "
                   f"{migrated} driver pages")
    if failures:
        return Outcome(False, tuple(failures))
    return Outcome(True, (summary,))
