"""The stress scenario: the API's isolation contract under concurrency, on every vCPU at once.

The sample A/B proves pages move; on one CPU nothing races. Here, for a bounded
time (``StressSettings.seconds``), each vCPU runs at once:

- manual compaction: ``/proc/sys/vm/compact_memory`` and, where the kernel has
  NUMA (``/sys/devices/system/node/node0/compact``), per-node compaction;
- allocation-driven compaction: the driver's ``compact_alloc`` asks for huge pages
  with direct reclaim and compaction allowed (vmstat's ``compact_stall`` counts it);
- the driver churning its own pages: ``churn`` frees pages (before 6.17 also pages
  the VM holds isolated at that moment) and keeps new ones for the same logical
  index after checking the old one's contents;

plus one loop that re-fragments (``alloc`` with fragment K) and runs ``verify``,
while the host switches fault injection (-EAGAIN, then hard failures) on for part
of the time and samples the driver's counters. Then the load stops, the
counters settle, every page is verified, and the module is unloaded while a
compaction runs (every migration -EAGAIN, so pages stay isolated through the VM's
retries); the free memory is compared with its baseline from before the load.

The verdict rules (``stress_failures``), each reported with its numbers:

1. the load ran: driver pages migrated, churn replaced pages, allocation-driven
   compaction ran (``compact_stall`` rose), both injected faults happened, and
   the OOM killer killed no process (it would have killed the load's shells);
2. 0 verify mismatches: every page ``verify`` checked (during and after the
   load) and every page churn freed held its pattern;
3. accounting (driver-isolated eras, 4.8 ... 6.16): at every sample
   ``isolated = migrated + putback + freed_isolated + isolated_now`` (a page the
   driver frees while the VM holds it isolated leaves isolation that way);
4. settled: once the load stopped no page is left isolated;
5. released (4.8 ... 6.16): the VM released every page the driver freed while it
   held it isolated (``orphans_held`` 0: no such page keeps the mark
   ``__ClearPageMovable`` leaves with a reference on it);
6. no leak: after unloading, the free memory (page cache dropped, per-CPU lists
   counted) is within ``leak_tolerance_kib`` of its baseline;
7. races were hit: callbacks began while another CPU was inside one (``overlaps``)
   and the driver met the VM on a page (frees of isolated pages, isolations it
   refused because it was freeing that page, trylocks of its own pages that the
   VM held, an unload meeting isolated pages). Without them the scenario proved
   nothing about concurrency and says so: NOT PROVEN;
8. not held: no page migrated while the driver held it locked (``migrated_held``
   0, in every era). The driver's lock on a page is its page lock, which the VM
   holds through a migration, so a page that moved under it means the lock the
   driver holds is not the one the VM honours (or the VM broke its lock rule);
9. no kernel report (a WARNING, BUG, lockup, hung task, ...): harness.check.reported.

From 6.17 the balloon core isolates and puts back the driver's pages and never
lets the driver free an isolated one (guest-modules/README.md), so rules 3 and 5
do not apply there (the evidence says so), and the driver-visible races are its
trylocks meeting the VM and the unload meeting pages the core held isolated.
"""

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from harness import procfs
from harness.artifacts import KernelBuild, ModuleArtifact
from harness.check.driver import DEBUGFS, MODULE_NAME, DriverParams, SampleDriver, parse_verify
from harness.check.in_tree import in_tree_result
from harness.check.sample import VMSTAT_KEYS, ScenarioSettings
from harness.check.scenario import Evidence, Needs
from harness.check.steps import free_kib_drained, mem_free_bytes, must, snapshot, undone
from harness.errors import HarnessError
from harness.guest import Guest
from harness.report.in_tree import InTreeResult, TrackedPages

