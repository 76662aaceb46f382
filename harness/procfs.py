"""Parsers for the /proc files that show memory fragmentation, and vmstat deltas.

Pure functions over text, no I/O: the check reads the files through a Guest (a
QEMU console, SSH, a board) and hands the text here, so every era's format can be
unit-tested on text recorded from real guests (tests/data/procfs/).

Formats differ between kernel eras and configurations, and the parsers take the
shape from the text instead of assuming it:

- the number of orders (MAX_ORDER) and the zone names (DMA, DMA32, Normal,
  Movable, Device, ...) come from the lines themselves;
- /proc/vmstat counters come and go with the version and with
  CONFIG_VM_EVENT_COUNTERS / COMPACTION / MIGRATION: absent counters are
  reported as absent (``Vmstat.require``), never as 0;
- /proc/pagetypeinfo lists whatever migrate types the kernel has (CMA, Isolate,
  HighAtomic), repeats its sections per NUMA node, has a "mixed blocks" table with
  CONFIG_PAGE_OWNER, and since 5.5 prints counts above 100000 as ``>100000``
  (kept as a lower bound, never summed as if exact);
- /proc/zoneinfo has per-node stats under the first populated zone of a node,
  4.8's ``node_scanned`` and ``node_inactive_ratio``, 5.x's ``boost`` and
  ``cma``, 6.x's ``promo``, and since 5.x prints nothing after ``protection``
  for an unpopulated zone.

Text that does not fit raises ProcfsFormatError naming the file and the line,
because a silently wrong number would make a migration verdict meaningless.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple, TypeVar

from harness.errors import HarnessError

K = TypeVar("K")
V = TypeVar("V")

PROCFS_FILES = ("buddyinfo", "vmstat", "pagetypeinfo", "zoneinfo")


class ProcfsFormatError(HarnessError):
    """Text that is not what the kernel prints in that file, in any known era."""

    def __init__(self, file: str, lineno: int, line: str, expected: str) -> None:
        self.file = file
        self.lineno = lineno
        shown = line.strip()
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(
            f"cannot parse {_path(file)} line {lineno}: expected {expected}, got {shown!r}; "
            f"keep that file's text and report it with the guest's `uname -r`"
        )


def _path(file: str) -> str:
    """Where ``file`` is read: /proc/NAME, or the absolute path a debugfs file is given as."""
    return file if file.startswith("/") else f"/proc/{file}"


class ZoneId(NamedTuple):
    """One memory zone of one NUMA node, e.g. ZoneId(0, "Normal")."""

    node: int
    zone: str

    def __str__(self) -> str:
        return f"node{self.node}/{self.zone}"


def _frozen(mapping: Mapping[K, V]) -> Mapping[K, V]:
    """A read-only view, so a parsed snapshot cannot be edited after the fact."""
    return MappingProxyType(dict(mapping))


def _lines(text: str) -> Iterable[tuple[int, str]]:
    """Numbered non-blank lines; splitlines() also drops a serial console's \\r."""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line


def _zone_of(zones: Mapping[ZoneId, V], name: str, node: int, file: str) -> V:
    """The entry of zone ``name`` on ``node`` in a parsed /proc/``file``; a HarnessError
    naming the zones there are."""
    try:
        return zones[ZoneId(node, name)]
    except KeyError:
        raise HarnessError(f"no zone {name} on node {node} in /proc/{file}: "
                           f"it has {', '.join(map(str, zones))}") from None


def _incomplete(file: str, text: str, missing: str) -> ProcfsFormatError:
    """The text ended (or was empty) before something every era prints."""
    last = len(text.splitlines())
    return ProcfsFormatError(file, max(last, 1), "(end of text)" if last else "(empty)", missing)


# --------------------------------------------------------------------------- buddyinfo

_BUDDY_LINE = re.compile(r"Node\s+(\d+),\s*zone\s+([A-Za-z]\w*)((?:\s+\d+)+)\s*")


