"""Guest steps every scenario shares: run-or-fail, cleanup that never hides a failure,
procfs snapshots, memory figures, and the compaction itself. Written against the
Guest protocol only."""

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from harness import page_owner, procfs
from harness.errors import HarnessError
from harness.guest import Guest, GuestError
from harness.guest.health import WatchedGuest

# Longest a cleanup command may take once a step has failed: the guest may be
# wedged (a kernel that Oopsed holding a lock hangs the next command needing it).
CLEANUP_SECONDS = 5.0
# Grouping page_owner in the guest reads one record per allocated block: 17 s for
# a 256 MiB guest under TCG (README, "Who pins the pageblocks"), more with more memory.
PAGE_OWNER_SECONDS = 600.0


def must(guest: Guest, command: str, timeout: float = 60.0) -> str:
    """stdout of ``command``, or a GuestError quoting it and its output."""
    result = guest.run(command, timeout=timeout)
    if not result.ok:
        raise GuestError(f"`{command}` failed (exit {result.exit_status}): "
                         f"{result.stdout.strip()[-300:]}")
    return result.stdout


@contextmanager
def undone(guest: Guest, undo: Callable[[], object], what: str,
           done: Callable[[], object] | None = None) -> Iterator[None]:
    """Run ``undo`` (which does ``what``) when the block ends, however it ends;
    ``done``, when given, instead of it when the block succeeds: the same end by a
    shorter way where nothing went wrong.

    After a failure in the block, that failure is what the user sees (the
    first failure wins): ``undo`` runs with each of its commands bounded to
    CLEANUP_SECONDS (on a guest known to be dead, none runs at all: the
    watched guest refuses at once), and what it raises becomes a note on
    the failure instead of replacing it.
    """
    try:
        yield
    except BaseException as failure:
        try:
            if isinstance(guest, WatchedGuest):
                with guest.bounded(CLEANUP_SECONDS):
                    undo()
            else:
                undo()
        except HarnessError as error:
            failure.add_note(f"{what} afterwards: {error}")
        raise
    (done or undo)()


def preflight(guest: Guest, checks: Iterable[tuple[str, str]]) -> None:
    """Run each (command, message) check; the first that fails raises its message,
    which says clearly what the running kernel or machine lacks."""
    for command, message in checks:
        if not guest.run(command).ok:
            raise GuestError(message)


def snapshot(guest: Guest) -> procfs.Snapshot:
    """buddyinfo, vmstat, pagetypeinfo and zoneinfo in one round trip."""
    return procfs.parse_snapshot(must(guest, procfs.snapshot_command()))


# The line read_together prints before each read's output.
READ_PART = "@@harness read {}@@"
_READ_PART = re.compile(re.escape(READ_PART).replace(r"\{\}", "(.+?)") + "\n")


def read_together(guest: Guest, commands: Mapping[str, str],
                  timeout: float = 120.0) -> dict[str, str]:
    """Each of ``commands``' output by name: all run in order as one guest command.

    One round trip instead of one per read: over a console each costs a TCG guest
    a subshell and the framing, 5-8 ms, and the reads stay as close together in
    time as they can (issue 19). The first that fails stops the rest; the error
    quotes it and its output.
    """
    result = guest.run(" && ".join(f"echo '{READ_PART.format(name)}' && {{ {command}; }}"
                                   for name, command in commands.items()), timeout=timeout)
    pieces = _READ_PART.split(result.stdout)
    outputs = dict(zip(pieces[1::2], pieces[2::2], strict=True))
    if not result.ok:
        failed = list(outputs)[-1] if outputs else next(iter(commands))
        raise GuestError(f"`{commands[failed]}` failed (exit {result.exit_status}): "
                         f"{outputs.get(failed, result.stdout).strip()[-300:]}")
    if list(outputs) != list(commands):
        raise GuestError(f"reading {', '.join(commands)} in one command gave the parts "
                         f"{', '.join(outputs) or 'none'}: {result.stdout.strip()[-300:]!r}")
    return outputs


def frag_indices(guest: Guest) -> procfs.FragIndices | None:
    """The kernel's unusable_index and extfrag_index now (debugfs ``extfrag/``), or
    None where it has none (no CONFIG_DEBUG_FS or CONFIG_COMPACTION, debugfs not
    mounted: a board)."""
    return procfs.parse_frag_indices(must(guest, procfs.FRAG_INDICES_COMMAND))


def page_owners(guest: Guest, pageblock_order: int) -> page_owner.PageOwners | None:
    """Who owns the allocated pages now, grouped by stack in the guest
    (harness.page_owner), or None on a kernel without page_owner (its config
    fragment; the boot turns it on)."""
    return page_owner.parse_summary(
        must(guest, page_owner.summary_command(pageblock_order), timeout=PAGE_OWNER_SECONDS),
        pageblock_order)


def meminfo(guest: Guest) -> dict[str, int]:
    """/proc/meminfo in KiB by field name."""
    return parse_meminfo(must(guest, "cat /proc/meminfo"))


def parse_meminfo(text: str) -> dict[str, int]:
    """The text of /proc/meminfo in KiB by field name."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isdigit():
            values[name.strip()] = int(words[0])
    if "MemFree" not in values or "MemTotal" not in values:
        raise GuestError("/proc/meminfo has no MemFree/MemTotal lines")
    return values


def page_size(guest: Guest) -> int:
    """The guest's page size in bytes, from the kernel itself (harness.procfs:
    a board's kernel may use 16 or 64 KiB pages, and it has no .config of ours)."""
    return procfs.parse_page_size(must(guest, procfs.PAGE_SIZE_COMMAND))


