"""The three views of a run (JSON, PNG, terminal table) rendered from the same records."""

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from harness.errors import HarnessError
from harness.report.chart import build_figure, write_chart
from harness.report.json_report import SCHEMA_VERSION, read_results, write_json
from harness.report.model import HighOrder, RunResult, ScenarioResult, Side
from harness.report.table import print_tables
from harness.report.view import BarsPanel, BuddyPanel, NotMeasured, Panel, TableView

BEFORE = (4031, 812, 160, 40, 12, 6, 3, 2, 1, 1, 20)


def control() -> Side:
    return Side(
        movable=False, buddy_before=BEFORE,
        buddy_after=(4020, 815, 161, 41, 12, 6, 3, 2, 1, 1, 20),
        migrated_pages=0, total_pages=4096, pgmigrate_success_delta=3, verify_mismatches=0,
        high_order=HighOrder(order=4, attempts=16, before=2, after=2),
        vmstat_delta={"compact_isolated": 10, "pgmigrate_success": 3},
        driver_counters={"isolated": 0, "migrated": 0}, verify_checked=4096,
    )


def movable() -> Side:
    return Side(
        movable=True, buddy_before=BEFORE,
        buddy_after=(430, 210, 120, 80, 60, 40, 22, 12, 7, 3, 21),
        migrated_pages=1812, total_pages=4096, pgmigrate_success_delta=1815,
        verify_mismatches=0, high_order=HighOrder(order=4, attempts=16, before=2, after=16),
        vmstat_delta={"compact_isolated": 3700, "pgmigrate_success": 1815},
        driver_counters={"isolated": 1900, "migrated": 1850}, verify_checked=4096,
    )


def result(**changes: object) -> RunResult:
    base = RunResult(
        arch="x86_64", kernel="debian:6.1", release="6.1.0-99-amd64", proven=True,
        reasons=(), movable=movable(), unmovable=control(),
        notes=("compaction_proactiveness set to 0",),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# ----------------------------------------------------------------------------- JSON

def test_json_file_has_schema_and_required_keys(tmp_path: Path) -> None:
    path = write_json([result(), result(arch="arm64", proven=False,
                                        reasons=("no driver page changed PFN",))],
                      tmp_path / "run" / "result.json")
    document = json.loads(path.read_text())
    assert document["schema_version"] == SCHEMA_VERSION
    assert document["proven"] is False  # one of the two is not proven
    first = document["results"][0]
    for key in ("arch", "kernel", "release", "migrated_pages", "total_pages",
                "pgmigrate_success_delta", "verify_mismatches", "high_order_success",
                "verdict"):
        assert key in first
    assert first["migrated_pages"] == 1812 and first["total_pages"] == 4096
    assert first["verdict"] == "proven"
    assert first["high_order_success"]["movable=0"]["after"] == 2
    assert first["high_order_success"]["movable=1"]["after"] == 16
    side = first["sides"]["movable=1"]
    assert side["buddyinfo_before"] == list(BEFORE)
    assert side["buddyinfo_after"][0] == 430
    assert side["vmstat_delta"]["compact_isolated"] == 3700
    assert document["results"][1]["verdict"] == "not proven"
    assert document["results"][1]["reasons"] == ["no driver page changed PFN"]
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no temp file left


def test_json_round_trips(tmp_path: Path) -> None:
    results = [result(), result(unmovable=None, arch="arm64")]
    assert read_results(write_json(results, tmp_path / "r.json")) == results


def test_result_object_is_plain_json() -> None:
    assert json.loads(json.dumps(result().to_dict()))["arch"] == "x86_64"


@pytest.mark.parametrize("text,needle", [
    ("not json", "cannot read"),
    ('{"schema": "other", "schema_version": 1}', "is not a harness.result v1"),
    ('{"schema": "harness.result", "schema_version": 1, "results": [{"arch": "x"}]}',
     "malformed result"),
])
def test_bad_result_files_are_one_line_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(HarnessError, match=needle) as error:
        read_results(path)
    assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------- model

def test_side_rejects_inconsistent_numbers() -> None:
    with pytest.raises(ValueError, match="same"):
        replace(movable(), buddy_after=(1, 2, 3))
    with pytest.raises(ValueError, match="migrated_pages"):
        replace(movable(), migrated_pages=5000)
    with pytest.raises(ValueError, match="successes"):
        HighOrder(order=4, attempts=16, before=0, after=17)
    with pytest.raises(ValueError, match="movable=1"):
        result(movable=control())


def test_high_order_defaults_above_costly_order_without_probe() -> None:
    plain = result(movable=replace(movable(), high_order=None),
                   unmovable=replace(control(), high_order=None))
    assert plain.high_order == 4
    assert result().high_order == 4
    assert movable().blocks_at_least(4) == (sum(BEFORE[4:]), 165)


# ----------------------------------------------------------------------------- picture

def test_chart_is_a_png_with_one_row_per_arch_and_kernel(tmp_path: Path) -> None:
    one = png_size(write_chart([result()], tmp_path / "one.png"))
    two = png_size(write_chart([result(), result(arch="arm64")], tmp_path / "two.png"))
    assert one[0] == two[0] >= 1200  # wide enough to read both sides
    assert two[1] > one[1] * 1.6
    assert (tmp_path / "two.png").stat().st_size > 20_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "two.png"]


