"""Who owns the pages that pin the pageblocks: /sys/kernel/debug/page_owner, summarised.

A high-order allocation needs a whole free pageblock (or part of one), and a
block with one allocated page the kernel cannot move is lost to it. With the
``page_owner`` config fragment (CONFIG_PAGE_OWNER, ``page_owner=on``) the kernel
records the allocation stack of every allocated block, and debugfs lists them:
one record per allocated block, as

    Page allocated via order 0, mask 0x...(GFP_...)[, pid ..., ts ... ns, ...]
    PFN 12345 type Movable Block 24 type Movable Flags 0x...(...)
     stack frame, one per line, indented
     ...
    [Page has been migrated, last migrate reason: compaction]
    [Charged to memcg ...]
    (blank line)

(PFN in decimal up to 5.x, in hex with ``0x`` from 6.x.) In a 256 MiB guest that
is tens of MB of text, too much for the console transport, so the guest groups it
itself with busybox awk (:data:`AWK_PROGRAM`): one line per distinct allocation
stack with its record, page and distinct-pageblock counts, and the total number
of pageblocks holding any recorded page. :func:`parse_summary` reads that back.
A pageblock is PFN >> pageblock_order, with the order the guest reports in
/proc/pagetypeinfo (the record's own "Block" field is the same number, but not
printed by every era the same way).
"""

from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError

PAGE_OWNER = "/sys/kernel/debug/page_owner"
# A frame of the sample driver: its module's symbols are printed "name+off/size
# [movable_sample]"; its own functions are all named ms_*.
DRIVER_MODULE = "[movable_sample]"
DRIVER_PREFIX = "ms_"
ABSENT = "page_owner: absent"  # what the guest prints without the file

# Groups the records by stack (frames joined by TAB, as printed, offsets
# included: stack depot keeps exact addresses too). A block of order > pageblock
# order spans several pageblocks; each is counted. Output: "total <records>
# <pageblocks>", then per stack "<records> <pages> <pageblocks>\t<frame>\t...".
# Written for busybox awk (no strtonum, no gawk extensions, no "^": Debian's
# busybox is built without awk's math library) and kept free of
# single quotes, as it goes into the guest's shell quoted by them.
AWK_PROGRAM = r"""
function hex(s,   n, i, c) {
    n = 0; s = tolower(substr(s, 3))
    for (i = 1; i <= length(s); i++) {
        c = index("0123456789abcdef", substr(s, i, 1)); if (!c) break
        n = n * 16 + c - 1
    }
    return n
}
function pow2(n,   p) { p = 1; while (n-- > 0) p *= 2; return p }
function flush(   k, b, first, last) {
    if (pfn < 0) return
    if (!(stack in id)) { id[stack] = ++nstacks; frames[nstacks] = stack }
    k = id[stack]; records[k]++; pages[k] += pow2(order); nrecords++
    first = int(pfn / span); last = int((pfn + pow2(order) - 1) / span)
    for (b = first; b <= last; b++) {
        if (!((k, b) in seen)) { seen[k, b] = 1; blocks[k]++ }
        if (!(b in any)) { any[b] = 1; nblocks++ }
    }
    pfn = -1
}
BEGIN { span = pow2(pbo); pfn = -1; nrecords = 0; nblocks = 0 }
/^Page allocated via order / { flush(); order = $5 + 0; stack = ""; next }
/^PFN / { pfn = ($2 ~ /^0x/) ? hex($2) : $2 + 0; next }
/^[ \t]/ { sub(/^[ \t]+/, ""); stack = (stack == "") ? $0 : stack "\t" $0; next }
/^$/ { flush() }
END {
    flush()
    print "total", nrecords, nblocks
    for (k = 1; k <= nstacks; k++) print records[k], pages[k], blocks[k] "\t" frames[k]
}
"""


class PageOwnerFormatError(HarnessError):
    """The guest's page_owner summary is not in the form AWK_PROGRAM prints."""


@dataclass(frozen=True)
class OwnerStack:
    """One allocation stack and what its pages hold: records (allocated blocks),
    pages, and the distinct pageblocks those pages sit in."""

    frames: tuple[str, ...]
    records: int
    pages: int
    pageblocks: int

    @property
    def is_migration_target(self) -> bool:
        """Whether compaction allocated these pages to move others into.

        Migration copies a page's owner in migrate_page_states() (5.10), which LRU
        migration calls and a driver's migratepage need not: the sample driver's
        pages that compaction moved keep this stack, whoever ran the compaction
        (on 5.10 x86_64 the 238 pages the driver's migratepage moved during its own
        allocation showed under it). Named as such, not as their requester's.
        """
        return any(frame.startswith(_COMPACTION_TARGET) for frame in self.frames)

    @property
    def is_driver(self) -> bool:
        """Whether the sample driver allocated these pages (a frame of its module,
        and not compaction's migration targets, which a driver's allocation can run)."""
        return (not self.is_migration_target
                and any(_is_driver_frame(frame) for frame in self.frames))

    def label(self) -> str:
        """What a person should know of the stack beyond its caller, or ''."""
        if self.is_migration_target:
            return "compaction's migration targets (pages it moved keep this stack)"
        return "the sample driver" if self.is_driver else ""

    def caller(self) -> str:
        """Who asked for the pages: the driver's first frame on a driver stack, else
        the first frame outside the allocators (their frames, ``__alloc_pages*``,
        ``get_page_from_freelist``, ``slob_new_pages``..., head every stack and name
        nobody)."""
        for frame in self.frames:
            if _is_driver_frame(frame) or frame.startswith(_COMPACTION_TARGET):
                return frame
        for frame in self.frames:
            if not any(part in frame.split("+")[0] for part in _ALLOCATOR_FRAMES):
                return frame
        return self.frames[-1] if self.frames else "(no stack recorded)"


