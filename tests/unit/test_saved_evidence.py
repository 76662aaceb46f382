"""Saved evidence: every scenario's judge on evidence recorded from real runs, and
``harness report RUN_DIR`` re-judging a run directory without any machine.

tests/data/evidence/5.10.223-x86_64/ is the evidence directory of
``harness run --arch x86_64 --kernel debian:5.10 --scenario all`` (2026-12-02,
TCG, 2 vCPUs, this branch's final code): the sample A/B, zram and balloon, all PROVEN.
"""

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness import cli
from harness.check import runner
from harness.check.runner import scenario_named
from harness.check.scenario import Evidence, Needs, load_evidence, save_evidence, verdict
from harness.check.zram import ZramScenario
from harness.guest import Guest, KernelProblem
from harness.kernel import build
from harness.report.in_tree import InTreeResult
from harness.report.model import RunResult
from tests.unit.fake_guests import ScriptedGuest, release_only
from tests.unit.kernels import kernel_with_config

RECORDED = Path(__file__).resolve().parent.parent / "data" / "evidence" / "5.10.223-x86_64"


def recorded(scenario: str) -> Evidence:
    (path,) = RECORDED.glob(f"*-{scenario}.json")
    return load_evidence(path)


def test_the_recorded_evidence_is_proven_by_each_judge() -> None:
    sample = verdict(scenario_named("sample"), recorded("sample"))
    assert isinstance(sample, RunResult) and sample.proven, sample.reasons
    assert sample.movable is not None and sample.unmovable is not None
    assert (sample.movable.migrated_pages, sample.movable.total_pages) == (5760, 6666)
    assert sample.unmovable.migrated_pages == 0
    zram = verdict(scenario_named("zram"), recorded("zram"))
    assert isinstance(zram, InTreeResult) and zram.proven, zram.reasons
    assert zram.tracked is not None and (zram.tracked.moved, zram.tracked.before) == (638, 1419)
    assert (zram.data_checked, zram.data_mismatches) == (65, 0)
    balloon = verdict(scenario_named("balloon"), recorded("balloon"))
    assert isinstance(balloon, InTreeResult) and balloon.proven, balloon.reasons
    assert balloon.tracked is not None and balloon.tracked.moved == 9391
    assert balloon.figures["balloon_migrate"] == 9391


@pytest.mark.parametrize("scenario,change,reason", [
    ("sample", lambda f: f["movable=1"]["driver_counters"].update(migrated=5759),
     "movable=1: 5760 pages changed PFN but the driver migrated only 5759"),
    ("sample", lambda f: f["movable=1"]["high_order_success"].update(after=10),
     "order-9 allocations after compaction: 10 with movable pages vs 10 without (no gain)"),
    ("zram", lambda f: f.update(mismatches=1),
     "1 chunks read back differ from what was written"),
    ("zram", lambda f: f.update(pgmigrate_success_delta=637),
     "pgmigrate_success rose by 637, less than the 638 zsmalloc pages that moved"),
    ("balloon", lambda f: f.update(balloon_migrate=9390),
     "balloon_migrate rose by 9390, but 9391 balloon pages changed PFN"),
    ("balloon", lambda f: f.update(data_intact=False),
     "memory written after deflating did not read back intact"),
])
def test_recorded_evidence_one_fact_off_breaks_its_rule(scenario: str, change, reason: str  # type: ignore[no-untyped-def]
                                                        ) -> None:
    """One recorded fact changed just past its rule's threshold: NOT PROVEN, that rule."""
    evidence = recorded(scenario)
    change(evidence.facts)
    result = verdict(scenario_named(scenario), evidence)
    assert not result.proven and reason in result.reasons, result.reasons


def test_evidence_cut_short_is_not_proven_and_keeps_what_it_has() -> None:
    evidence = recorded("sample")
    del evidence.facts["movable=1"]
    result = verdict(scenario_named("sample"), evidence)
    assert isinstance(result, RunResult) and not result.proven
    assert result.movable is None and result.unmovable is not None


def copy_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(RECORDED, run / "evidence")
    return run


