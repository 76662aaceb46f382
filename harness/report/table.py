"""The terminal tables: one per result, the key evidence with the verdict under it.

Every result describes its own table (``ScenarioResult.table()``: columns and
rows as data, harness.report.view); this module only draws it: the sample
A/B's columns are its sides (movable=0, movable=1, and their difference), an
in-tree scenario's one column of its figures, a new scenario's whatever it says.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from harness.phases import grouped, top_level
from harness.report.model import KernelReport, ScenarioResult

# Console lines of a kernel report shown under its table (result.json has them all).
_EXCERPT_LINES = 30


def _caption(result: ScenarioResult, legend: Sequence[str]) -> Text:
    """Verdict, reasons, notes, the table's legend and where the time went: what every
    table ends with."""
    style = "bold green" if result.proven else "bold red"
    return Text.assemble(
        ("verdict: ", "bold"), (result.verdict.upper(), style),
        *((f"\n{reason}", "") for reason in result.reasons),
        *((f"\nnote: {note}", "dim") for note in result.notes),
        *((f"\n{line}", "dim") for line in legend),
        *((f"\n{line}", "dim") for line in _time_line(result)),
    )


def _time_line(result: ScenarioResult) -> tuple[str, ...]:
    """The run's top-level phases in one line (none for a result without times)."""
    phases = top_level(result.seconds)
    if not phases:
        return ()
    return ("seconds: " + ", ".join(f"{name} {value:.2f}" for name, value in phases.items())
            + (" (each step: --timings)" if grouped(result.seconds) else ""),)


def build_phase_table(result: ScenarioResult) -> Table:
    """Every timed phase of ``result`` in run order, each group's steps under it;
    groups with the same steps (the sample A/B's rounds) side by side, so the same
    step of two rounds is read across a row."""
    groups = grouped(result.seconds)
    alike: dict[tuple[str, ...], list[str]] = {}
    for group, steps in groups.items():
        alike.setdefault(tuple(steps), []).append(group)
    width = max((len(family) for family in alike.values()), default=1)
    table = Table(title=f"{result.label}: seconds per phase", title_justify="left")
    table.add_column("phase", no_wrap=True)
    for _ in range(width):
        table.add_column("s", justify="right")
    for name, value in top_level(result.seconds).items():
        steps = groups.get(name, {})
        family = alike.get(tuple(steps), [name])
        if len(family) > 1:  # the whole family where its first group ran, once
            if name == family[0]:
                table.add_row(*(Text(label, style="bold") for label in ("", *family)))
                for step in steps:
                    table.add_row(f"  {step}",
                                  *(f"{groups[group][step]:.3f}" for group in family))
                table.add_row("  all steps",
                              *(f"{result.seconds[group]:.3f}" for group in family))
            continue
        table.add_row(name, f"{value:.3f}")
        for step, seconds in steps.items():
            table.add_row(f"  {step}", f"{seconds:.3f}")
    return table


def _kernel_report_text(report: KernelReport) -> Text:
    """The kernel report under its table: kind, step and the console excerpt."""
    lines = report.excerpt.splitlines()
    shown = lines[:_EXCERPT_LINES]
    if len(lines) > len(shown):
        shown.append(f"… {len(lines) - len(shown)} more lines in result.json")
    fatal = ", then the kernel panicked" if report.fatal else ""
    step = f" during {report.step}" if report.step else ""
    return Text.assemble((f"kernel report ({report.kind}{fatal}){step}:\n", "bold red"),
                         ("\n".join(shown), "dim"))


def build_table(result: ScenarioResult) -> Table:
    """One result as a rich Table, verdict and reasons in the caption."""
    view = result.table()
    table = Table(title=f"{result.label}  ({result.running})",
                  caption=_caption(result, view.legend), caption_justify="left")
    table.add_column("evidence", style="bold", no_wrap=True)
    for index, header in enumerate(view.columns, start=1):
        derived = view.derived and index == len(view.columns)
        table.add_column(header, justify="right", style="cyan" if derived else None)
    for row in view.rows:
        table.add_row(*row)
    return table


def render_tables(results: Sequence[ScenarioResult], timings: bool = False) -> Group:
    """All tables of a run, in order, as one renderable; each kernel report under its
    table, and with ``timings`` each result's phase table after it."""
    parts: list[Table | Text] = []
    for result in results:
        parts.append(build_table(result))
        if result.kernel_report is not None:
            parts.append(_kernel_report_text(result.kernel_report))
        if timings and result.seconds:
            parts.append(build_phase_table(result))
    return Group(*parts)


def print_tables(results: Sequence[ScenarioResult], console: Console | None = None,
                 timings: bool = False) -> None:
    """Print every result's table (and with ``timings`` its phase table) to the
    terminal (or the given console)."""
    (console or Console()).print(render_tables(results, timings))
