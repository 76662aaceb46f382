"""The repro on a running guest: fragment memory with the sample driver's pages, then
make one high-order allocation the way a driver does, and record what happened.

The memory is fragmented as the A/B fragments it (harness.check.sample: the
driver takes 90 % of the free memory and keeps one page in 8), and then the
rest, which the A/B leaves whole on purpose so its probe has something to
find: the driver's ``fill`` keeps one page of every free block of 8 pages left.
After that no free block of order 3 or more is left, so an order-N allocation
(N > 3, the costly orders, where the allocator gives up instead of calling the
OOM killer) succeeds only if compaction can make one, which it can only by
moving the driver's pages. The allocation is the driver's ``alloc_order``:
GFP_KERNEL | __GFP_COMP, reclaim and compaction allowed, warnings on.

Written against the Guest protocol; the allocator's report is read from the
kernel log the caller hands in (a VM's console log).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness import procfs
from harness.artifacts import ModuleArtifact
from harness.check.driver import SampleDriver
from harness.check.sample import VMSTAT_KEYS, ScenarioSettings
from harness.check.steps import (
    FREE_BLOCKS_VISIBLE,
    frag_indices,
    free_pages_after_dropping_caches,
    must,
    page_owners,
    page_size,
    quiet_background_compaction,
    snapshot,
)
from harness.guest import Guest
from harness.guest.reports import AllocationFailure, allocation_failures
from harness.report.model import COSTLY_ORDER

# How long the allocator's report may take to reach the console after the
# allocation returned (7.x prints from a console thread).
REPORT_SECONDS = 10.0
SETTLE_SECONDS = 1.0
PAGE_OWNER_TOP = 10  # the stacks kept in repro.json besides the driver's


@dataclass(frozen=True)
class ReproSettings:
    """What to reproduce: the driver's pages movable or not, and the order asked for."""

    movable: bool
    # None: a pageblock, the unit the driver's pages pin and compaction frees. A smaller
    # order can be had by compacting other movable memory: on 7.2 the rootfs's tmpfs
    # pages filled a 2 MiB block, which direct compaction emptied for an order-9
    # allocation with unmovable driver pages (x86_64 and arm64, 256 MiB guests).
    order: int | None = None
    fragmentation: ScenarioSettings = ScenarioSettings()

    def __post_init__(self) -> None:
        if self.order is not None and self.order <= COSTLY_ORDER:
            raise ValueError(f"order {self.order}: only orders above {COSTLY_ORDER} "
                             "(PAGE_ALLOC_COSTLY_ORDER) fail instead of invoking the OOM killer")


def _indices_dict(indices: procfs.FragIndices | None) -> dict[str, Any] | None:
    return indices.as_dict() if indices is not None else None


def _free_by_type(info: procfs.PageTypeInfo) -> dict[str, list[int]]:
    """Free blocks per order on each migrate type's lists (a type whose count the
    kernel printed only as a lower bound, '>100000', is left out)."""
    by_type = {}
    for migratetype in info.migratetypes:
        try:
            by_type[migratetype] = list(info.free_by_type(migratetype))
        except procfs.CappedCount:
            continue
    return by_type


def _failure_dict(failure: AllocationFailure) -> dict[str, Any]:
    return {"comm": failure.comm, "order": failure.order, "mode": failure.mode,
            "complete": failure.complete, "excerpt": failure.excerpt}


def _wait_for_report(read_log: Callable[[], str], order: int,
                     seconds: float) -> list[AllocationFailure]:
    """The allocation failure reports the log shows, once the one for ``order`` is
    complete (or ``seconds`` passed: an incomplete or missing report is evidence too)."""
    deadline = time.monotonic() + seconds
    text = read_log()
    while time.monotonic() < deadline:
        if any(f.order == order and f.complete for f in allocation_failures(text)):
            break
        time.sleep(0.2)
        text += read_log()
    return allocation_failures(text)


def collect(guest: Guest, module: ModuleArtifact, settings: ReproSettings,
            read_log: Callable[[], str], facts: dict[str, Any]) -> None:
    """Run the repro on ``guest``, recording into ``facts`` as it goes (so a kernel
    report midway leaves what was measured). ``read_log`` returns the kernel log
    text printed since its previous call."""
    timings: dict[str, float] = {}
    facts["seconds"] = timings
    size = page_size(guest)
    facts["page_size"] = size
    pageblock_order = procfs.parse_pagetypeinfo(
        must(guest, "cat /proc/pagetypeinfo")).pageblock_order
    order = settings.order if settings.order is not None else pageblock_order
    facts.update(order=order, pageblock_order=pageblock_order, movable=settings.movable)
    facts["notes"] = quiet_background_compaction(guest, *FREE_BLOCKS_VISIBLE)
    driver = SampleDriver.install(guest, module)
    params = settings.fragmentation.driver_params(
        settings.movable, free_pages_after_dropping_caches(guest, size))
    started = time.monotonic()
    driver.load(params)
    timings["load"] = round(time.monotonic() - started, 2)
    loaded = driver.stats()["nr_pages"]
    started = time.monotonic()
    driver.fill(settings.fragmentation.fragment)
    timings["fill"] = round(time.monotonic() - started, 2)
    state_before = driver.state()
    facts["driver"] = {"insmod": params.as_insmod_args(), "pages_loaded": loaded,
                       "pages_after_fill": state_before.stats["nr_pages"]}
    before = snapshot(guest)
    facts["indices"] = {"before": _indices_dict(frag_indices(guest))}
    read_log()  # what came before the allocation is not its report
    started = time.monotonic()
    facts["allocation_succeeded"] = driver.alloc_order(order)
    timings["alloc"] = round(time.monotonic() - started, 2)
    # A failed allocation's report may still be on its way to the console; after a
    # success there is none to wait for, only a moment for any other to arrive.
    wait = SETTLE_SECONDS if facts["allocation_succeeded"] else REPORT_SECONDS
    facts["failure_reports"] = [_failure_dict(f)
                                for f in _wait_for_report(read_log, order, wait)]
    after = snapshot(guest)
    facts["indices"]["after"] = _indices_dict(frag_indices(guest))
    state_after = driver.state()
    facts["free_blocks_at_least_order"] = {"before": before.buddyinfo.blocks_at_least(order),
                                           "after": after.buddyinfo.blocks_at_least(order)}
    facts["buddyinfo"] = {"before": list(before.buddyinfo.per_order()),
                          "after": list(after.buddyinfo.per_order())}
    facts["pageblocks_by_type"] = {"before": before.pagetypeinfo.blocks_by_type(),
                                   "after": after.pagetypeinfo.blocks_by_type()}
    facts["free_blocks_by_type"] = {"before": _free_by_type(before.pagetypeinfo),
                                    "after": _free_by_type(after.pagetypeinfo)}
    facts["vmstat_delta"] = procfs.vmstat_delta(before.vmstat, after.vmstat, VMSTAT_KEYS)
    facts["driver_counters"] = {
        key: state_after.stats[key] - state_before.stats[key]
        for key in ("migrated", "isolated", "putback", "failed")
        if key in state_before.stats and key in state_after.stats}
    started = time.monotonic()
    owners = page_owners(guest, pageblock_order)
    if owners is not None:  # a kernel with the page_owner fragment
        timings["page_owner"] = round(time.monotonic() - started, 2)
    facts["page_owner"] = owners.as_dict(PAGE_OWNER_TOP) if owners is not None else None
