"""The terminal tables: one per result, the key evidence with the verdict under it.

For the sample A/B the columns are its sides (movable=0, movable=1), so the
difference the check exists to show is read across a row; an in-tree
scenario's table has one column of its figures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from harness.report.in_tree import InTreeResult
from harness.report.model import HighOrder, KernelReport, RunResult, ScenarioResult, Side

# vmstat counters worth a row when the check recorded their deltas.
_VMSTAT_ROWS = ("compact_isolated", "compact_migrate_scanned", "compact_free_scanned",
                "pgmigrate_fail")


_NOT_MEASURED = "not measured"
# Console lines of a kernel report shown under its table (result.json has them all).
_EXCERPT_LINES = 30


def _change(before: int | None, after: int | None) -> str:
    if before is None:
        return _NOT_MEASURED
    if after is None:
        return f"{before} → {_NOT_MEASURED}"
    return f"{before} → {after} ({after - before:+d})"


def _caption(result: ScenarioResult, *extra: str) -> Text:
    """Verdict, reasons and notes: what every table ends with."""
    style = "bold green" if result.proven else "bold red"
    return Text.assemble(
        ("verdict: ", "bold"), (result.verdict.upper(), style),
        *((f"\n{reason}", "") for reason in result.reasons),
        *((f"\nnote: {note}", "dim") for note in result.notes),
        *((f"\n{line}", "dim") for line in extra),
    )


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


class _Row(NamedTuple):
    name: str
    cell: Callable[[Side], str]
    value: Callable[[Side], int]  # the number compared across the A/B


def _vmstat_row(name: str) -> _Row:
    def value(side: Side) -> int:
        return side.vmstat_delta[name]

    return _Row(f"{name} Δ", lambda side: str(value(side)), value)


def _probe(side: Side) -> HighOrder:
    if side.high_order is None:
        raise ValueError(f"{side.label} has no high-order probe")
    return side.high_order


def _high_order_cell(side: Side) -> str:
    probe = _probe(side)
    return f"{probe.before}/{probe.attempts} → {probe.after}/{probe.attempts}"


def _rows(result: RunResult) -> list[_Row]:
    order = result.high_order
    rows = [
        _Row("migrated pages (new PFN)",
             lambda s: f"{s.migrated_pages} / {s.total_pages} ({s.migrated_share:.0%})",
             lambda s: s.migrated_pages),
    ]
    if all("migrated" in side.driver_counters for side in result.sides):
        rows.append(_Row("driver migratepage ok", lambda s: str(s.driver_counters["migrated"]),
                         lambda s: s.driver_counters["migrated"]))
    rows += [
        _Row("pgmigrate_success Δ", lambda s: str(s.pgmigrate_success_delta),
             lambda s: s.pgmigrate_success_delta),
    ]
    for name in _VMSTAT_ROWS:
        if all(name in side.vmstat_delta for side in result.sides):
            rows.append(_vmstat_row(name))
    rows.append(_Row("free order-0 blocks",
                     lambda s: _change(s.buddy_before[0], s.buddy_after[0]),
                     lambda s: s.buddy_after[0]))
    rows.append(_Row(f"free blocks ≥ order {order}",
                     lambda s: _change(*s.blocks_at_least(order)),
                     lambda s: s.blocks_at_least(order)[1]))
    if all(side.high_order for side in result.sides):
        rows.append(_Row(f"order-{order} allocations ok", _high_order_cell,
                         lambda s: _probe(s).after))
    rows.append(_Row("verify mismatches", lambda s: str(s.verify_mismatches),
                     lambda s: s.verify_mismatches))
    return rows


def build_table(result: RunResult) -> Table:
    """One arch x kernel as a rich Table, verdict and reasons in the caption."""
    control, movable = result.unmovable, result.movable
    both = control is not None and movable is not None
    table = Table(
        title=f"{result.label}  ({result.running})",
        caption=_caption(result, *(("1 − 0: movable=1 minus movable=0, after compaction",)
                                   if both else ())),
        caption_justify="left",
    )
    table.add_column("evidence", style="bold", no_wrap=True)
    if not result.sides:
        table.add_column("value")
        table.add_row("A/B rounds", "none measured before the kernel report")
        return table
    for side in result.sides:
        table.add_column(side.label, justify="right")
    if both:
        table.add_column("1 − 0", justify="right", style="cyan")
    for row in _rows(result):
        cells = [row.cell(side) for side in result.sides]
        if control is not None and movable is not None:
            cells.append(f"{row.value(movable) - row.value(control):+d}")
        table.add_row(row.name, *cells)
    return table


def build_in_tree_table(result: InTreeResult) -> Table:
    """One in-tree scenario run (zram, balloon) as a rich Table: evidence, then figures."""
    table = Table(title=f"{result.label}  ({result.running})",
                  caption=_caption(result), caption_justify="left")
    table.add_column("evidence", style="bold", no_wrap=True)
    table.add_column("value", justify="right")
    tracked = result.tracked
    if tracked is None:
        table.add_row("pages moved (new PFN)", _NOT_MEASURED)
    else:
        table.add_row(f"{tracked.kind} moved (new PFN)",
                      f"{tracked.moved} / {tracked.before} ({tracked.moved_share:.0%})")
    delta = result.pgmigrate_success_delta
    table.add_row("pgmigrate_success Δ", _NOT_MEASURED if delta is None else str(delta))
    for name in _VMSTAT_ROWS:
        if name in result.vmstat_delta:
            table.add_row(f"{name} Δ", str(result.vmstat_delta[name]))
    for name, value in result.figures.items():
        table.add_row(name, f"{value:,}")
    if result.buddy_before:
        order = result.huge_order
        table.add_row("free order-0 blocks", _change(
            result.buddy_before[0], result.buddy_after[0] if result.buddy_after else None))
        table.add_row(f"free MiB in blocks ≥ order {order}",
                      _change(*result.free_mib_at_least(order)))
    else:
        table.add_row("free blocks (buddyinfo)", _NOT_MEASURED)
    table.add_row("data read back", _NOT_MEASURED if result.data_checked is None else
                  f"{result.data_checked} × {result.data_unit}, "
                  f"{result.data_mismatches} mismatches")
    table.add_row("seconds", ", ".join(f"{name} {value:.1f}"
                                       for name, value in result.seconds.items()))
    return table


def render_tables(results: Sequence[ScenarioResult]) -> Group:
    """All tables of a run, in order, as one renderable; each kernel report under its table."""
    parts: list[Table | Text] = []
    for result in results:
        if isinstance(result, RunResult):
            parts.append(build_table(result))
        else:
            assert isinstance(result, InTreeResult), result
            parts.append(build_in_tree_table(result))
        if result.kernel_report is not None:
            parts.append(_kernel_report_text(result.kernel_report))
    return Group(*parts)


def print_tables(results: Sequence[ScenarioResult], console: Console | None = None) -> None:
    """Print every result's table to the terminal (or the given console)."""
    (console or Console()).print(render_tables(results))
