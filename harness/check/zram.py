"""The zram/zsmalloc scenario: zsmalloc's pages migrate under compaction, data intact.

zram keeps every page written to it compressed in a zsmalloc pool. zsmalloc
packs the objects into zspages of 1 to 4 pages and registers those pages as
non-LRU movable pages (the API of Linux 4.8's commit bda807d444 was written
for it): compaction can isolate them and zsmalloc's migratepage callback moves
a page and fixes every object handle that points into it.

The experiment, and why each step is there:

1. Reset zram0, pick ``lzo`` where offered (the same compressor in every era,
   so zsmalloc's size classes compare), set ``disksize`` to the data size.
2. Fill the bulk chunks with ``dd if=/dev/urandom | tr '\\000-\\277' '\\000'``:
   three bytes in four become zero, the rest stay random, so LZO stores each
   page in about half a page. Pure random data would be stored uncompressed
   (one page per object) and zeros not at all; this lands in mid-size classes
   whose zspages span several pages. ``tee`` writes the stream to /dev/zram0
   while the guest records the sha256 of every chunk of it.
   Then one more chunk, the fine chunk, of pages the host can rebuild: page
   i (of the guest's page size) is ``%08d`` i, a 2040-character random base64
   string R (read back by the host) and spaces to the end of the page, about
   2 KiB compressed: half a 4 KiB page, an eighth of a 16 KiB one.
3. Free part of it with ``blkdiscard`` (zram frees the objects: zs_free):
   every other bulk chunk, so whole zspages go back to the buddy allocator and
   leave holes between the zspages that stay (what compaction can fix; dropping
   the page cache the writes went through leaves more holes; the page cache
   only, since dropping slab objects too runs zsmalloc's shrinker, which
   compacts the pool on its own); and every other
   page of the fine chunk, so its zspages stay allocated half empty (what
   zram's own compaction can fix). Freeing single pages costs one process
   each, which is why only one chunk is freed that finely.
4. Find the zspages' PFNs (harness.check.in_tree: first pages by kpageflags),
   read zram's ``mm_stat`` and zsmalloc's debugfs ``classes``, buddyinfo and
   vmstat; ``echo 1 > /proc/sys/vm/compact_memory``; read them all again.
5. zram's own ``compact`` (zs_compact moves *objects* between zspages of a
   class and frees the emptied zspages): counted separately, as mm_stat's
   ``pages_compacted``; it is zsmalloc's housekeeping, not the movable page API.
6. Read the whole device back: kept bulk chunks must have their recorded
   sha256, discarded ones must read as zeros, the fine chunk must hash as the
   host rebuilds it with its odd pages zero. Reset zram0 whatever happened.

The verdict rule (``judge_zram``; README "In-tree users"):

  1. zsmalloc pages moved: zspage first pages that left their PFN > 0;
  2. those pages are zsmalloc's: the first pages found equal the zspages
     zsmalloc counts in debugfs, before and after compaction;
  3. migration moved pages and freed none: zsmalloc's zspage count and
     zram's mem_used_total are the same after compact_memory as before;
  4. the kernel counted the migrations: pgmigrate_success rose by at least
     the pages that moved;
  5. the data survived: no chunk read back differs (the read-back always has
     every chunk: the hasher prints one sum per chunk, a short read hashes as a
     changed chunk, and a missing sum is a harness error);
  6. no kernel report: one ends the experiment NOT PROVEN (harness.check.reported),
     with what was measured before it.
"""

import hashlib
import re
from dataclasses import dataclass

from harness.artifacts import KernelBuild
from harness.check.evidence import Verdict
from harness.check.in_tree import (
    COMPACTION_NEEDS,
    ZSPAGE_FIRST_PAGE,
    ConfigNeed,
    compact_and_track,
    in_tree_result,
    measured,
)
from harness.check.sample import VMSTAT_KEYS
from harness.check.scenario import Evidence, Needs
from harness.check.steps import (
    free_bytes_after_dropping_caches,
    must,
    preflight,
    quiet_background_compaction,
    undone,
)
from harness.guest import Guest, GuestError
from harness.report.in_tree import InTreeResult, TrackedPages

