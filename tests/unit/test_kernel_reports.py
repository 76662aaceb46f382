"""Every kind of kernel report, as 4.8.15 and newer kernels print it, is named right.

The texts live in tests/data/kernel-reports/ (see its README: written from the
kernels' format strings, not yet recorded); each file says what the watch must
find in its header.
"""

from pathlib import Path

import pytest

from harness.guest.reports import find_problem, scan
from tests.unit.report_texts import REPORTS, load


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
    assert problem.later == (), "one report, not several"


@pytest.mark.parametrize("path", REPORTS, ids=lambda path: path.stem)
def test_report_is_whole_in_its_excerpt(path: Path) -> None:
    """The excerpt holds the report from its first line to its end, nothing after it."""
    _, text = load(path)
    problem = find_problem(text)
    assert problem is not None
    lines = text.splitlines()
    assert problem.excerpt.splitlines()[-1] in lines
    assert "after the report" not in problem.excerpt
    (report,) = scan(text)
    assert report.complete or report.end == len(lines)
    assert any(marker in problem.excerpt for marker in ("Call Trace:", "Call trace:"))
