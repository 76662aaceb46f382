"""``harness repro``'s judgement (pure, on facts) and what it shows a person.

Every rule of harness.repro.outcome.judge is broken once here and must be the
reason given; the allocator's report is found in console text recorded from
real guests (tests/data/allocation-failures/) and is never taken
for a kernel problem by the health watch.
"""

import re
from pathlib import Path
from typing import Any

import pytest

from harness import cli, page_owner, procfs
from harness.artifacts import ModuleArtifact
from harness.check.driver import DEBUGFS, STATE_COMMAND, STATS_MARKER
from harness.check.steps import DROP_CACHES
from harness.guest.health import ConsoleLogSource, HealthWatch
from harness.guest.reports import allocation_failures, find_problem, scan
from harness.repro.cli import guide, summary
from harness.repro.experiment import ReproSettings, collect
from harness.repro.outcome import judge
from tests.unit.fake_guests import AUXV, ScriptedGuest, snapshot_text, watched

PROCFS = Path(__file__).resolve().parent.parent / "data" / "procfs" / "5.10.223-x86_64"
OWNERS = (Path(__file__).resolve().parent.parent / "data" / "page-owner" / "5.10.223-x86_64"
          / "summary.full.txt")

REPORTS = Path(__file__).resolve().parent.parent / "data" / "allocation-failures"
RECORDED = sorted(REPORTS.glob("*.txt"))
INDICES = {"before": {"unusable_index": {"node0/DMA32": [0.0] * 9 + [1.0, 1.0]},
                      "extfrag_index": {"node0/DMA32": [-1.0] * 9 + [0.98, 0.99]}},
           "after": {"unusable_index": {"node0/DMA32": [0.0] * 9 + [1.0, 1.0]},
                     "extfrag_index": {"node0/DMA32": [-1.0] * 9 + [0.98, 0.99]}}}


def failure_report(order: int = 9) -> dict[str, Any]:
    return {"comm": "sh", "order": order, "mode": "0x40cc0(GFP_KERNEL|__GFP_COMP)",
            "complete": True,
            "excerpt": f"[   9.1] sh: page allocation failure: order:{order}, mode:0x40cc0"
                       "(GFP_KERNEL|__GFP_COMP), nodemask=(null)\n[   9.2] Mem-Info:\n"
                       "[   9.3] DMA32: 9*4kB (M) 3*8kB (UM) 0*2048kB = 60kB\n"
                       "[   9.4] 65536 pages RAM\n[   9.4] 1702 pages reserved"}


def facts(movable: bool, **changes: Any) -> dict[str, Any]:
    """What a run that behaved as expected records (movable=0: the allocation failed
    with the report; movable=1: it succeeded after compaction migrated driver pages)."""
    base: dict[str, Any] = {
        "arch": "x86_64", "kernel": "debian:5.10", "release": "5.10.223", "memory_mib": 256,
        "cpus": 2, "movable": movable, "kernel_report": None, "page_size": 4096, "order": 9,
        "pageblock_order": 9, "seconds": {"load": 3.0, "fill": 0.4, "alloc": 0.2},
        "driver": {"insmod": f"pages=6000 movable={int(movable)} fragment=8 seed=1",
                   "pages_loaded": 6000, "pages_after_fill": 7100},
        "allocation_succeeded": movable,
        "failure_reports": [] if movable else [failure_report()],
        "free_blocks_at_least_order": {"before": 0, "after": int(movable)},
        "buddyinfo": {"before": [10] * 11, "after": [10] * 11},
        "pageblocks_by_type": {"before": {"Unmovable": 4, "Movable": 120},
                               "after": {"Unmovable": 5, "Movable": 119}},
        "vmstat_delta": {"compact_stall": 1, "compact_fail": int(not movable),
                         "compact_success": int(movable), "pgmigrate_success": 500},
        "driver_counters": {"migrated": 480 if movable else 0},
        "indices": INDICES,
    }
    return {**base, **changes}


@pytest.mark.parametrize("movable", [False, True])
def test_what_the_driver_predicts_is_expected(movable: bool) -> None:
    outcome = judge(facts(movable))
    assert outcome.expected and outcome.exit_status == 0, outcome.reasons
    assert outcome.reasons == (
        "order-9 allocation succeeded after compaction migrated 480 driver pages" if movable
        else "order-9 allocation failed with unmovable driver pages; the allocator "
             "reported it (mode 0x40cc0(GFP_KERNEL|__GFP_COMP))",)


