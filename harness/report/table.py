"""The terminal table: one per arch x kernel, the key evidence side by side with the verdict.

Columns are the A/B sides (movable=0, movable=1) so the difference the check
exists to show is read across a row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from harness.report.model import HighOrder, RunResult, Side

# vmstat counters worth a row when the check recorded their deltas.
_VMSTAT_ROWS = ("compact_isolated", "compact_migrate_scanned", "compact_free_scanned",
                "pgmigrate_fail")


def _change(before: int, after: int) -> str:
    return f"{before} → {after} ({after - before:+d})"


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
    style = "bold green" if result.proven else "bold red"
    table = Table(
        title=f"{result.label}  ({result.release})",
        caption=Text.assemble(
            ("verdict: ", "bold"), (result.verdict.upper(), style),
            *((f"\n{reason}", "") for reason in result.reasons),
            *((f"\nnote: {note}", "dim") for note in result.notes),
            ("\n1 − 0: movable=1 minus movable=0, after compaction" if result.unmovable
             else "", "dim"),
        ),
        caption_justify="left",
    )
    table.add_column("evidence", style="bold", no_wrap=True)
    for side in result.sides:
        table.add_column(side.label, justify="right")
    control = result.unmovable
    if control is not None:
        table.add_column("1 − 0", justify="right", style="cyan")
    for row in _rows(result):
        cells = [row.cell(side) for side in result.sides]
        if control is not None:
            cells.append(f"{row.value(result.movable) - row.value(control):+d}")
        table.add_row(row.name, *cells)
    return table


def render_tables(results: Sequence[RunResult]) -> Group:
    """All tables of a run, in order, as one renderable."""
    return Group(*(build_table(result) for result in results))


def print_tables(results: Sequence[RunResult], console: Console | None = None) -> None:
    """Print every arch x kernel table to the terminal (or the given console)."""
    (console or Console()).print(render_tables(results))
