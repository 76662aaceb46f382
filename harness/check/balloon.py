"""The virtio-balloon scenario: balloon pages migrate under compaction, the guest survives.

A memory balloon takes pages away from the guest and hands them to the host.
With CONFIG_BALLOON_COMPACTION (Linux 4.8: through the non-LRU movable page
API) those pages stay movable: compaction isolates a balloon page, the
virtio-balloon driver tells the host "inflate this new page, deflate that old
one" and counts ``balloon_migrate`` in /proc/vmstat.

The experiment, and why each step is there:

1. Fill a private tmpfs with two files written one page each in turn, so
   their pages interleave in physical memory; delete the first file, leaving
   a free page between two pages of the second.
2. Inflate the balloon through QMP (``balloon`` with the guest's new size) by
   as many pages as were freed, and wait until QEMU's ``query-balloon`` shows
   the guest gave them all: the balloon driver allocates order-0 pages, which
   the buddy allocator serves from those single free pages first.
3. Delete the second file: balloon pages now alternate with free pages.
4. Find the balloon pages' PFNs (harness.check.in_tree: kpageflags bit 23),
   buddyinfo and vmstat; ``echo 1 > /proc/sys/vm/compact_memory``; again.
5. Deflate to the full size, wait for QEMU to see it, then check the guest:
   a command runs, and a file as large as the balloon was is written to tmpfs
   and read back intact.

The verdict rule (``judge_balloon``; README "In-tree users"):

  1. the balloon inflated: the guest counted every page asked for
     (balloon_inflate); QEMU seeing the target size is a precondition, the
     step fails after a timeout otherwise;
  2. the pages found by PFN are the balloon's: as many before and after
     compaction as the balloon holds;
  3. balloon pages moved: PFNs that held a balloon page before and none after > 0;
  4. the balloon driver migrated them: balloon_migrate rose by at least that many;
  5. the kernel counted them: pgmigrate_success rose by at least balloon_migrate;
  6. deflating returned every page: balloon_deflate rose as much as
     balloon_inflate (and, as a precondition, QEMU saw the full size again);
  7. the guest still works: the file written after deflating reads back intact;
  8. no kernel report: one ends the experiment NOT PROVEN (harness.check.reported),
     with what was measured before it.
"""

import time
from dataclasses import dataclass
from typing import Any, Protocol

from qemu.qmp import QMPError

from harness import procfs
from harness.artifacts import KernelBuild
from harness.check.evidence import Verdict
from harness.check.in_tree import (
    BALLOON_PAGE,
    COMPACTION_NEEDS,
    ConfigNeed,
    Progress,
    find_pages,
    pfn_moves,
    pfn_span,
    require_config,
)
from harness.check.sample import VMSTAT_KEYS
from harness.check.steps import (
    compact_memory,
    mem_free_pages,
    must,
    quiet_background_compaction,
    snapshot,
    undone,
)
from harness.errors import HarnessError
from harness.guest import Guest, GuestError, KernelProblem
from harness.report.in_tree import InTreeResult, TrackedPages

SCENARIO = "balloon"
FRAGMENTS = ("balloon",)
VIRTIO_DEVICES = ("balloon",)  # virtio-balloon-pci on x86_64, virtio-balloon-device on arm64
CONFIG_NEEDS = (
    ConfigNeed("VIRTIO_BALLOON", "balloon", "the virtio-balloon driver"),
    # 7.0 renamed the balloon core and its migration (mm/balloon.c).
    ConfigNeed("MEMORY_BALLOON", "balloon", "balloon_inflate/deflate counters", ("BALLOON",)),
    ConfigNeed("BALLOON_COMPACTION", "balloon", "movable balloon pages, balloon_migrate",
               ("BALLOON_MIGRATION",)),
    ConfigNeed("PROC_PAGE_MONITOR", "balloon", "/proc/kpageflags to find balloon PFNs"),
    *COMPACTION_NEEDS,
)
BALLOON_COUNTERS = ("balloon_inflate", "balloon_deflate", "balloon_migrate")
PAGE = 4096
WORKDIR = "/run/harness-balloon"