SCENARIO = "zram"
FRAGMENTS = ("zram",)
VIRTIO_DEVICES: tuple[str, ...] = ()
CONFIG_NEEDS = (
    ConfigNeed("ZRAM", "zram", "the zram block device"),
    ConfigNeed("ZSMALLOC", "zram", "zsmalloc, zram's allocator"),
    ConfigNeed("ZSMALLOC_STAT", "zram", "zsmalloc's per-class counts in debugfs"),
    ConfigNeed("PROC_PAGE_MONITOR", "zram", "/proc/kpageflags to find zsmalloc's PFNs"),
    *COMPACTION_NEEDS,
)
# mm_stat columns in order; 4.8 has the first seven (the sixth was called
# zero_pages before 4.13), 5.x adds huge_pages, 6.x huge_pages_since.
MM_STAT_FIELDS = ("orig_data_size", "compr_data_size", "mem_used_total", "mem_limit",
                  "mem_used_max", "same_pages", "pages_compacted", "huge_pages",
                  "huge_pages_since")
_SECTION = "@@harness-zram@@"
_SHA256_LINE = re.compile(r"^([0-9a-f]{64})\s+-$")
_HASH_BLOCK = 65536
_FINE_RANDOM_BYTES = 1530  # base64 of 1530 bytes is 2040 characters, no padding
_FINE_RANDOM_CHARS = 2040
_FINE_HEAD = 8 + _FINE_RANDOM_CHARS  # a fine-chunk page's index and random string


@dataclass(frozen=True)
class ZramSettings:
    """How much data the scenario writes, and how it frees part of it."""

    data_share: float = 0.3  # data written, as a share of MemFree
    max_data_mib: int = 64  # cap: every MiB is hashed twice in the guest (~3 MB/s under TCG)
    chunk_mib: int = 1  # unit of hashing and discarding: every other chunk is discarded
    device: str = "zram0"
    compressor: str = "lzo"  # used when the kernel offers it, else the kernel's default

    def data_mib(self, free_bytes: int) -> int:
        """Bulk data for a guest with ``free_bytes`` free: whole pairs of chunks
        (the fine chunk comes on top)."""
        wanted = min(self.max_data_mib, int(free_bytes * self.data_share) >> 20)
        pair = 2 * self.chunk_mib
        if wanted < pair:
            raise GuestError(f"only {free_bytes >> 20} MiB free: the zram scenario "
                             f"needs room for {pair} MiB of data (give the guest more memory)")
        return wanted - wanted % pair


@dataclass(frozen=True)
class ZsClasses:
    """Totals of zsmalloc's debugfs ``classes`` file."""

    zspages: int  # sum over classes of pages_used / pages_per_zspage
    pages_used: int
    objects_allocated: int
    objects_used: int


def parse_classes(text: str) -> ZsClasses:
    """Parse /sys/kernel/debug/zsmalloc/<pool>/classes (same columns 4.8 to 6.x)."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0][:2] != ["class", "size"]:
        raise GuestError(f"unexpected zsmalloc classes header: {text[:120]!r}")
    header = lines[0]
    try:
        used = header.index("pages_used")
        per = header.index("pages_per_zspage")
        allocated = header.index("obj_allocated")
        in_use = header.index("obj_used")
    except ValueError as error:
        raise GuestError(f"zsmalloc classes lacks a column ({error})") from None
    zspages = pages = objects = objects_in_use = 0
    for row in lines[1:]:
        if row[0] == "Total":
            continue
        if len(row) != len(header) or not all(word.isdigit() for word in row):
            raise GuestError(f"unexpected zsmalloc classes line: {' '.join(row)!r}")
        values = [int(word) for word in row]
        zspages += values[used] // values[per]
        pages += values[used]
        objects += values[allocated]
        objects_in_use += values[in_use]
    return ZsClasses(zspages=zspages, pages_used=pages, objects_allocated=objects,
                     objects_used=objects_in_use)


def parse_mm_stat(text: str) -> dict[str, int]:
    """Parse /sys/block/zramN/mm_stat into its named columns."""
    words = text.split()
    if len(words) < 7 or not all(word.lstrip("-").isdigit() for word in words):
        raise GuestError(f"unexpected zram mm_stat: {text.strip()!r}")
    return {name: int(word) for name, word in zip(MM_STAT_FIELDS, words, strict=False)}


def parse_chunk_sums(text: str, chunks: int) -> list[str]:
    """The sha256 lines the guest's chunk hasher printed, exactly ``chunks`` of them."""
    sums = []
    for line in text.splitlines():
        if match := _SHA256_LINE.match(line.strip()):
            sums.append(match[1])
        elif line.strip():
            raise GuestError(f"unexpected line from the chunk hasher: {line.strip()!r}")
    if len(sums) != chunks:
        raise GuestError(f"the guest hashed {len(sums)} chunks, expected {chunks}: "
                         "the data stream ended early")
    return sums


