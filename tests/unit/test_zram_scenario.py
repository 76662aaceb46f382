"""The zram scenario's parsers and verdict rule, on text recorded from guests."""

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from harness.check.zram import (
    ZramEvidence,
    ZramSettings,
    compare_chunks,
    fine_chunk_sha256,
    fine_page_format,
    judge_zram,
    parse_chunk_sums,
    parse_classes,
    parse_mm_stat,
    zero_chunk_sha256,
)
from harness.guest import GuestError
from harness.report.in_tree import TrackedPages

DATA = Path(__file__).resolve().parent.parent / "data" / "in_tree"


def evidence(**changes: object) -> ZramEvidence:
    base = ZramEvidence(
        tracked=TrackedPages(kind="zsmalloc zspage first pages", before=1200, after=1200,
                             moved=700, arrived=700),
        zspages_before=1200, zspages_after=1200,
        mem_used_before=14_000_000, mem_used_after=14_000_000,
        pgmigrate_success_delta=2900, chunks=48, chunks_checked=48, mismatches=0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_good_evidence_is_proven() -> None:
    verdict = judge_zram(evidence())
    assert verdict.proven, verdict.failures


@pytest.mark.parametrize("changes,needle", [
    ({"tracked": TrackedPages("z", 1200, 1200, 0, 0)}, "no zsmalloc page changed PFN"),
    ({"tracked": TrackedPages("z", 1250, 1250, 700, 700)}, "not all zsmalloc's"),
    ({"zspages_after": 1190}, "compact_memory changed zsmalloc's zspages"),
    ({"mem_used_after": 13_000_000}, "changed zram's mem_used_total"),
    ({"pgmigrate_success_delta": 699}, "pgmigrate_success rose by 699, less than the 700"),
    ({"mismatches": 2}, "2 chunks read back differ"),
])
def test_each_rule_can_fail(changes: dict[str, object], needle: str) -> None:
    verdict = judge_zram(evidence(**changes))
    assert not verdict.proven
    assert any(needle in failure for failure in verdict.failures), verdict.failures


RECORDED_CLASSES = sorted(DATA.glob("zsmalloc-classes.*.txt"))


def test_classes_are_recorded_from_the_oldest_kernel() -> None:
    assert any("4.8.15" in path.name for path in RECORDED_CLASSES)


@pytest.mark.parametrize("path", RECORDED_CLASSES, ids=lambda path: path.stem)
def test_recorded_classes_add_up(path: Path) -> None:
    """zspages = pages_used / pages_per_zspage per class; the Total row is not a class."""
    text = path.read_text()
    classes = parse_classes(text)
    total = next(line.split() for line in text.splitlines() if line.split()[:1] == ["Total"])
    assert classes.objects_allocated == int(total[3])
    assert classes.objects_used == int(total[4])
    assert classes.pages_used == int(total[5])
    assert 0 < classes.zspages <= classes.pages_used


def test_classes_arithmetic_on_a_small_table() -> None:
    text = (" class  size almost_full almost_empty obj_allocated   obj_used pages_used "
            "pages_per_zspage freeable\n"
            "    94  1520           0            1            16         10         6"
            "                3        0\n"
            "   254  4096           0            0             5          5          5"
            "                1        0\n\n"
            " Total                0            1            21         15         11"
            "                         0\n")
    classes = parse_classes(text)
    assert (classes.zspages, classes.pages_used) == (2 + 5, 11)


@pytest.mark.parametrize("text", ["", "class size\n 1 2 3\n", "nonsense header\n"])
def test_malformed_classes_are_refused(text: str) -> None:
    with pytest.raises(GuestError):
        parse_classes(text)


def test_mm_stat_columns_of_each_era() -> None:
    old = parse_mm_stat("50331648 27901386 28327936 0 28327936 0 0\n")  # 4.8: 7 columns
    assert old["mem_used_total"] == 28327936 and old["pages_compacted"] == 0
    assert "huge_pages" not in old
    new = parse_mm_stat("50331648 26738688 27095040 0 27095040 0 12 0 0\n")  # 6.1: 9
    assert (new["pages_compacted"], new["huge_pages_since"]) == (12, 0)


@pytest.mark.parametrize("text", ["", "1 2 3", "a b c d e f g"])
def test_malformed_mm_stat_is_refused(text: str) -> None:
    with pytest.raises(GuestError, match="mm_stat"):
        parse_mm_stat(text)


def test_chunk_sums_must_all_be_there() -> None:
    line = f"{'ab' * 32}  -"
    assert parse_chunk_sums(f"{line}\n{line}\n", 2) == ["ab" * 32] * 2
    with pytest.raises(GuestError, match="hashed 1 chunks, expected 2"):
        parse_chunk_sums(line, 2)
    with pytest.raises(GuestError, match="unexpected line"):
        parse_chunk_sums(f"{line}\nsha256sum: write error\n", 2)


def test_discarded_chunks_must_read_as_zeros() -> None:
    size = 1 << 20
    zero = zero_chunk_sha256(size)
    assert zero == hashlib.sha256(b"\0" * size).hexdigest()
    written = ["a" * 64, "b" * 64, "c" * 64, "d" * 64]
    assert compare_chunks(written, ["a" * 64, zero, "c" * 64, zero], size) == 0
    # a kept chunk changed, and a discarded one still holds its old data
    assert compare_chunks(written, ["x" * 64, "b" * 64, "c" * 64, zero], size) == 2


@pytest.mark.parametrize("page_size", [4096, 16384, 65536])
def test_fine_chunk_is_rebuilt_with_odd_pages_zero(page_size: int) -> None:
    """Each fine-chunk page fills one guest page, whatever its size: zram frees
    (discards) whole pages only."""
    text = "R" * 2040
    pages = [f"{index:08d}{text}{' ' * (page_size - 2048)}".encode() if index % 2 == 0
             else bytes(page_size) for index in range(4)]
    assert len(pages[0]) == page_size
    assert len(fine_page_format(page_size) % (0, text, "")) == page_size
    assert (fine_chunk_sha256(text, 4, page_size)
            == hashlib.sha256(b"".join(pages)).hexdigest())
    with pytest.raises(GuestError, match="2039 characters"):
        fine_chunk_sha256(text[:-1], 4, page_size)


def test_data_size_is_whole_chunk_pairs_and_capped() -> None:
    settings = ZramSettings(data_share=0.4, max_data_mib=96, chunk_mib=1)  # not the defaults
    assert settings.data_mib(free_bytes=55_000 * 4096) == 84  # 0.4 * 214 MiB = 85.9 -> 84
    assert settings.data_mib(free_bytes=10_000_000 * 4096) == 96
    with pytest.raises(GuestError, match="only 3 MiB free.*give the guest more memory"):
        settings.data_mib(free_bytes=1000 * 4096)


# Each rule at its threshold (proven) and one step past it (that rule alone fails):
# a `>` written for `>=` (or the reverse) in zram.py fails one of these.
@pytest.mark.parametrize("at,past,needle", [
    ({"tracked": TrackedPages("z", 1200, 1200, 1, 1)},
     {"tracked": TrackedPages("z", 1200, 1200, 0, 0)}, "no zsmalloc page changed PFN"),
    ({}, {"tracked": TrackedPages("z", 1201, 1201, 700, 700), "zspages_before": 1200,
          "zspages_after": 1200},
     "found 1201/1201 zspage first pages before/after, zsmalloc counts 1200/1200 zspages: "
     "the PFNs are not all zsmalloc's"),
    ({}, {"tracked": TrackedPages("z", 1200, 1199, 700, 699), "zspages_after": 1200},
     "found 1200/1199 zspage first pages before/after, zsmalloc counts 1200/1200 zspages: "
     "the PFNs are not all zsmalloc's"),
    ({}, {"tracked": TrackedPages("z", 1200, 1199, 700, 699), "zspages_after": 1199},
     "compact_memory changed zsmalloc's zspages from 1200 to 1199"),
    ({}, {"mem_used_after": 14_000_001},
     "compact_memory changed zram's mem_used_total from 14000000 to 14000001 bytes"),
    ({"pgmigrate_success_delta": 700}, {"pgmigrate_success_delta": 699},
     "pgmigrate_success rose by 699, less than the 700 zsmalloc pages that moved"),
    ({}, {"mismatches": 1}, "1 chunks read back differ from what was written"),
], ids=["moved", "found-more", "found-fewer-after", "zspages-freed", "mem-used",
        "pgmigrate", "mismatch"])
def test_each_rule_at_its_threshold(at: dict[str, object], past: dict[str, object],
                                    needle: str) -> None:
    assert judge_zram(evidence(**at)).proven
    assert judge_zram(evidence(**past)).failures == (needle,)
