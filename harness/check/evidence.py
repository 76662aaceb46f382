"""What a migration check observed, and the explicit rule that turns it into a verdict.

The rule (also in README.md, "How a migration is proven"):

movable=1 (the driver registered its pages with __SetPageMovable):
  1. some of the driver's pages have a new PFN after compaction (pfn_changes > 0);
  2. the PFN changes agree with the driver's own migratepage counter: every page
     that moved was migrated by the driver's callback (pfn_changes <= migrated,
     a page may move more than once, and migrated > 0);
  3. the kernel counted them too: pgmigrate_success rose by at least as much;
  4. every page still holds its pattern: verify checked all pages, 0 mismatches;
  5. the kernel reported no trouble: a report during the A/B makes it NOT PROVEN
     (harness.check.reported), the rounds measured before it kept.
movable=0 (control group): no page changed PFN, the callbacks never ran, and
verify found 0 mismatches.
A/B (the seed commit's claim): both rounds hold on their own, and after
compaction more allocations of a huge page (order 9 with 4 KiB pages, the probe
order of harness.check.sample) succeed with movable pages than without.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.report.model import Side


@dataclass(frozen=True)
class Verdict:
    """Whether migration was proven, and every rule that failed if not."""

    proven: bool
    failures: tuple[str, ...]

    @classmethod
    def of(cls, failures: list[str]) -> Verdict:
        """Proven exactly when no rule failed."""
        return cls(proven=not failures, failures=tuple(failures))

    def __str__(self) -> str:
        return "PROVEN" if self.proven else "NOT PROVEN: " + "; ".join(self.failures)


def side_failures(side: Side) -> list[str]:
    """The rules in this module's docstring that one round of evidence breaks."""
    failures: list[str] = []
    migrated = side.driver_counters.get("migrated", 0)
    if side.verify_checked != side.total_pages:
        failures.append(f"verify checked {side.verify_checked} of {side.total_pages} pages")
    if side.verify_mismatches:
        failures.append(f"{side.verify_mismatches} pages lost their contents")
    if side.movable:
        if side.migrated_pages == 0:
            failures.append("no driver page changed PFN")
        if migrated == 0:
            failures.append("the driver's migratepage callback never succeeded")
        if side.migrated_pages > migrated:
            failures.append(f"{side.migrated_pages} pages changed PFN but the driver "
                            f"migrated only {migrated}")
        if side.pgmigrate_success_delta < migrated:
            failures.append(f"pgmigrate_success rose by {side.pgmigrate_success_delta}, less "
                            f"than the driver's {migrated} migrations")
    else:
        if side.migrated_pages:
            failures.append(f"{side.migrated_pages} non-movable pages changed PFN")
        if migrated or side.driver_counters.get("isolated", 0):
            failures.append("callbacks ran for pages never registered movable")
    return failures


def high_order_gain(control: Side, movable: Side) -> int:
    """Extra high-order allocations after compaction thanks to movable pages."""
    if control.high_order is None or movable.high_order is None:
        return 0
    return movable.high_order.after - control.high_order.after


def judge_ab(control: Side, movable: Side) -> Verdict:
    """The seed commit's claim: both sides hold on their own, and movable pages
    let compaction satisfy more high-order allocations than the control."""
    failures = [f"movable=0: {f}" for f in side_failures(control)]
    failures += [f"movable=1: {f}" for f in side_failures(movable)]
    if high_order_gain(control, movable) <= 0:
        order = movable.high_order.order if movable.high_order else "?"
        after = (control.high_order.after if control.high_order else None,
                 movable.high_order.after if movable.high_order else None)
        failures.append(f"order-{order} allocations after compaction: {after[1]} with "
                        f"movable pages vs {after[0]} without (no gain)")
    return Verdict.of(failures)
