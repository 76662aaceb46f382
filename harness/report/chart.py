"""The picture: free blocks per order before and after compaction, movable=0 vs movable=1.

One row per result, in run order: for the sample A/B the two sides next to
each other on a shared y axis, so the claim is visible at a glance (with
movable driver pages, compaction turns many small free blocks into fewer large
ones; without them, the histogram barely moves); for an in-tree scenario its
free blocks and the pages of the kernel's own user it found and saw move.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubFigure
from matplotlib.ticker import FuncFormatter

from harness.errors import HarnessError
from harness.paths import write_atomically
from harness.report.in_tree import InTreeResult
from harness.report.model import KernelReport, RunResult, ScenarioResult, Side, size_label

BEFORE_COLOR = "#9ecae1"
AFTER_COLOR = "#08519c"
PROVEN_COLOR = "#1a7f37"
NOT_PROVEN_COLOR = "#cf222e"
INDEX_COLOR = "#e6550d"
# Console lines of a kernel report drawn where the measurement it stopped would be.
_EXCERPT_LINES = 14
_EXCERPT_WIDTH = 110


def _count_label(value: float, _position: object) -> str:
    return f"{value:,.0f}" if value >= 1 or value == 0 else ""


def _draw_buddy(axes: Axes, before: Sequence[int], after: Sequence[int],
                result: ScenarioResult, top: float) -> None:
    """Free blocks per order, before and after (when measured), as paired bars on a
    symlog axis."""
    orders = range(len(before))
    width = 0.4
    axes.bar([o - width / 2 for o in orders], before, width,
             color=BEFORE_COLOR, label="before compaction")
    if after:
        axes.bar([o + width / 2 for o in orders], after, width,
                 color=AFTER_COLOR, label="after compaction")
    # Counts span decades (thousands of order-0 blocks, a handful of order-10):
    # symlog keeps zeros visible, which plain log would drop.
    axes.set_yscale("symlog", linthresh=1, linscale=0.4)
    axes.set_ylim(0, top)
    axes.yaxis.set_major_formatter(FuncFormatter(_count_label))
    axes.set_xticks(list(orders))
    axes.set_xticklabels(
        [f"{o}\n{size_label(result.block_bytes(1 << o))}" for o in orders], fontsize=8
    )
    axes.set_xlabel("order (block size)")
    axes.set_ylabel("free blocks (symlog)")
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)


def _evidence_box(axes: Axes, lines: Sequence[str]) -> None:
    axes.text(0.98, 0.97, "\n".join(lines), transform=axes.transAxes, ha="right", va="top",
              fontsize=8.5, bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85,
                                  "edgecolor": "#bbbbbb"})


def _draw_side(axes: Axes, side: Side, result: RunResult, top: float) -> None:
    _draw_buddy(axes, side.buddy_before, side.buddy_after, result, top)
    role = "driver pages movable" if side.movable else "control: not movable"
    axes.set_title(
        f"{side.label} ({role})\n"
        f"migrated {side.migrated_pages} of {side.total_pages} pages "
        f"({side.migrated_share:.0%})",
        fontsize=10,
    )
    order = result.high_order
    before, after = side.blocks_at_least(order)
    lines = [f"free blocks ≥ order {order}: {before} → {after}"]
    if side.high_order is not None:
        high = side.high_order
        lines.append(f"order-{high.order} allocations ok: "
                     f"{high.before}/{high.attempts} → {high.after}/{high.attempts}")
    lines.append(f"pgmigrate_success Δ {side.pgmigrate_success_delta}, "
                 f"mismatches {side.verify_mismatches}")
    _evidence_box(axes, lines + _draw_indices(axes, side, order))


def _draw_indices(axes: Axes, side: Side, order: int) -> list[str]:
    """The kernel's unusable_index per order before and after compaction, on a right-hand
    0..1 axis over the buddy bars, for the last zone it lists (the highest, where most
    memory is and allocations look first); returns the evidence lines for ``order``
    (and the extfrag_index there). Nothing when the side has no indices."""
    before, after = side.indices_before, side.indices_after
    if before is None or after is None:
        return []
    zone = list(before.unusable.per_zone)[-1]
    right = axes.twinx()
    for indices, style, when in ((before, "--", "before"), (after, "-", "after")):
        values = indices.unusable.per_zone[zone]
        right.plot(range(len(values)), values, style, color=INDEX_COLOR, marker=".",
                   linewidth=1.2, label=f"unusable index {when}")
    right.set_ylim(0, 1.6)  # the lines stay under the evidence box
    right.set_yticks([0, 0.5, 1])
    right.set_ylabel(f"unusable index ({zone.zone})", color=INDEX_COLOR, fontsize=8)
    right.tick_params(axis="y", colors=INDEX_COLOR, labelsize=8)
    right.legend(loc="center right", fontsize=7, frameon=False)
    unusable = [index.unusable.per_zone[zone][order] for index in (before, after)]
    extfrag = [index.extfrag.per_zone[zone][order] for index in (before, after)]
    return [f"{zone.zone} order {order}: unusable index {unusable[0]:.3f} → {unusable[1]:.3f}",
            f"extfrag index {extfrag[0]:.3f} → {extfrag[1]:.3f} (-1: a free block)"]


def _title(result: ScenarioResult) -> str:
    """A row's title: what ran, on which release, the verdict, and the kernel report."""
    title = f"{result.label}  —  {result.running}  —  {result.verdict.upper()}"
    report = result.kernel_report
    if report is not None:
        title += f"\n{report.kind}: {_shorten(report.headline)}"
    return title


