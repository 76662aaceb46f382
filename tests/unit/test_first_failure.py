"""The first failure wins: once the kernel reported trouble (or the guest died), no later
step, cleanup included, may hide it or wait for a dead guest."""

import time
from pathlib import Path

import pytest

from harness.check import steps
from harness.check.steps import undone
from harness.check.zram import Zram
from harness.errors import HarnessError
from harness.guest import GuestError, KernelProblem
from tests.unit.fake_guests import ScriptedGuest, watched
from tests.unit.report_texts import console_text

COMPACT = "echo 1 > /sys/block/zram0/compact"
RESET = "echo 1 > /sys/block/zram0/reset"


def zram_guest(tmp_path: Path, report: str) -> ScriptedGuest:
    """zram's compaction prints ``report``; after it, every command hangs (issue 14)."""
    crashed: list[str] = []

    def answer(command: str) -> str | None:
        if command == COMPACT:
            crashed.append(command)
            guest.print_report(report)
        return None if crashed else ""

    guest = ScriptedGuest(tmp_path / "console.log", answer)
    return guest


@pytest.fixture(autouse=True)
def quick_cleanup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(steps, "CLEANUP_SECONDS", 0.3)


def test_issue_14_the_report_wins_over_the_cleanup_that_hangs(tmp_path: Path) -> None:
    """zs_compact's general protection fault ends the step at once; the reset in the
    scenario's cleanup is bounded and what it raised is only a note."""
    transport = zram_guest(tmp_path, console_text("gpf.4.8.15-x86_64"))
    guest = watched(transport)
    started = time.monotonic()
    with pytest.raises(KernelProblem) as caught, \
            undone(guest, Zram(guest).release, "resetting zram0"):
        steps.must(guest, COMPACT, timeout=300)
    assert time.monotonic() - started < 3
    problem = caught.value
    assert (problem.kind, problem.headline) == ("Oops", "general protection fault: 0000 [#1] SMP")
    assert "zs_compact+0x1d9/0x5a0" in problem.excerpt
    assert problem.step == repr(COMPACT)
    assert problem.__notes__ == [f"resetting zram0 afterwards: {RESET!r} did not finish "
                                 "within 0.3 s"]
    assert transport.commands == [(COMPACT, 300), (RESET, 0.3)]


def test_after_a_panic_the_cleanup_is_not_even_tried(tmp_path: Path) -> None:
    transport = zram_guest(tmp_path, console_text("panic.4.8.15-x86_64"))
    guest = watched(transport)
    with pytest.raises(KernelProblem, match="dumptest") as caught, \
            undone(guest, Zram(guest).release, "resetting zram0"):
        steps.must(guest, COMPACT, timeout=300)
    assert caught.value.fatal
    assert transport.commands == [(COMPACT, 300)]
    (note,) = caught.value.__notes__
    assert note.startswith(f"resetting zram0 afterwards: {RESET!r} not run: the guest kernel "
                           "panicked")


def test_a_harness_failure_also_wins_over_its_cleanup(tmp_path: Path) -> None:
    transport = ScriptedGuest(tmp_path / "console.log", lambda command: None)
    guest = watched(transport)
    with pytest.raises(GuestError, match="blkdiscard failed") as caught, \
            undone(guest, Zram(guest).release, "resetting zram0"):
        raise GuestError("blkdiscard failed")
    assert "did not finish within 0.3 s" in caught.value.__notes__[0]


def test_a_cleanup_after_success_fails_as_itself(tmp_path: Path) -> None:
    def undo() -> None:
        raise HarnessError("rmmod movable_sample failed (exit 1): Module in use")

    with pytest.raises(HarnessError, match="Module in use"), \
            undone(watched(ScriptedGuest(tmp_path / "log", lambda c: "")), undo, "unloading"):
        pass
