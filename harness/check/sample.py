"""The sample-driver scenario: fragment with driver pages, compact, prove.

Written against the Guest protocol only, so it runs the same on a QEMU guest
(console or SSH) and on a board over SSH.
"""

from dataclasses import dataclass, replace
from pathlib import Path

from harness import procfs
from harness.artifacts import KernelBuild, ModuleArtifact
from harness.check.driver import (
    MODULE_NAME,
    STATE_COMMAND,
    DriverParams,
    DriverState,
    SampleDriver,
    parse_state,
    parse_try_alloc,
    try_alloc_command,
)
from harness.check.evidence import judge_ab
from harness.check.scenario import Evidence, Needs
from harness.check.steps import (
    FREE_BLOCKS_VISIBLE,
    compact_memory,
    free_pages_after_dropping_caches,
    must,
    page_owners,
    quiet_background_compaction,
    read_together,
    undone,
)
from harness.errors import HarnessError
from harness.guest import Guest
from harness.page_owner import PageOwners, headline
from harness.phases import Phases
from harness.report.model import HighOrder, RunResult, Side, huge_page_order, size_label

# Counters the evidence reports as deltas; compact_stall/fail/success count
# only allocation-driven compaction (direct compaction in the allocator's slow
# path, mm/page_alloc.c) and stay flat on `echo 1 > compact_memory` (measured:
# 0 on every manual compaction here), so they are shown but never used by the verdict.
VMSTAT_KEYS = (
    "pgmigrate_success", "pgmigrate_fail", "compact_migrate_scanned",
    "compact_free_scanned", "compact_isolated", "compact_stall", "compact_fail",
    "compact_success",
)


