"""The picture: free blocks per order before and after compaction, one row per result.

Every result describes its own row (``ScenarioResult.panels()``, as data:
harness.report.view): the sample A/B's two sides next to each other on the
same y scale, so the claim is visible at a glance (with movable driver pages,
compaction turns many small free blocks into fewer large ones; without them,
the histogram barely moves); an in-tree scenario's free blocks and the pages
of the kernel's own user it found and saw move. This module only draws them.
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
from harness.report.model import KernelReport, ScenarioResult, size_label
from harness.report.view import BarsPanel, BuddyPanel, UnusableIndex

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


def _draw_buddy(axes: Axes, panel: BuddyPanel, result: ScenarioResult, top: float) -> None:
    """Free blocks per order, before and after (when measured), as paired bars on a
    symlog axis, with the panel's evidence in a box."""
    orders = range(len(panel.before))
    width = 0.4
    axes.bar([o - width / 2 for o in orders], panel.before, width,
             color=BEFORE_COLOR, label="before compaction")
    if panel.after:
        axes.bar([o + width / 2 for o in orders], panel.after, width,
                 color=AFTER_COLOR, label="after compaction")
    # Counts span decades (thousands of order-0 blocks, a handful of order-10):
    # symlog keeps zeros visible, which plain log would drop.
    axes.set_yscale("symlog", linthresh=1, linscale=0.4)
    axes.set_ylim(0, top)
    axes.yaxis.set_major_formatter(FuncFormatter(_count_label))
    axes.set_xticks(list(orders))
    axes.set_xticklabels(
        [f"{o}\n{size_label(result.block_bytes(1 << o))}" for o in orders], fontsize=7
    )
    axes.set_xlabel("order (block size)")
    axes.set_ylabel("free blocks (symlog)")
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.set_title(panel.title, fontsize=10)
    if panel.box:
        axes.text(0.98, 0.97, "\n".join(panel.box), transform=axes.transAxes, ha="right",
                  va="top", fontsize=8.5, bbox={"boxstyle": "round", "facecolor": "white",
                                                "alpha": 0.85, "edgecolor": "#bbbbbb"})
    if panel.unusable is not None:
        _draw_unusable(axes, panel.unusable)


def _draw_unusable(axes: Axes, index: UnusableIndex) -> None:
    """The unusable index per order before (dashed) and after, on a right-hand 0..1
    axis over the bars: where the free memory is, the bars say; how much of it an
    allocation of each order can use, the lines."""
    right = axes.twinx()
    for values, style, when in ((index.before, "--", "before"), (index.after, "-", "after")):
        right.plot(range(len(values)), values, style, color=INDEX_COLOR, marker=".",
                   linewidth=1.2, label=f"unusable index {when}")
    right.set_ylim(0, 1.6)  # the lines stay under the evidence box
    right.set_yticks([0, 0.5, 1])
    right.set_ylabel(f"unusable index ({index.zone})", color=INDEX_COLOR, fontsize=8)
    right.tick_params(axis="y", colors=INDEX_COLOR, labelsize=8)
    right.legend(loc="center right", fontsize=7, frameon=False)


def _draw_bars(axes: Axes, panel: BarsPanel) -> None:
    """Counts as horizontal bars, the first on top, each with its number."""
    names = [name for name, _ in panel.bars][::-1]
    values = [value for _, value in panel.bars][::-1]
    axes.barh(names, values, color=AFTER_COLOR)
    for y, value in enumerate(values):
        axes.annotate(f" {value:,}", (value, y), va="center", fontsize=9)
    axes.set_xlabel(panel.unit)
    axes.set_xlim(0, max(values, default=1) * 1.25 or 1)
    axes.tick_params(axis="y", labelsize=9)
    axes.set_title(panel.title, fontsize=10)


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


def _draw_row(row: SubFigure, result: ScenarioResult) -> None:
    """One result's panels side by side; its histograms share one y scale."""
    color = PROVEN_COLOR if result.proven else NOT_PROVEN_COLOR
    row.suptitle(_title(result), fontsize=12, fontweight="bold", color=color)
    panels = result.panels()
    axes_row = row.subplots(1, len(panels), width_ratios=[panel.width for panel in panels],
                            squeeze=False)[0]
    peak = max((max(*panel.before, *panel.after, 1) for panel in panels
                if isinstance(panel, BuddyPanel)), default=1)
    top = peak * 12  # a decade of headroom above the bars for the evidence box
    report = result.kernel_report
    for axes, panel in zip(axes_row, panels, strict=True):
        if isinstance(panel, BuddyPanel):
            _draw_buddy(axes, panel, result, top)
        elif isinstance(panel, BarsPanel):
            _draw_bars(axes, panel)
        else:
            _draw_not_measured(axes, panel.what, report)
            report = None  # the excerpt once, in the first panel it stopped


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
        _draw_row(row, result)
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
