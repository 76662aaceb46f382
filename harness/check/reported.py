"""A kernel report during a scenario is that scenario's verdict, not a harness error.

A panic, Oops, BUG, WARNING, lockup, hung task or RCU stall while a scenario
runs ends it at the step it appeared in (the guest may be wedged or dead), and
its result is NOT PROVEN with the report's headline as the first reason, the
console excerpt, and everything measured before it (the scenario's Evidence
keeps it: harness.check.scenario). ``harness run`` exits 1 for it, as for any
migration not proven, and goes on with the other cells and scenarios, each on a
VM of its own. Exit 2 stays for the harness's own failures (README "Verdicts
and exit status").
"""

from dataclasses import replace
from typing import TypeVar

from harness.report.model import KernelReport, ScenarioResult

R = TypeVar("R", bound=ScenarioResult)


def reported(result: R, report: KernelReport, stopped: str) -> R:
    """``result`` (what was measured) judged again after ``report``: NOT PROVEN,
    with the report's headline first; ``stopped`` says what the report cut short.

    A proven result's reasons are a summary of the proof, void now; the rules
    a result already broke stay after the report's two lines.
    """
    during = f" during {report.step}" if report.step else ""
    then = "; the kernel then panicked" if report.fatal else ""
    own: tuple[str, ...] = () if result.proven else result.reasons
    return replace(result, proven=False, kernel_report=report,
                   reasons=(report.headline,
                            f"the kernel reported {report.kind}{during}{then}: {stopped}",
                            *own))
