"""What a report is made of: small typed records, independent of how evidence was taken.

The check fills these from whatever it measured (a QEMU guest, a board over
SSH, a replayed JSON file) and the JSON file, the picture and the terminal table
are all rendered from them, so the three never disagree.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple, TypeVar

from harness.procfs import FragIndices
from harness.report.view import (
    VMSTAT_ROWS,
    BuddyPanel,
    NotMeasured,
    Panel,
    TableView,
    UnusableIndex,
    change,
)

PROVEN = "proven"
NOT_PROVEN = "not proven"
COSTLY_ORDER = 3  # PAGE_ALLOC_COSTLY_ORDER: above it the allocator needs compaction


def huge_page_order(page_size: int) -> int:
    """The order of a huge page (one PMD entry) with pages of ``page_size`` bytes: a
    page-table page holds page_size / 8 entries, so 9 with 4 KiB pages (2 MiB), 11
    with 16 KiB (32 MiB), 13 with 64 KiB (512 MiB), on x86_64 and arm64 alike.
    It is the allocation compaction exists for, so the figures are about it."""
    return page_size.bit_length() - 4


def size_label(size: int | None) -> str:
    """``size`` bytes in the largest binary unit that keeps it whole ("?": unknown)."""
    if size is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or size % 1024:
            return f"{size} {unit}"
        size //= 1024
    return f"{size} TiB"


@dataclass(frozen=True)
class KernelReport:
    """A kernel report (panic, Oops, BUG, WARNING, lockup, ...) that ended a scenario.

    A kernel that reports trouble during a scenario fails it: the report is
    the verdict's first reason, and what was measured before it is kept.
    """

    kind: str  # "Oops", "BUG", "WARNING", "soft lockup", ...
    headline: str  # the report's most telling line, e.g. "kernel BUG at mm/migrate.c:1073!"
    excerpt: str  # the console lines of the report, as printed
    fatal: bool = False  # the kernel panicked: nothing after it could run
    step: str | None = None  # the command during which it appeared, when known


@dataclass(frozen=True)
class HighOrder:
    """High-order allocation attempts (the driver's try_alloc) around one compaction."""

    order: int  # each attempt asks for one block of 2**order pages
    attempts: int  # attempts made before and again after compaction
    before: int  # how many succeeded before compaction
    after: int  # how many succeeded after compaction

    def __post_init__(self) -> None:
        if not (0 <= self.before <= self.attempts and 0 <= self.after <= self.attempts):
            raise ValueError(f"successes must be within 0..{self.attempts}: {self}")


@dataclass(frozen=True)
class Side:
    """One side of the A/B: the same fragmentation with movable=0 or movable=1."""

    movable: bool
    buddy_before: tuple[int, ...]  # free blocks per order, all zones, before compaction
    buddy_after: tuple[int, ...]  # the same after compaction
    migrated_pages: int  # driver pages whose PFN changed
    total_pages: int  # driver pages in the experiment
    pgmigrate_success_delta: int
    verify_mismatches: int  # pages whose contents verify found changed
    high_order: HighOrder | None = None
    vmstat_delta: Mapping[str, int] = field(default_factory=dict)
    driver_counters: Mapping[str, int] = field(default_factory=dict)  # isolated, migrated, ...
    verify_checked: int | None = None  # pages verify compared (None: not reported)
    # The kernel's unusable_index and extfrag_index before and after compaction
    # (None: the kernel has none, or the evidence predates them).
    indices_before: FragIndices | None = None
    indices_after: FragIndices | None = None

    def __post_init__(self) -> None:
        if len(self.buddy_before) != len(self.buddy_after) or not self.buddy_before:
            raise ValueError("buddy_before and buddy_after need the same, non-zero, orders")
        if not 0 <= self.migrated_pages <= self.total_pages:
            raise ValueError(f"migrated_pages must be within 0..total_pages: {self}")
        object.__setattr__(self, "buddy_before", tuple(self.buddy_before))
        object.__setattr__(self, "buddy_after", tuple(self.buddy_after))
        object.__setattr__(self, "vmstat_delta", MappingProxyType(dict(self.vmstat_delta)))
        object.__setattr__(self, "driver_counters",
                           MappingProxyType(dict(self.driver_counters)))

    @property
    def label(self) -> str:
        return f"movable={int(self.movable)}"

    @property
    def migrated_share(self) -> float:
        """Migrated pages as a fraction of the driver's pages (0 when it has none)."""
        return self.migrated_pages / self.total_pages if self.total_pages else 0.0

    def blocks_at_least(self, order: int) -> tuple[int, int]:
        """Free blocks of order >= ``order`` before and after compaction."""
        return sum(self.buddy_before[order:]), sum(self.buddy_after[order:])

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of one round (a RunResult's ``sides``, the A/B's evidence)."""
        return {
            "movable": int(self.movable),
            "migrated_pages": self.migrated_pages,
            "total_pages": self.total_pages,
            "migrated_share": round(self.migrated_share, 4),
            "pgmigrate_success_delta": self.pgmigrate_success_delta,
            "verify_mismatches": self.verify_mismatches,
            "verify_checked": self.verify_checked,
            "high_order_success": asdict(self.high_order) if self.high_order else None,
            "buddyinfo_before": list(self.buddy_before),
            "buddyinfo_after": list(self.buddy_after),
            "vmstat_delta": dict(self.vmstat_delta),
            "driver_counters": dict(self.driver_counters),
            "fragmentation_indices": {
                "before": self.indices_before.as_dict() if self.indices_before else None,
                "after": self.indices_after.as_dict() if self.indices_after else None},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Side:
        """Rebuild what ``to_dict`` wrote (KeyError/TypeError/ValueError on a bad one)."""
        high = data["high_order_success"]
        return cls(
            movable=bool(data["movable"]),
            buddy_before=tuple(data["buddyinfo_before"]),
            buddy_after=tuple(data["buddyinfo_after"]),
            migrated_pages=data["migrated_pages"],
            total_pages=data["total_pages"],
            pgmigrate_success_delta=data["pgmigrate_success_delta"],
            verify_mismatches=data["verify_mismatches"],
            high_order=HighOrder(**high) if high else None,
            vmstat_delta=data["vmstat_delta"],
            driver_counters=data["driver_counters"],
            verify_checked=data["verify_checked"],
            indices_before=_indices(data, "before"),
            indices_after=_indices(data, "after"),
        )

    def index_lines(self, order: int) -> tuple[str, ...]:
        """Both indices at ``order`` before → after, in the last zone the kernel lists
        (the highest: where most memory is and allocations look first); none when the
        side has no indices."""
        before, after = self.indices_before, self.indices_after
        if before is None or after is None:
            return ()
        zone = list(before.unusable.per_zone)[-1]
        unusable = [index.unusable.per_zone[zone][order] for index in (before, after)]
        extfrag = [index.extfrag.per_zone[zone][order] for index in (before, after)]
        return (f"{zone.zone} order {order}: unusable index {unusable[0]:.3f} → "
                f"{unusable[1]:.3f}",
                f"extfrag index {extfrag[0]:.3f} → {extfrag[1]:.3f} (-1: a free block)")


def _unusable(side: Side) -> UnusableIndex | None:
    """The side's unusable index per order of the last zone, before and after."""
    before, after = side.indices_before, side.indices_after
    if before is None or after is None:
        return None
    zone = list(before.unusable.per_zone)[-1]
    return UnusableIndex(zone=zone.zone, before=before.unusable.per_zone[zone],
                         after=after.unusable.per_zone[zone])


def _indices(side: Mapping[str, Any], when: str) -> FragIndices | None:
    """A side's fragmentation indices ``when`` (before/after compaction), if it has them
    (evidence saved before they were recorded has none)."""
    saved = (side.get("fragmentation_indices") or {}).get(when)
    return FragIndices.from_dict(saved) if saved else None


R = TypeVar("R", bound="ScenarioResult")


@dataclass(frozen=True, kw_only=True)
class ScenarioResult(ABC):
    """What every scenario's result has, whatever it measured: where it ran, the
    verdict and the reasons for it, the notes, and the kernel report that ended it.

    Each scenario's result type (the sample A/B's ``RunResult``, the in-tree
    users' ``InTreeResult``, ...) adds its own measurements and says how they
    are shown: its table rows and picture panels as data (harness.report.view)
    and its JSON object. The table, the picture and result.json render any
    result through these alone, so a new scenario needs no renderer.
    """

    json_key: ClassVar[str]  # the list of result.json it goes into

    arch: str
    kernel: str  # the kernel spec as the user gave it (debian:6.1, git:...)
    release: str  # uname -r in the guest
    proven: bool
    reasons: tuple[str, ...]  # why the verdict is what it is, one short sentence each
    notes: tuple[str, ...] = ()  # what was done to keep numbers clean, e.g. proactiveness 0
    page_size: int | None = None  # bytes, as the guest reported it (None: not measured)
    kernel_report: KernelReport | None = None  # the report that ended the scenario, if any
    # Wall seconds per phase, in run order (harness.phases: "group/step" inside a group).
    seconds: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "reasons", tuple(self.reasons))
        object.__setattr__(self, "notes", tuple(self.notes))
        object.__setattr__(self, "seconds", MappingProxyType(dict(self.seconds)))

    @property
    def verdict(self) -> str:
        return PROVEN if self.proven else NOT_PROVEN

    @property
    def label(self) -> str:
        """What ran where, for titles."""
        return f"{self.arch} · {self.kernel}"

    @property
    def running(self) -> str:
        """The kernel that ran, for titles: its release and the page size it uses."""
        release = self.release or "release unknown"
        if self.page_size is None:
            return release
        return f"{release}, {size_label(self.page_size)} pages"

    def block_bytes(self, pages: int | None) -> int | None:
        """``pages`` of this result's guest in bytes (None: either is not known)."""
        return None if pages is None or self.page_size is None else pages * self.page_size

    @abstractmethod
    def table(self) -> TableView:
        """The result's evidence as table rows (what ``harness run`` prints)."""

    @abstractmethod
    def panels(self) -> tuple[Panel, ...]:
        """The result's row of the picture, panel by panel, left to right."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The result's JSON object: ``common_dict()`` and its own keys."""

    @classmethod
    @abstractmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """Rebuild what ``to_dict`` wrote (KeyError/TypeError/ValueError on a bad one)."""

    def common_dict(self) -> dict[str, Any]:
        """The JSON keys every result object has (harness.result v1)."""
        return {
            "arch": self.arch,
            "kernel": self.kernel,
            "release": self.release,
            "verdict": self.verdict,
            "proven": self.proven,
            "reasons": list(self.reasons),
            "kernel_report": asdict(self.kernel_report) if self.kernel_report else None,
            "page_size": self.page_size,
            "notes": list(self.notes),
            "seconds": dict(self.seconds),
        }

    @staticmethod
    def common_fields(data: Mapping[str, Any]) -> dict[str, Any]:
        """The ScenarioResult fields of an object ``common_dict`` wrote (a file written
        before results kept their phases' times has none)."""
        report = data.get("kernel_report")
        return {"arch": data["arch"], "kernel": data["kernel"], "release": data["release"],
                "proven": data["proven"], "reasons": tuple(data["reasons"]),
                "notes": tuple(data["notes"]), "page_size": data["page_size"],
                "kernel_report": KernelReport(**report) if report is not None else None,
                "seconds": data.get("seconds", {})}


