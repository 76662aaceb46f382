"""Nothing assumes 4 KiB pages: the page size comes from the guest and every figure
is counted in it.

The 16 KiB texts were recorded from a debian:7.2 arm64 guest built with
``--config arm64-16k`` (tests/data/procfs/README.md); the A/B runs on a scripted
guest that answers with them, so a computation that assumed 4 KiB pages would
give the driver four times too many pages, probe order 9 (what 4 KiB pages
call a huge page) instead of 10 (the guest's pageblock: 7.2 caps it at order 10,
PAGE_BLOCK_MAX_ORDER, one below a 32 MiB huge page), and label 16 MiB blocks as
4 MiB.
"""

import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from harness import cli, procfs
from harness.check.driver import SampleDriver
from harness.check.runner import check_ab_on, scenario_named
from harness.check.sample import ScenarioSettings
from harness.check.scenario import load_evidence, verdict
from harness.errors import HarnessError
from harness.procfs import ProcfsFormatError, parse_page_size
from harness.report.chart import build_figure
from harness.report.in_tree import InTreeResult
from harness.report.json_report import read_results, write_json
from harness.report.model import RunResult, huge_page_order, size_label
from harness.report.table import print_tables
from tests.unit.fake_guests import AUXV, SampleKernel, watched
from tests.unit.kernels import kernel_with_config

DATA = Path(__file__).resolve().parent.parent / "data" / "procfs"
ARM64_16K = DATA / "7.2.13-arm64-16k"
AUXV_16K = (ARM64_16K / "auxv.boot.txt").read_text()


def test_the_page_size_is_the_guests_at_pagesz() -> None:
    assert parse_page_size(AUXV) == 4096  # x86_64 5.10.223, recorded
    assert parse_page_size(AUXV_16K) == 16384  # arm64 7.2.13 with CONFIG_ARM64_16K_PAGES
    # only the order of the words matters, not how od wraps them into lines
    assert parse_page_size("   33  140632639311872   51   3376\n    6  65536    0   0\n") == 65536


@pytest.mark.parametrize("text,complaint", [
    ("", "AT_PAGESZ"),
    ("    33  140632639311872\n     0        0\n", r"AT_PAGESZ .*found None"),
    ("     6     4000\n", r"power of two >= 4096 \(found 4000\)"),
    ("od: /proc/self/auxv: No such file or directory\n", "unsigned 64-bit words"),
])
def test_a_page_size_that_is_not_there_is_an_error(text: str, complaint: str) -> None:
    with pytest.raises(ProcfsFormatError, match=complaint):
        parse_page_size(text)


def test_a_huge_page_and_the_probe_order_follow_the_page_size() -> None:
    """A PMD maps page_size / 8 pages; the probe never asks for more than a pageblock."""
    assert [huge_page_order(size) for size in (4096, 16384, 65536)] == [9, 11, 13]
    assert [size_label(size << huge_page_order(size)) for size in (4096, 16384, 65536)] == [
        "2 MiB", "32 MiB", "512 MiB"]
    settings = ScenarioSettings()
    assert settings.probe_order_on(4096, 10) == 9  # tinyconfig x86_64 5.10: MAX_ORDER - 1
    assert settings.probe_order_on(16384, 11) == 11
    assert settings.probe_order_on(16384, 10) == 10  # 7.2's PAGE_BLOCK_MAX_ORDER
    assert settings.probe_order_on(65536, 10) == 10  # a 512 MiB huge page: the pageblock
    assert ScenarioSettings(probe_order=4).probe_order_on(16384, 11) == 4
    recorded = procfs.parse_pagetypeinfo((ARM64_16K / "pagetypeinfo.boot.txt").read_text())
    assert recorded.pageblock_order == 10


def ab_on_16k(tmp_path: Path) -> tuple[SampleKernel, RunResult]:
    """The A/B on a scripted guest with 16 KiB pages and 200000 kB free."""
    kernel = kernel_with_config(tmp_path, "CONFIG_MIGRATION=y\n")
    sample = SampleKernel(tmp_path / "console.log", None, procfs=ARM64_16K, auxv=AUXV_16K)
    result = check_ab_on(SampleDriver(watched(sample.guest)), kernel)
    return sample, result


def test_the_ab_counts_the_driver_and_probes_in_the_guests_pages(tmp_path: Path) -> None:
    sample, result = ab_on_16k(tmp_path)
    commands = [command for command, _ in sample.guest.commands]
    # 200000 kB free is 12500 pages of 16 KiB; 90 % of them, one kept in 8
    assert [command.split()[2] for command in commands
            if command.startswith("insmod")] == ["pages=1406"] * 2
    # the probe, with each round's other reads (steps.read_together), before and after
    assert sum(command.count("&& { echo 10 64 > ") for command in commands) == 4
    assert result.page_size == 16384
    assert any("probe: 64 x order 10 (16 MiB; 16 KiB pages, pageblock order 10)" in note
               for note in result.notes)