@pytest.mark.parametrize("movable,changes,reason", [
    (False, {"allocation_succeeded": True},
     "the order-9 allocation succeeded with pages the kernel cannot move"),
    (False, {"failure_reports": []}, "no 'page allocation failure: order:9' report"),
    (False, {"failure_reports": [failure_report(order=10)]},
     "no 'page allocation failure: order:9' report"),
    (True, {"allocation_succeeded": False},
     "the order-9 allocation failed with movable driver pages"),
    (True, {"failure_reports": [failure_report()]},
     "the allocator reported an order-9 failure with movable driver pages"),
    (True, {"driver_counters": {"migrated": 0}},
     "no driver page migrated: compaction did not make the room"),
    (False, {"free_blocks_at_least_order": {"before": 2, "after": 2}},
     "2 free blocks of order >= 9 were left before the allocation"),
    (True, {"free_blocks_at_least_order": {"before": 1, "after": 1}},
     "1 free blocks of order >= 9 were left before the allocation"),
])
def test_each_rule_fails_alone_with_its_reason(movable: bool, changes: dict[str, Any],
                                                reason: str) -> None:
    outcome = judge(facts(movable, **changes))
    assert not outcome.expected and outcome.exit_status == 1
    assert len(outcome.reasons) == 1 and outcome.reasons[0].startswith(reason), outcome.reasons


def test_a_kernel_report_is_never_expected_and_comes_first() -> None:
    report = {"kind": "WARNING", "headline": "WARNING: CPU: 1 PID: 9 at mm/page_alloc.c:1",
              "excerpt": "...", "step": "'echo 9 > …/alloc_order'"}
    outcome = judge(facts(False, kernel_report=report))
    assert outcome.reasons == (f"the kernel reported WARNING: {report['headline']}",)
    assert outcome.exit_status == 1


def test_the_summary_shows_the_report_the_counters_and_the_indices() -> None:
    text = summary(facts(False), judge(facts(False)))
    assert "one order-9 (2 MiB) allocation, GFP_KERNEL | __GFP_COMP" in text
    assert ": FAILED in 0.2 s" in text
    assert "sh: page allocation failure: order:9, mode:0x40cc0" in text
    assert "DMA32: 9*4kB (M) 3*8kB (UM) 0*2048kB = 60kB" in text
    assert "Mem-Info" not in text  # the whole report is in repro.json, not on the terminal
    assert "free blocks ≥ order 9: 0 → 0" in text
    assert "compact_stall +1" in text and "driver migratepage +0" in text
    assert "unusable_index at order 9: DMA32 1.000 → 1.000" in text
    assert "extfrag_index at order 9: DMA32 0.980 → 0.980" in text
    assert "pageblocks by migrate type: Unmovable 4 → 5, Movable 120 → 119" in text
    assert text.splitlines()[-1].startswith("as expected: order-9 allocation failed")


def test_the_summary_says_when_the_kernel_has_no_indices() -> None:
    text = summary(facts(True, indices={"before": None, "after": None}), judge(facts(True)))
    assert "unusable_index: not available (needs CONFIG_DEBUG_FS and CONFIG_COMPACTION)" in text


def test_the_guide_uses_the_repros_own_numbers() -> None:
    text = guide(facts(False))
    assert "echo 9 > /sys/kernel/debug/movable_sample/alloc_order" in text
    assert "insmod /tmp/movable_sample.ko pages=6000 movable=1 fragment=8 seed=1" in text


def test_orders_the_allocator_would_not_fail_are_refused_before_anything_is_built(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="PAGE_ALLOC_COSTLY_ORDER"):
        ReproSettings(movable=False, order=3)
    status = cli.main(["repro", "--arch", "x86_64", "--kernel", "/nonexistent", "--order", "2",
                       "--batch"])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("harness: error: --order 2: order 2: only "), err


# ----------------------------------------------------------------------------- recorded text

def test_recordings_cover_both_arches_an_old_and_a_new_kernel() -> None:
    names = [path.name for path in RECORDED]
    for arch in ("x86_64", "arm64"):
        for release in ("5.10", "7.2"):
            assert any(name.startswith(f"{release}.") and name.endswith(f"-{arch}.txt")
                       for name in names), names


@pytest.mark.parametrize("path", RECORDED, ids=lambda path: path.name)
def test_the_allocators_report_is_found_whole(path: Path) -> None:
    (failure,) = allocation_failures(path.read_text())
    # harness repro's default order: a pageblock, 4 MiB on these 4 KiB-page kernels
    assert failure.complete and failure.order == 10 and failure.comm == "sh"
    assert failure.mode.startswith("0x") and "GFP_KERNEL" in failure.mode
    lines = failure.excerpt.splitlines()
    assert "page allocation failure: order:10, mode:0x" in lines[0]
    assert any("Mem-Info:" in line for line in lines)
    assert any("ms_alloc_order_write" in line for line in lines)  # the driver's own call
    assert lines[-1].split("] ")[-1].split()[1:] in (["pages", "reserved"],
                                                      ["pages", "hwpoisoned"],
                                                      ["pages", "cma", "reserved"])


