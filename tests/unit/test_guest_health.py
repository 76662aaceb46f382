"""The kernel health watch: what counts as a problem, and which step it fails.

Each kind of report as the kernels print it is in test_kernel_reports.py; this
file is about how reports combine and how the watch and its guest behave.
"""

import threading
import time
from pathlib import Path

import pytest

from harness.guest import CommandResult, GuestError, GuestTimeout, KernelProblem
from harness.guest.health import (
    ConsoleLogSource,
    DmesgSource,
    HealthWatch,
    WatchedGuest,
)
from harness.guest.reports import find_problem
from tests.unit.report_texts import console_text

SYSRQ_CRASH = """\
[   12.000100] sysrq: SysRq : Trigger a crash
[   12.000200] BUG: unable to handle kernel NULL pointer dereference at           (null)
[   12.000300] IP: [<ffffffff812a1b4c>] sysrq_handle_crash+0x11/0x20
[   12.000400] Oops: 0002 [#1]
[   12.000500] CPU: 0 PID: 60 Comm: sh Not tainted 4.8.15 #1
[   12.000600] Call Trace:
[   12.000700]  [<ffffffff812a1f2a>] __handle_sysrq+0xea/0x140
[   12.000800] ---[ end trace 6d3fd1e0a1c9b2f4 ]---
[   12.000900] Kernel panic - not syncing: Fatal exception
[   12.001000] Kernel Offset: disabled
[   12.001100] ---[ end Kernel panic - not syncing: Fatal exception
"""

WARNING = """\
[    3.000000] movable_sample: loaded
[    3.100000] ------------[ cut here ]------------
[    3.100100] WARNING: CPU: 0 PID: 70 at mm/migrate.c:123 move_to_new_page+0x1/0x2
[    3.100200] Modules linked in: movable_sample
[    3.100300] ---[ end trace 1234 ]---
[    3.200000] after the warning
"""


def test_sysrq_crash_is_the_oops_that_caused_the_panic() -> None:
    """4.8's sysrq c: the NULL dereference is the cause, the panic its consequence."""
    problem = find_problem("[ 1.0] booting\n" + SYSRQ_CRASH)
    assert problem is not None and problem.kind == "Oops"
    assert problem.headline == ("BUG: unable to handle kernel NULL pointer dereference at"
                                "           (null)")
    assert problem.fatal and problem.later == ("Kernel panic - not syncing: Fatal exception",)
    assert "sysrq_handle_crash" in problem.excerpt and "Oops: 0002" in problem.excerpt
    assert "---[ end Kernel panic" in problem.excerpt.splitlines()[-1]
    assert "(then: Kernel panic - not syncing: Fatal exception)" in str(problem)


def test_issue_14_bug_then_invalid_opcode_is_one_bug() -> None:
    """The text of issue 14 (x86 since 4.15): BUG_ON's line, then the trap's."""
    problem = find_problem("[   41.513370] kernel BUG at mm/migrate.c:1073!\n"
                           "[   41.513561] invalid opcode: 0000 [#1] SMP NOPTI\n")
    assert problem is not None
    assert (problem.kind, problem.headline) == ("BUG", "kernel BUG at mm/migrate.c:1073!")
    assert problem.later == () and not problem.fatal


def test_the_first_report_wins_and_later_ones_are_named() -> None:
    later_bug = ("[    5.000000] ------------[ cut here ]------------\n"
                 "[    5.000100] kernel BUG at mm/compaction.c:1000!\n"
                 "[    5.000200] invalid opcode: 0000 [#2] SMP\n"
                 "[    5.000300] ---[ end trace 99 ]---\n")
    problem = find_problem(WARNING + later_bug)
    assert problem is not None and problem.kind == "WARNING"
    assert "mm/migrate.c:123" in problem.headline
    assert problem.later == ("kernel BUG at mm/compaction.c:1000!",)
    assert "after the warning" in problem.excerpt and "[#2]" in problem.excerpt


