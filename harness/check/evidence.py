"""What a migration check observed, and the explicit rule that turns it into a verdict.

The rule (also in README.md, "How a migration is proven"):

movable=1 (the driver registered its pages with __SetPageMovable):
  1. some of the driver's pages have a new PFN after compaction (pfn_changes > 0);
  2. the PFN changes agree with the driver's own migratepage counter: every page
     that moved was migrated by the driver's callback (pfn_changes <= migrated,
     a page may move more than once, and migrated > 0);
  3. the kernel counted them too: pgmigrate_success rose by at least as much;
  4. every page still holds its pattern: verify checked all pages, 0 mismatches;
  5. the console showed no panic/Oops/BUG/WARNING (the health watch fails the step).
movable=0 (control group): no page changed PFN, the callbacks never ran, and
verify found 0 mismatches.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HighOrderProbe:
    """How many high-order allocations succeeded before and after compaction."""

    order: int
    attempts: int
    before: int
    after: int


@dataclass(frozen=True)
class MigrationEvidence:
    """Everything one compaction round showed about the sample driver's pages."""

    movable: bool
    total_pages: int
    pfn_changes: int  # pages whose PFN after compaction differs from before
    driver_counters: dict[str, int]  # deltas of the driver's callback counters
    vmstat_deltas: dict[str, int]  # pgmigrate_* and compact_* deltas
    buddy_before: list[int]  # free blocks per order, all zones summed
    buddy_after: list[int]
    high_order: HighOrderProbe
    verify_checked: int
    verify_mismatches: int
    notes: list[str] = field(default_factory=list)  # what was done to keep numbers clean

    @property
    def migrated_share(self) -> float:
        """Fraction of the driver's pages that ended on a new PFN."""
        return self.pfn_changes / self.total_pages if self.total_pages else 0.0


@dataclass(frozen=True)
class Verdict:
    """Whether migration was proven, and every rule that failed if not."""

    proven: bool
    failures: tuple[str, ...]

    def __str__(self) -> str:
        return "PROVEN" if self.proven else "NOT PROVEN: " + "; ".join(self.failures)


def judge(evidence: MigrationEvidence) -> Verdict:
    """Apply the rule in this module's docstring to one round of evidence."""
    failures: list[str] = []
    migrated = evidence.driver_counters.get("migrated", 0)
    pgmigrate = evidence.vmstat_deltas.get("pgmigrate_success", 0)
    if evidence.verify_checked != evidence.total_pages:
        failures.append(f"verify checked {evidence.verify_checked} of "
                        f"{evidence.total_pages} pages")
    if evidence.verify_mismatches:
        failures.append(f"{evidence.verify_mismatches} pages lost their contents")
    if evidence.movable:
        if evidence.pfn_changes == 0:
            failures.append("no driver page changed PFN")
        if migrated == 0:
            failures.append("the driver's migratepage callback never succeeded")
        if evidence.pfn_changes > migrated:
            failures.append(f"{evidence.pfn_changes} pages changed PFN but the driver "
                            f"migrated only {migrated}")
        if pgmigrate < migrated:
            failures.append(f"pgmigrate_success rose by {pgmigrate}, less than the "
                            f"driver's {migrated} migrations")
    else:
        if evidence.pfn_changes:
            failures.append(f"{evidence.pfn_changes} non-movable pages changed PFN")
        if migrated or evidence.driver_counters.get("isolated", 0):
            failures.append("callbacks ran for pages never registered movable")
    return Verdict(proven=not failures, failures=tuple(failures))


@dataclass(frozen=True)
class ABComparison:
    """The seed commit's claim: movable pages let compaction recover high orders."""

    control: MigrationEvidence  # movable=0
    movable: MigrationEvidence  # movable=1

    @property
    def high_order_gain(self) -> int:
        """Extra high-order allocations that succeed thanks to movable pages."""
        return self.movable.high_order.after - self.control.high_order.after


def judge_ab(ab: ABComparison) -> Verdict:
    """Both sides proven on their own, and movable pages recovered more high orders."""
    failures = [f"movable=0: {f}" for f in judge(ab.control).failures]
    failures += [f"movable=1: {f}" for f in judge(ab.movable).failures]
    if ab.high_order_gain <= 0:
        order = ab.movable.high_order.order
        failures.append(
            f"order-{order} allocations after compaction: {ab.movable.high_order.after} with "
            f"movable pages vs {ab.control.high_order.after} without (no gain)")
    return Verdict(proven=not failures, failures=tuple(failures))