def _shorten(line: str) -> str:
    return line if len(line) <= _EXCERPT_WIDTH else line[:_EXCERPT_WIDTH - 1] + "…"


def _draw_not_measured(axes: Axes, what: str, report: KernelReport | None) -> None:
    """A panel whose measurement a kernel report stopped: the report's excerpt instead."""
    axes.set_axis_off()
    if report is None:
        axes.text(0.5, 0.5, f"{what} not run", ha="center", va="center",
                  transform=axes.transAxes, color="#666666")
        return
    lines = report.excerpt.splitlines()
    shown = [_shorten(line) for line in lines[:_EXCERPT_LINES]]
    if len(lines) > len(shown):
        shown.append(f"… {len(lines) - len(shown)} more lines in result.json")
    axes.set_title(f"{what}: not measured, the kernel reported {report.kind}", fontsize=10,
                   color=NOT_PROVEN_COLOR)
    axes.text(0.0, 1.0, "\n".join(shown), ha="left", va="top", transform=axes.transAxes,
              family="monospace", fontsize=6)


# The in-tree users' own numbers worth a bar next to the migration counters.
_PANEL_FIGURES = {"zsmalloc_pages": "zsmalloc pages in all (debugfs)",
                  "zram_compact_pages_compacted": "zram compact: pages freed"}