SCENARIO = "stress"
RUN_FLAG = "/tmp/harness-stress.run"
VERIFY_LOG = "/tmp/harness-stress.verify"
NODE_COMPACT = "/sys/devices/system/node/node0/compact"
OOM_KILL = "Out of memory: Kill"  # the OOM killer's line, "Killed process" (4.x "Kill process")
# The counters whose identity rule 3 checks, and the eras it applies to.
ACCOUNTING = ("isolated", "migrated", "putback", "freed_isolated", "isolated_now")
DRIVER_ISOLATES = frozenset({"aops", "movable_ops"})


@dataclass(frozen=True)
class StressSettings:
    """How long and how hard the stress runs, and what it tolerates.

    ``cover_share`` of the free memory is allocated with ``fragment`` (one page
    kept in K), so the driver's pages pin pageblocks the huge-page allocations
    need. The leak tolerance covers what the kernel keeps after such a load
    (slab, per-CPU lists it fills again); the churn-leaks variant leaks tens of
    MiB in the same time.
    """

    seconds: float = 20.0
    cover_share: float = 0.9
    fragment: int = 8
    seed: int = 1
    sample_every: float = 2.0
    churn_batch: int = 16
    # The re-fragment loop keeps this many pages per round, one per pageblock (the
    # driver's fragment set to a pageblock's pages): each pins a pageblock, so huge
    # pages need compaction again, allocation-driven compaction among them.
    refragment_pages: int = 8
    # Each vCPU's compact_alloc asks for huge pages worth this share of the free
    # memory at once (held, then freed); together they leave room: at 0.4 (80 %
    # with 2 vCPUs) the OOM killer killed the load's shells on arm64 (rule 1 says so).
    alloc_share: float = 0.25
    # (share of the load's time, inject_eagain_every, inject_fail_every), in order
    # Both at once (every 3rd migration -EAGAIN, every 4th but those fails hard): a
    # phase of each alone sometimes met no migration at all in an 8 s run.
    faults: tuple[tuple[float, int, int], ...] = ((0.2, 0, 0), (0.7, 3, 4), (1.0, 0, 0))
    leak_tolerance_kib: int = 4096
    stop_timeout: float = 300.0
    # Longest the huge-page allocations run alone, waiting for their first direct
    # compaction, before the compaction and churn loops start (_start_load).
    first_stall_seconds: float = 5.0

    def faults_at(self, share: float) -> tuple[int, int]:
        """The fault injection for the moment ``share`` of the load has passed."""
        return next(((eagain, fail) for until, eagain, fail in self.faults if share < until),
                    (0, 0))


class StressScenario:
    """The experiment of this module's docstring as a Scenario (harness.check.scenario)."""

    name = SCENARIO
    needs = Needs()

    def __init__(self, settings: StressSettings = StressSettings(),
                 module: ModuleArtifact | None = None,
                 driver_source: Path | None = None) -> None:
        self.settings = settings
        self.module = module
        self.driver_source = driver_source  # a fork of guest-modules/ (None: the shipped one)

    def prepare(self, kernel: KernelBuild, force: bool) -> None:
        """Build (or take from the cache) the sample driver for ``kernel``, unless
        the module was given."""
        from harness.module import build_module

        if self.module is None:
            self.module = build_module(kernel, force=force, source_dir=self.driver_source)

    def collect(self, guest: Guest, evidence: Evidence) -> None:
        """Copy the driver onto ``guest`` and run the stress."""
        if self.module is None:
            raise HarnessError("the stress scenario's module is not built: prepare() first")
        if self.driver_source is not None:  # a fork's result must not pass for the shipped one's
            evidence.notes.append(f"sample driver built from {self.driver_source}")
        evidence.facts["movable_api"] = self.module.movable_api
        run_stress(SampleDriver.install(guest, self.module), evidence, self.settings)

    def judge(self, evidence: Evidence) -> InTreeResult:
        """``stress_failures`` on complete evidence; evidence cut short is not proven."""
        facts = evidence.facts
        if "free_after_kib" not in facts:  # the last fact: after the unload
            return in_tree_result(evidence)
        failures = stress_failures(facts)
        figures = stress_figures(facts)
        result = in_tree_result(evidence, proven=not failures,
                                reasons=tuple(failures) or (_summary(facts, figures),),
                                data_checked=figures["page_checks"],
                                data_mismatches=figures["mismatches"])
        return replace(result, figures=figures)