def test_a_long_incident_is_cut_but_names_what_was_cut() -> None:
    frames = "".join(f"[    3.2{index:05d}]  [<ffffffff8100{index:04x}>] f{index}+0x1/0x2\n"
                     for index in range(200))
    panic = "[    9.000000] Kernel panic - not syncing: Fatal exception\n"
    problem = find_problem(WARNING.replace("[    3.100300] ---[ end trace 1234 ]---\n",
                                           "[    3.100300] Call Trace:\n" + frames) + panic)
    assert problem is not None and problem.fatal
    lines = problem.excerpt.splitlines()
    assert lines[-2:] == ["[...]", panic.strip()]
    assert len(lines) < 130


def test_warning_excerpt_stops_at_the_end_of_trace() -> None:
    problem = find_problem(WARNING)
    assert problem is not None and problem.kind == "WARNING"
    assert "mm/migrate.c:123" in problem.headline
    assert "after the warning" not in problem.excerpt


@pytest.mark.parametrize("line,kind", [
    ("[ 30.0] NMI watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [sh:61]", "soft lockup"),
    ("[ 30.0] watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [kworker:1]", "soft lockup"),
    ("[ 150.0] INFO: task sh:61 blocked for more than 120 seconds.", "hung task"),
    ("[ 5.0] BUG: sleeping function called from invalid context at mm/slab.h:1", "BUG"),
    ("[ 5.0] Internal error: Oops: 96000045 [#1] PREEMPT SMP", "Oops"),
    ("[ 5.0] general protection fault: 0000 [#1] SMP", "Oops"),
    ("[ 5.0] WARNING: possible circular locking dependency detected", "WARNING"),
    ("[ 40.0] INFO: rcu_sched self-detected stall on CPU", "RCU stall"),
    ("[ 7.0] pagealloc: memory corruption", "page poison corruption"),
    ("[ 7.0] pagealloc: single bit error", "page poison corruption"),
    ("[ 9.0] UBSAN: shift-out-of-bounds in mm/page_alloc.c:10:2", "UBSAN"),
    ("[ 9.0] NMI watchdog: Watchdog detected hard LOCKUP on cpu 0", "hard lockup"),
    ("[ 9.0] INFO: task kworker/0:1:12 blocked in I/O wait for more than 122 seconds.",
     "hung task"),
    ("[ 9.0] BUG: scheduling while atomic: sh/70/0x00000002", "BUG"),
    ("[ 9.0] divide error: 0000 [#1] SMP", "Oops"),
    ("[ 9.0] ------------[ cut here ]------------", "WARNING"),
])
def test_problem_kinds(line: str, kind: str) -> None:
    problem = find_problem(line + "\n")
    assert problem is not None and problem.kind == kind


@pytest.mark.parametrize("line", [
    "[ 0.5] Warning: Processor Platform Limit event detected, but not handled.",
    "[ 0.6] ACPI: PCI Interrupt Link [GSIF] enabled at IRQ 21",
    "[ 0.7] random: crng init done",
    "[ 0.8] ==================================================================",
    "[ 0.9] page:ffffea00001a2b40 count:1 mapcount:0 mapping:ffff8800069c1a02 index:0x0",
    "[ 1.0] ---[ end trace 0b1e5d2c9a4f7e31 ]---",
    "[ 1.1] rcu: Hierarchical RCU implementation.",
    "[ 1.2] NMI watchdog: disabled (cpu0): hardware events not enabled",
    "harness-guest-ready",
])
def test_ordinary_lines_are_not_problems(line: str) -> None:
    assert find_problem(line + "\n") is None


