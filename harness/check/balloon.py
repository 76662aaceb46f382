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
2. Inflate the balloon through the control the target offers (QEMU: QMP's
   ``balloon`` with the guest's new size) by
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

from harness import procfs
from harness.artifacts import KernelBuild
from harness.check.evidence import Verdict
from harness.check.in_tree import (
    BALLOON_PAGE,
    COMPACTION_NEEDS,
    ConfigNeed,
    compact_and_track,
    in_tree_result,
    measured,
)
from harness.check.sample import VMSTAT_KEYS
from harness.check.scenario import Evidence, Needs
from harness.check.steps import (
    DROP_CACHES,
    free_bytes_after_dropping_caches,
    must,
    preflight,
    quiet_background_compaction,
    undone,
)
from harness.errors import HarnessError
from harness.guest import BalloonControl, Guest, GuestError, OffersBalloon
from harness.report.in_tree import InTreeResult, TrackedPages
from harness.report.model import size_label

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
WORKDIR = "/run/harness-balloon"


@dataclass(frozen=True)
class BalloonSettings:
    """How much memory the two interleaved files cover, and time limits."""

    cover_share: float = 0.7  # both files together, as a share of MemFree
    settle_timeout: float = 600.0  # seconds for the guest to reach a balloon target
    stall_timeout: float = 60.0  # ... without the size changing at all

    def balloon_pages(self, free_bytes: int, page_size: int) -> int:
        """Pages (of ``page_size`` bytes) per file, which is also the balloon's size."""
        pages = int(free_bytes // page_size * self.cover_share) // 2
        if pages < 256:
            raise GuestError(f"only {free_bytes >> 20} MiB free: too little for the "
                             "balloon scenario (give the guest more memory)")
        return pages


def wait_for_balloon(host: BalloonControl, target: int, settings: BalloonSettings) -> float:
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


def judge_balloon(evidence: BalloonEvidence) -> Verdict:
    """The verdict of the balloon scenario: the rules of this module's docstring that
    ``evidence`` breaks, if any."""
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
    return Verdict.of(failures)


def _preflight(guest: Guest) -> None:
    """Say clearly what the running kernel or machine lacks."""
    preflight(guest, (
        ("ls /sys/bus/virtio/drivers/virtio_balloon/ | grep -q virtio",
         "no virtio-balloon device bound to the virtio_balloon driver: the kernel needs "
         "CONFIG_VIRTIO_BALLOON (--config balloon) and QEMU a virtio-balloon device"),
        ("grep -q '^balloon_migrate ' /proc/vmstat",
         "no balloon_migrate in /proc/vmstat: the kernel needs CONFIG_BALLOON_COMPACTION "
         "(--config balloon)"),
        ("test -r /proc/kpageflags", "no /proc/kpageflags in the running kernel "
                                     "(CONFIG_PROC_PAGE_MONITOR; --config balloon sets it)"),
    ))


def _balloon_counters(vmstat: procfs.Vmstat) -> dict[str, int]:
    vmstat.require(BALLOON_COUNTERS)
    return {name: vmstat[name] for name in BALLOON_COUNTERS}


def _vmstat_counters(guest: Guest) -> dict[str, int]:
    return _balloon_counters(procfs.parse_vmstat(must(guest, "cat /proc/vmstat")))


class BalloonScenario:
    """The experiment of this module's docstring as a Scenario (harness.check.scenario)."""

    name = SCENARIO
    needs = Needs(fragments=FRAGMENTS, config=CONFIG_NEEDS, virtio_devices=VIRTIO_DEVICES,
                  capabilities=(OffersBalloon,))

    def __init__(self, settings: BalloonSettings = BalloonSettings()) -> None:
        self.settings = settings

    def prepare(self, kernel: KernelBuild, force: bool) -> None:
        """Nothing to build: virtio-balloon is the kernel's own."""

    def collect(self, guest: Guest, evidence: Evidence) -> None:
        """Run the experiment with the balloon the target offers; the balloon is
        deflated and the work tmpfs unmounted even when a step fails."""
        assert isinstance(guest, OffersBalloon)  # observe checked needs.capabilities
        _experiment(guest, guest.balloon(), self.settings, evidence)

    def judge(self, evidence: Evidence) -> InTreeResult:
        """``judge_balloon`` on complete evidence; evidence cut short is not proven."""
        if "data_intact" not in evidence.facts:  # the last fact: memory usable after
            return in_tree_result(evidence)
        record = measured(BalloonEvidence, evidence.facts)
        verdict = judge_balloon(record)
        return in_tree_result(evidence, verdict.proven, verdict.failures or (_summary(record),),
                              data_checked=1, data_mismatches=0 if record.data_intact else 1)


def _experiment(guest: Guest, host: BalloonControl, settings: BalloonSettings,
                evidence: Evidence) -> None:
    """The steps of the experiment; every fact goes into ``evidence`` when measured."""
    facts = evidence.facts
    figures: dict[str, int] = facts.setdefault("figures", {})
    _preflight(guest)
    ram = host.actual()
    evidence.notes += quiet_background_compaction(guest)
    free_bytes = free_bytes_after_dropping_caches(guest)
    page_size = evidence.guest_page_size()
    pages = settings.balloon_pages(free_bytes, page_size)
    size = pages * page_size
    figures["balloon_pages"] = facts["requested_pages"] = pages
    facts["data_unit"] = f"{size >> 20} MiB file written after deflating"
    evidence.notes.append(f"balloon of {pages} pages of {size_label(page_size)} ({size >> 20} "
                          "MiB) inflated into the holes of two interleaved tmpfs files")
    must(guest, f"mkdir -p {WORKDIR} && mount -t tmpfs -o size={2 * size + (1 << 20)} "
                f"harness-balloon {WORKDIR}")
    with undone(guest, lambda: _restore(guest, host, ram),
                "unmounting the work tmpfs and deflating the balloon"):
        with evidence.phase("interleave"):
            must(guest, f"cd {WORKDIR} && exec 3>a 4>b && i=0 && while [ $i -lt {pages} ]; "
                        f"do printf %{page_size}s >&3; printf %{page_size}s >&4; "
                        "i=$((i+1)); done",
                 timeout=1800)
            must(guest, f"rm {WORKDIR}/a")

        counts_start = _vmstat_counters(guest)
        counts_inflated = _resize(guest, host, ram - size, settings, evidence, "inflate")
        figures["balloon_inflate"] = facts["inflated"] = (
            counts_inflated["balloon_inflate"] - counts_start["balloon_inflate"])
        must(guest, f"umount {WORKDIR}; {DROP_CACHES}")

        compact_and_track(guest, evidence, BALLOON_PAGE, (*VMSTAT_KEYS, *BALLOON_COUNTERS))
        figures["balloon_migrate"] = facts["balloon_migrate"] = (
            facts["vmstat_delta"]["balloon_migrate"])

        counts_deflated = _resize(guest, host, ram, settings, evidence, "deflate")
        figures["balloon_deflate"] = facts["deflated"] = (
            counts_deflated["balloon_deflate"] - counts_inflated["balloon_deflate"])
        figures["guest_ram_bytes"] = ram

        with evidence.phase("use_after_deflate"):
            facts["data_intact"] = _memory_usable(guest, size)


def _resize(guest: Guest, host: BalloonControl, target: int, settings: BalloonSettings,
            evidence: Evidence, phase: str) -> dict[str, int]:
    """Set the balloon so the guest has ``target`` bytes, wait until QEMU sees it
    (timed as ``phase``); the guest's balloon counters then."""
    with evidence.phase(phase):
        host.set_target(target)
        wait_for_balloon(host, target, settings)
    return _vmstat_counters(guest)


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


def _restore(guest: Guest, host: BalloonControl, ram: int) -> None:
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
