"""The record of an in-tree scenario (zram/zsmalloc, virtio-balloon), and its JSON form.

The sample driver's A/B is a ``RunResult``; the kernel's own users of the
movable page API have no movable=0 control and no driver counters, but they
have their own figures (zsmalloc's zspages, the balloon's migration counter)
and a data check (zram contents, memory usable after deflating). Those fit
one small record (result.json: ``in_tree``), rendered by the same JSON file,
table and picture.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

from harness.report.model import ScenarioResult, huge_page_order, size_label
from harness.report.view import (
    NOT_MEASURED,
    VMSTAT_ROWS,
    BarsPanel,
    BuddyPanel,
    NotMeasured,
    Panel,
    TableView,
    change,
)

# The in-tree users' own numbers worth a bar next to the migration counters.
_PANEL_FIGURES = {"zsmalloc_pages": "zsmalloc pages in all (debugfs)",
                  "zram_compact_pages_compacted": "zram compact: pages freed"}


@dataclass(frozen=True)
class TrackedPages:
    """Pages of one in-tree user found by PFN (/proc/kpageflags) around one compaction."""

    kind: str  # e.g. "balloon pages"
    before: int  # pages of that kind before compaction
    after: int  # ... and after
    moved: int  # PFNs that held one before and none after: pages that migrated away
    arrived: int  # PFNs that hold one now and did not before

    def __post_init__(self) -> None:
        if not (0 <= self.moved <= self.before and 0 <= self.arrived <= self.after):
            raise ValueError(f"moved/arrived must be within the page counts: {self}")

    @property
    def moved_share(self) -> float:
        """Moved pages as a fraction of the pages found before (0 when none)."""
        return self.moved / self.before if self.before else 0.0


@dataclass(frozen=True, kw_only=True)
class InTreeResult(ScenarioResult):
    """Everything the report shows for one in-tree scenario on one arch x kernel.

    A scenario cut short by a kernel report keeps what it measured before: a
    measurement it never took is None (buddyinfo: empty), and the result is
    not proven.
    """

    json_key = "in_tree"
    scenario: str  # "zram" or "balloon"
    tracked: TrackedPages | None = None
    pgmigrate_success_delta: int | None = None
    buddy_before: tuple[int, ...] = ()  # free blocks per order, all zones, before compaction
    buddy_after: tuple[int, ...] = ()
    data_checked: int | None = None  # items compared after the experiment (see data_unit)
    data_mismatches: int | None = None  # items that differed from what was written
    data_unit: str = ""  # what one item is, e.g. "1 MiB zram chunk"
    figures: Mapping[str, int] = field(default_factory=dict)  # the user's own numbers
    vmstat_delta: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.buddy_after and len(self.buddy_before) != len(self.buddy_after):
            raise ValueError("buddy_before and buddy_after need the same orders")
        complete = (self.tracked is not None and self.buddy_after
                    and self.pgmigrate_success_delta is not None
                    and self.data_checked is not None and self.kernel_report is None)
        if self.proven and not complete:
            raise ValueError("a proven InTreeResult needs every measurement and no kernel report")
        object.__setattr__(self, "buddy_before", tuple(self.buddy_before))
        object.__setattr__(self, "buddy_after", tuple(self.buddy_after))
        for name in ("figures", "vmstat_delta"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def label(self) -> str:
        """What ran where, for titles: the scenario first."""
        return f"{self.scenario} · {super().label}"

    def free_pages_at_least(self, order: int) -> tuple[int | None, int | None]:
        """Free pages held in blocks of order >= ``order``, before and after compaction
        (None: not measured): what an allocation of that order can use (compaction
        merges blocks, so their count can fall while the memory in them grows)."""
        def pages(counts: tuple[int, ...]) -> int | None:
            if not counts:
                return None
            return sum(count << index for index, count in enumerate(counts) if index >= order)
        return pages(self.buddy_before), pages(self.buddy_after)

    @property
    def huge_order(self) -> int:
        """The order the free-memory figure is about: a huge page of the guest's page
        size, the allocation compaction is for (its largest order when it lists fewer,
        or when the page size was not measured)."""
        largest = len(self.buddy_before) - 1
        return largest if self.page_size is None else min(huge_page_order(self.page_size),
                                                          largest)

    def free_mib_at_least(self, order: int) -> tuple[int | None, int | None]:
        """``free_pages_at_least`` in MiB (None: not measured, or the page size unknown)."""
        before, after = (self.block_bytes(pages) for pages in self.free_pages_at_least(order))
        return (None if before is None else before >> 20,
                None if after is None else after >> 20)

    def _data_read_back(self) -> str | None:
        """What the data check compared and found (None: it never ran)."""
        if self.data_checked is None:
            return None
        return f"{self.data_checked} × {self.data_unit}, {self.data_mismatches} mismatches"

    def table(self) -> TableView:
        """One column of the scenario's evidence, then its own figures."""
        tracked = self.tracked
        delta = self.pgmigrate_success_delta
        rows = [
            ("pages moved (new PFN)", NOT_MEASURED) if tracked is None else
            (f"{tracked.kind} moved (new PFN)",
             f"{tracked.moved} / {tracked.before} ({tracked.moved_share:.0%})"),
            ("pgmigrate_success Δ", NOT_MEASURED if delta is None else str(delta)),
            *((f"{name} Δ", str(self.vmstat_delta[name])) for name in VMSTAT_ROWS
              if name in self.vmstat_delta),
            *((name, f"{value:,}") for name, value in self.figures.items()),
        ]
        if self.buddy_before:
            order = self.huge_order
            rows += [("free order-0 blocks", change(
                         self.buddy_before[0], self.buddy_after[0] if self.buddy_after else None)),
                     (f"free MiB in blocks ≥ order {order}",
                      change(*self.free_mib_at_least(order)))]
        else:
            rows.append(("free blocks (buddyinfo)", NOT_MEASURED))
        rows.append(("data read back", self._data_read_back() or NOT_MEASURED))
        return TableView(columns=("value",), rows=tuple(rows))

    def panels(self) -> tuple[Panel, ...]:
        """Free blocks per order, and the pages of the kernel's own user found and moved."""
        tracked = self.tracked
        buddy: Panel = NotMeasured("free blocks per order")
        if self.buddy_before:
            order = self.huge_order
            before, after = ("?" if mib is None else mib
                             for mib in self.free_mib_at_least(order))
            buddy = BuddyPanel(
                title=(f"{self.scenario}: {tracked.moved} of {tracked.before} {tracked.kind} "
                       f"changed PFN ({tracked.moved_share:.0%})" if tracked else
                       f"{self.scenario}: pages not compared"),
                before=self.buddy_before, after=self.buddy_after,
                box=(f"free memory in blocks ≥ {size_label(self.block_bytes(1 << order))}: "
                     f"{before} → {after} MiB",
                     f"data read back: {self._data_read_back() or 'not read back'}"))
        bars: dict[str, int] = {}
        if tracked is not None:
            bars.update({f"{tracked.kind} found": tracked.before,
                         "… moved to a new PFN": tracked.moved})
        if self.pgmigrate_success_delta is not None:
            bars["pgmigrate_success Δ"] = self.pgmigrate_success_delta
        if "balloon_migrate" in self.vmstat_delta:
            bars["balloon_migrate Δ"] = self.vmstat_delta["balloon_migrate"]
        bars.update({label: self.figures[name] for name, label in _PANEL_FIGURES.items()
                     if name in self.figures})
        if not bars:
            return buddy, NotMeasured("pages of the in-tree user", width=2)
        return buddy, BarsPanel("pages of the in-tree user around one compaction",
                                tuple(bars.items()))

    def to_dict(self) -> dict[str, Any]:
        """Key names match the sample driver's; null for what a scenario cut short by
        a kernel report did not measure."""
        tracked = self.tracked
        return {
            "scenario": self.scenario,
            **self.common_dict(),
            "migrated_pages": tracked.moved if tracked else None,
            "total_pages": tracked.before if tracked else None,
            "migrated_share": round(tracked.moved_share, 4) if tracked else None,
            "tracked_pages": asdict(tracked) if tracked else None,
            "pgmigrate_success_delta": self.pgmigrate_success_delta,
            "data": {"unit": self.data_unit, "checked": self.data_checked,
                     "mismatches": self.data_mismatches},
            "figures": dict(self.figures),
            "buddyinfo_before": list(self.buddy_before),
            "buddyinfo_after": list(self.buddy_after),
            "vmstat_delta": dict(self.vmstat_delta),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InTreeResult:
        tracked = data["tracked_pages"]
        return cls(
            **cls.common_fields(data), scenario=data["scenario"],
            tracked=TrackedPages(**tracked) if tracked is not None else None,
            pgmigrate_success_delta=data["pgmigrate_success_delta"],
            buddy_before=tuple(data["buddyinfo_before"]),
            buddy_after=tuple(data["buddyinfo_after"]),
            data_checked=data["data"]["checked"], data_mismatches=data["data"]["mismatches"],
            data_unit=data["data"]["unit"], figures=data["figures"],
            vmstat_delta=data["vmstat_delta"],
        )
