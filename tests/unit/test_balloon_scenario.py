"""The balloon scenario's verdict rule, its wait on QEMU, and where it refuses to run."""

from dataclasses import replace

import pytest

from harness.check.balloon import (
    BalloonEvidence,
    BalloonScenario,
    BalloonSettings,
    judge_balloon,
    wait_for_balloon,
)
from harness.check.scenario import Evidence, observe
from harness.errors import HarnessError
from harness.guest import CommandResult, GuestError
from harness.report.in_tree import TrackedPages

MIB = 1 << 20


def evidence(**changes: object) -> BalloonEvidence:
    base = BalloonEvidence(
        requested_pages=19000,
        tracked=TrackedPages(kind="balloon pages", before=19000, after=19000, moved=9000,
                             arrived=9000),
        inflated=19000, deflated=19000, balloon_migrate=9100,
        pgmigrate_success_delta=9300, data_intact=True,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_good_evidence_is_proven() -> None:
    verdict = judge_balloon(evidence())
    assert verdict.proven, verdict.failures


@pytest.mark.parametrize("changes,needle", [
    ({"inflated": 18000}, "balloon_inflate rose by 18000, 19000 pages were asked for"),
    ({"tracked": TrackedPages("b", 18990, 19000, 9000, 9010)}, "found 18990/19000"),
    ({"tracked": TrackedPages("b", 19000, 19000, 0, 0), "balloon_migrate": 0},
     "no balloon page changed PFN"),
    ({"balloon_migrate": 8999}, "balloon_migrate rose by 8999, but 9000"),
    ({"pgmigrate_success_delta": 9099}, "less than balloon_migrate's 9100"),
    ({"deflated": 18000}, "pages were not all returned"),
    ({"data_intact": False}, "did not read back intact"),
])
def test_each_rule_can_fail(changes: dict[str, object], needle: str) -> None:
    verdict = judge_balloon(evidence(**changes))
    assert not verdict.proven
    assert any(needle in failure for failure in verdict.failures), verdict.failures


class FakeHost:
    """A balloon that moves toward its target by ``step`` bytes per query, up to ``stop``."""

    def __init__(self, actual: int, step: int, stop: int | None = None) -> None:
        self.value = actual
        self.target = actual
        self.step = step
        self.stop = stop

    def set_target(self, guest_bytes: int) -> None:
        self.target = guest_bytes

    def actual(self) -> int:
        goal = self.target if self.stop is None else max(self.target, self.stop)
        if self.value > goal:
            self.value = max(goal, self.value - self.step)
        return self.value


def test_wait_returns_once_qemu_reports_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("harness.check.balloon.time.sleep", lambda _s: None)
    host = FakeHost(256 * MIB, step=16 * MIB)
    host.set_target(128 * MIB)
    wait_for_balloon(host, 128 * MIB, BalloonSettings())
    assert host.actual() == 128 * MIB


def test_wait_gives_up_when_the_balloon_stalls(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr("harness.check.balloon.time.sleep", lambda _s: None)
    monkeypatch.setattr("harness.check.balloon.time.monotonic", lambda: float(next(clock)))
    host = FakeHost(256 * MIB, step=16 * MIB, stop=200 * MIB)
    host.set_target(128 * MIB)
    with pytest.raises(GuestError, match="stopped at 20[0-9] MiB of guest memory, target 128"):
        wait_for_balloon(host, 128 * MIB, BalloonSettings(stall_timeout=30))


class PlainGuest:
    """A guest with no QEMU behind it (a board over SSH)."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        self.commands.append(command)
        return CommandResult(command=command, stdout="", exit_status=0)


def test_a_board_has_no_balloon_to_drive() -> None:
    """The balloon comes from the target (QEMU's VmGuest offers it), so a guest that
    offers none is refused before the experiment's first command."""
    guest = PlainGuest()
    with pytest.raises(HarnessError, match="the balloon scenario needs a target that offers "
                                           "a balloon .* run it on a qemu target"):
        observe(BalloonScenario(), guest,  # type: ignore[arg-type]
                Evidence("balloon", "arm64", "debian:6.1"))
    assert not guest.commands


def test_balloon_size_from_free_memory_in_the_guests_pages() -> None:
    free = 55_000 * 4096
    assert BalloonSettings(cover_share=0.7).balloon_pages(free, 4096) == 19_250
    # the same memory in 16 KiB pages: a quarter as many pages, the same bytes
    assert BalloonSettings(cover_share=0.7).balloon_pages(free, 16384) == 4812
    with pytest.raises(GuestError, match="only 1 MiB free: too little"):
        BalloonSettings().balloon_pages(500 * 4096, 4096)
    with pytest.raises(GuestError, match="too little"):  # 256 pages of 64 KiB are 16 MiB
        BalloonSettings().balloon_pages(40 << 20, 65536)


# Each rule at its threshold (proven) and one step past it (that rule alone fails):
# a `>` written for `>=` (or the reverse) in balloon.py fails one of these.
@pytest.mark.parametrize("at,past,needle", [
    ({}, {"inflated": 18999, "deflated": 18999},
     "balloon_inflate rose by 18999, 19000 pages were asked for"),
    ({}, {"inflated": 19001, "deflated": 19001},
     "balloon_inflate rose by 19001, 19000 pages were asked for"),
    ({}, {"tracked": TrackedPages("b", 19000, 18999, 9000, 8999)},
     "found 19000/18999 balloon pages before/after compaction in a balloon of 19000"),
    ({"tracked": TrackedPages("b", 19000, 19000, 1, 1), "balloon_migrate": 1,
      "pgmigrate_success_delta": 1},
     {"tracked": TrackedPages("b", 19000, 19000, 0, 0), "balloon_migrate": 1,
      "pgmigrate_success_delta": 1}, "no balloon page changed PFN"),
    ({"balloon_migrate": 9000}, {"balloon_migrate": 8999},
     "balloon_migrate rose by 8999, but 9000 balloon pages changed PFN"),
    ({"pgmigrate_success_delta": 9100}, {"pgmigrate_success_delta": 9099},
     "pgmigrate_success rose by 9099, less than balloon_migrate's 9100"),
    ({}, {"deflated": 18999},
     "balloon_deflate rose by 18999, balloon_inflate by 19000: pages were not all returned"),
    ({}, {"deflated": 19001},
     "balloon_deflate rose by 19001, balloon_inflate by 19000: pages were not all returned"),
], ids=["inflated-fewer", "inflated-more", "found", "moved", "balloon-migrate", "pgmigrate",
        "deflated-fewer", "deflated-more"])
def test_each_rule_at_its_threshold(at: dict[str, object], past: dict[str, object],
                                    needle: str) -> None:
    assert judge_balloon(evidence(**at)).proven
    assert judge_balloon(evidence(**past)).failures == (needle,)


def test_balloon_migrate_must_count_one_migration_even_if_no_pfn_changed() -> None:
    """balloon_migrate >= max(moved, 1): a balloon that moved nothing fails two rules."""
    still = evidence(tracked=TrackedPages("b", 19000, 19000, 0, 0), balloon_migrate=0,
                     pgmigrate_success_delta=0)
    assert judge_balloon(still).failures == (
        "no balloon page changed PFN",
        "balloon_migrate rose by 0, but 0 balloon pages changed PFN")