def _draw_in_tree(row: SubFigure, result: InTreeResult) -> None:
    """An in-tree scenario: free blocks per order, and its pages found and moved."""
    color = PROVEN_COLOR if result.proven else NOT_PROVEN_COLOR
    row.suptitle(_title(result), fontsize=12, fontweight="bold", color=color)
    buddy, pages = row.subplots(1, 2, width_ratios=(3, 2))
    tracked = result.tracked
    if not result.buddy_before:
        _draw_not_measured(buddy, "free blocks per order", result.kernel_report)
    else:
        peak = max(*result.buddy_before, *result.buddy_after, 1)
        _draw_buddy(buddy, result.buddy_before, result.buddy_after, result, peak * 12)
        buddy.set_title(f"{result.scenario}: {tracked.moved} of {tracked.before} {tracked.kind} "
                        f"changed PFN ({tracked.moved_share:.0%})" if tracked else
                        f"{result.scenario}: pages not compared", fontsize=10)
        order = result.huge_order
        before, after = ("?" if mib is None else mib for mib in result.free_mib_at_least(order))
        data = ("not read back" if result.data_checked is None else
                f"{result.data_checked} × {result.data_unit}, "
                f"{result.data_mismatches} mismatches")
        _evidence_box(buddy, [f"free memory in blocks ≥ "
                              f"{size_label(result.block_bytes(1 << order))}: "
                              f"{before} → {after} MiB", f"data read back: {data}"])
    bars: dict[str, int] = {}
    if tracked is not None:
        bars.update({f"{tracked.kind} found": tracked.before,
                     "… moved to a new PFN": tracked.moved})
    if result.pgmigrate_success_delta is not None:
        bars["pgmigrate_success Δ"] = result.pgmigrate_success_delta
    bars.update({f"{name} Δ": value for name, value in result.vmstat_delta.items()
                 if name == "balloon_migrate"})
    bars.update({label: result.figures[name] for name, label in _PANEL_FIGURES.items()
                 if name in result.figures})
    if not bars:
        _draw_not_measured(pages, "pages of the in-tree user",
                           result.kernel_report if result.buddy_before else None)
        return
    names = list(bars)[::-1]
    pages.barh(names, [bars[name] for name in names], color=AFTER_COLOR)
    for y, name in enumerate(names):
        pages.annotate(f" {bars[name]:,}", (bars[name], y), va="center", fontsize=9)
    pages.set_xlabel("pages")
    pages.set_xlim(0, max(bars.values(), default=1) * 1.25 or 1)
    pages.tick_params(axis="y", labelsize=9)
    pages.set_title("pages of the in-tree user around one compaction", fontsize=10)


def _draw_ab(row: SubFigure, result: RunResult) -> None:
    """The sample driver's A/B: movable=0 next to movable=1 on a shared y axis."""
    color = PROVEN_COLOR if result.proven else NOT_PROVEN_COLOR
    row.suptitle(_title(result), fontsize=12, fontweight="bold", color=color)
    axes_row = row.subplots(1, 2, sharey=True)
    peak = max((max(*side.buddy_before, *side.buddy_after, 1) for side in result.sides),
               default=1)
    top = peak * 12  # a decade of headroom above the bars for the evidence box
    report = result.kernel_report
    for axes, side, what in ((axes_row[0], result.unmovable, "movable=0 control"),
                             (axes_row[1], result.movable, "movable=1")):
        if side is None:
            _draw_not_measured(axes, what, report)
            report = None  # the excerpt once, in the first panel it stopped
        else:
            _draw_side(axes, side, result, top)
    axes_row[1].tick_params(labelleft=True)  # sharey hides them; each side reads alone


def build_figure(results: Sequence[ScenarioResult]) -> Figure:
    """The whole picture as a matplotlib Figure (no pyplot, no global state): one row
    per result, in run order."""
    if not results:
        raise HarnessError("no results to draw: the run produced no arch x kernel result")
    count = len(results)
    figure = Figure(figsize=(13, 0.9 + 4.6 * count), dpi=110, layout="constrained")
    figure.suptitle("Free blocks per order before and after "
                    "echo 1 > /proc/sys/vm/compact_memory", fontsize=14, fontweight="bold")
    rows = figure.subfigures(count, 1, squeeze=False)[:, 0]
    for row, result in zip(rows, results, strict=True):
        if isinstance(result, RunResult):
            _draw_ab(row, result)
        else:
            assert isinstance(result, InTreeResult), result
            _draw_in_tree(row, result)
    handles, labels = next((found for found in map(Axes.get_legend_handles_labels, figure.axes)
                            if found[0]), ([], []))
    figure.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=10,
                  frameon=False)
    return figure


def write_chart(results: Sequence[ScenarioResult], path: Path) -> Path:
    """Render the picture to a PNG file (atomically) and return its path."""
    figure = build_figure(results)
    FigureCanvasAgg(figure)
    png = io.BytesIO()
    figure.savefig(png, format="png")
    return write_atomically(path, png.getvalue(), mode=0o644)
