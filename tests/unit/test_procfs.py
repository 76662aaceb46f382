"""procfs parsers on text recorded from real kernels, and on malformed text.

tests/data/procfs/<release>-<arch>/<file>.<phase>.txt was recorded from guests
(see tests/data/procfs/README.md): phase ``boot`` right after boot, ``before``
after fragmenting memory with movable pages, ``after`` after
``echo 1 > /proc/sys/vm/compact_memory``; ``host`` is a host kernel's snapshot.
Every recorded snapshot is parsed and cross-checked between files (the four
files describe the same zones, so their numbers must agree), and the compaction
effect is asserted on every before/after pair.
"""

from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from harness import procfs
from harness.check.sample import VMSTAT_KEYS
from harness.errors import HarnessError
from harness.procfs import (
    PROCFS_FILES,
    CappedCount,
    ProcfsFormatError,
    Snapshot,
    ZoneId,
    parse_buddyinfo,
    parse_pagetypeinfo,
    parse_snapshot,
    parse_vmstat,
    parse_zoneinfo,
    snapshot_command,
    split_files,
    vmstat_delta,
)
from harness.report.model import COSTLY_ORDER

DATA = Path(__file__).resolve().parent.parent / "data" / "procfs"
RECORDED = sorted(path for path in DATA.iterdir()  # snapshots, not indices alone
                  if path.is_dir() and path.name != "malformed" and any(path.glob("buddyinfo.*")))


def phases(directory: Path) -> list[str]:
    return sorted({path.name.split(".")[1] for path in directory.glob("buddyinfo.*.txt")})


SNAPSHOTS = [(d, phase) for d in RECORDED for phase in phases(d)]
COMPACTIONS = [d for d in RECORDED if {"before", "after"} <= set(phases(d))]


def texts(directory: Path, phase: str) -> dict[str, str]:
    return {name: (directory / f"{name}.{phase}.txt").read_text() for name in PROCFS_FILES}


def load(directory: Path, phase: str) -> Snapshot:
    return Snapshot.from_texts(texts(directory, phase))


def ids(value: object) -> str:
    return value.name if isinstance(value, Path) else str(value)


def recorded_page_size(directory: Path) -> int:
    """The recorded guest's page size; the recordings made before the auxiliary
    vector was recorded too are of 4 KiB guests (x86_64, arm64's default)."""
    auxv = directory / "auxv.boot.txt"
    return procfs.parse_page_size(auxv.read_text()) if auxv.exists() else 4096


def test_recordings_cover_both_arches_and_the_oldest_kernel() -> None:
    names = [d.name for d in RECORDED]
    for arch in ("x86_64", "arm64"):
        assert any(name.startswith("4.8.") and name.endswith(f"-{arch}") for name in names), names
    assert all({"boot", "before", "after"} <= set(phases(d)) or phases(d) == ["host"]
               for d in RECORDED)


# ----------------------------------------------------------------------------- real text

@pytest.mark.parametrize("directory,phase", SNAPSHOTS, ids=ids)
def test_recorded_snapshot_parses_and_files_agree(directory: Path, phase: str) -> None:
    snapshot = load(directory, phase)
    buddy, pagetype, zoneinfo = snapshot.buddyinfo, snapshot.pagetypeinfo, snapshot.zoneinfo
    populated = {zone_id for zone_id, zone in zoneinfo.zones.items() if zone.populated}
    # buddyinfo lists exactly the populated zones; pagetypeinfo has them per migrate type.
    assert set(buddy.zones) == populated
    assert {zone_id for zone_id, _ in pagetype.free} == populated
    assert set(pagetype.blocks) == populated
    assert {"Unmovable", "Movable", "Reclaimable"} <= set(pagetype.migratetypes)
    assert buddy.orders >= 11 and len(next(iter(pagetype.free.values()))) == buddy.orders
    assert pagetype.pages_per_block == 1 << pagetype.pageblock_order
    for zone_id in populated:
        zone = zoneinfo.zones[zone_id]
        assert zone.min <= zone.low <= zone.high
        assert zone.managed <= zone.present <= zone.spanned
        # every valid pageblock of the zone has a type: together they hold every
        # managed page and lie inside the span (holes are not counted)
        covered = sum(pagetype.blocks[zone_id].values()) * pagetype.pages_per_block
        assert zone.managed <= covered <= zone.spanned + pagetype.pages_per_block
        # free pages: the buddy lists hold at most what the zone counts free
        # (the rest sits on per-cpu lists)
        assert buddy.free_pages([zone_id.zone]) <= zone.pages_free + zone.managed // 50
    assert snapshot.vmstat["nr_free_pages"] == pytest.approx(zoneinfo.free_pages(), rel=0.02)
    assert snapshot.vmstat.missing(VMSTAT_KEYS) == ()
    assert zoneinfo.node_stats[0]["nr_inactive_anon"] >= 0


