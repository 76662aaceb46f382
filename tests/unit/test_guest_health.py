"""The kernel health watch: what counts as a problem, and which step it fails."""

from pathlib import Path

import pytest

from harness.guest import CommandResult, GuestError, KernelProblem
from harness.guest.health import (
    ConsoleLogSource,
    DmesgSource,
    HealthWatch,
    WatchedGuest,
    find_problem,
)

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


def test_sysrq_crash_is_a_panic_with_the_whole_report() -> None:
    problem = find_problem("[ 1.0] booting\n" + SYSRQ_CRASH)
    assert problem is not None and problem.kind == "panic"
    assert problem.headline.endswith("Kernel panic - not syncing: Fatal exception")
    assert "sysrq_handle_crash" in problem.excerpt and "Oops: 0002" in problem.excerpt
    assert "Kernel panic - not syncing" in str(problem)


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
])
def test_problem_kinds(line: str, kind: str) -> None:
    problem = find_problem(line + "\n")
    assert problem is not None and problem.kind == kind


@pytest.mark.parametrize("line", [
    "[ 0.5] Warning: Processor Platform Limit event detected, but not handled.",
    "[ 0.6] ACPI: PCI Interrupt Link [GSIF] enabled at IRQ 21",
    "[ 0.7] random: crng init done",
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
