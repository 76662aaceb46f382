"""Reports of a migration run: the JSON result file, the PNG picture, the terminal table.

All three render the same typed records (``harness.report.model``), which the
check fills from its evidence; pytest's own --junitxml covers JUnit.
"""

from harness.report.chart import build_figure, write_chart
from harness.report.json_report import (
    SCHEMA,
    SCHEMA_VERSION,
    read_results,
    result_to_dict,
    run_document,
    write_json,
)
from harness.report.model import NOT_PROVEN, PROVEN, HighOrder, RunResult, Side
from harness.report.table import build_table, print_tables, render_tables

__all__ = [
    "NOT_PROVEN",
    "PROVEN",
    "SCHEMA",
    "SCHEMA_VERSION",
    "HighOrder",
    "RunResult",
    "Side",
    "build_figure",
    "build_table",
    "print_tables",
    "read_results",
    "render_tables",
    "result_to_dict",
    "run_document",
    "write_chart",
    "write_json",
]