class BalloonHost(Protocol):
    """The host side of the balloon: what QEMU's monitor offers."""

    def set_target(self, guest_bytes: int) -> None:
        """Ask the guest to shrink or grow to ``guest_bytes`` of memory."""

    def actual(self) -> int:
        """The guest's memory size as the balloon device reports it, in bytes."""


class QmpBalloon:
    """BalloonHost over QMP: ``balloon`` and ``query-balloon``."""

    def __init__(self, vm: Any) -> None:
        self.vm = vm

    def set_target(self, guest_bytes: int) -> None:
        self._qmp("balloon", value=guest_bytes)

    def actual(self) -> int:
        return int(self._qmp("query-balloon")["actual"])

    def _qmp(self, command: str, **arguments: Any) -> Any:
        try:
            return self.vm.qmp(command, **arguments)
        except QMPError as error:
            raise GuestError(f"QMP {command} failed: {error}; does QEMU have a "
                             "virtio-balloon device?") from None


def balloon_host(guest: Guest) -> BalloonHost:
    """The QMP balloon of a QEMU guest; a HarnessError for anything else (a board)."""
    vm = getattr(guest, "vm", None)
    if vm is None or not callable(getattr(vm, "qmp", None)):
        raise HarnessError("the balloon scenario inflates the balloon through QEMU's monitor "
                           "(QMP): run it on a qemu target, not on a board over ssh://")
    return QmpBalloon(vm)


@dataclass(frozen=True)
class BalloonSettings:
    """How much memory the two interleaved files cover, and time limits."""

    cover_share: float = 0.7  # both files together, as a share of MemFree
    settle_timeout: float = 600.0  # seconds for the guest to reach a balloon target
    stall_timeout: float = 60.0  # ... without the size changing at all

    def balloon_pages(self, free_pages: int) -> int:
        """Pages per file, which is also the balloon's size."""
        pages = int(free_pages * self.cover_share) // 2
        if pages < 256:
            raise GuestError(f"only {free_pages * 4 // 1024} MiB free: too little for the "
                             "balloon scenario (give the guest more memory)")
        return pages


def wait_for_balloon(host: BalloonHost, target: int, settings: BalloonSettings) -> float:
    """Block until QEMU reports ``target`` bytes; seconds waited, or GuestError."""
    started = last_change = time.monotonic()
    last = host.actual()
    while last != target:
        now = time.monotonic()
        if now - started > settings.settle_timeout or now - last_change > settings.stall_timeout:
            raise GuestError(f"the balloon stopped at {last >> 20} MiB of guest memory, "
                             f"target {target >> 20} MiB (waited {now - started:.0f} s)")
        time.sleep(0.2)
        current = host.actual()
        if current != last:
            last, last_change = current, time.monotonic()
    return time.monotonic() - started


@dataclass(frozen=True)
class BalloonEvidence:
    """What the balloon scenario measured; ``judge_balloon`` turns it into a verdict."""

    requested_pages: int  # the balloon's size asked through QMP, in pages
    tracked: TrackedPages  # balloon pages found by PFN around compaction
    inflated: int  # balloon_inflate delta over the inflation
    deflated: int  # balloon_deflate delta over the deflation
    balloon_migrate: int  # balloon_migrate delta over compaction
    pgmigrate_success_delta: int
    data_intact: bool  # the file written after deflating read back with its checksum


def balloon_failures(evidence: BalloonEvidence) -> list[str]:
    """The rules of this module's docstring that ``evidence`` breaks."""
    failures = []
    tracked = evidence.tracked
    if evidence.inflated != evidence.requested_pages:
        failures.append(f"balloon_inflate rose by {evidence.inflated}, "
                        f"{evidence.requested_pages} pages were asked for")
    if (tracked.before, tracked.after) != (evidence.requested_pages,) * 2:
        failures.append(f"found {tracked.before}/{tracked.after} balloon pages before/after "
                        f"compaction in a balloon of {evidence.requested_pages}")
    if tracked.moved == 0:
        failures.append("no balloon page changed PFN")
    if evidence.balloon_migrate < max(tracked.moved, 1):
        failures.append(f"balloon_migrate rose by {evidence.balloon_migrate}, but "
                        f"{tracked.moved} balloon pages changed PFN")
    if evidence.pgmigrate_success_delta < evidence.balloon_migrate:
        failures.append(f"pgmigrate_success rose by {evidence.pgmigrate_success_delta}, less "
                        f"than balloon_migrate's {evidence.balloon_migrate}")
    if evidence.deflated != evidence.inflated:
        failures.append(f"balloon_deflate rose by {evidence.deflated}, balloon_inflate by "
                        f"{evidence.inflated}: pages were not all returned")
    if not evidence.data_intact:
        failures.append("memory written after deflating did not read back intact")
    return failures