def test_harness_report_rejudges_a_run_directory(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(tmp_path)
    assert cli.main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.count("verdict: PROVEN") == 3
    assert "5760 / 6666 (86%)" in out and "638 / 1419 (45%)" in out and "9391 / 20749" in out
    document = json.loads((run / "result.json").read_text())
    assert document["proven"] and document["schema_version"] == 1
    assert [item["verdict"] for item in document["results"]] == ["proven"]
    assert [item["scenario"] for item in document["in_tree"]] == ["zram", "balloon"]
    assert document["results"][0]["migrated_pages"] == 5760
    assert (run / "buddyinfo.png").read_bytes()[:4] == b"\x89PNG"


def test_harness_report_json_is_the_objects(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", "--json", str(copy_run(tmp_path))]) == 0
    objects = json.loads(capsys.readouterr().out)
    assert [item.get("scenario", "sample") for item in objects] == ["sample", "zram", "balloon"]


def test_the_command_exits_with_its_status_and_all_its_output(tmp_path: Path) -> None:
    """The console script (harness.cli.run) ends without Python's teardown: what it
    printed still reaches a pipe whole, the exit status is main()'s, and the files
    are written."""
    command = [sys.executable, "-m", "harness.cli", "report", "--json"]
    run = copy_run(tmp_path)
    done = subprocess.run([*command, str(run)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [item.get("scenario", "sample") for item in json.loads(done.stdout)] == [
        "sample", "zram", "balloon"]
    assert (run / "buddyinfo.png").read_bytes()[:4] == b"\x89PNG"
    bad = subprocess.run([*command, str(tmp_path / "none")], capture_output=True, text=True)
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr.startswith("harness: error: ") and bad.stderr.count("\n") == 1


def test_a_not_proven_run_exits_1(tmp_path: Path) -> None:
    run = copy_run(tmp_path)
    (path,) = (run / "evidence").glob("*-zram.json")
    evidence = load_evidence(path)
    evidence.facts["mismatches"] = 2
    save_evidence(evidence, path)
    assert cli.main(["report", str(run)]) == 1


def bad_run(tmp_path: Path, text: str) -> Path:
    run = copy_run(tmp_path)
    (path,) = (run / "evidence").glob("*-zram.json")
    path.write_text(text)
    return run


def unreadable_run(tmp_path: Path) -> Path:
    run = copy_run(tmp_path)
    (run / "evidence" / "02-x86_64-debian_5.10-zram.json").mkdir()
    return run


def zram_evidence(**changes: object) -> str:
    data = recorded("zram").to_dict()
    data.update(changes)
    return json.dumps(data)


def zram_facts_without(key: str) -> str:
    evidence = recorded("zram")
    del evidence.facts["tracked"][key]
    return json.dumps(evidence.to_dict())


@pytest.mark.parametrize("make,message", [
    (lambda tmp: tmp / "nothing", r"\S+/nothing is not a directory$"),
    (lambda tmp: tmp, r"has no saved evidence \(evidence/\*\.json\): not a harness run"),
    (lambda tmp: bad_run(tmp, '{"schema": "harness.evidence"'),
     r"01-x86_64-debian_5.10-zram.json is not valid evidence: JSONDecodeError"),
    (lambda tmp: bad_run(tmp, "[]"), r"zram.json is not valid evidence: AttributeError"),
    (lambda tmp: bad_run(tmp, zram_evidence(schema_version=2)),
     r"is not valid evidence: ValueError\('not harness.evidence v1'\)"),
    (lambda tmp: bad_run(tmp, zram_evidence(scenario="soak")),
     r"unknown scenario 'soak': choose from sample, zram, balloon, stress$"),
    (lambda tmp: bad_run(tmp, zram_evidence(surprise=1)), r"is not valid evidence: TypeError"),
    (lambda tmp: unreadable_run(tmp), r"cannot read evidence \S+/02-x86_64-debian_5.10-zram.json: "
                                      r"Is a directory$"),
    (lambda tmp: bad_run(tmp, zram_facts_without("moved")),
     r"zram.json has malformed zram evidence: TypeError"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          make, message: str) -> None:  # type: ignore[no-untyped-def]
    assert cli.main(["report", str(make(tmp_path))]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("harness: error: ")
    assert re.search(message, line), line
    assert "Traceback" not in captured.err + captured.out


def test_saving_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash while saving leaves the previous file whole and no temporary file."""
    path = tmp_path / "evidence.json"
    save_evidence(recorded("zram"), path)
    before = path.read_text()

    def crash(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("harness.paths.os.replace", crash)
    evidence = recorded("zram")
    evidence.facts["mismatches"] = 9
    with pytest.raises(KeyboardInterrupt):
        save_evidence(evidence, path)
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == [path.name]


class FakeTarget:
    """open_target's stand-in: a guest that only answers ``uname -r``."""

    @contextmanager
    def __call__(self, kernel: object, options: object, run_dir: object = None,
                 phases: object = None) -> Iterator[Guest]:
        yield ScriptedGuest(Path("/nonexistent"), release_only("5.10.223"))  # type: ignore[misc]


class Replayed(ZramScenario):
    """The zram scenario replaying the recorded run's facts instead of measuring."""

    needs = Needs()

    def collect(self, guest: Guest, evidence: Evidence) -> None:
        source = recorded("zram")
        evidence.facts.update(source.facts)
        evidence.notes[:] = source.notes
        evidence.seconds.update(source.seconds)


class Killed(ZramScenario):
    """A scenario during which the harness is killed (Ctrl-C)."""

    name = "balloon"
    needs = Needs()

    def collect(self, guest: Guest, evidence: Evidence) -> None:
        raise KeyboardInterrupt


def test_a_run_killed_after_its_first_scenario_keeps_its_evidence(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(build, "build_kernel", lambda spec, arch, fragments, force: (
        kernel_with_config(tmp_path, "")))
    monkeypatch.setattr(runner, "open_target", FakeTarget())
    monkeypatch.setattr(runner, "SCENARIOS", {"zram": Replayed, "balloon": Killed})
    argv = ["run", "--arch", "x86_64", "--kernel", "debian:5.10", "--scenario", "zram",
            "--scenario", "balloon"]
    assert cli.main(argv) == 130  # interrupted
    (run,) = (tmp_path / "runs").glob("*-run-*")
    assert capsys.readouterr().err.splitlines() == [
        "harness: interrupted",
        f"harness: note: the evidence of the 1 scenario run(s) finished is in {run}/evidence: "
        f"`harness report {run}` judges and renders it"]
    assert [path.name for path in (run / "evidence").iterdir()] == [
        "00-x86_64-debian_5.10-zram.json"]
    assert not (run / "result.json").exists()
    assert cli.main(["report", str(run)]) == 0
    assert "638 / 1419 (45%)" in capsys.readouterr().out
    (item,) = json.loads((run / "result.json").read_text())["in_tree"]
    assert item["verdict"] == "proven" and item["migrated_pages"] == 638


def readme_sketch() -> type:
    """The scenario README.md's "Scenarios (for developers)" shows, as written there."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = re.search(r"```python\n(class RandomZram:.*?)```", readme, re.S)
    assert code is not None, "README.md lost its scenario sketch"
    namespace: dict[str, object] = {}
    exec(  # the imports the sketch's module would have, then the sketch
        "from harness.artifacts import KernelBuild\n"
        "from harness.check import zram\n"
        "from harness.check.in_tree import ZSPAGE_FIRST_PAGE, compact_and_track, "
        "in_tree_result\n"
        "from harness.check.sample import VMSTAT_KEYS\n"
        "from harness.check.scenario import Evidence, Needs\n"
        "from harness.check.steps import must, undone\n"
        "from harness.guest import Guest\n"
        "from harness.report.in_tree import InTreeResult\n" + code[1], namespace)
    sketch = namespace["RandomZram"]
    assert isinstance(sketch, type)
    return sketch


def test_the_readme_sketch_is_a_scenario_harness_report_judges(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Adding a scenario is its module and one line in runner.SCENARIOS: then
    ``harness report`` judges its saved evidence like any other's."""
    sketch = readme_sketch()
    monkeypatch.setitem(runner.SCENARIOS, "random-zram", sketch)
    facts = {key: recorded("zram").facts[key] for key in (
        "buddy_before", "buddy_after", "tracked", "vmstat_delta", "pgmigrate_success_delta")}
    facts["intact"] = True
    run = tmp_path / "run"
    save_evidence(Evidence("random-zram", "x86_64", "debian:5.10", "5.10.223", facts,
                           page_size=4096),
                  run / "evidence" / "00-x86_64-debian_5.10-random-zram.json")
    cut = Evidence("random-zram", "arm64", "debian:5.10", "5.10.223")
    cut.interrupted(KernelProblem("Oops", "[ 2.0] general protection fault: 0000 [#1] SMP"))
    save_evidence(cut, run / "evidence" / "01-arm64-debian_5.10-random-zram.json")
    assert cli.main(["report", str(run)]) == 1
    out = capsys.readouterr().out
    assert "random-zram · x86_64 · debian:5.10" in out and "638 zspages moved, data intact" in out
    assert "general protection fault" in out
    verdicts = [item["verdict"] for item in
                json.loads((run / "result.json").read_text())["in_tree"]]
    assert verdicts == ["proven", "not proven"]