@dataclass(frozen=True)
class BuddyInfo:
    """Free blocks per order for each zone, as /proc/buddyinfo prints them.

    ``zones[ZoneId(0, "Normal")][3]`` is the number of free blocks of 2**3 pages
    in node 0's Normal zone. Zones keep the kernel's order (low to high memory).
    """

    zones: Mapping[ZoneId, tuple[int, ...]]

    def __post_init__(self) -> None:
        object.__setattr__(self, "zones", _frozen(self.zones))

    @property
    def orders(self) -> int:
        """How many orders each zone lists (MAX_ORDER of the kernel: 11 on 4 KiB pages)."""
        return len(next(iter(self.zones.values())))

    def zone(self, name: str, node: int = 0) -> tuple[int, ...]:
        """Free blocks per order of one zone; HarnessError naming the zones there are."""
        return _zone_of(self.zones, name, node, "buddyinfo")

    def per_order(self, zones: Iterable[str] | None = None) -> tuple[int, ...]:
        """Free blocks per order summed over all zones (or the named zones) and nodes."""
        wanted = None if zones is None else set(zones)
        totals = [0] * self.orders
        for zone_id, counts in self.zones.items():
            if wanted is None or zone_id.zone in wanted:
                for order, count in enumerate(counts):
                    totals[order] += count
        return tuple(totals)

    def blocks_at_least(self, order: int, zones: Iterable[str] | None = None) -> int:
        """Free blocks of order >= ``order``: how many such allocations could succeed now."""
        return sum(self.per_order(zones)[order:])

    def free_pages(self, zones: Iterable[str] | None = None) -> int:
        """Free pages held in the buddy lists (per-cpu lists are not included)."""
        return sum(count << order for order, count in enumerate(self.per_order(zones)))

def parse_buddyinfo(text: str) -> BuddyInfo:
    """Parse /proc/buddyinfo; every zone must list the same number of orders."""
    zones: dict[ZoneId, tuple[int, ...]] = {}
    for lineno, line in _lines(text):
        match = _BUDDY_LINE.fullmatch(line)
        if not match:
            raise ProcfsFormatError(
                "buddyinfo", lineno, line, "'Node N, zone NAME' and one count per order"
            )
        zone_id = ZoneId(int(match[1]), match[2])
        counts = tuple(int(n) for n in match[3].split())
        if zones and len(counts) != len(next(iter(zones.values()))):
            raise ProcfsFormatError(
                "buddyinfo", lineno, line,
                f"{len(next(iter(zones.values())))} orders like the lines before",
            )
        if zone_id in zones:
            raise ProcfsFormatError("buddyinfo", lineno, line, f"{zone_id} only once")
        zones[zone_id] = counts
    if not zones:
        raise _incomplete("buddyinfo", text, "a 'Node N, zone NAME' line")
    return BuddyInfo(zones)


# --------------------------------------------------------------------------- vmstat

_VMSTAT_LINE = re.compile(r"([a-z0-9_]+)\s+(\d+)\s*")


@dataclass(frozen=True)
class Vmstat:
    """/proc/vmstat: event counters (monotonic) and gauges such as nr_free_pages."""

    counters: Mapping[str, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "counters", _frozen(self.counters))

    def __getitem__(self, name: str) -> int:
        return self.counters[name]

    def __contains__(self, name: object) -> bool:
        return name in self.counters

    def missing(self, names: Iterable[str]) -> tuple[str, ...]:
        """The names this kernel does not print (era or configuration)."""
        return tuple(name for name in names if name not in self.counters)

    def require(self, names: Iterable[str]) -> None:
        """HarnessError naming the counters this kernel lacks and the options that add them."""
        absent = self.missing(names)
        if absent:
            raise HarnessError(
                f"the guest kernel's /proc/vmstat has no {', '.join(absent)}: build it with "
                f"CONFIG_VM_EVENT_COUNTERS=y, CONFIG_COMPACTION=y and CONFIG_MIGRATION=y"
            )

