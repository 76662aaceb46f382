"""The stress scenario's judge without a VM: each rule fails on evidence that breaks it,
with its numbers, and names exactly one rule of tests/broken_drivers.STRESS_RULES;
from 6.17 the rules about pages the driver isolates itself are not judged; evidence
cut short is not proven; and a run with no race hit is NOT PROVEN, never PROVEN.

tests/integration/test_stress.py runs it on real kernels, and the broken drivers
there show each rule failing for the bug it was made for.
"""

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from harness.check.scenario import Evidence, load_evidence, verdict
from harness.check.stress import StressScenario, StressSettings, stress_failures
from tests.broken_drivers import STRESS_RULES, failed_rules


def stats(**values: int) -> dict[str, int]:
    """A driver stats sample of the a_ops era, zeros unless given."""
    keys = ("nr_pages", "movable", "migrated", "eagain", "failed", "isolated_now",
            "inject_eagain_every", "inject_fail_every", "churned", "churn_mismatches",
            "lock_busy", "migrated_held", "overlaps", "callback_cpus", "isolated", "putback",
            "freed_isolated", "isolate_refused", "orphans_held")
    return {key: values.get(key, 0) for key in keys}


SETTLED = stats(nr_pages=3500, movable=1, isolated=5000, migrated=4200, putback=700,
                freed_isolated=100, eagain=900, failed=300, churned=2500, lock_busy=40,
                overlaps=800, callback_cpus=2, isolate_refused=3)


def facts(movable_api: str = "aops", **changes: Any) -> dict[str, Any]:
    """Evidence facts of a stress run that holds every rule, with ``changes``."""
    good: dict[str, Any] = {
        "movable_api": movable_api, "cpus": 2, "node_compact": False, "alloc_order": 9,
        "leak_tolerance_kib": 4096, "buddy_before": [1, 2], "buddy_after": [1, 3],
        "free_before_kib": 220000, "pages_loaded": 3400,
        "samples": [stats(nr_pages=3400, movable=1),
                    stats(isolated=2000, migrated=1500, putback=300, freed_isolated=40,
                          isolated_now=160),
                    SETTLED],
        "phases": [{"at": 0.0, "eagain_every": 0, "fail_every": 0}],
        "settled": SETTLED,
        "tracked": {"kind": "driver pages loaded", "before": 3400, "after": 3500,
                    "moved": 3000, "arrived": 3100},
        "verify_during": [[3400, 0], [3450, 0]], "verify_after": [3500, 0],
        "unload": {"released": 3500, "isolated": 7}, "oom_kills": 0,
        "vmstat_delta": {"pgmigrate_success": 4300, "compact_stall": 12},
        "pgmigrate_success_delta": 4300, "free_after_kib": 219000,
    }
    good.update(changes)
    return good


def judged(data: dict[str, Any]):  # type: ignore[no-untyped-def]
    evidence = Evidence(scenario="stress", arch="x86_64", kernel="debian:5.10",
                        release="5.10.223", facts=data, page_size=4096)
    return StressScenario().judge(evidence)


def with_settled(**values: int) -> dict[str, Any]:
    settled = {**SETTLED, **values}
    data = facts(settled=settled)
    data["samples"] = [*data["samples"][:-1], settled]
    return data


def test_a_run_that_holds_every_rule_is_proven_with_its_numbers() -> None:
    result = judged(facts())
    assert result.proven, result.reasons
    (summary,) = result.reasons
    assert "100 frees of isolated pages" in summary and "800 overlapping callbacks" in summary
    assert "accounting held at all 3 samples" in summary
    assert "none migrated while the driver held it locked" in summary
    assert result.figures["free_delta_kib"] == -1000
    assert result.figures["page_checks"] == 3400 + 3450 + 3500 + 2500
    assert (result.data_checked, result.data_mismatches) == (12850, 0)


BROKEN = {
    "load": with_settled(churned=0),
    "verify": facts(verify_during=[[3400, 2], [3450, 0]]),
    "accounting": with_settled(freed_isolated=99),
    "settled": with_settled(isolated_now=4, isolated=5004),
    "released": with_settled(orphans_held=6),
    "no-leak": facts(free_after_kib=200000),
    "races": with_settled(overlaps=0),
    "not-held": with_settled(migrated_held=1),
}


@pytest.mark.parametrize("rule", BROKEN)
def test_each_rule_fails_alone_and_names_itself(rule: str) -> None:
    reasons = tuple(stress_failures(BROKEN[rule]))
    assert failed_rules(reasons, STRESS_RULES) == {rule}, reasons