def _background(guest: Guest, body: str) -> str:
    """Start ``while [ -e RUN_FLAG ]; do body; done`` in the background; its PID."""
    return must(guest, f"(while [ -e {RUN_FLAG} ]; do {body}; done) >/dev/null 2>&1 & "
                       "echo $!").split()[-1]


def _stop(guest: Guest, pids: list[str], timeout: float) -> None:
    """Let the loops finish their current round and wait for them: until each PID is
    gone or a zombie (its parent may be a shell that reaps it only later, or none)."""
    must(guest, f"rm -f {RUN_FLAG}; for p in {' '.join(pids)}; do "
                "while [ -e /proc/$p ] && ! grep -q ') Z' /proc/$p/stat 2>/dev/null; do "
                "usleep 100000 2>/dev/null || sleep 1; done; done", timeout=timeout)


def _compact_stalls(guest: Guest) -> int:
    """vmstat's compact_stall now: direct compactions so far."""
    return procfs.parse_vmstat(must(guest, "grep '^compact_stall ' /proc/vmstat"))["compact_stall"]


def _start_load(guest: Guest, cpus: int, order: int, blocks: int, pageblock_order: int,
                settings: StressSettings, node_compact: bool, pids: list[str]) -> float | None:
    """Start every vCPU's loops and the re-fragment/verify loop, each PID into ``pids``
    as soon as it runs (so a failure midway still stops those started). Returns how
    long the huge-page allocations ran alone before their first direct compaction
    (None: none within ``settings.first_stall_seconds``)."""
    compaction = "echo 1 > /proc/sys/vm/compact_memory"
    if node_compact:
        compaction += f"; echo 1 > {NODE_COMPACT}"
    must(guest, f"touch {RUN_FLAG}; rm -f {VERIFY_LOG}; "
                f"echo {1 << pageblock_order} > /sys/module/{MODULE_NAME}/parameters/fragment")
    # The huge-page allocations start first, and alone until they have compacted
    # (compact_stall): the driver's fresh pages pin nearly every pageblock, so their
    # first rounds must compact, but once the compaction loops run they may find
    # huge pages those made (arm64 7.2: no direct compaction in 20 s, once in three
    # CI runs, when the loops started right after them). Later rounds meet the
    # churn's and the re-fragment loop's holes.
    stalls = _compact_stalls(guest)
    started = time.monotonic()
    for _ in range(cpus):
        pids.append(_background(guest, f"echo {order} {blocks} > {DEBUGFS}/compact_alloc"))
    alone: float | None = None
    while time.monotonic() - started < settings.first_stall_seconds:
        if _compact_stalls(guest) > stalls:
            alone = round(time.monotonic() - started, 2)
            break
        time.sleep(0.05)
    for _ in range(cpus):
        pids.append(_background(guest, compaction))
        pids.append(_background(guest, f"echo {settings.churn_batch} > {DEBUGFS}/churn"))
    pids.append(_background(guest, f"echo {settings.refragment_pages} > {DEBUGFS}/alloc; "
                                   f"cat {DEBUGFS}/verify >> {VERIFY_LOG}"))
    return alone