def vmstat_delta(
    before: Vmstat, after: Vmstat, keys: Iterable[str] | None = None
) -> dict[str, int]:
    """``after - before`` for ``keys`` (default: every counter both snapshots have).

    A requested key missing from either snapshot is a HarnessError rather than a
    0, because "did not move" and "does not exist on this kernel" mean different
    things for a verdict.
    """
    if keys is None:
        names = [name for name in before.counters if name in after.counters]
    else:
        names = list(keys)
        before.require(names)
        after.require(names)
    return {name: after.counters[name] - before.counters[name] for name in names}


def parse_vmstat(text: str) -> Vmstat:
    """Parse /proc/vmstat ('name value' per line)."""
    counters: dict[str, int] = {}
    for lineno, line in _lines(text):
        match = _VMSTAT_LINE.fullmatch(line)
        if not match:
            raise ProcfsFormatError("vmstat", lineno, line, "'counter_name value'")
        if match[1] in counters:
            raise ProcfsFormatError("vmstat", lineno, line, f"{match[1]} only once")
        counters[match[1]] = int(match[2])
    if not counters:
        raise _incomplete("vmstat", text, "'counter_name value' lines")
    return Vmstat(counters)


# --------------------------------------------------------------------------- pagetypeinfo

_PT_BLOCK_ORDER = re.compile(r"Page block order:\s*(\d+)\s*")
_PT_PER_BLOCK = re.compile(r"Pages per block:\s*(\d+)\s*")
_PT_FREE_HEADER = re.compile(r"Free pages count per migrate type at order((?:\s+\d+)+)\s*")
_NAME = r"([A-Za-z]\w*)"  # zone and migrate type names: DMA32, Normal, HighAtomic, ...
_PT_FREE_ROW = re.compile(rf"Node\s+(\d+),\s*zone\s+{_NAME},\s*type\s+{_NAME}((?:\s+>?\d+)+)\s*")
# "Number of blocks type     Unmovable ..."; with CONFIG_PAGE_OWNER also "Number of
# mixed blocks    Unmovable ..." (no "type": 5.10's pagetypeinfo_showmixedcount).
_PT_TABLE_HEADER = re.compile(
    r"Number of (blocks|mixed blocks)(?: type)?((?:\s+[A-Za-z]\S*)+)\s*")
_PT_TABLE_ROW = re.compile(r"Node\s+(\d+),\s*zone\s+([A-Za-z]\w*)((?:\s+\d+)+)\s*")


class CappedCount(HarnessError):
    """A pagetypeinfo count the kernel printed as '>N' was asked for as an exact number."""


@dataclass(frozen=True)
class PageTypeInfo:
    """/proc/pagetypeinfo: free blocks per order split by migrate type, and pageblock counts.

    ``free[(ZoneId(0, "Normal"), "Movable")][0]`` is the number of free order-0
    blocks on the Movable free list. ``blocks[zone]["Movable"]`` is the number of
    pageblocks whose type is Movable. ``capped`` holds (zone, type, order) entries
    the kernel printed as '>100000': their value is a lower bound.
    """

    pageblock_order: int
    pages_per_block: int
    migratetypes: tuple[str, ...]
    free: Mapping[tuple[ZoneId, str], tuple[int, ...]]
    blocks: Mapping[ZoneId, Mapping[str, int]]
    mixed_blocks: Mapping[ZoneId, Mapping[str, int]] = field(default_factory=dict)
    capped: frozenset[tuple[ZoneId, str, int]] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "free", _frozen(self.free))
        object.__setattr__(self, "blocks", _frozen({k: _frozen(v) for k, v in self.blocks.items()}))
        object.__setattr__(
            self, "mixed_blocks", _frozen({k: _frozen(v) for k, v in self.mixed_blocks.items()})
        )

    def free_by_type(self, migratetype: str) -> tuple[int, ...]:
        """Free blocks per order on one migrate type's lists, summed over zones and nodes."""
        if migratetype not in self.migratetypes:
            raise HarnessError(
                f"no migrate type {migratetype} in /proc/pagetypeinfo: "
                f"it has {', '.join(self.migratetypes)}"
            )
        rows = {key: counts for key, counts in self.free.items() if key[1] == migratetype}
        for zone_id, mtype, order in self.capped:
            if mtype == migratetype:
                raise CappedCount(
                    f"/proc/pagetypeinfo prints {zone_id} {mtype} order {order} only as a lower "
                    f"bound (>{rows[(zone_id, mtype)][order]}); use /proc/buddyinfo for totals"
                )
        orders = len(next(iter(self.free.values())))
        return tuple(sum(counts[order] for counts in rows.values()) for order in range(orders))

    def blocks_by_type(self) -> dict[str, int]:
        """Pageblocks per migrate type, summed over zones and nodes."""
        totals = dict.fromkeys(self.migratetypes, 0)
        for counts in self.blocks.values():
            for mtype, count in counts.items():
                totals[mtype] += count
        return totals