@dataclass(frozen=True)
class ScenarioSettings:
    """How the sample scenario fragments memory and probes high orders.

    The driver allocates ``cover_share`` of the guest's free memory and keeps
    one page in every ``fragment``: its pages then pin nearly every pageblock,
    so before compaction almost no order-``probe_order`` block is free. With
    ``probe_attempts`` larger than the free memory left outside the driver's
    reach can satisfy, the control group (movable=0) stays low after
    compaction while movable pages let compaction free many such blocks.

    The probe's order, unless given, comes from the guest (``probe_order_on``).
    """

    fragment: int = 8
    cover_share: float = 0.9
    pages: int | None = None  # None: derived from MemFree and cover_share
    seed: int = 1
    probe_order: int | None = None  # None: the guest's huge page, at most a pageblock
    probe_attempts: int = 64

    def driver_params(self, movable: bool, free_pages: int) -> DriverParams:
        """Module parameters for one round on a guest with ``free_pages`` free."""
        pages = self.pages or max(1, int(free_pages * self.cover_share) // self.fragment)
        return DriverParams(pages=pages, movable=movable, fragment=self.fragment,
                            seed=self.seed)

    def probe_order_on(self, page_size: int, pageblock_order: int) -> int:
        """The order to probe on a guest with ``page_size`` pages and pageblocks of
        ``pageblock_order``: a huge page (9 with 4 KiB pages, 11 with 16 KiB), the
        allocation compaction is for, but never more than a pageblock, the unit the
        driver's pages pin (with 64 KiB pages a huge page is 512 MiB, more than a
        small guest has, and its pageblock is smaller where HUGETLB_PAGE is off)."""
        if self.probe_order is not None:
            return self.probe_order
        return min(huge_page_order(page_size), pageblock_order)


def _counter_deltas(before: DriverState, after: DriverState) -> dict[str, int]:
    keys = ("isolated", "migrated", "putback", "eagain", "failed")
    # A counter the driver does not keep on this kernel is left out, not shown as 0.
    return {key: after.stats[key] - before.stats[key] for key in keys
            if key in before.stats and key in after.stats}


BUDDYINFO, VMSTAT = "/proc/buddyinfo", "/proc/vmstat"


@dataclass(frozen=True)
class Reading:
    """What a round reads on one side of its compaction, in this order: the free
    lists, the kernel's counters, the fragmentation indices, the driver's PFNs and
    counters, then the probe (last: its allocations change what the others show).
    Only what the evidence keeps: not pagetypeinfo or zoneinfo."""

    buddyinfo: procfs.BuddyInfo
    vmstat: procfs.Vmstat
    indices: procfs.FragIndices | None
    state: DriverState
    probe_successes: int


# The kernel's files a Reading reads in one process (the indices where they exist).
READ_FILES = (BUDDYINFO, VMSTAT, procfs.UNUSABLE_INDEX, procfs.EXTFRAG_INDEX)


def read_round(driver: SampleDriver, order: int, attempts: int) -> Reading:
    """One Reading, in one guest command (steps.read_together)."""
    outputs = read_together(driver.guest, {
        "files": procfs.read_files_command(READ_FILES),
        "driver": STATE_COMMAND,
        "probe": try_alloc_command(order, attempts),
    })
    files = procfs.split_files(outputs["files"])
    return Reading(buddyinfo=procfs.parse_buddyinfo(files.get(BUDDYINFO, "")),
                   vmstat=procfs.parse_vmstat(files.get(VMSTAT, "")),
                   indices=procfs.frag_indices_from(files),
                   state=parse_state(outputs["driver"]),
                   probe_successes=parse_try_alloc(outputs["probe"]))


def run_sample_round(driver: SampleDriver, movable: bool, settings: ScenarioSettings,
                     page_size: int, order: int, pageblock_order: int,
                     steps: Phases) -> tuple[Side, PageOwners | None]:
    """Load the driver, compact once, collect the evidence, unload; the driver covers
    free memory counted in pages of ``page_size``, the probe asks for ``order``.
    With page_owner (its kernel fragment) also who owns the pages after compaction,
    with the driver still loaded; else None. Each step is timed into ``steps``.

    Call quiet_background_compaction() once before the first round. The
    driver is unloaded even when a step fails, so a board is left as found.
    """
    guest = driver.guest
    attempts = settings.probe_attempts
    free_pages = steps.timed("free memory", free_pages_after_dropping_caches, guest, page_size)
    # After a failure an insmod may still run (a ^C over SSH), and release() waits
    # for it; after the round, the insmod has returned and rmmod alone will do.
    with undone(guest, lambda: steps.timed("unload", driver.release),
                f"unloading {MODULE_NAME}", done=lambda: steps.timed("unload", driver.unload)):
        steps.timed("load", driver.load, settings.driver_params(movable, free_pages))
        before = steps.timed("read before", read_round, driver, order, attempts)
        steps.timed("compact", compact_memory, guest)
        after = steps.timed("read after", read_round, driver, order, attempts)
        checked, mismatches = steps.timed("verify", driver.verify)
        owners = steps.timed("page_owner", page_owners, guest, pageblock_order)
    moved = sum(1 for index, pfn in after.state.pfns.items()
                if before.state.pfns.get(index) != pfn)
    vmstat_deltas = procfs.vmstat_delta(before.vmstat, after.vmstat, VMSTAT_KEYS)
    return Side(
        movable=movable,
        buddy_before=before.buddyinfo.per_order(),
        buddy_after=after.buddyinfo.per_order(),
        migrated_pages=moved,
        total_pages=len(before.state.pfns),
        pgmigrate_success_delta=vmstat_deltas["pgmigrate_success"],
        verify_mismatches=mismatches,
        verify_checked=checked,
        high_order=HighOrder(order=order, attempts=attempts, before=before.probe_successes,
                             after=after.probe_successes),
        vmstat_delta=vmstat_deltas,
        driver_counters=_counter_deltas(before.state, after.state),
        indices_before=before.indices,
        indices_after=after.indices,
    ), owners


SAMPLE = "sample"
CONTROL, MOVABLE = "movable=0", "movable=1"  # the rounds' keys in the evidence


def collect_ab(driver: SampleDriver, evidence: Evidence,
               settings: ScenarioSettings = ScenarioSettings()) -> None:
    """The seed commit's claim as an experiment: the same fragmentation twice,
    first with pages the kernel cannot move (movable=0), then with movable pages.

    Each round goes into ``evidence`` as it completes, so a kernel report during
    the movable=1 round leaves the movable=0 round's measurements. The control
    runs first so that a leak or a stuck isolated page from the movable round
    cannot make the control look worse than it is.
    """
    evidence.stopped = "the A/B stopped before its movable=0 round was complete"
    guest = driver.guest
    page_size = evidence.guest_page_size()
    timer = evidence.timer
    with timer.phase("knobs"):
        pageblock_order = procfs.parse_pagetypeinfo(
            must(guest, "cat /proc/pagetypeinfo")).pageblock_order
        evidence.notes += quiet_background_compaction(guest, *FREE_BLOCKS_VISIBLE)
    order = settings.probe_order_on(page_size, pageblock_order)
    evidence.notes.append(
        f"driver covers {settings.cover_share:.0%} of free memory, keeps 1 page in "
        f"{settings.fragment}; probe: {settings.probe_attempts} x order {order} "
        f"({size_label(page_size << order)}; {size_label(page_size)} pages, pageblock "
        f"order {pageblock_order})")
    for key, movable in ((CONTROL, False), (MOVABLE, True)):
        with timer.group(key) as steps:
            side, owners = run_sample_round(driver, movable, settings, page_size, order,
                                            pageblock_order, steps)
        evidence.facts[key] = side.to_dict()
        if owners is not None:
            evidence.notes.append(f"{key}, after compaction: {headline(owners)}")
        evidence.stopped = ("the A/B stopped in its movable=1 round; the movable=0 round "
                            "is kept")


def _proof_summary(movable: Side) -> str:
    """One sentence saying what a proven result rests on."""
    return (f"{movable.migrated_pages} of {movable.total_pages} driver pages changed PFN, "
            f"migratepage succeeded {movable.driver_counters.get('migrated', 0)} times, "
            f"pgmigrate_success +{movable.pgmigrate_success_delta}, contents intact")


class SampleAB:
    """The sample driver's A/B as a Scenario (harness.check.scenario).

    Its kernel needs nothing beyond every cell's fragments (from 6.17 the balloon
    core, which the balloon fragment sets); its module is built in ``prepare``.
    """

    name = SAMPLE
    needs = Needs()

    def __init__(self, settings: ScenarioSettings = ScenarioSettings(),
                 module: ModuleArtifact | None = None,
                 driver_source: Path | None = None) -> None:
        self.settings = settings
        self.module = module  # built by prepare unless given: one instance per cell
        self.driver_source = driver_source  # a fork of guest-modules/ (None: the shipped one)

    def prepare(self, kernel: KernelBuild, force: bool) -> None:
        """Build (or take from the cache) the sample driver for ``kernel``, unless
        the module was given."""
        from harness.module import build_module

        if self.module is None:
            self.module = build_module(kernel, force=force, source_dir=self.driver_source)

    def collect(self, guest: Guest, evidence: Evidence) -> None:
        """Copy the driver onto ``guest`` and run the A/B."""
        if self.module is None:
            raise HarnessError("the sample scenario's module is not built: prepare() first")
        if self.driver_source is not None:  # a fork's result must not pass for the shipped one's
            evidence.notes.append(f"sample driver built from {self.driver_source}")
        with evidence.timer.phase("install"):
            driver = SampleDriver.install(guest, self.module)
        collect_ab(driver, evidence, self.settings)

    def judge(self, evidence: Evidence) -> RunResult:
        """``judge_ab`` (harness.check.evidence: the rules) on both rounds; with a
        round missing (cut short by a kernel report) the A/B is not proven."""
        control, movable = (Side.from_dict(evidence.facts[key]) if key in evidence.facts
                            else None for key in (CONTROL, MOVABLE))
        result = RunResult(arch=evidence.arch, kernel=evidence.kernel, release=evidence.release,
                           page_size=evidence.page_size, proven=False, reasons=(),
                           movable=movable, unmovable=control, notes=tuple(evidence.notes),
                           seconds=evidence.seconds)
        if control is None or movable is None:
            return result
        verdict = judge_ab(control, movable)
        return replace(result, proven=verdict.proven,
                       reasons=verdict.failures or (_proof_summary(movable),))
