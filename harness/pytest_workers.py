"""pytest-xdist support: each cell in one worker, one run directory and one result.

With ``-n N`` pytest-xdist runs the tests in N worker processes, each its own
pytest session. Left alone, that would split the run three ways:

- **Cells.** A cell's tests share its kernel, its sample module and its VMs
  (session- and module-scoped fixtures). Spread over workers, two workers would
  wait on the same kernel build (the cache's per-key lock makes the second
  wait, idle) and boot the same VMs twice. So every test of a cell is put in
  the ``xdist_group`` named after the cell, and the repository's pytest options
  ask for ``--dist loadgroup``: one worker runs all of a cell, while the other
  runs another cell. (A suite outside this repository passes
  ``--dist loadgroup`` itself; with plain ``--dist load`` it still runs, only
  less efficiently.)
- **The run directory.** Each worker would make its own; the controller names
  one and hands its path to every worker (``pytest_configure_node``), the
  first worker that needs it makes it, so the VMs' logs and the saved evidence
  of the whole run are in one place (and a run with no VM test makes none).
- **result.json and the picture.** A worker attaches the results its tests
  added to the report of the test that added them (``to_dict()``, which
  xdist's report serialisation carries), and the controller rebuilds them as
  the reports arrive, so the one JSON file and picture it writes cover every
  worker.

QEMU is killed with its harness process by PR_SET_PDEATHSIG, which follows the
*thread* that started it: pytest-xdist (>= 3.6) runs tests in each worker's
main thread, which lives as long as the worker, so a killed worker takes its
QEMUs with it.
"""

from pathlib import Path
from typing import Any

import pytest

from harness.paths import open_run_dir, planned_run_dir
from harness.report.model import ScenarioResult

RUN_DIR_INPUT = "harness_run_dir"
# Name of the report attribute that carries a worker's new results: a list of
# (json_key, to_dict()) pairs.
REPORT_ATTRIBUTE = "harness_results"
SENT_KEY = pytest.StashKey[int]()


def is_worker(config: pytest.Config) -> bool:
    """True in a pytest-xdist worker process."""
    return hasattr(config, "workerinput")


def distributing(config: pytest.Config) -> bool:
    """True in a pytest-xdist controller that hands tests to workers."""
    return bool(getattr(config.option, "tx", None)) and config.getoption("dist", "no") != "no"


def worker_run_dir(config: pytest.Config) -> Path | None:
    """The controller's run directory (made now if no worker made it yet), in a
    worker; None elsewhere."""
    if not is_worker(config):
        return None
    path = config.workerinput.get(RUN_DIR_INPUT)  # type: ignore[attr-defined]
    return open_run_dir(Path(path)) if path else None


def cell_group(item: pytest.Item, cell_fixture: str) -> None:
    """Put a test parametrised by a matrix cell into that cell's ``xdist_group``."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None and cell_fixture in callspec.params:
        item.add_marker(pytest.mark.xdist_group(callspec.params[cell_fixture].test_id))


def attach_new_results(config: pytest.Config, results: list[ScenarioResult],
                       report: pytest.TestReport) -> None:
    """In a worker: put the results added since the last report on ``report``."""
    sent = config.stash.get(SENT_KEY, 0)
    if len(results) > sent:
        setattr(report, REPORT_ATTRIBUTE,
                [(result.json_key, result.to_dict()) for result in results[sent:]])
        config.stash[SENT_KEY] = len(results)


class Controller:
    """The controller's side: give workers the run directory, collect their results."""

    def __init__(self, results: list[ScenarioResult]) -> None:
        self.results = results
        self.run_dir = planned_run_dir("pytest")

    def used_run_dir(self) -> Path | None:
        """The run directory, if a worker made it."""
        return self.run_dir if self.run_dir.is_dir() else None

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Hand each worker the run's directory before it starts."""
        node.workerinput[RUN_DIR_INPUT] = str(self.run_dir)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Rebuild the results a worker attached to this report."""
        from harness.report.json_report import result_from_dict

        for json_key, item in getattr(report, REPORT_ATTRIBUTE, ()):
            self.results.append(result_from_dict(json_key, item))