def test_console_source_reads_only_new_complete_lines(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    source = ConsoleLogSource(log)
    assert source.read_new() == ""
    log.write_text("one\ntw")
    assert source.read_new() == "one\n"
    with log.open("a") as more:
        more.write("o\n")
    assert source.read_new() == "two\n"
    assert source.read_new() == ""


class FakeGuest:
    """A Guest whose run() appends text to a console log, as a kernel would."""

    def __init__(self, log: Path, fail_with: GuestError | None = None) -> None:
        self.log = log
        self.fail_with = fail_with
        self.closed = False

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        with self.log.open("a") as console:
            console.write(command)
        if self.fail_with is not None:
            raise self.fail_with
        return CommandResult(command, "", 0)

    def put(self, local: Path, remote: str) -> None:
        pass

    def get(self, remote: str, local: Path) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _watched(tmp_path: Path, fail_with: GuestError | None = None,
             explain: GuestError | None = None) -> WatchedGuest:
    log = tmp_path / "console.log"
    log.write_text("[ 0.1] booted\n")
    watch = HealthWatch(ConsoleLogSource(log), settle_seconds=0.1)
    return WatchedGuest(FakeGuest(log, fail_with), watch,
                        explain=(lambda error: explain) if explain else None)


def test_the_step_during_which_the_warning_appeared_fails(tmp_path: Path) -> None:
    guest = _watched(tmp_path)
    assert guest.run("[ 1.0] quiet step\n").ok
    with pytest.raises(KernelProblem, match="WARNING"):
        guest.run(WARNING)
    assert guest.run("[ 4.0] next step\n").ok  # reported once, by its own step


def test_a_transport_error_becomes_the_panic_that_caused_it(tmp_path: Path) -> None:
    guest = _watched(tmp_path, fail_with=GuestError("console closed"),
                     explain=GuestError("QEMU exited"))
    with pytest.raises(KernelProblem, match="panic") as caught:
        guest.run(SYSRQ_CRASH)
    assert "sysrq_handle_crash" in caught.value.excerpt


def test_a_transport_error_after_an_oops_is_the_oops_without_asking_how_the_vm_died(
        tmp_path: Path) -> None:
    """An Oops that kills the command's task ends an SSH command without an exit
    status while QEMU lives on: the report is the cause, raised at once, and the
    slow question (does QEMU exit within seconds?) is not asked (test_lkdtm.py
    measured 3.2 s from the Oops's line to the failure before)."""
    log = tmp_path / "console.log"
    log.write_text("[ 0.1] booted\n")
    asked: list[GuestError] = []
    guest = WatchedGuest(FakeGuest(log, GuestError("closed without an exit status")),
                         HealthWatch(ConsoleLogSource(log), settle_seconds=0.1),
                         explain=lambda error: asked.append(error) or None)
    with pytest.raises(KernelProblem, match="Oops"):
        guest.run(console_text("oops-null.5.10-x86_64"))
    assert asked == [] and guest.dead is None


def test_a_transport_error_without_kernel_trouble_is_explained(tmp_path: Path) -> None:
    guest = _watched(tmp_path, fail_with=GuestError("console closed"),
                     explain=GuestError("QEMU was killed by signal 9"))
    with pytest.raises(GuestError, match="killed by signal 9"):
        guest.run("[ 1.0] nothing wrong\n")


class DmesgGuest(FakeGuest):
    """A board: dmesg prints the log with timestamps."""

    def __init__(self, log: Path) -> None:
        super().__init__(log)

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        if command == "dmesg":
            return CommandResult(command, self.log.read_text(), 0)
        return super().run(command, timeout)


def test_dmesg_source_for_boards(tmp_path: Path) -> None:
    log = tmp_path / "dmesg"
    log.write_text("[    1.000000] old\n[    2.000000] WARNING: CPU: 0 PID: 1 at old.c:1 x\n")
    board = DmesgGuest(log)
    watched = WatchedGuest(board, HealthWatch(DmesgSource(board), settle_seconds=0.1))
    assert watched.run("[    3.000000] fine\n").ok  # the old warning predates the watch
    with pytest.raises(KernelProblem, match="new.c:2"):
        watched.run("[    4.000000] WARNING: CPU: 0 PID: 1 at new.c:2 y\n")


class Pieces:
    """A LogSource that hands out a text in pieces, one per read."""

    independent = True

    def __init__(self, *pieces: str) -> None:
        self.pieces = list(pieces)

    def read_new(self) -> str:
        return self.pieces.pop(0) if self.pieces else ""


def test_a_report_read_in_pieces_is_reported_whole() -> None:
    head, tail = WARNING.split("[    3.100200]")
    watch = HealthWatch(Pieces(head, "", "[    3.100200]" + tail), settle_seconds=2)
    problem = watch.poll()
    assert problem is not None and "---[ end trace 1234 ]---" in problem.excerpt
    assert watch.poll() is None  # reported once


def test_the_panic_an_oops_leads_to_is_part_of_it() -> None:
    oops, panic = SYSRQ_CRASH.split("[   12.000900]")
    problem = HealthWatch(Pieces(oops, "[   12.000900]" + panic), settle_seconds=2).poll()
    assert problem is not None and problem.kind == "Oops" and problem.fatal


class WaitingGuest(FakeGuest):
    """A transport whose commands wait for the guest (which never answers), running the
    watch's check in between, as the console and SSH transports do."""

    def __init__(self, log: Path) -> None:
        super().__init__(log)
        self.check: object = None
        self.timeouts: list[float] = []

    def check_while_waiting(self, check) -> None:  # type: ignore[no-untyped-def]
        self.check = check

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        self.timeouts.append(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if callable(self.check):
                self.check()
        raise GuestTimeout(f"{command!r} did not finish within {timeout:g} s")


def test_a_report_ends_the_waiting_step_at_once(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text("[ 0.1] booted\n")
    transport = WaitingGuest(log)
    guest = WatchedGuest(transport, HealthWatch(ConsoleLogSource(log), settle_seconds=0.3))
    assert transport.check is not None  # the log is read without the guest: watched live
    crash = threading.Timer(0.3, lambda: log.open("a").write(SYSRQ_CRASH))
    crash.start()
    started = time.monotonic()
    try:
        with pytest.raises(KernelProblem) as caught:
            guest.run("echo 1 > /sys/block/zram0/compact", timeout=300)
    finally:
        crash.cancel()
    assert time.monotonic() - started < 3
    assert caught.value.step == "'echo 1 > /sys/block/zram0/compact'"
    # The kernel panicked: nothing more runs, at once.
    started = time.monotonic()
    with pytest.raises(GuestError, match="not run: the guest kernel panicked after Oops"):
        guest.run("echo 1 > /sys/block/zram0/reset", timeout=60)
    assert time.monotonic() - started < 0.5 and len(transport.timeouts) == 1


class BoardLog(Pieces):
    """A log read through the guest itself, like DmesgSource."""

    independent = False


def test_a_board_log_is_not_read_while_a_step_waits(tmp_path: Path) -> None:
    board = WaitingGuest(tmp_path / "log")
    WatchedGuest(board, HealthWatch(BoardLog()))
    assert board.check is None  # dmesg goes through the guest: read between steps only


def test_a_dead_machine_runs_nothing_more(tmp_path: Path) -> None:
    guest = _watched(tmp_path, fail_with=GuestError("console closed"),
                     explain=GuestError("QEMU exited with status 0"))
    with pytest.raises(GuestError, match="QEMU exited"):
        guest.run("[ 1.0] nothing wrong\n")
    with pytest.raises(GuestError, match="not run: QEMU exited with status 0"):
        guest.run("true")


def test_bounded_steps_get_at_most_the_bound(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    transport = WaitingGuest(log)
    guest = WatchedGuest(transport, HealthWatch(ConsoleLogSource(log)))
    with guest.bounded(0.1), pytest.raises(GuestTimeout):
        guest.run("rmmod movable_sample", timeout=60)
    with pytest.raises(GuestTimeout):
        guest.run("true", timeout=0.2)
    assert transport.timeouts == [0.1, 0.2]