_COMPACTION_TARGET = "compaction_alloc+"  # compaction's free page for a page it moves


def _is_driver_frame(frame: str) -> bool:
    return DRIVER_MODULE in frame or frame.startswith(DRIVER_PREFIX)


# The page allocator's frames, and the slab and vmalloc layers above it: the
# caller is the first frame past them ("slob_new_pages" names no owner).
_ALLOCATOR_FRAMES = ("alloc_pages", "get_page_from_freelist", "prep_new_page",
                     "post_alloc_hook", "set_page_owner", "stack_trace", "save_stack",
                     "alloc_page_interleave", "folio_alloc", "__alloc_frozen", "slob_",
                     "new_slab", "allocate_slab", "kmem_cache_alloc", "kmalloc", "vmalloc")


@dataclass(frozen=True)
class PageOwners:
    """page_owner grouped by stack: every stack, most pageblocks first."""

    pageblock_order: int
    records: int
    pageblocks: int  # distinct pageblocks holding at least one recorded page
    stacks: tuple[OwnerStack, ...]

    def as_dict(self, top: int) -> dict[str, Any]:
        """The totals and the ``top`` stacks (plus every labelled one: the driver's,
        compaction's migration targets), for repro.json."""
        shown = [stack for rank, stack in enumerate(self.stacks)
                 if rank < top or stack.label()]
        return {"pageblock_order": self.pageblock_order, "records": self.records,
                "pageblocks": self.pageblocks, "stacks": len(self.stacks),
                "top": [{"pageblocks": s.pageblocks, "pages": s.pages, "records": s.records,
                         "driver": s.is_driver, "label": s.label(), "caller": s.caller(),
                         "frames": list(s.frames)}
                        for s in shown]}


def summary_command(pageblock_order: int) -> str:
    """The guest command printing the grouped summary, or a marker when the kernel
    has no page_owner file (not built in, or booted without page_owner=on)."""
    # Through cat: busybox awk reading the debugfs file itself failed with "Cannot
    # allocate memory" on 5.10 (after the repro, and with 190 MB free), cat did not.
    return (f"if [ -r {PAGE_OWNER} ]; then cat {PAGE_OWNER} | awk -v pbo={pageblock_order} "
            f"'{AWK_PROGRAM}'; else echo '{ABSENT}'; fi")


def parse_summary(text: str, pageblock_order: int) -> PageOwners | None:
    """The output of :func:`summary_command`; None when the guest had no page_owner."""
    lines = text.strip("\n").splitlines()
    if lines == [ABSENT]:
        return None
    if not lines or not lines[0].startswith("total "):
        raise PageOwnerFormatError(f"page_owner summary: expected 'total ...' first, got "
                                   f"{text[:80]!r}")
    try:
        _, records, pageblocks = lines[0].split()
        stacks = []
        for line in lines[1:]:
            counts, *frames = line.split("\t")
            n_records, n_pages, n_blocks = (int(word) for word in counts.split())
            stacks.append(OwnerStack(tuple(frames), n_records, n_pages, n_blocks))
        owners = PageOwners(pageblock_order, int(records), int(pageblocks),
                            tuple(sorted(stacks, key=lambda s: (-s.pageblocks, -s.pages))))
    except ValueError:
        raise PageOwnerFormatError(f"page_owner summary: a line is not "
                                   f"'<records> <pages> <blocks>\\t<frames>': {text[:200]!r}"
                                   ) from None
    return owners


def describe(summary: dict[str, Any]) -> list[str]:
    """Lines for a person from :meth:`PageOwners.as_dict` (as in repro.json): the top
    stacks by pageblocks, each by the first frame outside the allocator, the
    sample driver's and compaction's migration targets marked."""
    lines = [f"page_owner: {summary['records']} allocated blocks in {summary['pageblocks']} "
             f"pageblocks of order {summary['pageblock_order']}, {summary['stacks']} distinct "
             "stacks; the top ones by pageblocks:"]
    for stack in summary["top"]:
        mark = f"  ← {stack['label']}" if stack["label"] else ""
        lines.append(f"  {stack['pageblocks']:5d} blocks {stack['pages']:7d} pages  "
                     f"{stack['caller']}{mark}")
    return lines


def headline(owners: PageOwners) -> str:
    """One line for a note: how many pageblocks hold allocated pages, the top stack
    by pageblocks, and the driver's and compaction's migration targets' top ones."""
    if not owners.stacks:
        return f"page_owner: {owners.records} allocated blocks"
    top = owners.stacks[0]
    line = (f"page_owner: {owners.records} allocated blocks in {owners.pageblocks} "
            f"pageblocks; most pageblocks: {top.caller()} ({top.pageblocks} pageblocks"
            + (", the sample driver)" if top.is_driver else ")"))
    driver = next((stack for stack in owners.stacks if stack.is_driver), None)
    moved = next((stack for stack in owners.stacks if stack.is_migration_target), None)
    for kind, found in (("the driver's", driver), ("compaction's migration targets", moved)):
        if found is not None and found is not top:
            line += f"; {kind}: {found.caller()} ({found.pageblocks} pageblocks)"
    return line