def release_and_page_size(guest: Guest) -> tuple[str, int]:
    """``uname -r`` and page_size(), in one guest command."""
    outputs = read_together(guest, {"release": "uname -r", "page size": procfs.PAGE_SIZE_COMMAND})
    return outputs["release"].strip(), procfs.parse_page_size(outputs["page size"])


def mem_free_bytes(guest: Guest) -> int:
    """MemFree in bytes (/proc/meminfo counts KiB whatever the page size)."""
    return meminfo(guest)["MemFree"] << 10


DROP_CACHES = "sync; echo 3 > /proc/sys/vm/drop_caches"


def free_bytes_after_dropping_caches(guest: Guest) -> int:
    """MemFree in bytes once the page cache is dropped, in one round trip: what a
    scenario sizes its load by (the driver's pages, zram's data, the balloon)."""
    return parse_meminfo(must(guest, f"{DROP_CACHES} && cat /proc/meminfo"))["MemFree"] << 10


def free_pages_after_dropping_caches(guest: Guest, page_size: int) -> int:
    """free_bytes_after_dropping_caches in pages of ``page_size``."""
    return free_bytes_after_dropping_caches(guest) // page_size


def free_kib_drained(guest: Guest) -> int:
    """Free memory in KiB after dropping the page cache, counting the pages freed into
    per-CPU lists: on SMP those sit in each CPU's pageset (zoneinfo's ``count:``) and
    are not in MemFree until drained, which from 6.x can be megabytes (auto-tuned pcp
    high marks). What a leak check compares before and after."""
    must(guest, DROP_CACHES)
    pcp_pages = sum(int(count) for count in re.findall(
        r"^\s+count:\s+(\d+)$", must(guest, "cat /proc/zoneinfo"), re.MULTILINE))
    return meminfo(guest)["MemFree"] + pcp_pages * page_size(guest) // 1024


def compact_memory(guest: Guest) -> None:
    """Ask the kernel to compact every zone, as a user would."""
    must(guest, "echo 1 > /proc/sys/vm/compact_memory", timeout=300)


# Written to percpu_pagelist_high_fraction: a share of the zone so small that each
# CPU's lists keep only their floor, four batches (mm/page_alloc.c, zone_highsize()).
PCP_HIGH_FRACTION = 1 << 30


# What a VmSysctl's command prints for a knob this kernel lacks.
KNOB_ABSENT = "absent"


@dataclass(frozen=True)
class VmSysctl:
    """A /proc/sys/vm knob to set where the kernel has it; ``absent`` says why a
    kernel without it is fine."""

    name: str
    value: int
    absent: str = ""

    def command(self) -> str:
        """Shell builtins only: write the value, or print KNOB_ABSENT."""
        knob = f"/proc/sys/vm/{self.name}"
        return (f"if [ -w {knob} ]; then echo {self.value} > {knob}; "
                f"else echo {KNOB_ABSENT}; fi")

    def note(self, output: str) -> str:
        """What the command's ``output`` says happened, for the result's notes."""
        if output.strip() == KNOB_ABSENT:
            return f"no {self.name} in this kernel{self.absent}"
        return f"{self.name} set to {self.value}"


# Keep the free memory where ``fill`` and the probes see it, and nothing compacting
# it behind the experiment's back:
# - watermark_boost_factor 0 (5.0 on): an allocation that steals a pageblock of
#   another migrate type (fill's do) boosts the zone's watermark, and kswapd then
#   wakes kcompactd for a whole pageblock (balance_pgdat()), which compacted 334
#   of the driver's movable pages within a second of a fill on 5.10.
# - percpu_pagelist_high_fraction tiny (5.14 on): pages just freed wait on per-CPU
#   lists, out of the buddy lists fill takes blocks from, and from 6.7 on those
#   lists grow to an eighth of the zone (3711 and 3347 pages on the two CPUs of a
#   256 MiB 7.2 guest); the allocator drains them before it gives up, and a block
#   that was free but stranded there then satisfied the allocation with unmovable
#   driver pages. Before 5.14 the lists hold six batches at most.
FREE_BLOCKS_VISIBLE = (VmSysctl("watermark_boost_factor", 0),
                       VmSysctl("percpu_pagelist_high_fraction", PCP_HIGH_FRACTION))


def quiet_background_compaction(guest: Guest, *also: VmSysctl) -> list[str]:
    """Stop the kernel compacting on its own so deltas come from our compaction,
    and set ``also`` (e.g. FREE_BLOCKS_VISIBLE), all in one guest command.

    Returns notes saying what was done, for the result; a failed write is a
    GuestError. Each round also drops the page cache first, removing clean pages
    that would otherwise migrate and blur ``pgmigrate_success``.
    """
    knobs = (VmSysctl("compaction_proactiveness", 0,
                      " (before 5.9): only kcompactd wake-ups can compact in the background"),
             *also)
    outputs = read_together(guest, {knob.name: knob.command() for knob in knobs})
    notes = [knob.note(outputs[knob.name]) for knob in knobs]
    return [notes[0], "page cache dropped before each round", *notes[1:]]