def test_chart_shows_release_verdict_and_evidence() -> None:
    figure = build_figure([result(), result(arch="arm64", proven=False, unmovable=None)])
    texts = [text.get_text() for text in figure.findobj(
        lambda artist: hasattr(artist, "get_text"))]
    joined = "\n".join(texts)
    assert "x86_64 · debian:6.1  —  6.1.0-99-amd64  —  PROVEN" in joined
    assert "arm64 · debian:6.1  —  6.1.0-99-amd64  —  NOT PROVEN" in joined
    assert "migrated 1812 of 4096 pages (44%)" in joined
    assert "free blocks ≥ order 4: 45 → 165" in joined
    assert "order-4 allocations ok: 2/16 → 16/16" in joined
    assert "movable=0 control not run" in joined
    axes = figure.axes[0]
    assert axes.get_yscale() == "symlog"
    assert axes.get_xlabel() == "order (block size)"


def test_chart_needs_results(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="no results"):
        write_chart([], tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- table

def rendered(results: Sequence[ScenarioResult]) -> str:
    console = Console(record=True, width=100, color_system=None)
    print_tables(results, console)
    return console.export_text()


def test_table_has_both_sides_the_difference_and_the_verdict() -> None:
    text = rendered([result()])
    assert "x86_64 · debian:6.1  (6.1.0-99-amd64)" in text
    assert "movable=0" in text and "movable=1" in text and "1 − 0" in text
    lines = text.splitlines()

    def row(name: str) -> str:
        return next(line for line in lines if name in line)

    assert "0 / 4096 (0%)" in row("migrated pages") and "1812 / 4096 (44%)" in row(
        "migrated pages")
    assert "+1812" in row("migrated pages")
    assert "1850" in row("driver migratepage ok")
    assert "+3690" in row("compact_isolated")
    assert "4031 → 430 (-3601)" in row("free order-0 blocks")
    assert "45 → 165 (+120)" in row("free blocks ≥ order 4")
    assert "2/16 → 16/16" in row("order-4 allocations ok") and "+14" in row(
        "order-4 allocations ok")
    assert "verdict: PROVEN" in text
    assert "note: compaction_proactiveness set to 0" in text


def test_table_without_control_and_with_failures() -> None:
    text = rendered([result(proven=False, unmovable=None,
                            reasons=("movable=1: no driver page changed PFN",))])
    assert "1 − 0" not in text and "movable=0" not in text
    assert "verdict: NOT PROVEN" in text
    assert "movable=1: no driver page changed PFN" in text


# ----------------------------------------------------------------------------- any result

@dataclass(frozen=True, kw_only=True)
class CountedResult(ScenarioResult):
    """A scenario's result the renderers have never heard of (as a new scenario's
    would be): it brings its own rows, panels and JSON object."""

    json_key = "counted"
    moved: int
    buddy: tuple[int, ...] = ()

    def table(self) -> TableView:
        return TableView(columns=("value",), rows=(("pages moved", str(self.moved)),))

    def panels(self) -> tuple[Panel, ...]:
        buddy: Panel = (BuddyPanel("free blocks", self.buddy, self.buddy, ("box line",))
                        if self.buddy else NotMeasured("free blocks"))
        return buddy, BarsPanel("counted", (("moved", self.moved),))

    def to_dict(self) -> dict[str, Any]:
        return {**self.common_dict(), "moved": self.moved, "buddy": list(self.buddy)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CountedResult":
        return cls(**cls.common_fields(data), moved=data["moved"], buddy=tuple(data["buddy"]))


def counted(**changes: object) -> CountedResult:
    base = CountedResult(arch="arm64", kernel="debian:7.2", release="7.2.13", proven=True,
                         reasons=("42 pages moved",), moved=42, buddy=(9, 3, 1))
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_new_result_type_is_rendered_by_the_same_table_picture_and_json(
        tmp_path: Path) -> None:
    results = [result(), counted(), counted(proven=False, buddy=())]
    text = rendered(results)
    assert "arm64 · debian:7.2" in text and "(7.2.13)" in text
    assert next(line for line in text.splitlines() if "pages moved" in line).split()[-2] == "42"
    assert text.count("verdict: PROVEN") == 2 and "verdict: NOT PROVEN" in text
    figure = build_figure(results)
    assert len(figure.subfigs) == 3
    joined = "\n".join(text.get_text() for text in figure.findobj(
        lambda artist: hasattr(artist, "get_text")))
    assert "box line" in joined and "free blocks not run" in joined and " 42" in joined
    path = write_json(results, tmp_path / "result.json")
    document = json.loads(path.read_text())
    assert [len(document[key]) for key in ("results", "in_tree", "counted")] == [1, 0, 2]
    assert read_results(path, CountedResult) == results[1:]
    assert read_results(path) == results[:1]
