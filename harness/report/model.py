"""What a report is made of: small typed records, independent of how evidence was taken.

The check fills these from whatever it measured (a QEMU guest, a board over
SSH, a replayed JSON file) and the JSON file, the picture and the terminal table
are all rendered from them, so the three never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

from harness.procfs import FragIndices

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


@dataclass(frozen=True, kw_only=True)
class ScenarioResult:
    """What every scenario's result has, whatever it measured: where it ran, the
    verdict and the reasons for it, the notes, and the kernel report that ended it.

    The sample A/B (``RunResult``) and the in-tree users (``InTreeResult``) add
    their own measurements; the report's common parts (caption, title, the JSON
    keys both share) are rendered from these fields alone.
    """

    arch: str
    kernel: str  # the kernel spec as the user gave it (debian:6.1, git:...)
    release: str  # uname -r in the guest
    proven: bool
    reasons: tuple[str, ...]  # why the verdict is what it is, one short sentence each
    notes: tuple[str, ...] = ()  # what was done to keep numbers clean, e.g. proactiveness 0
    page_size: int | None = None  # bytes, as the guest reported it (None: not measured)
    kernel_report: KernelReport | None = None  # the report that ended the scenario, if any

    def __post_init__(self) -> None:
        object.__setattr__(self, "reasons", tuple(self.reasons))
        object.__setattr__(self, "notes", tuple(self.notes))

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


@dataclass(frozen=True, kw_only=True)
class RunResult(ScenarioResult):
    """The sample driver's A/B on one arch x kernel.

    A side is None when the A/B stopped before that round was measured (a
    kernel report during it); such a result is never proven.
    """

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


def result_common_dict(result: ScenarioResult) -> dict[str, Any]:
    """The JSON keys every result object has (harness.result v1)."""
    return {
        "arch": result.arch,
        "kernel": result.kernel,
        "release": result.release,
        "verdict": result.verdict,
        "proven": result.proven,
        "reasons": list(result.reasons),
        "kernel_report": asdict(result.kernel_report) if result.kernel_report else None,
        "page_size": result.page_size,
        "notes": list(result.notes),
    }


def result_common_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """The ScenarioResult fields of a result object ``result_common_dict`` wrote
    (KeyError/TypeError on a malformed one)."""
    report = data.get("kernel_report")
    return {"arch": data["arch"], "kernel": data["kernel"], "release": data["release"],
            "proven": data["proven"], "reasons": tuple(data["reasons"]),
            "notes": tuple(data["notes"]), "page_size": data["page_size"],
            "kernel_report": KernelReport(**report) if report is not None else None}
