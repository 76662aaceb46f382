"""What the in-tree scenarios share: the config check before booting, finding their
pages in /proc/kpageflags, the report record, and how ``harness run`` selects them."""

import struct
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from harness.check import balloon, zram
from harness.check.cli import SCENARIO_CHOICES, selected_scenarios
from harness.check.in_tree import (
    BALLOON_PAGE,
    KPF_BUDDY,
    KPF_LRU,
    KPF_PRIVATE,
    KPF_SLAB,
    ZSPAGE_FIRST_PAGE,
    missing_config,
    pfn_moves,
    pfn_span,
    pfns_of,
    require_config,
)
from harness.check.runner import SCENARIOS, cell_fragments
from harness.check.scenario import require
from harness.errors import HarnessError
from harness.procfs import parse_zoneinfo
from harness.report.chart import build_figure, write_chart
from harness.report.in_tree import InTreeResult, TrackedPages
from harness.report.json_report import read_results, run_document, write_json
from harness.report.table import print_tables
from tests.unit.kernels import kernel_with_config

DATA = Path(__file__).resolve().parent.parent / "data"
CONFIGS = DATA / "in_tree"


def recorded_configs(kind: str) -> list[Path]:
    return sorted(CONFIGS.glob(f"config.*.{kind}.txt"))


def test_recordings_exist_for_default_and_in_tree_kernels() -> None:
    assert recorded_configs("base") and recorded_configs("in-tree")


