"""A kernel report during a scenario is that scenario's verdict, not a harness error.

A panic, Oops, BUG, WARNING, lockup, hung task or RCU stall while a scenario
runs ends it at the step it appeared in (the guest may be wedged or dead), and
its result is NOT PROVEN with the report's headline as the first reason, the
console excerpt, and everything measured before it. ``harness run`` exits 1 for
it, as for any migration not proven, and goes on with the other cells and
scenarios, each on a VM of its own. Exit 2 stays for the harness's own failures
(README "Verdicts and exit status").
"""

from dataclasses import replace
from typing import TypeVar

from harness.guest import KernelProblem
from harness.report.in_tree import InTreeResult
from harness.report.model import KernelReport, RunResult

R = TypeVar("R", RunResult, InTreeResult)


def kernel_report(problem: KernelProblem) -> KernelReport:
    """The record of a report, as results keep it."""
    return KernelReport(kind=problem.kind, headline=problem.headline, excerpt=problem.excerpt,
                        fatal=problem.fatal, step=problem.step)


def reported(result: R, problem: KernelProblem, stopped: str) -> R:
    """``result`` (what was measured) judged again after ``problem``: NOT PROVEN,
    with the report's headline first; ``stopped`` says what the report cut short.

    The first report wins: a result that already has one keeps it, and the
    later one becomes a note. What the problem collected on its way (a cleanup
    that failed after it) becomes the result's notes too.
    """
    notes: tuple[str, ...] = (*result.notes, *getattr(problem, "__notes__", ()))
    if result.kernel_report is not None:
        return replace(result, notes=(*notes, f"afterwards, {problem}"))
    during = f" during {problem.step}" if problem.step else ""
    then = "; the kernel then panicked" if problem.fatal else ""
    own: tuple[str, ...] = () if result.proven else result.reasons  # a summary: void now
    return replace(result, proven=False, kernel_report=kernel_report(problem), notes=notes,
                   reasons=(problem.headline,
                            f"the kernel reported {problem.kind}{during}{then}: {stopped}",
                            *own))