def judge_balloon(evidence: BalloonEvidence) -> Verdict:
    """The verdict of the balloon scenario."""
    failures = balloon_failures(evidence)
    return Verdict(proven=not failures, failures=tuple(failures))


def require_balloon_config(kernel: KernelBuild) -> None:
    """Fail before booting when the kernel lacks an option the scenario needs."""
    require_config(kernel, SCENARIO, CONFIG_NEEDS)


def _preflight(guest: Guest) -> None:
    """Say clearly what the running kernel or machine lacks."""
    checks = (
        ("ls /sys/bus/virtio/drivers/virtio_balloon/ | grep -q virtio",
         "no virtio-balloon device bound to the virtio_balloon driver: the kernel needs "
         "CONFIG_VIRTIO_BALLOON (--config balloon) and QEMU a virtio-balloon device"),
        ("grep -q '^balloon_migrate ' /proc/vmstat",
         "no balloon_migrate in /proc/vmstat: the kernel needs CONFIG_BALLOON_COMPACTION "
         "(--config balloon)"),
        ("test -r /proc/kpageflags", "no /proc/kpageflags in the running kernel "
                                     "(CONFIG_PROC_PAGE_MONITOR; --config balloon sets it)"),
    )
    for command, message in checks:
        if not guest.run(command).ok:
            raise GuestError(message)


def _balloon_counters(vmstat: procfs.Vmstat) -> dict[str, int]:
    vmstat.require(BALLOON_COUNTERS)
    return {name: vmstat[name] for name in BALLOON_COUNTERS}


def _vmstat_counters(guest: Guest) -> dict[str, int]:
    return _balloon_counters(procfs.parse_vmstat(must(guest, "cat /proc/vmstat")))


def run_balloon(guest: Guest, host: BalloonHost | None = None,
                settings: BalloonSettings = BalloonSettings(), kernel: str = "",
                arch: str = "") -> InTreeResult:
    """Run the experiment in this module's docstring on ``guest``; judge it.

    ``host`` defaults to the QMP balloon of a QEMU guest. The balloon is
    deflated and the work tmpfs unmounted even when a step fails. A kernel
    report ends the experiment: NOT PROVEN, with what was measured before it.
    """
    host = host or balloon_host(guest)
    progress = Progress(SCENARIO, arch=arch, kernel=kernel)
    try:
        evidence = _experiment(guest, host, settings, progress)
    except KernelProblem as problem:
        return progress.interrupted(problem)
    verdict = judge_balloon(evidence)
    return progress.result(proven=verdict.proven,
                           reasons=verdict.failures or (_summary(evidence),),
                           data_checked=1, data_mismatches=0 if evidence.data_intact else 1)


