"""Per-phase timings (harness.phases): recorded by the steps into a run's evidence, saved,
read back by ``harness report``, written to result.json and shown by ``--timings``.

tests/data/evidence/phases/ holds the evidence of ``harness run --kernel debian:5.10
--arch A`` for both arches (2026-12-02, TCG, 2 vCPUs, this branch's phase names), with
every phase the run timed.
"""

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from rich.console import Console

from harness import cli
from harness.check import runner
from harness.check.driver import SampleDriver
from harness.check.runner import check_ab_on, scenario_named
from harness.check.scenario import Evidence, Needs, load_evidence, verdict
from harness.check.zram import ZramScenario
from harness.guest import Guest
from harness.phases import Phases, grouped, top_level
from harness.report.json_report import read_results, write_json
from harness.report.model import RunResult
from harness.report.table import build_phase_table
from tests.unit.fake_guests import SampleKernel, ScriptedGuest, release_only, watched
from tests.unit.kernels import kernel_with_config
from tests.unit.report_texts import console_text

RECORDED = Path(__file__).resolve().parent.parent / "data" / "evidence" / "phases"
ROUND_STEPS = ["free memory", "load", "read before", "compact", "read after", "verify",
               "page_owner", "unload"]


def recorded(arch: str) -> Evidence:
    return load_evidence(RECORDED / f"00-{arch}-debian_5.10-sample.json")


def test_a_phase_keeps_its_time_however_it_ends() -> None:
    seconds: dict[str, float] = {}
    phases = Phases(seconds)
    with pytest.raises(RuntimeError), phases.phase("fails"):
        time.sleep(0.02)
        raise RuntimeError("step failed")
    assert phases.timed("returns", lambda value: value * 2, 21) == 42
    assert list(seconds) == ["fails", "returns"] and seconds["fails"] >= 0.02
    assert seconds["fails"] == round(seconds["fails"], 3)  # to the millisecond


def test_a_repeated_name_keeps_every_time() -> None:
    seconds: dict[str, float] = {}
    phases = Phases(seconds)
    for value in (1.0, 2.0, 3.0):
        phases.record("probe", value)
    assert seconds == {"probe": 1.0, "probe #2": 2.0, "probe #3": 3.0}


def test_a_group_times_itself_and_names_its_steps() -> None:
    seconds: dict[str, float] = {}
    with Phases(seconds).group("round") as steps:
        steps.record("load", 0.5)
        with steps.group("inner") as inner:
            inner.record("read", 0.1)
    assert list(seconds) == ["round/load", "round/inner/read", "round/inner", "round"]
    assert top_level(seconds) == {"round": seconds["round"]}
    assert grouped(seconds) == {"round": {"load": 0.5, "inner/read": 0.1,
                                          "inner": seconds["round/inner"]}}


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_a_recorded_run_timed_every_phase_and_they_add_up(arch: str) -> None:
    seconds = recorded(arch).seconds
    assert list(top_level(seconds)) == ["prepare", "boot", "guest info", "install", "knobs",
                                        "movable=0", "movable=1", "teardown", "total"]
    groups = grouped(seconds)
    assert list(groups["boot"]) == ["imports", "image", "qemu start", "to ready marker",
                                    "connect"]
    assert list(groups["movable=0"]) == list(groups["movable=1"]) == ROUND_STEPS
    parts = {name: value for name, value in top_level(seconds).items() if name != "total"}
    rounding = 0.0005 * len(parts)  # each figure is rounded to the millisecond
    assert 0.95 * seconds["total"] <= sum(parts.values()) <= seconds["total"] + rounding
    for group, steps in groups.items():
        rounding = 0.0005 * (len(steps) + 1)  # each figure is rounded to the millisecond
        assert 0.9 * seconds[group] <= sum(steps.values()) <= seconds[group] + rounding


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_the_result_and_result_json_carry_the_phases(arch: str, tmp_path: Path) -> None:
    evidence = recorded(arch)
    result = verdict(scenario_named("sample"), evidence)
    assert isinstance(result, RunResult) and result.proven, result.reasons
    assert dict(result.seconds) == evidence.seconds
    path = write_json([result], tmp_path / "result.json")
    (item,) = json.loads(path.read_text())["results"]
    assert item["seconds"] == evidence.seconds
    assert read_results(path) == [result]