def test_the_rules_cover_every_reason_pattern() -> None:
    assert set(BROKEN) == set(STRESS_RULES)


def test_no_race_hit_is_not_proven_and_says_it_proved_nothing() -> None:
    """One vCPU, or races that never met: never PROVEN, and the reason says why."""
    data = with_settled(overlaps=0, lock_busy=0, freed_isolated=0, isolate_refused=0,
                        callback_cpus=1, isolated=4900)
    data["unload"] = {"released": 3500, "isolated": 0}
    result = judged(data)
    assert not result.proven
    assert any(re.search("proved nothing about concurrency", reason) for reason in result.reasons)


def test_from_6_17_the_driver_isolation_rules_are_not_judged() -> None:
    """The balloon core isolates and puts back: no isolated/putback/freed_isolated counters,
    so no accounting; the figures leave those out."""
    core_keys = ("isolated", "putback", "freed_isolated", "isolate_refused", "orphans_held")
    data = facts("balloon")
    for sample in data["samples"]:
        for key in core_keys:
            sample.pop(key)
    result = judged(data)
    assert result.proven, result.reasons
    assert "accounting is the balloon core's (not checked)" in result.reasons[0]
    assert not set(core_keys) & set(result.figures)


def test_evidence_cut_short_is_not_proven() -> None:
    data = facts()
    del data["free_after_kib"]
    result = judged(data)
    assert not result.proven and result.reasons == ()


def test_fault_injection_switches_by_share_of_the_load() -> None:
    settings = StressSettings()
    assert [settings.faults_at(share) for share in (0.0, 0.2, 0.69, 0.7, 1.0)] == [
        (0, 0), (3, 4), (3, 4), (0, 0), (0, 0)]


def test_judge_does_not_change_the_facts() -> None:
    data = facts()
    before = copy.deepcopy(data)
    judged(data)
    assert data == before


RECORDED = Path(__file__).resolve().parent.parent / "data" / "evidence" / "stress"


@pytest.mark.parametrize("path", sorted(RECORDED.glob("*.json")), ids=lambda path: path.stem)
def test_recorded_runs_are_judged_proven_and_fail_without_their_races(path: Path) -> None:
    """Evidence of real runs (tests/integration/test_stress.py, x86_64 and arm64 x
    debian:5.10 and 7.2, x86_64 debian:6.1, 2 vCPUs, 2026-12-02) judged again: PROVEN
    with races hit;
    the same evidence with its overlaps taken away says it proved nothing."""
    evidence = load_evidence(path)
    result = verdict(StressScenario(), evidence)
    assert result.proven, result.reasons
    assert result.figures["overlaps"] > 0 and result.figures["mismatches"] == 0
    for sample in (*evidence.facts["samples"], evidence.facts["settled"]):
        sample["overlaps"] = 0
    assert failed_rules(tuple(stress_failures(evidence.facts)), STRESS_RULES) == {"races"}


@pytest.mark.parametrize("path", sorted(RECORDED.glob("*.json")), ids=lambda path: path.stem)
def test_recorded_runs_fail_with_a_page_migrated_while_the_driver_held_it(path: Path) -> None:
    """The same real evidence with one migration counted while the driver held the
    page: NOT PROVEN for that rule alone, with its number, in every era (the balloon
    core's 7.2 as well as the driver-isolated 5.10)."""
    evidence = load_evidence(path)
    assert verdict(StressScenario(), evidence).figures["migrated_held"] == 0
    evidence.facts["settled"]["migrated_held"] = 3
    result = verdict(StressScenario(), evidence)
    assert not result.proven
    assert result.reasons == ("3 pages were migrated while the driver held them locked",)


HELD_UNSEEN = RECORDED.parent / "stress-held-unseen"


@pytest.mark.parametrize("path", sorted(HELD_UNSEEN.glob("*.json")), ids=lambda path: path.stem)
def test_recorded_runs_of_a_driver_whose_lock_the_vm_cannot_see_fail_not_held(
        path: Path) -> None:
    """Evidence of real runs of tests/broken-drivers/held-unseen.patch (``harness run
    --scenario stress --driver-source``, x86_64, debian:5.10 and the balloon core's 7.2,
    2 vCPUs, 2026-12-02): NOT PROVEN for the not-held rule alone, every other rule kept."""
    evidence = load_evidence(path)
    result = verdict(StressScenario(), evidence)
    assert not result.proven
    assert failed_rules(result.reasons, STRESS_RULES) == {"not-held"}, result.reasons
    assert result.figures["migrated_held"] > 0
