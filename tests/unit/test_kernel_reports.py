"""Every kind of kernel report, as 4.8.15 and newer kernels print it, is named right.

The texts live in tests/data/kernel-reports/ (see its README: recorded from
5.10 and 7.2 guests with LKDTM where it can provoke the report, written from the
kernels' format strings otherwise); each file says what the watch must find in
its header.
"""

import re
from pathlib import Path

import pytest

from harness.guest.reports import find_problem, scan
from tests.lkdtm import CRASHES, DEFAULT
from tests.unit.report_texts import REPORTS, console_text, load


def test_every_kind_has_a_text_from_4_8_and_from_a_newer_kernel() -> None:
    kinds: dict[str, set[str]] = {}
    for path in REPORTS:
        era = "4.8" if ".4.8.15-" in path.name else "newer"
        kinds.setdefault(load(path)[0]["kind"], set()).add(era)
    required = {"panic", "Oops", "BUG", "Bad page state", "KASAN", "UBSAN", "WARNING",
                "soft lockup", "hard lockup", "hung task", "RCU stall", "list corruption",
                "page poison corruption"}
    assert required <= set(kinds)
    only_4_8 = {"Bad page state", "page poison corruption"}  # same wording since
    assert all(eras == {"4.8", "newer"} for kind, eras in kinds.items() if kind not in only_4_8)


@pytest.mark.parametrize("path", REPORTS, ids=lambda path: path.stem)
def test_report_kind_and_headline(path: Path) -> None:
    header, text = load(path)
    problem = find_problem(text)
    assert problem is not None, f"{path.name}: no report found"
    assert (problem.kind, problem.headline) == (header["kind"], header["headline"])
    assert problem.fatal == (header.get("fatal") == "yes")
    assert problem.later == tuple(header.get("later", "").splitlines())


@pytest.mark.parametrize("path", REPORTS, ids=lambda path: path.stem)
def test_report_is_whole_in_its_excerpt(path: Path) -> None:
    """The excerpt holds the reports from the first one's first line to the last one's
    end, nothing after it."""
    _, text = load(path)
    problem = find_problem(text)
    assert problem is not None
    lines = text.splitlines()
    assert problem.excerpt.splitlines()[-1] in lines
    assert "after the report" not in problem.excerpt
    assert all(report.complete or report.end == len(lines) for report in scan(text))
    assert any(marker in problem.excerpt for marker in ("Call Trace:", "Call trace:"))


RECORDED = [path for path in REPORTS if "recorded" in load(path)[0]]


@pytest.mark.parametrize("path", RECORDED, ids=lambda path: path.stem)
def test_a_recorded_lkdtm_report_is_what_the_lkdtm_matrix_expects(path: Path) -> None:
    """tests/integration/test_lkdtm.py judges live reports by tests/lkdtm.py's CRASHES:
    the texts it recorded must meet the same expectations."""
    header, _ = load(path)
    found = re.search(r"LKDTM's (\w+)", header["recorded"])
    assert found, f"{path.name}: its recorded: line names no LKDTM crash type"
    crash = next(crash for crash in CRASHES if crash.name == found.group(1))
    assert header["kind"] == crash.kind
    assert re.search(crash.headline, header["headline"]), header["headline"]
    assert (header.get("fatal") == "yes") == crash.fatal


def test_recorded_texts_cover_every_default_lkdtm_crash_on_both_arches_old_and_new() -> None:
    cells = {(re.search(r"LKDTM's (\w+)", load(path)[0]["recorded"]).group(1),  # type: ignore[union-attr]
              path.stem.split(".", 1)[1]) for path in RECORDED}
    for crash in DEFAULT:
        for cell in ("5.10-x86_64", "5.10-arm64", "7.2-x86_64", "7.2-arm64"):
            assert (crash.name, cell) in cells, f"no recorded {crash.name} from {cell}"


def test_a_call_trace_closed_by_task_ends_its_report() -> None:
    """x86 closes a stack dump with </TASK> (5.16 on): a hung task printed last is
    whole there, so the watch need not wait for a line the stuck kernel may never print."""
    x86 = console_text("hung-task.7.2-x86_64")
    assert x86.rstrip().endswith("</TASK>")
    assert [report.complete for report in scan(x86)] == [True]
    arm64 = console_text("hung-task.7.2-arm64")  # no closing marker: only the next line tells
    assert [report.complete for report in scan(arm64)] == [False]
    assert [report.complete for report in scan(arm64 + "[   9.0] sh: done\n")] == [True]