def test_a_result_json_from_before_the_phases_still_reads(tmp_path: Path) -> None:
    result = verdict(scenario_named("sample"), recorded("x86_64"))
    path = write_json([result], tmp_path / "result.json")
    document = json.loads(path.read_text())
    del document["results"][0]["seconds"]
    path.write_text(json.dumps(document))
    (old,) = read_results(path)
    assert old.seconds == {} and old.proven


def test_the_phase_table_puts_the_rounds_side_by_side() -> None:
    result = verdict(scenario_named("sample"), recorded("arm64"))
    console = Console(width=120, record=True)
    console.print(build_phase_table(result))
    lines = console.export_text().splitlines()
    seconds = result.seconds
    (header,) = (line for line in lines if "movable=0" in line)
    assert "movable=1" in header
    (compact,) = (line for line in lines if "  compact " in line)
    assert (f"{seconds['movable=0/compact']:.3f}" in compact
            and f"{seconds['movable=1/compact']:.3f}" in compact)
    (ready,) = (line for line in lines if "to ready marker" in line)
    assert f"{seconds['boot/to ready marker']:.3f}" in ready
    names = [line.split("│")[1].strip() for line in lines if line.count("│") > 2]
    assert names.index("boot") < names.index("to ready marker") < names.index("guest info")
    assert names.index("knobs") < names.index("free memory") < names.index("teardown")


def test_harness_report_reads_the_phases_back_and_timings_shows_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    (run / "evidence").mkdir(parents=True)
    shutil.copy(RECORDED / "00-x86_64-debian_5.10-sample.json", run / "evidence")
    seconds = recorded("x86_64").seconds
    assert cli.main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"boot {seconds['boot']:.2f}" in " ".join(out.split())
    assert "seconds per phase" not in out  # the table is for --timings
    (item,) = json.loads((run / "result.json").read_text())["results"]
    assert item["seconds"] == seconds
    assert cli.main(["report", "--timings", str(run)]) == 0
    out = capsys.readouterr().out
    assert "seconds per phase" in out and "read after" in out


class SlowToClose:
    """open_target's stand-in: a guest that takes 0.1 s to boot and 0.2 s to tear down."""

    @contextmanager
    def __call__(self, kernel: object, options: object, run_dir: object = None,
                 phases: Phases | None = None) -> Iterator[Guest]:
        time.sleep(0.1)
        yield ScriptedGuest(Path("/nonexistent"), release_only("5.10.223"))  # type: ignore[misc]
        time.sleep(0.2)


class Measured(ZramScenario):
    """A scenario with one step of its own, timed as in-tree scenarios time theirs."""

    needs = Needs()

    def collect(self, guest: Guest, evidence: Evidence) -> None:
        with evidence.phase("fill"):
            time.sleep(0.05)


def test_check_times_the_boot_and_the_teardown_into_the_saved_evidence(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The evidence is saved again once the target is down, with the teardown's time."""
    monkeypatch.setattr(runner, "open_target", SlowToClose())
    path = tmp_path / "evidence.json"
    runner.check(Measured(), kernel_with_config(tmp_path, ""), evidence_path=path)
    saved = load_evidence(path).seconds
    assert list(top_level(saved)) == ["prepare", "boot", "guest info", "fill", "teardown",
                                      "total"]
    assert saved["boot"] >= 0.1 and saved["teardown"] >= 0.2 and saved["fill"] >= 0.05
    assert saved["total"] >= saved["boot"] + saved["fill"] + saved["teardown"]


def test_the_ab_times_each_step_of_each_round_up_to_a_kernel_report(tmp_path: Path) -> None:
    """On a scripted kernel that BUGs in the movable=1 round's compaction: the control
    round has every step, the movable round those up to the compaction, which keeps
    its time, and the unload that cleaned up after it."""
    kernel = kernel_with_config(tmp_path, "CONFIG_MIGRATION=y\n")
    guest = watched(SampleKernel(tmp_path / "console.log",
                                 console_text("vm-bug-on.4.8.15-x86_64")).guest)
    result = check_ab_on(SampleDriver(guest), kernel)
    assert result.kernel_report is not None
    groups = grouped(result.seconds)
    assert list(groups["movable=0"]) == ROUND_STEPS
    assert list(groups["movable=1"]) == [*ROUND_STEPS[:ROUND_STEPS.index("compact") + 1],
                                         "unload"]
    assert groups["movable=1"]["compact"] > 0.2  # until the watch saw the report
    assert list(top_level(result.seconds)) == ["guest info", "knobs", "movable=0",
                                               "movable=1", "total"]