def _experiment(guest: Guest, host: BalloonHost, settings: BalloonSettings,
                progress: Progress) -> BalloonEvidence:
    """The steps of the experiment; every figure goes into ``progress`` when measured."""
    figures = progress.figures
    progress.release = must(guest, "uname -r").strip()
    _preflight(guest)
    ram = host.actual()
    progress.notes += quiet_background_compaction(guest)
    must(guest, "sync; echo 3 > /proc/sys/vm/drop_caches")
    pages = settings.balloon_pages(mem_free_pages(guest))
    figures["balloon_pages"] = pages
    progress.data_unit = f"{pages * PAGE >> 20} MiB file written after deflating"
    progress.notes.append(f"balloon of {pages} pages ({pages * PAGE >> 20} MiB) inflated into "
                          "the holes of two interleaved tmpfs files")
    must(guest, f"mkdir -p {WORKDIR} && mount -t tmpfs -o size={2 * pages * PAGE + (1 << 20)} "
                f"harness-balloon {WORKDIR}")
    with undone(guest, lambda: _restore(guest, host, ram),
                "unmounting the work tmpfs and deflating the balloon"):
        with progress.phase("interleave"):
            must(guest, f"cd {WORKDIR} && exec 3>a 4>b && i=0 && while [ $i -lt {pages} ]; "
                        f"do printf %{PAGE}s >&3; printf %{PAGE}s >&4; i=$((i+1)); done",
                 timeout=1800)
            must(guest, f"rm {WORKDIR}/a")

        counts_start = _vmstat_counters(guest)
        target = ram - pages * PAGE
        with progress.phase("inflate"):
            host.set_target(target)
            wait_for_balloon(host, target, settings)
        counts_inflated = _vmstat_counters(guest)
        inflated = counts_inflated["balloon_inflate"] - counts_start["balloon_inflate"]
        figures["balloon_inflate"] = inflated
        must(guest, f"umount {WORKDIR}; sync; echo 3 > /proc/sys/vm/drop_caches")

        progress.doing = "its measurements before compaction"
        before = snapshot(guest)
        progress.buddy_before = before.buddyinfo.per_order()
        span = pfn_span(before.zoneinfo)
        pfns_before = find_pages(guest, BALLOON_PAGE, span)
        with progress.phase("compact_memory"):
            compact_memory(guest)
        progress.doing = "its measurements after compaction"
        pfns_after = find_pages(guest, BALLOON_PAGE, span)
        progress.tracked = pfn_moves(BALLOON_PAGE, pfns_before, pfns_after)
        after = snapshot(guest)
        progress.buddy_after = after.buddyinfo.per_order()
        progress.vmstat_delta = procfs.vmstat_delta(
            before.vmstat, after.vmstat,
            [key for key in (*VMSTAT_KEYS, *BALLOON_COUNTERS) if key in before.vmstat])
        progress.pgmigrate_success_delta = progress.vmstat_delta.get("pgmigrate_success", 0)
        figures["balloon_migrate"] = progress.vmstat_delta["balloon_migrate"]

        with progress.phase("deflate"):
            host.set_target(ram)
            wait_for_balloon(host, ram, settings)
        counts_deflated = _vmstat_counters(guest)
        figures["balloon_deflate"] = (counts_deflated["balloon_deflate"]
                                      - counts_inflated["balloon_deflate"])
        figures["guest_ram_bytes"] = ram

        with progress.phase("use_after_deflate"):
            data_intact = _memory_usable(guest, pages * PAGE)

    return BalloonEvidence(
        requested_pages=pages, tracked=progress.tracked, inflated=inflated,
        deflated=figures["balloon_deflate"], balloon_migrate=figures["balloon_migrate"],
        pgmigrate_success_delta=progress.pgmigrate_success_delta, data_intact=data_intact)


def _memory_usable(guest: Guest, size: int) -> bool:
    """Write ``size`` bytes of random data to tmpfs and read them back: same sha256?"""
    path = f"{WORKDIR}/after-deflate"
    written = must(guest, f"mkdir -p {WORKDIR} && mount -t tmpfs harness-balloon {WORKDIR} && "
                          f"dd if=/dev/urandom bs=1048576 count={size} iflag=count_bytes "
                          f"2>/dev/null | tee {path} | sha256sum",
                   timeout=900).split()[0]
    read = must(guest, f"sha256sum {path}", timeout=900).split()[0]
    must(guest, f"umount {WORKDIR}")
    return written == read


def _restore(guest: Guest, host: BalloonHost, ram: int) -> None:
    """Leave the guest as found: tmpfs unmounted, balloon deflated (best effort)."""
    guest.run(f"umount {WORKDIR} 2>/dev/null; rmdir {WORKDIR} 2>/dev/null")
    try:
        if host.actual() != ram:
            host.set_target(ram)
    except HarnessError:
        pass  # QEMU is gone: nothing left to deflate


def _summary(evidence: BalloonEvidence) -> str:
    """One sentence saying what a proven result rests on."""
    tracked = evidence.tracked
    return (f"{tracked.moved} of {tracked.before} balloon pages changed PFN, balloon_migrate "
            f"+{evidence.balloon_migrate}, pgmigrate_success "
            f"+{evidence.pgmigrate_success_delta}, all pages deflated, memory usable after")