def parse_pagetypeinfo(text: str) -> PageTypeInfo:
    """Parse /proc/pagetypeinfo, one set of sections per NUMA node with memory."""
    name = "pagetypeinfo"
    pageblock_order: int | None = None
    pages_per_block: int | None = None
    orders: int | None = None
    migratetypes: list[str] = []
    free: dict[tuple[ZoneId, str], tuple[int, ...]] = {}
    capped: set[tuple[ZoneId, str, int]] = set()
    tables: dict[str, dict[ZoneId, dict[str, int]]] = {"blocks": {}, "mixed blocks": {}}
    table_types: list[str] = []
    section = ""

    def same(previous: int | None, value: int, lineno: int, line: str) -> int:
        if previous is not None and previous != value:
            raise ProcfsFormatError(name, lineno, line, f"{previous} as for the node before")
        return value

    for lineno, line in _lines(text):
        if match := _PT_BLOCK_ORDER.fullmatch(line):
            pageblock_order = same(pageblock_order, int(match[1]), lineno, line)
        elif match := _PT_PER_BLOCK.fullmatch(line):
            pages_per_block = same(pages_per_block, int(match[1]), lineno, line)
        elif match := _PT_FREE_HEADER.fullmatch(line):
            numbers = [int(n) for n in match[1].split()]
            if numbers != list(range(len(numbers))):
                raise ProcfsFormatError(name, lineno, line, "orders 0, 1, 2, ... in the header")
            orders = same(orders, len(numbers), lineno, line)
            section = "free"
        elif match := _PT_TABLE_HEADER.fullmatch(line):
            section = match[1]
            table_types = match[2].split()
        elif section == "free" and (match := _PT_FREE_ROW.fullmatch(line)):
            zone_id, mtype = ZoneId(int(match[1]), match[2]), match[3]
            cells = match[4].split()
            if len(cells) != orders:
                raise ProcfsFormatError(name, lineno, line, f"{orders} counts, one per order")
            if (zone_id, mtype) in free:
                raise ProcfsFormatError(name, lineno, line, f"{zone_id} {mtype} only once")
            for order, cell in enumerate(cells):
                if cell.startswith(">"):
                    capped.add((zone_id, mtype, order))
            free[(zone_id, mtype)] = tuple(int(cell.lstrip(">")) for cell in cells)
            if mtype not in migratetypes:
                migratetypes.append(mtype)
        elif section in tables and (match := _PT_TABLE_ROW.fullmatch(line)):
            zone_id = ZoneId(int(match[1]), match[2])
            counts = [int(n) for n in match[3].split()]
            if len(counts) != len(table_types):
                raise ProcfsFormatError(
                    name, lineno, line, f"{len(table_types)} counts ({' '.join(table_types)})"
                )
            tables[section][zone_id] = dict(zip(table_types, counts, strict=True))
        else:
            expected = {
                "": "'Page block order:' or a section header",
                "free": "'Node N, zone NAME, type TYPE' and one count per order",
            }.get(section, "'Node N, zone NAME' and one count per migrate type")
            raise ProcfsFormatError(name, lineno, line, expected)
    if pageblock_order is None or pages_per_block is None:
        raise _incomplete(name, text, "'Page block order:' and 'Pages per block:'")
    if not free:
        raise _incomplete(name, text, "a 'Free pages count per migrate type' table")
    if not tables["blocks"]:
        raise _incomplete(name, text, "a 'Number of blocks type' table")
    for mtype in table_types:
        if mtype not in migratetypes:
            migratetypes.append(mtype)
    return PageTypeInfo(
        pageblock_order=pageblock_order,
        pages_per_block=pages_per_block,
        migratetypes=tuple(migratetypes),
        free=free,
        blocks=tables["blocks"],
        mixed_blocks=tables["mixed blocks"],
        capped=frozenset(capped),
    )