def zero_chunk_sha256(chunk_bytes: int) -> str:
    """What a discarded chunk must hash to: zram reads a freed page as zeros."""
    return hashlib.sha256(bytes(chunk_bytes)).hexdigest()


def fine_page_format(page_size: int) -> str:
    """printf format of one fine-chunk page of ``page_size`` bytes: its index, the
    shared random string, spaces to the end of the page."""
    return f"%08d%s%{page_size - _FINE_HEAD}s"


def fine_chunk_sha256(random_text: str, pages: int, page_size: int) -> str:
    """What the fine chunk of ``pages`` pages must hash to after its odd pages were
    discarded."""
    if len(random_text) != _FINE_RANDOM_CHARS:
        raise GuestError(f"the fine chunk's random string has {len(random_text)} "
                         f"characters, expected {_FINE_RANDOM_CHARS}")
    digest = hashlib.sha256()
    for index in range(pages):
        digest.update((fine_page_format(page_size) % (index, random_text, "")).encode()
                      if index % 2 == 0 else bytes(page_size))
    return digest.hexdigest()


def compare_chunks(written: list[str], read: list[str], chunk_bytes: int) -> int:
    """Mismatching chunks: even chunks were kept, odd ones discarded."""
    zero = zero_chunk_sha256(chunk_bytes)
    expected = [digest if index % 2 == 0 else zero for index, digest in enumerate(written)]
    return sum(1 for want, got in zip(expected, read, strict=True) if want != got)


@dataclass(frozen=True)
class ZramEvidence:
    """What the zram scenario measured; ``judge_zram`` turns it into a verdict."""

    tracked: TrackedPages  # zspage first pages found by PFN
    zspages_before: int  # zsmalloc's own count (debugfs) before compact_memory
    zspages_after: int
    mem_used_before: int  # mm_stat mem_used_total (bytes) before compact_memory
    mem_used_after: int
    pgmigrate_success_delta: int
    chunks: int
    chunks_checked: int
    mismatches: int


def judge_zram(evidence: ZramEvidence) -> Verdict:
    """The verdict of the zram scenario: the rules of this module's docstring that
    ``evidence`` breaks, if any."""
    failures = []
    tracked = evidence.tracked
    if tracked.moved == 0:
        failures.append("no zsmalloc page changed PFN")
    if (tracked.before, tracked.after) != (evidence.zspages_before, evidence.zspages_after):
        failures.append(f"found {tracked.before}/{tracked.after} zspage first pages before/"
                        f"after, zsmalloc counts {evidence.zspages_before}/"
                        f"{evidence.zspages_after} zspages: the PFNs are not all zsmalloc's")
    if evidence.zspages_before != evidence.zspages_after:
        failures.append(f"compact_memory changed zsmalloc's zspages from "
                        f"{evidence.zspages_before} to {evidence.zspages_after}")
    if evidence.mem_used_before != evidence.mem_used_after:
        failures.append(f"compact_memory changed zram's mem_used_total from "
                        f"{evidence.mem_used_before} to {evidence.mem_used_after} bytes")
    if evidence.pgmigrate_success_delta < tracked.moved:
        failures.append(f"pgmigrate_success rose by {evidence.pgmigrate_success_delta}, less "
                        f"than the {tracked.moved} zsmalloc pages that moved")
    if evidence.mismatches:
        failures.append(f"{evidence.mismatches} chunks read back differ from what was written")
    return Verdict.of(failures)


