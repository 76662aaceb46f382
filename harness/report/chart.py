"""The picture: free blocks per order before and after compaction, movable=0 vs movable=1.

One row per arch x kernel, the two A/B sides next to each other on a shared
y axis, so the claim is visible at a glance: with movable driver pages,
compaction turns many small free blocks into fewer large ones; without them,
the histogram barely moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from harness.errors import HarnessError
from harness.report.model import RunResult, Side

BEFORE_COLOR = "#9ecae1"
AFTER_COLOR = "#08519c"
PROVEN_COLOR = "#1a7f37"
NOT_PROVEN_COLOR = "#cf222e"


def _size_label(pages: int, page_size: int) -> str:
    size = pages * page_size
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:g} {unit}"
        size //= 1024
    return f"{size:g} TiB"


def _count_label(value: float, _position: object) -> str:
    return f"{value:,.0f}" if value >= 1 or value == 0 else ""


def _draw_side(axes: Axes, side: Side, result: RunResult, top: float) -> None:
    orders = range(len(side.buddy_before))
    width = 0.4
    axes.bar([o - width / 2 for o in orders], side.buddy_before, width,
             color=BEFORE_COLOR, label="before compaction")
    axes.bar([o + width / 2 for o in orders], side.buddy_after, width,
             color=AFTER_COLOR, label="after compaction")
    # Counts span decades (thousands of order-0 blocks, a handful of order-10):
    # symlog keeps zeros visible, which plain log would drop.
    axes.set_yscale("symlog", linthresh=1, linscale=0.4)
    axes.set_ylim(0, top)
    axes.yaxis.set_major_formatter(FuncFormatter(_count_label))
    axes.set_xticks(list(orders))
    axes.set_xticklabels(
        [f"{o}\n{_size_label(1 << o, result.page_size)}" for o in orders], fontsize=8
    )
    axes.set_xlabel("order (block size)")
    axes.set_ylabel("free blocks (symlog)")
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
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
    axes.text(0.98, 0.97, "\n".join(lines), transform=axes.transAxes, ha="right", va="top",
              fontsize=8.5, bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85,
                                  "edgecolor": "#bbbbbb"})


def build_figure(results: Sequence[RunResult]) -> Figure:
    """The whole picture as a matplotlib Figure (no pyplot, no global state)."""
    if not results:
        raise HarnessError("no results to draw: the run produced no arch x kernel result")
    figure = Figure(figsize=(13, 0.9 + 4.6 * len(results)), dpi=110, layout="constrained")
    figure.suptitle("Free blocks per order before and after "
                    "echo 1 > /proc/sys/vm/compact_memory", fontsize=14, fontweight="bold")
    rows = figure.subfigures(len(results), 1, squeeze=False)[:, 0]
    for row, result in zip(rows, results, strict=True):
        color = PROVEN_COLOR if result.proven else NOT_PROVEN_COLOR
        row.suptitle(f"{result.label}  —  {result.release}  —  {result.verdict.upper()}",
                     fontsize=12, fontweight="bold", color=color)
        axes_row = row.subplots(1, 2, sharey=True)
        peak = max(max(*side.buddy_before, *side.buddy_after, 1) for side in result.sides)
        top = peak * 12  # a decade of headroom above the bars for the evidence box
        if result.unmovable is None:
            axes_row[0].text(0.5, 0.5, "movable=0 control not run", ha="center",
                             va="center", transform=axes_row[0].transAxes, color="#666666")
            axes_row[0].set_axis_off()
        else:
            _draw_side(axes_row[0], result.unmovable, result, top)
        _draw_side(axes_row[1], result.movable, result, top)
        axes_row[1].tick_params(labelleft=True)  # sharey hides them; each side reads alone
    handles, labels = figure.axes[-1].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=10,
                  frameon=False)
    return figure


def write_chart(results: Sequence[RunResult], path: Path) -> Path:
    """Render the picture to a PNG file and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = build_figure(results)
    FigureCanvasAgg(figure)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        figure.savefig(tmp, format="png")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
