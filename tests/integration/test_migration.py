"""The harness's purpose, on real kernels: driver pages migrate under compaction.

Each test runs on every arch x kernel of the matrix (``--arch``, ``--kernel``)
against a real guest (``--target``), using only the plugin's public fixtures,
the way a user would write their own.
"""

from collections.abc import Callable

from harness.artifacts import KernelBuild, ModuleArtifact
from harness.check.driver import DriverParams, SampleDriver
from harness.check.sample import SampleAB
from harness.check.steps import compact_memory, must, page_size, quiet_background_compaction
from harness.guest import Guest
from harness.kernel.config import parse_dotconfig
from harness.report.model import RunResult


def test_movable_pages_migrate_and_beat_the_control(
    run_scenario: Callable[[SampleAB], RunResult], movable_module: ModuleArtifact
) -> None:
    """The A/B: same fragmentation, movable=0 then movable=1, one compaction each."""
    result = run_scenario(SampleAB(module=movable_module))
    assert result.proven, "; ".join(result.reasons)  # a kernel report: its headline first
    control, movable = result.unmovable, result.movable
    assert control is not None and control.migrated_pages == 0
    assert movable is not None and movable.migrated_pages > 0


def test_the_guest_reports_the_page_size_its_kernel_was_built_with(
    guest: Guest, kernel_build: KernelBuild
) -> None:
    """The page size every figure is counted in comes from the guest (the auxiliary
    vector): on a cell built with ``--kernel-config arm64-16k`` it must be 16 KiB."""
    config = parse_dotconfig(kernel_build.config.read_text())
    built = next((size for option, size in (("ARM64_16K_PAGES", 16384),
                                            ("ARM64_64K_PAGES", 65536))
                  if config.get(option) == "y"), 4096)
    assert page_size(guest) == built


def test_fault_injection_counts_and_putback(movable_driver: SampleDriver) -> None:
    """-EAGAIN every 3rd migration and a hard failure every 5th: counts match,
    failed pages come back through putback and keep their contents."""
    every_eagain, every_fail = 3, 5
    quiet_background_compaction(movable_driver.guest)
    movable_driver.load(DriverParams(pages=2048, fragment=4))
    try:
        movable_driver.inject_faults(every_eagain, every_fail)
        before = movable_driver.state().stats
        compact_memory(movable_driver.guest)
        after = movable_driver.state().stats
        checked, mismatches = movable_driver.verify()
    finally:
        movable_driver.unload()
    delta = {key: after[key] - before[key]
             for key in ("migrated", "eagain", "failed", "putback", "isolated") if key in after}
    calls = delta["migrated"] + delta["eagain"] + delta["failed"]
    print(f"fault injection (-EAGAIN every {every_eagain}, failure every {every_fail}): "
          f"{delta}, verified {checked} pages, {mismatches} mismatches")
    assert calls > 0, f"compaction never called migratepage: {delta}"
    assert delta["eagain"] == calls // every_eagain, delta
    expected_failed = sum(1 for i in range(1, calls + 1)
                          if i % every_fail == 0 and i % every_eagain != 0)
    assert delta["failed"] == expected_failed, delta
    if "putback" in delta:  # from 6.17 the balloon core puts pages back, uncounted
        assert delta["putback"] >= delta["failed"], "hard failures must come back via putback"
    assert after["isolated_now"] == 0
    assert (checked, mismatches) == (2048, 0)


# The churn's round counter (renamed into place: never read half written), its stop
# and end markers.
CHURN = "/tmp/harness-churn"


def _wait_for(guest: Guest, path: str, seconds: int) -> str:
    """The contents of ``path`` on the guest once it is there and not empty."""
    return must(guest, f"i=0; while [ ! -s {path} ] && [ $i -lt {seconds} ]; do sleep 1; "
                       f"i=$((i+1)); done; cat {path}", timeout=seconds + 30).strip()


def test_repeated_compaction_under_allocation_churn(
    movable_driver: SampleDriver, guest: Guest
) -> None:
    """Several compactions while another process allocates and frees memory.

    The churn (8 MiB written to tmpfs and deleted, again and again) runs until it
    is told to stop and counts its rounds, so the test knows that it had started
    before the first compaction, made progress while they ran, was still running
    after the last, and never failed to allocate (a failed dd ends it early).
    """
    quiet_background_compaction(guest)
    pages = (16 << 20) // page_size(guest)  # 16 MiB kept, 64 MiB allocated first
    must(guest, "mkdir -p /dev/shm && (mountpoint -q /dev/shm || mount -t tmpfs tmpfs /dev/shm)")
    must(guest, f"rm -rf {CHURN} && mkdir {CHURN}")
    movable_driver.load(DriverParams(pages=pages, fragment=4, seed=9))
    try:
        first = movable_driver.state()
        must(guest, f"(i=0; while [ ! -e {CHURN}/stop ]; do dd if=/dev/zero of=/dev/shm/churn "
                    f"bs=64k count=128 2>/dev/null || break; rm -f /dev/shm/churn; "
                    f"i=$((i+1)); echo $i > {CHURN}/n && mv {CHURN}/n {CHURN}/rounds; done; "
                    f"echo $i > {CHURN}/n && mv {CHURN}/n {CHURN}/ended) "
                    "</dev/null >/dev/null 2>&1 &")
        started = int(_wait_for(guest, f"{CHURN}/rounds", 60))
        compactions = during = 0
        # Four at least, and more (up to 12) until a churn round ended among them.
        while compactions < 4 or (during <= started and compactions < 12):
            compact_memory(guest)
            compactions += 1
            during = int(must(guest, f"cat {CHURN}/rounds"))
        ended_early = guest.run(f"test -e {CHURN}/ended").ok
        must(guest, f"touch {CHURN}/stop")
        rounds = int(_wait_for(guest, f"{CHURN}/ended", 120))
        last = movable_driver.state()
        checked, mismatches = movable_driver.verify()
    finally:
        guest.run(f"touch {CHURN}/stop")
        movable_driver.unload()
    print(f"churn: {rounds} rounds of 8 MiB, {during - started} of them during "
          f"{compactions} compactions")
    assert not ended_early, f"the churn ended after {during} rounds, before the compactions did"
    assert during > started >= 1, "the churn made no progress while compaction ran"
    assert rounds >= during
    moved = sum(1 for i, pfn in last.pfns.items() if first.pfns[i] != pfn)
    assert moved > 0 and last.stats["migrated"] - first.stats["migrated"] >= moved
    assert (checked, mismatches) == (pages, 0)