class Zram:
    """One zram device and its zsmalloc pool, seen through a Guest."""

    def __init__(self, guest: Guest, device: str = "zram0") -> None:
        self.guest = guest
        self.device = device
        self.sysfs = f"/sys/block/{device}"
        self.classes_path = f"/sys/kernel/debug/zsmalloc/{device}/classes"

    def preflight(self) -> None:
        """Say clearly what the running kernel lacks (a board's kernel may differ)."""
        preflight(self.guest, (
            (f"test -d {self.sysfs}", f"no {self.sysfs}: the running kernel has no zram "
                                      "(CONFIG_ZRAM; build with --config zram)"),
            ("test -r /proc/kpageflags", "no /proc/kpageflags in the running kernel "
                                         "(CONFIG_PROC_PAGE_MONITOR; --config zram sets it)"),
            ("grep -q ' debugfs ' /proc/mounts || mount -t debugfs debugfs /sys/kernel/debug",
             "cannot mount debugfs on /sys/kernel/debug"),
        ))

    def reset(self) -> None:
        """Free the device's pool and return it to the unconfigured state."""
        must(self.guest, f"echo 1 > {self.sysfs}/reset")

    def release(self) -> None:
        """Reset, for cleanup (a failing reset is not an error: the device is left as is)."""
        self.guest.run(f"echo 1 > {self.sysfs}/reset")

    def configure(self, size_bytes: int, compressor: str) -> str:
        """Set the compressor (when offered) and the size; return the compressor used."""
        offered = must(self.guest, f"cat {self.sysfs}/comp_algorithm")
        names = [word.strip("[]") for word in offered.split()]
        if compressor in names:
            must(self.guest, f"echo {compressor} > {self.sysfs}/comp_algorithm")
        chosen = compressor if compressor in names else next(
            (word.strip("[]") for word in offered.split() if word.startswith("[")), "?")
        must(self.guest, f"echo {size_bytes} > {self.sysfs}/disksize")
        return chosen

    def stats(self) -> tuple[dict[str, int], ZsClasses]:
        """mm_stat and zsmalloc's class totals, read together."""
        out = must(self.guest, f"cat {self.sysfs}/mm_stat; echo {_SECTION}; "
                               f"cat {self.classes_path}")
        mm_stat, _, classes = out.partition(_SECTION)
        return parse_mm_stat(mm_stat), parse_classes(classes)

    def compact(self) -> None:
        """zram's own compaction: zs_compact moves objects to free zspages."""
        must(self.guest, f"echo 1 > {self.sysfs}/compact", timeout=300)


def _hasher(chunks: int, chunk_bytes: int) -> str:
    """Shell that hashes ``chunks`` chunks of stdin, one sha256 line each."""
    blocks = chunk_bytes // _HASH_BLOCK
    return (f"i=0; while [ $i -lt {chunks} ]; do dd bs={_HASH_BLOCK} count={blocks} "
            f"iflag=fullblock 2>/dev/null | sha256sum; i=$((i+1)); done")


class ZramScenario:
    """The experiment of this module's docstring as a Scenario (harness.check.scenario)."""

    name = SCENARIO
    needs = Needs(fragments=FRAGMENTS, config=CONFIG_NEEDS)

    def __init__(self, settings: ZramSettings = ZramSettings()) -> None:
        self.settings = settings

    def prepare(self, kernel: KernelBuild, force: bool) -> None:
        """Nothing to build: zram and zsmalloc are the kernel's own."""

    def collect(self, guest: Guest, evidence: Evidence) -> None:
        """Run the experiment; the device is reset before and after, so a board is
        left as found."""
        _experiment(guest, self.settings, evidence)

    def judge(self, evidence: Evidence) -> InTreeResult:
        """``judge_zram`` on complete evidence; evidence cut short is not proven."""
        if "mismatches" not in evidence.facts:  # the last fact: the read-back
            return in_tree_result(evidence)
        record = measured(ZramEvidence, evidence.facts)
        verdict = judge_zram(record)
        return in_tree_result(evidence, verdict.proven, verdict.failures or (_summary(record),),
                              data_checked=record.chunks_checked,
                              data_mismatches=record.mismatches)