@pytest.mark.parametrize("path", recorded_configs("base"), ids=lambda p: p.name)
@pytest.mark.parametrize("scenario", [zram, balloon], ids=["zram", "balloon"])
def test_a_default_kernel_is_refused_by_name(path: Path, scenario, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Recorded .config lines of kernels built without the fragments: the error names
    the missing options, the file, and the --config that adds them."""
    kernel = kernel_with_config(tmp_path, path.read_text())
    with pytest.raises(HarnessError) as raised:
        require_config(kernel, scenario.SCENARIO, scenario.CONFIG_NEEDS)
    message = str(raised.value)
    first = next(need for need in scenario.CONFIG_NEEDS if need.fragment == scenario.SCENARIO)
    assert f"CONFIG_{first.symbol}" in message
    assert str(kernel.config) in message
    assert message.endswith(f"build the kernel with --config {scenario.SCENARIO}")
    assert "\n" not in message


@pytest.mark.parametrize("path", recorded_configs("in-tree"), ids=lambda p: p.name)
def test_a_kernel_built_with_the_fragments_passes(path: Path, tmp_path: Path) -> None:
    """A recorded .config of a kernel built with the fragments builds in every option
    both scenarios need (under one of its names), so ``require`` lets it through."""
    text = path.read_text()
    kernel = kernel_with_config(tmp_path, text)
    for scenario in (zram.ZramScenario(), balloon.BalloonScenario()):
        assert missing_config(text, scenario.needs.config) == []
        require(scenario, kernel)  # a HarnessError if it found an option missing


def test_a_module_is_not_enough_and_one_option_is_named_alone() -> None:
    text = "\n".join(f"CONFIG_{need.symbol}=y" for need in zram.CONFIG_NEEDS)
    missing = missing_config(text.replace("CONFIG_ZRAM=y", "CONFIG_ZRAM=m"), zram.CONFIG_NEEDS)
    assert [need.symbol for need in missing] == ["ZRAM"]


def test_an_unreadable_config_says_rebuild(tmp_path: Path) -> None:
    kernel = kernel_with_config(tmp_path, "")
    kernel.config.unlink()
    with pytest.raises(HarnessError, match="rebuild the kernel"):
        require(zram.ZramScenario(), kernel)


def test_compaction_options_point_at_the_compaction_fragment(tmp_path: Path) -> None:
    text = "\n".join(f"CONFIG_{need.symbol}=y" for need in zram.CONFIG_NEEDS
                     if need.symbol != "VM_EVENT_COUNTERS")
    with pytest.raises(HarnessError, match=r"CONFIG_VM_EVENT_COUNTERS is not set .*"
                                           r"--config compaction$"):
        require(zram.ZramScenario(), kernel_with_config(tmp_path, text))


def words(*flags: int) -> bytes:
    return struct.pack(f"<{len(flags)}Q", *flags)


def bit(*bits: int) -> int:
    return sum(1 << b for b in bits)


def test_zspage_first_pages_are_private_and_nothing_else() -> None:
    data = words(
        bit(KPF_PRIVATE),  # zspage first page (4.8 also PRIVATE_2 on its last page)
        bit(KPF_PRIVATE, 36),  # one-page zspage in 4.8: first and last
        bit(KPF_PRIVATE, KPF_LRU),  # page cache page with buffer heads
        bit(KPF_PRIVATE, KPF_SLAB),  # SLOB page with free space (PG_slob_free)
        bit(KPF_BUDDY),
        0,  # a zspage's middle page: no marker at all
    )
    assert pfns_of(ZSPAGE_FIRST_PAGE, data, first_pfn=0x40000) == {0x40000, 0x40001}


def test_balloon_pages_are_bit_23_in_every_era() -> None:
    data = words(bit(23), bit(23, KPF_PRIVATE), bit(KPF_LRU), bit(23, KPF_BUDDY))
    assert pfns_of(BALLOON_PAGE, data, first_pfn=1) == {1, 2}


def test_a_cut_short_read_is_refused() -> None:
    with pytest.raises(HarnessError, match="not whole 8-byte words"):
        pfns_of(BALLOON_PAGE, b"\0" * 12, 0)


def test_pfn_span_of_a_recorded_4_8_guest() -> None:
    zoneinfo = parse_zoneinfo((DATA / "procfs" / "4.8.15-x86_64" / "zoneinfo.boot.txt")
                              .read_text())
    assert pfn_span(zoneinfo) == (1, 65503)


def test_moved_pages_are_the_vacated_pfns() -> None:
    moves = pfn_moves(BALLOON_PAGE, frozenset({1, 2, 3, 4}), frozenset({3, 4, 90, 91}))
    assert (moves.before, moves.after, moves.moved, moves.arrived) == (4, 4, 2, 2)
    assert moves.moved_share == 0.5


def in_tree_result(**changes: object) -> InTreeResult:
    base = InTreeResult(
        scenario="zram", arch="arm64", kernel="debian:6.1", release="6.1.0-99-arm64",
        page_size=4096, proven=True, reasons=("700 of 1200 zspages moved",),
        tracked=TrackedPages("zsmalloc zspage first pages", 1200, 1200, 700, 700),
        pgmigrate_success_delta=2900,
        buddy_before=(3000, 900, 300, 40, 5, 1, 0, 0, 0, 0, 0),
        buddy_after=(400, 200, 120, 80, 60, 40, 22, 12, 7, 3, 1),
        data_checked=48, data_mismatches=0, data_unit="1 MiB zram chunk",
        figures={"zspages": 1200, "zram_compact_pages_compacted": 12},
        vmstat_delta={"pgmigrate_success": 2900, "compact_isolated": 3100},
        seconds={"fill": 20.5, "compact_memory": 1.2}, notes=("lzo",),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_free_memory_counts_pages_in_large_blocks() -> None:
    """Compaction merges blocks: fewer of them, more memory in them."""
    assert in_tree_result().free_pages_at_least(9) == (0, 3 * 512 + 1 * 1024)
    assert in_tree_result().free_pages_at_least(0)[0] == sum(
        count << order for order, count in enumerate(in_tree_result().buddy_before))


def test_json_round_trip_and_old_files(tmp_path: Path) -> None:
    results = [in_tree_result(), in_tree_result(scenario="balloon", proven=False)]
    path = write_json(results, tmp_path / "result.json")
    assert read_results(path, InTreeResult) == results
    assert read_results(path) == []
    document = run_document(results)
    assert document["proven"] is False and document["results"] == []
    item = document["in_tree"][0]
    assert (item["migrated_pages"], item["total_pages"], item["verdict"]) == (700, 1200,
                                                                             "proven")
    assert results[0].to_dict()["data"] == {"unit": "1 MiB zram chunk", "checked": 48,
                                                   "mismatches": 0}


def test_picture_has_a_row_per_in_tree_result_alone_or_after_the_sample(tmp_path: Path) -> None:
    figure = build_figure([in_tree_result(), in_tree_result(scenario="balloon")])
    assert len(figure.subfigs) == 2
    path = write_chart([in_tree_result()], tmp_path / "pic.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_shows_moved_pages_figures_and_verdict() -> None:
    console = Console(width=140, record=True)
    print_tables([in_tree_result()], console=console)
    text = console.export_text()
    assert "700 / 1200 (58%)" in text and "zram_compact_pages_compacted" in text
    assert "PROVEN" in text and "48 × 1 MiB zram chunk, 0 mismatches" in text
    assert "free MiB in blocks ≥ order 9" in text and "0 → 10 (+10)" in text


def test_scenario_choices_match_the_runner() -> None:
    assert (*SCENARIOS, "all") == SCENARIO_CHOICES
    assert selected_scenarios(None) == ("sample",)
    assert selected_scenarios(["balloon", "zram", "balloon"]) == ("balloon", "zram")
    assert selected_scenarios(["zram", "all"]) == tuple(SCENARIOS)


def test_one_kernel_serves_every_in_tree_scenario() -> None:
    assert cell_fragments() == ("zram", "balloon")
    assert cell_fragments(["debug", "zram", "debug"]) == ("zram", "balloon", "debug")


def test_a_need_is_met_under_the_name_another_era_gives_it() -> None:
    """7.0 renamed BALLOON_COMPACTION to BALLOON_MIGRATION; either satisfies the balloon."""
    need = next(need for need in balloon.CONFIG_NEEDS if need.symbol == "BALLOON_COMPACTION")
    assert not missing_config("CONFIG_BALLOON_MIGRATION=y\n", [need])
    assert missing_config("# CONFIG_BALLOON_MIGRATION is not set\n", [need]) == [need]
    assert need.describe() == "CONFIG_BALLOON_COMPACTION (or CONFIG_BALLOON_MIGRATION)"