# --------------------------------------------------------------------------- zoneinfo

_ZI_ZONE = re.compile(r"Node\s+(\d+),\s*zone\s+([A-Za-z]\w*)\s*")
_ZI_PAGES_FREE = re.compile(r"\s*pages free\s+(\d+)\s*")
_ZI_VALUE = re.compile(r"\s*([a-z][a-z0-9_]*)\s+(\d+)\s*")
_ZI_PROTECTION = re.compile(r"\s*protection:\s*\((-?\d+(?:,\s*-?\d+)*)\)\s*")
# reserved_highatomic and free_highatomic: 7.x.
_ZI_TRAILER = re.compile(
    r"\s*(node_unreclaimable|start_pfn|node_inactive_ratio|reserved_highatomic|free_highatomic)"
    r":\s+(\d+)\s*")
_ZI_PAGESET = re.compile(r"\s*[a-z][a-z_ ]*:\s+-?\d+\s*")
_ZI_REQUIRED = ("min", "low", "high", "spanned", "present", "managed")


@dataclass(frozen=True)
class Zone:
    """One zone's key figures from /proc/zoneinfo (all in pages)."""

    id: ZoneId
    pages_free: int
    min: int  # watermarks: below min only atomic/reserve allocations succeed
    low: int  # kswapd wakes below low ...
    high: int  # ... and sleeps above high
    spanned: int  # PFN range the zone covers, holes included
    present: int  # pages that exist in that range
    managed: int  # pages the buddy allocator manages
    protection: tuple[int, ...]  # lowmem_reserve against each higher zone
    boost: int | None = None  # watermark boost (5.0+)
    cma: int | None = None  # pages of CMA areas in the zone (5.x+)
    start_pfn: int | None = None
    stats: Mapping[str, int] = field(default_factory=dict)  # nr_free_pages, nr_zone_* ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "stats", _frozen(self.stats))

    @property
    def populated(self) -> bool:
        """True when the zone has any memory (a Movable zone often has none)."""
        return self.present > 0


@dataclass(frozen=True)
class ZoneInfo:
    """/proc/zoneinfo: key figures per zone and the per-node stats."""

    zones: Mapping[ZoneId, Zone]
    node_stats: Mapping[int, Mapping[str, int]]

    def __post_init__(self) -> None:
        object.__setattr__(self, "zones", _frozen(self.zones))
        object.__setattr__(
            self, "node_stats", _frozen({k: _frozen(v) for k, v in self.node_stats.items()})
        )

    def zone(self, name: str, node: int = 0) -> Zone:
        """One zone's figures; HarnessError naming the zones there are."""
        return _zone_of(self.zones, name, node, "zoneinfo")

    def free_pages(self) -> int:
        """Free pages over all zones (buddy lists plus per-cpu lists)."""
        return sum(zone.pages_free for zone in self.zones.values())

@dataclass
class _ZoneDraft:
    """A zone while its lines are being read; becomes a frozen Zone at the next zone."""

    id: ZoneId
    lineno: int
    line: str
    values: dict[str, int] = field(default_factory=dict)
    protection: tuple[int, ...] = ()
    start_pfn: int | None = None
    mode: str = "head"  # head -> node (per-node stats) -> zone -> pagesets -> trailer

    def finish(self) -> Zone:
        absent = [key for key in ("pages free", *_ZI_REQUIRED) if key not in self.values]
        if absent:
            raise ProcfsFormatError("zoneinfo", self.lineno, self.line,
                                    f"a zone with {', '.join(absent)}")
        values = dict(self.values)
        figures = {key: values.pop(key) for key in _ZI_REQUIRED}
        return Zone(
            id=self.id,
            pages_free=values.pop("pages free"),
            **figures,
            protection=self.protection,
            boost=values.pop("boost", None),
            cma=values.pop("cma", None),
            start_pfn=self.start_pfn,
            stats=values,
        )