class _Row(NamedTuple):
    """One row of the A/B's table: its cell on each side, and the number compared."""

    name: str
    cell: Callable[[Side], str]
    value: Callable[[Side], int]


def _probe(side: Side) -> HighOrder:
    if side.high_order is None:
        raise ValueError(f"{side.label} has no high-order probe")
    return side.high_order


def _probe_cell(side: Side) -> str:
    probe = _probe(side)
    return f"{probe.before}/{probe.attempts} → {probe.after}/{probe.attempts}"


def _vmstat_row(name: str) -> _Row:
    return _Row(f"{name} Δ", lambda side: str(side.vmstat_delta[name]),
                lambda side: side.vmstat_delta[name])


@dataclass(frozen=True, kw_only=True)
class RunResult(ScenarioResult):
    """The sample driver's A/B on one arch x kernel (result.json: ``results``).

    A side is None when the A/B stopped before that round was measured (a
    kernel report during it); such a result is never proven.
    """

    json_key = "results"
    movable: Side | None  # the movable=1 round
    unmovable: Side | None = None  # the movable=0 control, when the A/B ran

    def __post_init__(self) -> None:
        super().__post_init__()
        if ((self.movable is not None and not self.movable.movable)
                or (self.unmovable is not None and self.unmovable.movable)):
            raise ValueError("RunResult.movable must be movable=1 and unmovable movable=0")
        if self.proven and (self.movable is None or self.kernel_report is not None):
            raise ValueError("a proven RunResult needs its movable=1 round and no kernel report")

    @property
    def sides(self) -> tuple[Side, ...]:
        """movable=0 first, then movable=1, those measured: the order every view uses."""
        return tuple(side for side in (self.unmovable, self.movable) if side is not None)

    @property
    def high_order(self) -> int:
        """The order the high-order evidence is about: try_alloc's if it ran, else the
        lowest order the kernel calls costly to allocate (above PAGE_ALLOC_COSTLY_ORDER 3)."""
        for side in self.sides:
            if side.high_order is not None:
                return side.high_order.order
        orders = min((len(side.buddy_before) for side in self.sides), default=COSTLY_ORDER + 2)
        return min(COSTLY_ORDER + 1, orders - 1)

    def _rows(self) -> list[_Row]:
        order = self.high_order
        sides = self.sides
        rows = [_Row("migrated pages (new PFN)",
                     lambda s: f"{s.migrated_pages} / {s.total_pages} ({s.migrated_share:.0%})",
                     lambda s: s.migrated_pages)]
        if all("migrated" in side.driver_counters for side in sides):
            rows.append(_Row("driver migratepage ok", lambda s: str(s.driver_counters["migrated"]),
                             lambda s: s.driver_counters["migrated"]))
        rows.append(_Row("pgmigrate_success Δ", lambda s: str(s.pgmigrate_success_delta),
                         lambda s: s.pgmigrate_success_delta))
        rows += [_vmstat_row(name) for name in VMSTAT_ROWS
                 if all(name in side.vmstat_delta for side in sides)]
        rows.append(_Row("free order-0 blocks",
                         lambda s: change(s.buddy_before[0], s.buddy_after[0]),
                         lambda s: s.buddy_after[0]))
        rows.append(_Row(f"free blocks ≥ order {order}",
                         lambda s: change(*s.blocks_at_least(order)),
                         lambda s: s.blocks_at_least(order)[1]))
        if all(side.high_order for side in sides):
            rows.append(_Row(f"order-{order} allocations ok", _probe_cell,
                             lambda s: _probe(s).after))
        rows.append(_Row("verify mismatches", lambda s: str(s.verify_mismatches),
                         lambda s: s.verify_mismatches))
        return rows

    def table(self) -> TableView:
        """A column per side measured, so the difference the A/B exists to show is
        read across a row, and with both a third: movable=1 minus movable=0."""
        if not self.sides:
            return TableView(("value",), (("A/B rounds",
                                           "none measured before the kernel report"),))
        control, movable = self.unmovable, self.movable
        rows = []
        for row in self._rows():
            cells = [row.cell(side) for side in self.sides]
            if control is not None and movable is not None:
                cells.append(f"{row.value(movable) - row.value(control):+d}")
            rows.append((row.name, *cells))
        both = control is not None and movable is not None
        return TableView(
            columns=(*(side.label for side in self.sides), *(("1 − 0",) if both else ())),
            rows=tuple(rows), derived=both,
            legend=("1 − 0: movable=1 minus movable=0, after compaction",) if both else ())

    def panels(self) -> tuple[Panel, ...]:
        """movable=0 next to movable=1: with movable driver pages compaction turns
        many small free blocks into fewer large ones; without them the histogram
        barely moves."""
        order = self.high_order
        panels: list[Panel] = []
        for side, what in ((self.unmovable, "movable=0 control"), (self.movable, "movable=1")):
            if side is None:
                panels.append(NotMeasured(what))
                continue
            role = "driver pages movable" if side.movable else "control: not movable"
            before, after = side.blocks_at_least(order)
            box = [f"free blocks ≥ order {order}: {before} → {after}"]
            if side.high_order is not None:
                high = side.high_order
                box.append(f"order-{high.order} allocations ok: "
                           f"{high.before}/{high.attempts} → {high.after}/{high.attempts}")
            box.append(f"pgmigrate_success Δ {side.pgmigrate_success_delta}, "
                       f"mismatches {side.verify_mismatches}")
            box += side.index_lines(order)
            panels.append(BuddyPanel(
                title=(f"{side.label} ({role})\nmigrated {side.migrated_pages} of "
                       f"{side.total_pages} pages ({side.migrated_share:.0%})"),
                before=side.buddy_before, after=side.buddy_after, box=tuple(box),
                unusable=_unusable(side)))
        return tuple(panels)

    def to_dict(self) -> dict[str, Any]:
        """The top-level evidence (migrated_pages, ...) is the movable=1 side, the one
        the verdict is about (null when a kernel report ended the A/B before it);
        ``sides`` has the sides of the A/B that were measured, in full."""
        sides = {side.label: side.to_dict() for side in self.sides}
        movable = sides.get("movable=1", {})
        return {
            **self.common_dict(),
            **{key: movable.get(key) for key in ("migrated_pages", "total_pages",
                                                 "migrated_share", "pgmigrate_success_delta",
                                                 "verify_mismatches")},
            "high_order_success": {label: side["high_order_success"]
                                   for label, side in sides.items()},
            "sides": sides,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        sides = data["sides"]
        return cls(**cls.common_fields(data),
                   movable=Side.from_dict(sides["movable=1"]) if "movable=1" in sides else None,
                   unmovable=(Side.from_dict(sides["movable=0"]) if "movable=0" in sides
                              else None))