def run_stress(driver: SampleDriver, evidence: Evidence, settings: StressSettings) -> None:
    """The steps of the experiment; every fact goes into ``evidence`` when measured."""
    guest = driver.guest
    facts = evidence.facts
    page_size = evidence.guest_page_size()
    cpus = int(must(guest, "grep -c ^processor /proc/cpuinfo").strip())
    node_compact = guest.run(f"test -w {NODE_COMPACT}").ok
    before = snapshot(guest)
    order = ScenarioSettings().probe_order_on(page_size, before.pagetypeinfo.pageblock_order)
    blocks = max(1, int(mem_free_bytes(guest) * settings.alloc_share) // (page_size << order))
    facts.update(cpus=cpus, node_compact=node_compact, alloc_order=order, alloc_blocks=blocks,
                 leak_tolerance_kib=settings.leak_tolerance_kib,
                 data_unit="page check (verify during and after the load, churn)",
                 buddy_before=list(before.buddyinfo.per_order()))
    evidence.notes.append(
        f"{settings.seconds:.0f} s on {cpus} vCPUs: per vCPU compact_memory"
        f"{' and node0/compact' if node_compact else ' (no per-node compact: no NUMA)'}, "
        f"{blocks} x order {order} compact_alloc, churn {settings.churn_batch}; "
        f"one loop keeping {settings.refragment_pages} pages one per pageblock + verify; "
        "faults "
        + ", ".join(f"until {until:.0%} eagain/{eagain} fail/{fail}"
                    for until, eagain, fail in settings.faults))
    facts["free_before_kib"] = free_kib_drained(guest)
    oom_before = _oom_kills(guest)
    free_pages = facts["free_before_kib"] * 1024 // page_size
    params = DriverParams(pages=max(1, int(free_pages * settings.cover_share)
                                    // settings.fragment),
                          fragment=settings.fragment, seed=settings.seed)
    evidence.doing("loading the driver")
    with undone(guest, driver.release, f"unloading {MODULE_NAME}"):
        driver.load(params)
        first = driver.state()
        facts["pages_loaded"] = len(first.pfns)
        samples: list[dict[str, int]] = facts.setdefault("samples", [])
        samples.append(dict(first.stats))
        with evidence.phase("load"):
            pids: list[str] = []
            with undone(guest, lambda: _stop(guest, pids, settings.stop_timeout),
                        "stopping the load"):
                alone = _start_load(guest, cpus, order, blocks,
                                    before.pagetypeinfo.pageblock_order, settings,
                                    node_compact, pids)
                evidence.notes.append(
                    f"the huge-page allocations ran alone {alone} s until their first "
                    "direct compaction" if alone is not None else
                    f"no direct compaction in the huge-page allocations' first "
                    f"{settings.first_stall_seconds:g} s alone")
                _drive(driver, settings, samples, facts.setdefault("phases", []))
            driver.inject_faults(0, 0)
        evidence.doing("its checks after the load")
        settled = driver.stats()
        samples.append(settled)
        facts["settled"] = settled
        last = driver.state()
        facts["tracked"] = asdict(_tracked(first.pfns, last.pfns))
        facts["oom_kills"] = _oom_kills(guest) - oom_before
        facts["verify_during"] = [list(parse_verify(line)) for line in must(
            guest, f"cat {VERIFY_LOG}; rm -f {VERIFY_LOG}").splitlines() if line.strip()]
        facts["verify_after"] = list(driver.verify())
        with evidence.phase("unload_race"):
            facts["unload"] = _unload_racing(driver, cpus, settings)
    after = snapshot(guest)
    facts["buddy_after"] = list(after.buddyinfo.per_order())
    facts["vmstat_delta"] = procfs.vmstat_delta(before.vmstat, after.vmstat, VMSTAT_KEYS)
    facts["pgmigrate_success_delta"] = facts["vmstat_delta"]["pgmigrate_success"]
    facts["free_after_kib"] = free_kib_drained(guest)


def _drive(driver: SampleDriver, settings: StressSettings, samples: list[dict[str, int]],
           phases: list[dict[str, Any]]) -> None:
    """While the load runs: switch fault injection per ``settings.faults`` and sample
    the driver's counters every ``sample_every`` seconds."""
    started = time.monotonic()
    current: tuple[int, int] | None = None
    while (elapsed := time.monotonic() - started) < settings.seconds:
        wanted = settings.faults_at(elapsed / settings.seconds)
        if wanted != current:
            driver.inject_faults(*wanted)
            current = wanted
            phases.append({"at": round(elapsed, 1), "eagain_every": wanted[0],
                           "fail_every": wanted[1]})
        samples.append(driver.stats())
        time.sleep(max(0.0, min(settings.sample_every,
                                settings.seconds - (time.monotonic() - started))))


def _unload_racing(driver: SampleDriver, cpus: int,
                   settings: StressSettings) -> dict[str, int]:
    """rmmod while every vCPU compacts and every migration returns -EAGAIN (pages
    stay isolated through the VM's retries); what the driver's unload logged."""
    guest = driver.guest
    driver.inject_faults(1, 0)
    must(guest, f"touch {RUN_FLAG}")
    pids: list[str] = []
    with undone(guest, lambda: _stop(guest, pids, settings.stop_timeout),
                "stopping the compaction loops"):
        pids += [_background(guest, "echo 1 > /proc/sys/vm/compact_memory")
                 for _ in range(cpus)]
        must(guest, "usleep 300000 2>/dev/null || sleep 1")
        driver.unload()
    released, isolated = driver.last_release()
    return {"released": released, "isolated": isolated}


def _oom_kills(guest: Guest) -> int:
    """How many processes the OOM killer has killed since boot (its dmesg lines)."""
    return int(must(guest, f"dmesg | grep -c '{OOM_KILL}' || true").strip())


def _tracked(before: dict[int, int], after: dict[int, int]) -> TrackedPages:
    """The pages loaded at the start: how many sit elsewhere now (moved by migration
    or replaced by churn), and how many frames the driver holds now that it did not."""
    old, new = set(before.values()), set(after.values())
    return TrackedPages(kind="driver pages loaded (moved or replaced by churn)",
                        before=len(before), after=len(after),
                        moved=sum(1 for index, pfn in before.items() if after.get(index) != pfn),
                        arrived=len(new - old))


def _rise(facts: dict[str, Any], key: str) -> int:
    """How much a driver counter rose from the first sample to the settled one."""
    return int(facts["settled"].get(key, 0)) - int(facts["samples"][0].get(key, 0))


def stress_figures(facts: dict[str, Any]) -> dict[str, int]:
    """The numbers every rule is judged on, as the report shows them."""
    settled = facts["settled"]
    verifies = [*facts["verify_during"], facts["verify_after"]]
    checks = sum(checked for checked, _ in verifies) + _rise(facts, "churned")
    vm = facts["vmstat_delta"]
    broken = [sample for sample in facts["samples"] if _accounting_gap(sample)]
    figures = {
        "vcpus": facts["cpus"],
        "migrated": _rise(facts, "migrated"),
        "churned": _rise(facts, "churned"),
        "eagain": _rise(facts, "eagain"),
        "failed": _rise(facts, "failed"),
        "compact_stall": vm.get("compact_stall", 0),
        "oom_kills": facts["oom_kills"],
        "page_checks": checks,
        "mismatches": (sum(bad for _, bad in verifies)
                       + _rise(facts, "churn_mismatches")),
        "samples": len(facts["samples"]),
        "accounting_broken": len(broken),
        "isolated_after": settled.get("isolated_now", 0),
        "free_delta_kib": facts["free_after_kib"] - facts["free_before_kib"],
        "leak_tolerance_kib": facts["leak_tolerance_kib"],
        "overlaps": _rise(facts, "overlaps"),
        "callback_cpus": settled.get("callback_cpus", 0),
        "lock_busy": _rise(facts, "lock_busy"),
        "unload_isolated": facts["unload"]["isolated"],
        "migrated_held": settled.get("migrated_held", 0),
    }
    if facts["movable_api"] in DRIVER_ISOLATES:
        figures.update(freed_isolated=_rise(facts, "freed_isolated"),
                       isolate_refused=_rise(facts, "isolate_refused"),
                       orphans_held=settled.get("orphans_held", 0))
    return figures


def _accounting_gap(sample: dict[str, int]) -> int:
    """isolated - (migrated + putback + freed_isolated + isolated_now) in one sample
    (0 where the driver does not count isolations: from 6.17)."""
    if not all(key in sample for key in ACCOUNTING):
        return 0
    isolated, *rest = (sample[key] for key in ACCOUNTING)
    return isolated - sum(rest)


def stress_failures(facts: dict[str, Any]) -> list[str]:
    """The rules of this module's docstring that ``facts`` break, each with its numbers."""
    fig = stress_figures(facts)
    failures = []
    idle = [what for what, broken in (
        ("no driver page migrated", fig["migrated"] == 0),
        ("churn replaced no page", fig["churned"] == 0),
        ("no allocation-driven compaction (compact_stall +0)", fig["compact_stall"] == 0),
        ("no migration returned -EAGAIN", fig["eagain"] == 0),
        ("no migration failed hard", fig["failed"] == 0),
        (f"the OOM killer killed {fig['oom_kills']} processes", fig["oom_kills"] > 0))
        if broken]
    if idle:
        failures.append(f"the stress load did not run in full: {'; '.join(idle)}")
    if fig["mismatches"]:
        failures.append(f"{fig['mismatches']} of {fig['page_checks']} page checks found wrong "
                        "contents")
    if fig["accounting_broken"]:
        first = next(sample for sample in facts["samples"] if _accounting_gap(sample))
        failures.append(
            f"the driver's accounting broke in {fig['accounting_broken']} of {fig['samples']} "
            f"samples: isolated {first['isolated']} != migrated + putback + freed_isolated + "
            f"isolated_now = {first['isolated'] - _accounting_gap(first)}")
    if fig["isolated_after"]:
        failures.append(f"{fig['isolated_after']} pages were still isolated after the load")
    if fig.get("orphans_held", 0):
        failures.append(f"the VM still held {fig['orphans_held']} pages the driver freed while "
                        "isolated")
    if -fig["free_delta_kib"] > fig["leak_tolerance_kib"]:
        failures.append(f"free memory {-fig['free_delta_kib']} KiB below its baseline after "
                        f"unloading (tolerance {fig['leak_tolerance_kib']} KiB): pages leaked")
    if fig["migrated_held"]:
        failures.append(f"{fig['migrated_held']} pages were migrated while the driver held "
                        "them locked")
    met_vm = (fig["lock_busy"] + fig["unload_isolated"] + fig.get("freed_isolated", 0)
              + fig.get("isolate_refused", 0))
    if not fig["overlaps"] or not met_vm:
        failures.append(
            f"no race was hit (overlapping callbacks {fig['overlaps']} on "
            f"{fig['callback_cpus']} CPUs, driver meeting the VM on a page {met_vm}): "
            "the stress proved nothing about concurrency")
    return failures


def _summary(facts: dict[str, Any], fig: dict[str, int]) -> str:
    """One sentence saying what a proven result rests on."""
    races = (f"{fig['freed_isolated']} frees of isolated pages, {fig['isolate_refused']} "
             "isolations refused while freeing, " if "freed_isolated" in fig else "")
    accounting = (f"accounting held at all {fig['samples']} samples, "
                  if facts["movable_api"] in DRIVER_ISOLATES
                  else "accounting is the balloon core's (not checked), ")
    return (f"{fig['vcpus']} vCPUs: {fig['migrated']} migrations, {fig['churned']} pages "
            f"churned, compact_stall +{fig['compact_stall']}; races: {races}{fig['lock_busy']} "
            f"trylocks meeting the VM, {fig['overlaps']} overlapping callbacks on "
            f"{fig['callback_cpus']} CPUs, unload met {fig['unload_isolated']} isolated; "
            f"0 mismatches in {fig['page_checks']} page checks, {accounting}nothing left "
            "isolated, none migrated while the driver held it locked, free memory "
            f"{fig['free_delta_kib']:+d} KiB from baseline (tolerance "
            f"{fig['leak_tolerance_kib']})")