def test_reports_label_sizes_in_the_guests_pages(tmp_path: Path) -> None:
    _, result = ab_on_16k(tmp_path)
    path = write_json([result], tmp_path / "result.json")
    (read,) = read_results(path)
    assert read.page_size == 16384
    console = Console(width=140, record=True)
    print_tables([read], console=console)
    text = console.export_text()
    assert "order-10 allocations ok" in text and "(4.8.15, 16 KiB pages)" in text
    figure = build_figure([read])
    labels = [tick.get_text() for axes in figure.axes for tick in axes.get_xticklabels()]
    assert "11\n32 MiB" in labels and "0\n16 KiB" in labels and "9\n8 MiB" in labels


SAVED = Path(__file__).resolve().parent.parent / "data" / "evidence"


@pytest.mark.parametrize("cell,sample_pages,migratepage,pgmigrate,probe,zram_pages,balloon", [
    # A/B pages moved / total, migratepage count, pgmigrate_success delta, order-10
    # allocations after compaction (movable=0, movable=1), zspages moved / found,
    # balloon pages moved / found and the MiB they were
    ("7.2.13-arm64-16k", (1112, 1394), 1112, 1127, (1, 4), (31, 286), (1831, 4691, 73)),
    ("5.10.223-arm64-16k", (1301, 1584), 1301, 1318, (0, 9), (105, 329), (2487, 4923, 76)),
    ("5.10.223-arm64-64k", (1355, 1678), 1355, 1365, (0, 9), (28, 101), (2657, 5216, 326)),
])
def test_the_large_page_cells_are_proven_with_their_own_numbers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], cell: str,
        sample_pages: tuple[int, int], migratepage: int, pgmigrate: int,
        probe: tuple[int, int], zram_pages: tuple[int, int],
        balloon: tuple[int, int, int]) -> None:
    """The evidence of ``harness run --arch arm64 --kernel debian:7.2 (debian:5.10)
    --config arm64-16k --scenario all`` and of ``... --kernel debian:5.10 --config
    arm64-64k --memory 1024`` (2026-12-02, TCG, 2 vCPUs), judged again: every scenario
    PROVEN, every figure counted in the cell's pages (order 10 is the pageblock of
    both: 16 MiB with 16 KiB pages, 64 MiB with 64 KiB)."""
    page_size = 65536 if cell.endswith("-64k") else 16384
    run = tmp_path / "run"
    shutil.copytree(SAVED / cell, run / "evidence")
    assert cli.main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    release = cell.split("-")[0]
    assert out.count(f"({release}, {page_size >> 10} KiB pages)") == 3
    assert out.count("verdict: PROVEN") == 3
    document = json.loads((run / "result.json").read_text())
    (ab,) = document["results"]
    zram, ballooned = document["in_tree"]
    assert {item["page_size"] for item in (ab, zram, ballooned)} == {page_size}
    assert (ab["migrated_pages"], ab["total_pages"]) == sample_pages
    assert ab["sides"]["movable=1"]["driver_counters"]["migrated"] == migratepage
    assert ab["pgmigrate_success_delta"] == pgmigrate
    assert [(high["order"], high["after"]) for high in ab["high_order_success"].values()] == [
        (10, probe[0]), (10, probe[1])]
    assert (zram["migrated_pages"], zram["total_pages"]) == zram_pages
    moved, found, mib = balloon
    assert (ballooned["migrated_pages"], ballooned["total_pages"]) == (moved, found)
    assert ballooned["figures"]["balloon_migrate"] == moved
    assert ballooned["data"]["unit"] == f"{mib} MiB file written after deflating"
    assert found * page_size >> 20 == mib  # the balloon's pages are the cell's


def test_evidence_without_a_page_size_is_not_taken_for_4_kib() -> None:
    """Evidence saved before the page size was recorded (5.10.223 x86_64): the verdict
    stands, but no size is made up: the figures in bytes are unknown."""
    evidence = load_evidence(next((SAVED / "5.10.223-x86_64").glob("*-zram.json")))
    assert evidence.page_size is None
    result = verdict(scenario_named("zram"), evidence)
    assert isinstance(result, InTreeResult) and result.proven
    assert result.running == "5.10.223" and result.block_bytes(512) is None
    assert result.free_mib_at_least(result.huge_order) == (None, None)
    labels = [tick.get_text() for axes in build_figure([result]).axes
              for tick in axes.get_xticklabels()]
    assert "9\n?" in labels
    with pytest.raises(HarnessError, match="has no page size"):
        evidence.guest_page_size()