def parse_zoneinfo(text: str) -> ZoneInfo:
    """Parse /proc/zoneinfo from any era since 4.8."""
    name = "zoneinfo"
    zones: dict[ZoneId, Zone] = {}
    node_stats: dict[int, dict[str, int]] = {}
    draft: _ZoneDraft | None = None
    for lineno, line in _lines(text):
        if match := _ZI_ZONE.fullmatch(line):
            if draft is not None:
                zones[draft.id] = draft.finish()
            zone_id = ZoneId(int(match[1]), match[2])
            if zone_id in zones:
                raise ProcfsFormatError(name, lineno, line, f"{zone_id} only once")
            draft = _ZoneDraft(zone_id, lineno, line)
            continue
        if draft is None:
            raise ProcfsFormatError(name, lineno, line, "'Node N, zone NAME' first")
        stripped = line.strip()
        if stripped == "per-node stats" and draft.mode == "head":
            draft.mode = "node"
            node_stats.setdefault(draft.id.node, {})
        elif match := _ZI_PAGES_FREE.fullmatch(line):
            if draft.mode not in ("head", "node"):
                raise ProcfsFormatError(name, lineno, line, "'pages free' once, first in a zone")
            draft.values["pages free"] = int(match[1])
            draft.mode = "zone"
        elif match := _ZI_PROTECTION.fullmatch(line):
            draft.protection = tuple(int(n) for n in match[1].split(","))
        elif stripped == "pagesets" and draft.mode == "zone":
            draft.mode = "pagesets"
        elif match := _ZI_TRAILER.fullmatch(line):
            if match[1] == "start_pfn":
                draft.start_pfn = int(match[2])
            draft.mode = "trailer"
        elif draft.mode == "pagesets" and _ZI_PAGESET.fullmatch(line):
            continue  # per-cpu list sizes: they change every instant and prove nothing
        elif draft.mode in ("node", "zone") and (match := _ZI_VALUE.fullmatch(line)):
            target = node_stats[draft.id.node] if draft.mode == "node" else draft.values
            if match[1] in target:
                raise ProcfsFormatError(name, lineno, line, f"{match[1]} only once per zone")
            target[match[1]] = int(match[2])
        else:
            raise ProcfsFormatError(
                name, lineno, line,
                "a zoneinfo field ('name value', 'pages free N', 'protection: (...)')",
            )
    if draft is None:
        raise _incomplete(name, text, "a 'Node N, zone NAME' line")
    zones[draft.id] = draft.finish()
    return ZoneInfo(zones=zones, node_stats=node_stats)


# --------------------------------------------------------------------------- files

_FILE_HEADER = re.compile(r"^==> (.+?) <==\r?\n", re.MULTILINE)
_SEPARATOR = re.compile(r"\r?\n\Z")


def read_files_command(paths: Iterable[str]) -> str:
    """One process printing each of ``paths`` that exists after a ``==> PATH <==``
    line (``head -v``, busybox's and coreutils' alike): a TCG guest pays a few
    milliseconds a process, so reading four files costs one of them, not four."""
    quoted = " ".join(shlex.quote(path) for path in paths)
    return (f"set --; for f in {quoted}; do [ -r \"$f\" ] && set -- \"$@\" \"$f\"; done; "
            f"[ $# = 0 ] || head -v -n 1000000 \"$@\"")


def split_files(output: str) -> dict[str, str]:
    """The texts of ``read_files_command``'s output, by path (head puts a blank
    line between two files, which is not the first file's)."""
    pieces = _FILE_HEADER.split(output)
    if pieces[0].strip():
        raise ProcfsFormatError("files", 1, pieces[0].splitlines()[0],
                                "a '==> PATH <==' header (head -v)")
    texts = dict(zip(pieces[1::2], pieces[2::2], strict=True))
    return {path: _SEPARATOR.sub("", text) if index < len(texts) - 1 else text
            for index, (path, text) in enumerate(texts.items())}