@pytest.mark.parametrize("directory", COMPACTIONS, ids=ids)
def test_recorded_compaction_merges_free_blocks(directory: Path) -> None:
    """What `echo 1 > compact_memory` did on a guest fragmented with movable pages."""
    before, after = load(directory, "before"), load(directory, "after")
    vmstat = vmstat_delta(before.vmstat, after.vmstat, VMSTAT_KEYS)
    assert vmstat["pgmigrate_success"] > 0
    assert vmstat["compact_migrate_scanned"] > 0
    assert vmstat["compact_isolated"] > 0
    # a manual compaction is not allocation-driven: these stay flat
    assert vmstat["compact_stall"] == vmstat["compact_fail"] == 0
    assert vmstat["compact_success"] == 0

    def change(earlier: tuple[int, ...], later: tuple[int, ...]) -> list[int]:
        return [b - a for a, b in zip(earlier, later, strict=True)]

    assert sum(change(before.buddyinfo.per_order(), after.buddyinfo.per_order())[:4]) < 0
    # small fragments merged away into large free blocks: 2 MiB and more with 4 KiB
    # pages; the 16 KiB guest's holes (every other page of its files) merged into
    # blocks of 256 KiB to 1 MiB
    large = 9 if recorded_page_size(directory) == 4096 else COSTLY_ORDER + 1
    assert after.buddyinfo.blocks_at_least(large) > before.buddyinfo.blocks_at_least(large)
    movable_change = change(before.pagetypeinfo.free_by_type("Movable"),
                            after.pagetypeinfo.free_by_type("Movable"))
    assert movable_change[0] < 0 and sum(movable_change[large:]) > 0
    # blocks only change type
    assert (sum(before.pagetypeinfo.blocks_by_type().values())
            == sum(after.pagetypeinfo.blocks_by_type().values()))


def test_recorded_4_8_x86_64_numbers_are_read_exactly() -> None:
    directory = DATA / "4.8.15-x86_64"
    before = load(directory, "before")
    dma32 = before.buddyinfo.zone("DMA32")
    text = (directory / "buddyinfo.before.txt").read_text().split()
    assert list(dma32) == [int(n) for n in text[4:]]
    assert before.pagetypeinfo.migratetypes == ("Unmovable", "Movable", "Reclaimable",
                                                "HighAtomic")
    zone = before.zoneinfo.zone("DMA32")
    assert zone.boost is None and zone.cma is None  # fields of later eras
    assert "node_scanned" in zone.stats  # a 4.8-only field
    assert zone.start_pfn == 1 and zone.protection == (0, 0, 0)


def test_recorded_4_8_arm64_has_one_dma_zone_above_1_gib() -> None:
    zoneinfo = load(DATA / "4.8.15-arm64", "boot").zoneinfo
    assert list(zoneinfo.zones) == [ZoneId(0, "DMA")]  # arm64 4.8: ZONE_DMA spans 4 GiB
    assert zoneinfo.zone("DMA").start_pfn == (1 << 30) // 4096  # QEMU virt RAM base


def test_counters_of_later_eras_are_absent_not_zero_on_4_8() -> None:
    """compact_daemon_migrate_scanned arrived after 4.8: asking for it must not read 0."""
    later = ["compact_daemon_migrate_scanned"]
    old = load(DATA / "4.8.15-x86_64", "before").vmstat
    assert old.missing(later) == tuple(later)
    with pytest.raises(HarnessError, match="no compact_daemon_migrate_scanned"):
        vmstat_delta(old, load(DATA / "4.8.15-x86_64", "after").vmstat, later)
    newer = [d for d in RECORDED if not d.name.startswith("4.8.")]
    assert newer and all(load(d, phases(d)[0]).vmstat.missing(later) == () for d in newer)


def test_line_endings_of_a_serial_console_are_accepted() -> None:
    directory, phase = SNAPSHOTS[0]
    plain = texts(directory, phase)
    crlf = {name: text.replace("\n", "\r\n") for name, text in plain.items()}
    assert Snapshot.from_texts(crlf) == Snapshot.from_texts(plain)


def test_snapshot_command_output_round_trips() -> None:
    """What head -v prints (a blank line between files), also with CRLF line ends."""
    directory, phase = SNAPSHOTS[0]
    recorded = texts(directory, phase)
    command = snapshot_command()
    assert all(f"/proc/{name}" in command for name in PROCFS_FILES)
    for newline in ("\n", "\r\n"):
        output = newline.join(f"==> /proc/{name} <=={newline}"
                              + recorded[name].replace("\n", newline) for name in PROCFS_FILES)
        assert split_files(output) == {f"/proc/{name}": recorded[name].replace("\n", newline)
                                       for name in PROCFS_FILES}
        assert parse_snapshot(output) == load(directory, phase)