def _experiment(guest: Guest, settings: ZramSettings, evidence: Evidence) -> None:
    """The steps of the experiment; every fact goes into ``evidence`` when measured."""
    facts = evidence.facts
    figures: dict[str, int] = facts.setdefault("figures", {})
    facts["data_unit"] = f"{settings.chunk_mib} MiB zram chunk"
    zram = Zram(guest, settings.device)
    zram.preflight()
    evidence.notes += quiet_background_compaction(guest)
    zram.reset()
    with undone(guest, zram.release, f"resetting {settings.device}"):
        data_mib = settings.data_mib(free_bytes_after_dropping_caches(guest))
        page_size = evidence.guest_page_size()
        chunk_bytes = settings.chunk_mib << 20
        chunks = data_mib // settings.chunk_mib
        fine_offset = chunks * chunk_bytes
        size = fine_offset + chunk_bytes
        compressor = zram.configure(size, settings.compressor)
        evidence.notes.append(
            f"{data_mib} MiB written to {settings.device} ({compressor}), 3/4 of the bytes "
            f"zero, every other {settings.chunk_mib} MiB chunk discarded; one more chunk of "
            "rebuildable pages, every other page discarded")
        figures["data_mib"] = data_mib

        with evidence.phase("fill"):
            written = parse_chunk_sums(must(
                guest, f"dd if=/dev/urandom bs=1048576 count={data_mib} 2>/dev/null | "
                       f"tr '\\000-\\277' '\\000' | "
                       f"tee /dev/{settings.device} | {{ {_hasher(chunks, chunk_bytes)}; }}",
                timeout=1800), chunks)
            random_text = must(
                guest, f"R=$(head -c {_FINE_RANDOM_BYTES} /dev/urandom | base64 -w 0) && "
                       f"i=0 && while [ $i -lt {chunk_bytes // page_size} ]; do printf "
                       f"'{fine_page_format(page_size)}' $i \"$R\" ''; i=$((i+1)); done | dd "
                       f"of=/dev/{settings.device} bs={_HASH_BLOCK} seek={fine_offset} "
                       f"oflag=seek_bytes conv=notrunc 2>/dev/null && echo \"$R\"",
                timeout=600).strip()
            fine_expected = fine_chunk_sha256(random_text, chunk_bytes // page_size,
                                              page_size)
            stored, _ = zram.stats()
            if stored["orig_data_size"] != size:
                raise GuestError(f"zram stored {stored['orig_data_size']} bytes of the "
                                 f"{size} written")
        figures.update(stored_bytes=stored["orig_data_size"],
                       compressed_bytes=stored["compr_data_size"])

        with evidence.phase("discard"):
            must(guest, f"i=1; while [ $i -lt {chunks} ]; do blkdiscard -o "
                        f"$((i*{chunk_bytes})) -l {chunk_bytes} /dev/{settings.device} || "
                        f"exit 1; i=$((i+2)); done; i=1; while [ $i -lt "
                        f"{chunk_bytes // page_size} ]; do blkdiscard -o "
                        f"$(({fine_offset}+i*{page_size})) -l {page_size} "
                        f"/dev/{settings.device} || exit 1; i=$((i+2)); done", timeout=900)
            # Page cache only: dropping slab (2) runs zsmalloc's shrinker, which
            # compacts the pool itself and would empty the half-used zspages.
            must(guest, "sync; echo 1 > /proc/sys/vm/drop_caches")

        evidence.doing("its measurements before compaction")
        mm_before, classes_before = zram.stats()
        figures.update(zspages=classes_before.zspages,
                       zsmalloc_pages=classes_before.pages_used,
                       objects_used=classes_before.objects_used,
                       objects_allocated=classes_before.objects_allocated,
                       mem_used_total=mm_before["mem_used_total"])
        facts.update(zspages_before=classes_before.zspages,
                     mem_used_before=mm_before["mem_used_total"])
        compact_and_track(guest, evidence, ZSPAGE_FIRST_PAGE, VMSTAT_KEYS)
        mm_after, classes_after = zram.stats()
        facts.update(zspages_after=classes_after.zspages,
                     mem_used_after=mm_after["mem_used_total"])
        # zs_compact run by anything else (zsmalloc's shrinker under memory
        # pressure) before the explicit compact: expected 0.
        figures["pages_compacted_before"] = mm_after["pages_compacted"]

        with evidence.phase("zram_compact"):
            zram.compact()
        mm_compacted, classes_compacted = zram.stats()
        figures.update(
            zram_compact_pages_compacted=(mm_compacted["pages_compacted"]
                                          - mm_after["pages_compacted"]),
            zram_compact_zspages_freed=classes_after.zspages - classes_compacted.zspages)

        with evidence.phase("verify"):
            read = parse_chunk_sums(must(
                guest, f"dd if=/dev/{settings.device} bs=1048576 2>/dev/null | "
                       f"{{ {_hasher(chunks + 1, chunk_bytes)}; }}", timeout=1800), chunks + 1)

    facts.update(chunks=chunks + 1, chunks_checked=len(read),
                 mismatches=(compare_chunks(written, read[:chunks], chunk_bytes)
                             + (read[chunks] != fine_expected)))


def _summary(evidence: ZramEvidence) -> str:
    """One sentence saying what a proven result rests on."""
    tracked = evidence.tracked
    return (f"{tracked.moved} of {tracked.before} zspages moved their first page "
            f"(zsmalloc's own count: {evidence.zspages_before}), pgmigrate_success "
            f"+{evidence.pgmigrate_success_delta}, all {evidence.chunks} chunks read back intact")