@pytest.mark.parametrize("path", RECORDED, ids=lambda path: path.name)
def test_the_allocators_report_is_not_a_kernel_problem(path: Path, tmp_path: Path) -> None:
    """It is what fragmentation does, not the kernel breaking: no report kind matches
    it, so the health watch lets the step that printed it pass."""
    text = path.read_text()
    assert scan(text) == [] and find_problem(text) is None
    log = tmp_path / "console.log"
    log.write_text(text)
    assert HealthWatch(ConsoleLogSource(log)).poll() is None


def test_a_report_cut_short_is_found_but_not_complete() -> None:
    text = RECORDED[0].read_text()
    cut = "\n".join(line for line in text.splitlines() if "pages reserved" not in line
                    and "hwpoisoned" not in line and "cma reserved" not in line)
    (failure,) = allocation_failures(cut)
    assert not failure.complete


# ----------------------------------------------------------------------------- collect

class ReproKernel:
    """Answers for the repro on a 5.10 x86_64 guest (recorded procfs texts); the
    allocation fails and the kernel prints the recorded report, as on movable=0."""

    def __init__(self, log: Path, report: str) -> None:
        self.guest = ScriptedGuest(log, self.answer)
        self.report = report
        self.snapshots = 0
        self.nr_pages = 0

    def answer(self, command: str) -> str | None:
        if command == procfs.PAGE_SIZE_COMMAND:
            return AUXV
        if command == "cat /proc/pagetypeinfo":
            return (PROCFS / "pagetypeinfo.boot.txt").read_text()
        if command.endswith("cat /proc/meminfo"):
            return "MemTotal: 250000 kB\nMemFree: 200000 kB\n"
        if command.startswith("insmod"):
            self.nr_pages = 5625
        if command.startswith("echo 8 > ") and command.endswith("/fill"):
            self.nr_pages += 700
        stats = f"nr_pages {self.nr_pages}\nmigrated 0\nisolated 0\nputback 0\nfailed 0\n"
        if command == f"cat {DEBUGFS}/stats":
            return stats
        if command == STATE_COMMAND:  # no pages: the repro reads only their count
            return STATS_MARKER + stats
        if match := re.fullmatch(r"echo (\d+) > \S+/alloc_order && cat \S+", command):
            self.guest.print_report(self.report)
            return f"order {match[1]} requested 1 succeeded 0\n"
        if command == page_owner.summary_command(10):
            return OWNERS.read_text()
        if command == procfs.snapshot_command():
            self.snapshots += 1
            return snapshot_text("before" if self.snapshots % 2 else "after", PROCFS)
        return ""


@pytest.mark.parametrize("path", RECORDED[:1], ids=lambda path: path.name)
def test_collect_records_what_judge_and_summary_read(path: Path, tmp_path: Path) -> None:
    kernel = ReproKernel(tmp_path / "console.log", path.read_text())
    guest = watched(kernel.guest)
    found: dict[str, Any] = {"arch": "x86_64", "kernel": "debian:5.10", "release": "5.10.223",
                             "memory_mib": 256, "cpus": 2, "kernel_report": None}
    module = ModuleArtifact(path=tmp_path / "movable_sample.ko", name="movable_sample",
                            kernel_release="5.10.223",
                            movable_api="aops")
    collect(guest, module, ReproSettings(movable=False),
            ConsoleLogSource(kernel.guest.log).read_new, found)
    assert found["order"] == found["pageblock_order"] and found["allocation_succeeded"] is False
    assert found["driver"] == {"insmod": "pages=5625 movable=0 fragment=8 seed=1",
                               "pages_loaded": 5625, "pages_after_fill": 6325}
    (report,) = found["failure_reports"]
    assert report["order"] == 10 and report["complete"]
    # The recorded "before" snapshot the fake hands out was taken without fill: the
    # free blocks it shows make the allocation prove nothing, and judge says so.
    left = found["free_blocks_at_least_order"]["before"]
    assert left > 0 and judge(found).reasons == (
        f"{left} free blocks of order >= 10 were left before the allocation: it did not "
        "depend on compaction",)
    assert found["indices"] == {"before": None, "after": None}  # the fake has no debugfs
    commands = [command for command, _ in kernel.guest.commands]
    fill, alloc = (commands.index(next(c for c in commands if c.endswith(suffix)))
                   for suffix in ("/fill", "/alloc_order"))
    assert commands.index(f"{DROP_CACHES} && cat /proc/meminfo") < fill < alloc
    assert "free blocks ≥ order 10: " in summary(found, judge(found))
    assert found["page_owner"]["top"][0]["driver"]
    assert "← the sample driver" in summary(found, judge(found))
    assert "page_owner | grep -c movable_sample" in guide(found)
    assert "page_owner" not in guide({**found, "page_owner": None})