def test_parsed_records_are_read_only() -> None:
    snapshot = load(*SNAPSHOTS[0])
    with pytest.raises(FrozenInstanceError):
        snapshot.buddyinfo.zones = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        snapshot.vmstat.counters["pgmigrate_success"] = 0  # type: ignore[index]


# ----------------------------------------------------------------------------- eras and helpers

BUDDY_4_ZONES = """\
Node 0, zone      DMA      1      1      1      0      2      1      1      0      1      1      3
Node 0, zone    DMA32      6      5      4      6      6      4      3      4      3      3    733
Node 0, zone   Normal    100     10      5      1      0      0      0      0      0      0      0
Node 1, zone   Normal     50      0      1      0      0      0      0      0      0      0      1
"""


def test_buddyinfo_views_over_zones_and_nodes() -> None:
    buddy = parse_buddyinfo(BUDDY_4_ZONES)
    assert buddy.orders == 11
    assert buddy.zone("Normal", node=1)[0] == 50
    assert buddy.per_order()[0] == 157
    assert buddy.per_order(["Normal"])[:3] == (150, 10, 6)
    assert buddy.blocks_at_least(10) == 3 + 733 + 1
    assert buddy.free_pages(["Normal"]) == 150 + 20 + 24 + 8 + 1024
    with pytest.raises(HarnessError, match="no zone Movable on node 0.*node0/DMA32"):
        buddy.zone("Movable")


def test_buddyinfo_with_64k_pages_has_fewer_orders() -> None:
    # arm64 with 64 KiB pages: MAX_ORDER 14, also other counts of orders parse
    line = "Node 0, zone   Normal " + " ".join(["2"] * 14)
    assert parse_buddyinfo(line).orders == 14


def test_vmstat_delta_reports_absent_counters_instead_of_zero() -> None:
    before = parse_vmstat("nr_free_pages 100\npgmigrate_success 5\n")
    after = parse_vmstat("nr_free_pages 90\npgmigrate_success 12\n")
    assert vmstat_delta(before, after) == {"nr_free_pages": -10, "pgmigrate_success": 7}
    assert vmstat_delta(before, after, ["pgmigrate_success"]) == {"pgmigrate_success": 7}
    with pytest.raises(HarnessError, match="no compact_isolated.*CONFIG_VM_EVENT_COUNTERS"):
        vmstat_delta(before, after, ["pgmigrate_success", "compact_isolated"])


def real_pagetypeinfo() -> str:
    return (DATA / "4.8.15-x86_64" / "pagetypeinfo.before.txt").read_text()


def test_pagetypeinfo_repeats_per_numa_node() -> None:
    node0 = real_pagetypeinfo()
    node1 = node0.replace("Node    0,", "Node    1,").replace("Node 0,", "Node 1,")
    info = parse_pagetypeinfo(node0 + node1)
    assert {zone.node for zone, _ in info.free} == {0, 1}
    single = parse_pagetypeinfo(node0)
    assert info.free_by_type("Movable") == tuple(2 * n for n in single.free_by_type("Movable"))
    assert info.blocks_by_type()["Movable"] == 2 * single.blocks_by_type()["Movable"]


def test_pagetypeinfo_capped_counts_are_never_summed_as_exact() -> None:
    # Since 5.5 a free list longer than 100000 entries prints as ">100000".
    text = real_pagetypeinfo()
    movable_row = next(line for line in text.splitlines() if "type      Movable" in line)
    cells = movable_row.split()
    capped_row = movable_row.replace(f" {cells[6]} ", " >100000 ", 1)
    info = parse_pagetypeinfo(text.replace(movable_row, capped_row))
    zone = ZoneId(0, "DMA32")
    assert info.capped == {(zone, "Movable", 0)}
    assert info.free[(zone, "Movable")][0] == 100000
    with pytest.raises(CappedCount, match="lower bound"):
        info.free_by_type("Movable")
    assert info.free_by_type("Unmovable") == parse_pagetypeinfo(text).free_by_type("Unmovable")


def test_pagetypeinfo_mixed_blocks_table_of_page_owner_kernels() -> None:
    """CONFIG_PAGE_OWNER adds "Number of mixed blocks" (no "type" in its header)."""
    text = (DATA / "5.10.223-x86_64" / "pagetypeinfo.page_owner.txt").read_text()
    info = parse_pagetypeinfo(text)
    zone = ZoneId(0, "DMA32")
    assert info.blocks[zone] == {"Unmovable": 2, "Movable": 62, "Reclaimable": 0,
                                 "HighAtomic": 0}
    assert info.mixed_blocks[zone] == dict.fromkeys(info.blocks[zone], 0)


