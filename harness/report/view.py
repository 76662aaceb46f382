"""What a result shows, as data: the rows of its table and the panels of its picture.

Every result type (``harness.report.model.ScenarioResult``) describes itself
with these records (``table()``, ``panels()``), and ``table.py`` and
``chart.py`` draw any of them the same way: a new scenario's result brings
its own rows and panels and needs no renderer of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

NOT_MEASURED = "not measured"
# vmstat counters worth a row when a result recorded their deltas.
VMSTAT_ROWS = ("compact_isolated", "compact_migrate_scanned", "compact_free_scanned",
               "pgmigrate_fail")


def change(before: int | None, after: int | None) -> str:
    """``before → after (±delta)``, saying what was not measured."""
    if before is None:
        return NOT_MEASURED
    if after is None:
        return f"{before} → {NOT_MEASURED}"
    return f"{before} → {after} ({after - before:+d})"


@dataclass(frozen=True)
class TableView:
    """A result's table: the columns after "evidence" and one row per piece of evidence."""

    columns: tuple[str, ...]  # headers of the value columns
    rows: tuple[tuple[str, ...], ...]  # each: the evidence's name, then one cell per column
    derived: bool = False  # the last column is computed from the others (the A/B's 1 − 0)
    legend: tuple[str, ...] = ()  # lines under the verdict that explain the columns


@dataclass(frozen=True)
class UnusableIndex:
    """The kernel's unusable_index of one zone per order, before and after compaction:
    the share of its free memory in blocks too small for each order."""

    zone: str
    before: tuple[float, ...]
    after: tuple[float, ...]


@dataclass(frozen=True)
class BuddyPanel:
    """Free blocks per order before and after compaction (``after`` empty: not
    measured), with the evidence worth reading next to them in ``box`` and, where
    the kernel has it, the unusable index drawn over the bars."""

    title: str
    before: tuple[int, ...]
    after: tuple[int, ...]
    box: tuple[str, ...] = ()
    width: int = 3  # relative to the other panels of the row
    unusable: UnusableIndex | None = None


@dataclass(frozen=True)
class BarsPanel:
    """Counts of one unit as horizontal bars, listed top to bottom."""

    title: str
    bars: tuple[tuple[str, int], ...]
    unit: str = "pages"
    width: int = 2


@dataclass(frozen=True)
class NotMeasured:
    """A panel whose measurement never ran: the first one of a row shows the
    kernel report that stopped it, if any."""

    what: str
    width: int = 3


Panel = BuddyPanel | BarsPanel | NotMeasured
