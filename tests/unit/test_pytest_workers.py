"""The plugin under pytest-xdist (no VM): each cell in one worker, one run directory,
and one result.json and picture with every worker's results.

The suites run in a subprocess (xdist starts its workers from there) with
HARNESS_RUNS_DIR pointing into the test's own directory. Their results are the
judges' verdicts on the recorded evidence of tests/data/evidence/.
"""

import json
from pathlib import Path

import pytest

from tests.unit.test_saved_evidence import RECORDED

RESULTS_SUITE = f"""
from pathlib import Path

import pytest

from harness.check.runner import scenario_named
from harness.check.scenario import load_evidence, verdict
from harness.pytest_plugin import session_run_dir

RECORDED = Path({str(RECORDED)!r})


@pytest.mark.parametrize("scenario", ["sample", "zram", "balloon", "sample"])
def test_adds_a_result(scenario, harness_results, pytestconfig):
    # As run_scenario does: the evidence would go into the run directory.
    session_run_dir(pytestconfig)
    (path,) = RECORDED.glob(f"*-{{scenario}}.json")
    harness_results.append(verdict(scenario_named(scenario), load_evidence(path)))
"""

CELL_SUITE = """
import os


def test_one(harness_cell, tmp_path_factory):
    record(harness_cell)


def test_two(harness_cell):
    record(harness_cell)


def test_three(harness_cell):
    record(harness_cell)


def record(cell):
    with open(os.environ["WORKER_LOG"], "a") as log:
        log.write(f"{cell.test_id} {os.environ['PYTEST_XDIST_WORKER']}\\n")
"""


def run_distributed(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                    tmp_path: Path, suite: str, *args: str) -> pytest.RunResult:
    """Run ``suite`` with two workers, cells grouped as this repository asks."""
    pytester.makepyfile(test_suite=suite)
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("WORKER_LOG", str(tmp_path / "workers.log"))
    return pytester.runpytest_subprocess("-n", "2", "--dist", "loadgroup", "-p", "xdist",
                                         *args)


def test_one_result_file_holds_every_workers_results(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    outcome = run_distributed(pytester, monkeypatch, tmp_path, RESULTS_SUITE)
    outcome.assert_outcomes(passed=4)
    (run_dir,) = [path for path in (tmp_path / "runs").iterdir() if path.name != "latest"]
    document = json.loads((run_dir / "result.json").read_text())
    assert len(document["results"]) == 2 and len(document["in_tree"]) == 2
    assert sorted(item["scenario"] for item in document["in_tree"]) == ["balloon", "zram"]
    assert document["proven"] is True
    assert (run_dir / "buddyinfo.png").stat().st_size > 0
    outcome.stdout.fnmatch_lines([f"harness result: {run_dir}/result.json"])


def test_each_cell_runs_in_one_worker(pytester: pytest.Pytester,
                                      monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    outcome = run_distributed(pytester, monkeypatch, tmp_path, CELL_SUITE, "--arch", "x86_64",
                              "--arch", "arm64", "--kernel", "debian:5.10",
                              "--kernel", "debian:7.2")
    outcome.assert_outcomes(passed=12)
    workers: dict[str, set[str]] = {}
    for line in (tmp_path / "workers.log").read_text().splitlines():
        cell, worker = line.split()
        workers.setdefault(cell, set()).add(worker)
    assert len(workers) == 4
    assert all(len(names) == 1 for names in workers.values()), workers
    assert len(set().union(*workers.values())) == 2, "both workers should have had cells"