def test_zoneinfo_of_an_unpopulated_zone_on_newer_kernels() -> None:
    text = """\
Node 0, zone  Movable
  pages free     0
        boost    0
        min      32
        low      32
        high     32
        spanned  0
        present  0
        managed  0
        cma      0
        protection: (0, 0, 0, 0)
"""
    zone = parse_zoneinfo(text).zone("Movable")
    assert not zone.populated and zone.boost == 0 and zone.stats == {}


# ----------------------------------------------------------------------------- malformed text

BUDDY = "Node 0, zone    DMA32  7  4  7  3  6  7  5  5  5  4  56\n"


def real_zoneinfo() -> str:
    return (DATA / "4.8.15-x86_64" / "zoneinfo.before.txt").read_text()


def drop_last_cell(text: str, lineno: int) -> str:
    """The text with one count missing at the end of line ``lineno``."""
    lines = text.splitlines()
    lines[lineno - 1] = lines[lineno - 1].rstrip().rsplit(" ", 1)[0]
    return "\n".join(lines) + "\n"


MALFORMED = [
    ("buddyinfo", parse_buddyinfo, "", 1),
    ("buddyinfo", parse_buddyinfo, "Node 0, zone DMA32 1 2 x 4\n", 1),
    ("buddyinfo", parse_buddyinfo, BUDDY + "Node 0, zone Normal 1 2 3\n", 2),
    ("buddyinfo", parse_buddyinfo, BUDDY + BUDDY, 2),
    ("buddyinfo", parse_buddyinfo, BUDDY.replace("DMA32", "DMA32,"), 1),
    ("buddyinfo", parse_buddyinfo, "Node 0, zone DMA32 -1 2\n", 1),
    ("vmstat", parse_vmstat, "nr_free_pages\n", 1),
    ("vmstat", parse_vmstat, "nr_free_pages 1\nnr_free_pages 2\n", 2),
    ("vmstat", parse_vmstat, "nr_free_pages 12abc\n", 1),
    ("vmstat", parse_vmstat,
     (DATA / "malformed" / "vmstat.console-interleaved.txt").read_text(), 23),
    ("pagetypeinfo", parse_pagetypeinfo, "Node 0, zone DMA32 1 2\n", 1),
    ("pagetypeinfo", parse_pagetypeinfo, real_pagetypeinfo().split("Number of blocks")[0], 9),
    ("pagetypeinfo", parse_pagetypeinfo,
     real_pagetypeinfo().replace("Page block order: 10", "Page block order: ten"), 1),
    ("pagetypeinfo", parse_pagetypeinfo, drop_last_cell(real_pagetypeinfo(), 5), 5),
    ("pagetypeinfo", parse_pagetypeinfo, drop_last_cell(real_pagetypeinfo(), 11), 11),
    ("zoneinfo", parse_zoneinfo, "  pages free     3840\n", 1),
    ("zoneinfo", parse_zoneinfo, real_zoneinfo().replace("        managed", "        manage"),
     None),
    ("zoneinfo", parse_zoneinfo,
     "\n".join(line for line in real_zoneinfo().splitlines() if "managed" not in line), 1),
    ("zoneinfo", parse_zoneinfo, real_zoneinfo().replace("nr_free_pages", "nr free pages"),
     None),
    ("zoneinfo", parse_zoneinfo, real_zoneinfo() + "garbage\n", None),
]


@pytest.mark.parametrize("name,parser,text,lineno", MALFORMED,
                         ids=[f"{case[0]}-{n}" for n, case in enumerate(MALFORMED)])
def test_malformed_text_is_a_one_line_error_naming_file_and_line(
    name: str, parser: object, text: str, lineno: int | None
) -> None:
    with pytest.raises(ProcfsFormatError) as caught:
        parser(text)  # type: ignore[operator]
    error = caught.value
    message = str(error)
    assert "\n" not in message
    assert f"/proc/{name} line" in message and error.file == name
    if lineno is not None:
        assert error.lineno == lineno, message
    assert isinstance(error, HarnessError)


def test_kernel_message_inside_a_dump_is_caught_not_misread() -> None:
    text = (DATA / "malformed" / "vmstat.console-interleaved.txt").read_text()
    with pytest.raises(ProcfsFormatError, match=r"workingset_refault 0\[ +1\.\d+\] random"):
        parse_vmstat(text)


def test_snapshot_needs_every_file_and_markers() -> None:
    with pytest.raises(HarnessError, match="lacks /proc/pagetypeinfo, /proc/zoneinfo"):
        Snapshot.from_texts({"buddyinfo": BUDDY, "vmstat": "a 1\n"})
    with pytest.raises(ProcfsFormatError, match="/proc/files line 1"):
        split_files("sh: head: not found\n==> /proc/buddyinfo <==\n" + BUDDY)


def test_module_is_pure() -> None:
    source = Path(procfs.__file__).read_text()
    for io in ("open(", "subprocess", "read_text", "Path("):
        assert io not in source