# --------------------------------------------------------------------------- snapshots

@dataclass(frozen=True)
class Snapshot:
    """The four files read at one instant, parsed."""

    buddyinfo: BuddyInfo
    vmstat: Vmstat
    pagetypeinfo: PageTypeInfo
    zoneinfo: ZoneInfo

    @classmethod
    def from_texts(cls, texts: Mapping[str, str]) -> Snapshot:
        """Parse {"buddyinfo": text, "vmstat": text, ...}; all four are needed."""
        absent = [name for name in PROCFS_FILES if name not in texts]
        if absent:
            raise HarnessError(f"snapshot lacks /proc/{', /proc/'.join(absent)}")
        return cls(
            buddyinfo=parse_buddyinfo(texts["buddyinfo"]),
            vmstat=parse_vmstat(texts["vmstat"]),
            pagetypeinfo=parse_pagetypeinfo(texts["pagetypeinfo"]),
            zoneinfo=parse_zoneinfo(texts["zoneinfo"]),
        )

def snapshot_command() -> str:
    """One command, one process, printing all four files (read_files_command): the
    files close in time, and one round trip on a slow console."""
    return read_files_command(f"/proc/{name}" for name in PROCFS_FILES)


def parse_snapshot(output: str) -> Snapshot:
    """Parse what ``snapshot_command()`` printed on the guest."""
    return Snapshot.from_texts({path.removeprefix("/proc/"): text
                                for path, text in split_files(output).items()})


# --------------------------------------------------------------------------- indices

# mm/vmstat.c (CONFIG_DEBUG_FS and CONFIG_COMPACTION, 2.6.35 on, the same format
# from 4.8 to 7.2): one line per populated zone, one value per order, printed as
# "%d.%03d" of a value in thousandths.
EXTFRAG_DIR = "/sys/kernel/debug/extfrag"
UNUSABLE_INDEX = f"{EXTFRAG_DIR}/unusable_index"
EXTFRAG_INDEX = f"{EXTFRAG_DIR}/extfrag_index"
_INDEX_LINE = re.compile(r"Node\s+(\d+),\s*zone\s+([A-Za-z]\w*)((?:\s+-?\d+\.\d{3})+)\s*")


@dataclass(frozen=True)
class FragIndex:
    """One of the kernel's fragmentation indices, per zone and order.

    ``unusable_index``: the share of a zone's free memory that sits in blocks
    too small for an allocation of that order (0: all of it is usable, 1: none).
    ``extfrag_index``: why an allocation of that order would fail, -1 when it
    would not (a free block is there), towards 0 when memory is short, towards 1
    when the free memory is there but fragmented: what compaction can fix (the
    allocator compacts for a costly order only above ``vm.extfrag_threshold``,
    500 by default). Values are exact thousandths, as the kernel computes them.
    """

    per_zone: Mapping[ZoneId, tuple[float, ...]]

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_zone", _frozen(self.per_zone))

    def zone(self, name: str, node: int = 0) -> tuple[float, ...]:
        """The values of one zone by order, or a HarnessError naming the zones there are."""
        try:
            return self.per_zone[ZoneId(node, name)]
        except KeyError:
            raise HarnessError(f"no zone {name!r} on node {node} in the index (zones: "
                               f"{', '.join(map(str, self.per_zone))})") from None

    def as_dict(self) -> dict[str, list[float]]:
        """JSON form: "node0/DMA32" -> the values by order."""
        return {str(zone): list(values) for zone, values in self.per_zone.items()}


def parse_frag_index(text: str, file: str = UNUSABLE_INDEX) -> FragIndex:
    """Parse ``unusable_index`` or ``extfrag_index`` (``file`` names it in errors)."""
    per_zone: dict[ZoneId, tuple[float, ...]] = {}
    width: int | None = None
    for lineno, line in _lines(text):
        match = _INDEX_LINE.fullmatch(line)
        if match is None:
            raise ProcfsFormatError(file, lineno, line, "'Node N, zone NAME' and one "
                                                        "d.ddd value per order")
        values = tuple(float(value) for value in match[3].split())
        if width is not None and len(values) != width:
            raise ProcfsFormatError(file, lineno, line, f"{width} orders, as the lines before")
        width = len(values)
        zone = ZoneId(int(match[1]), match[2])
        if zone in per_zone:
            raise ProcfsFormatError(file, lineno, line, f"{zone} only once")
        per_zone[zone] = values
    if not per_zone:
        raise _incomplete(file, text, "a 'Node N, zone NAME' line")
    return FragIndex(per_zone)


@dataclass(frozen=True)
class FragIndices:
    """Both indices read at one instant."""

    unusable: FragIndex
    extfrag: FragIndex

    def as_dict(self) -> dict[str, dict[str, list[float]]]:
        """JSON form: {"unusable_index": {zone: [...]}, "extfrag_index": {...}}."""
        return {"unusable_index": self.unusable.as_dict(),
                "extfrag_index": self.extfrag.as_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, list[float]]]) -> FragIndices:
        """The inverse of ``as_dict`` (zones written as "node0/DMA32")."""
        def index(values: Mapping[str, list[float]]) -> FragIndex:
            per_zone = {}
            for key, by_order in values.items():
                node, _, zone = key.partition("/")
                per_zone[ZoneId(int(node.removeprefix("node")), zone)] = tuple(by_order)
            return FragIndex(per_zone)

        return cls(unusable=index(data["unusable_index"]), extfrag=index(data["extfrag_index"]))


# Prints nothing where the kernel has no such files (no CONFIG_DEBUG_FS or no
# CONFIG_COMPACTION, or debugfs not mounted, as on many boards).
FRAG_INDICES_COMMAND = read_files_command((UNUSABLE_INDEX, EXTFRAG_INDEX))


def parse_frag_indices(output: str) -> FragIndices | None:
    """Parse what ``FRAG_INDICES_COMMAND`` printed; None when the kernel has no indices."""
    return frag_indices_from(split_files(output))


def frag_indices_from(files: Mapping[str, str]) -> FragIndices | None:
    """The indices from ``files`` (path -> text, as split_files gives them); None when
    neither file is there (a kernel without them)."""
    present = [path for path in (UNUSABLE_INDEX, EXTFRAG_INDEX) if path in files]
    if not present:
        return None
    if len(present) == 1:
        raise HarnessError(f"the fragmentation indices' output has only {present[0]}, "
                           "expected unusable_index and extfrag_index")
    return FragIndices(unusable=parse_frag_index(files[UNUSABLE_INDEX], UNUSABLE_INDEX),
                       extfrag=parse_frag_index(files[EXTFRAG_INDEX], EXTFRAG_INDEX))


# The page size comes from the auxiliary vector the kernel hands every process
# (AT_PAGESZ, include/uapi/linux/auxvec.h): what getconf PAGESIZE and
# sysconf(_SC_PAGESIZE) read. /proc/PID/auxv is there in every era and
# configuration, and od is in busybox and coreutils alike, whereas Debian's
# busybox has no getconf and /proc/PID/smaps (KernelPageSize) needs
# CONFIG_PROC_PAGE_MONITOR, which a board's kernel may lack.
_AT_PAGESZ = 6
PAGE_SIZE_COMMAND = "od -An -tu8 -v /proc/self/auxv"


def parse_page_size(text: str) -> int:
    """The page size in bytes from ``PAGE_SIZE_COMMAND``'s output: the auxiliary
    vector as (type, value) pairs of 64-bit words, native-endian (x86_64, arm64)."""
    words: list[int] = []
    for lineno, line in _lines(text):
        if not all(word.isdigit() for word in line.split()):
            raise ProcfsFormatError("auxv", lineno, line, "unsigned 64-bit words (od -tu8)")
        words += (int(word) for word in line.split())
    pairs = dict(zip(words[::2], words[1::2], strict=False))
    size = pairs.get(_AT_PAGESZ)
    if size is None or size < 4096 or size & (size - 1):
        raise _incomplete("auxv", text, f"an AT_PAGESZ entry that is a power of two "
                                        f">= 4096 (found {size})")
    return size
