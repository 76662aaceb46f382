"""The kernel's fragmentation indices (debugfs extfrag/) on text recorded from real guests.

``tests/data/procfs/<release>-<arch>/indices.<phase>.txt`` is what
``procfs.FRAG_INDICES_COMMAND`` prints on a guest (see tests/data/procfs/README.md):
``fragmented`` with the sample driver's movable pages loaded and every free
block of 8 pages fragmented (``fill``), ``compacted`` after
``echo 1 > /proc/sys/vm/compact_memory``.
"""

from dataclasses import replace
from pathlib import Path

import pytest

from harness import procfs
from harness.errors import HarnessError
from harness.procfs import FragIndices, ProcfsFormatError, ZoneId, parse_frag_index
from harness.report.chart import build_figure
from tests.unit.test_report import movable, result

DATA = Path(__file__).resolve().parent.parent / "data" / "procfs"
RECORDED = sorted(DATA.glob("*/indices.*.txt"))
PAIRS = sorted({path.parent for path in RECORDED})


def load(path: Path) -> FragIndices:
    indices = procfs.parse_frag_indices(path.read_text())
    assert indices is not None
    return indices


def ids(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def test_recordings_cover_both_arches_an_old_and_a_new_kernel() -> None:
    names = {path.parent.name for path in RECORDED}
    for arch in ("x86_64", "arm64"):
        assert {"5.10", "7.2"} <= {name.rsplit(".", 1)[0] for name in names
                                   if name.endswith(f"-{arch}")}, names


@pytest.mark.parametrize("path", RECORDED, ids=ids)
def test_recorded_indices_parse_and_agree_with_each_other(path: Path) -> None:
    """Both files describe the same zones and orders, and say the same thing: at an
    order with a free block the extfrag index is -1 ("would succeed") and less than
    all free memory is unusable; at one without, all of it is unusable and the
    extfrag index is between 0 (short of memory) and 1 (fragmented)."""
    indices = load(path)
    assert indices.unusable.per_zone.keys() == indices.extfrag.per_zone.keys()
    for zone, unusable in indices.unusable.per_zone.items():
        extfrag = indices.extfrag.zone(zone.zone, zone.node)
        assert len(unusable) == len(extfrag) >= 11
        assert list(unusable) == sorted(unusable) and unusable[0] >= 0 and unusable[-1] <= 1
        for order, (free_share, why) in enumerate(zip(unusable, extfrag, strict=True)):
            if free_share < 1:
                assert why == -1, (zone, order)
            else:
                assert 0 <= why <= 1, (zone, order)


@pytest.mark.parametrize("directory", PAIRS, ids=lambda d: d.name)
def test_recorded_compaction_makes_high_orders_usable(directory: Path) -> None:
    """After fill no order-9 block is free anywhere (all free memory unusable for it,
    for want of contiguity, not of memory); compaction of movable pages makes one."""
    fragmented = load(directory / "indices.fragmented.txt")
    compacted = load(directory / "indices.compacted.txt")
    zone = list(fragmented.unusable.per_zone)[-1]
    assert fragmented.unusable.per_zone[zone][9] == 1.0
    assert fragmented.extfrag.per_zone[zone][9] > 0.5
    assert compacted.unusable.per_zone[zone][9] < 1.0
    assert compacted.extfrag.per_zone[zone][9] == -1.0


def test_values_are_read_exactly() -> None:
    index = parse_frag_index("Node 0, zone    DMA32 -1.000 -1.000  0.956  1.000 \n",
                             procfs.EXTFRAG_INDEX)
    assert index.zone("DMA32") == (-1.0, -1.0, 0.956, 1.0)
    assert index.per_zone == {ZoneId(0, "DMA32"): (-1.0, -1.0, 0.956, 1.0)}


@pytest.mark.parametrize("text,expected", [
    ("", "a 'Node N, zone NAME' line"),
    ("Node 0, zone DMA32 0.000 0.5 1.000\n", "one d.ddd value per order"),
    ("Node 0, zone DMA 0.000 1.000\nNode 0, zone DMA32 0.000\n", "2 orders"),
    ("Node 0, zone DMA 0.000\nNode 0, zone DMA 0.000\n", "only once"),
])
def test_text_that_is_not_an_index_names_the_file_and_line(text: str, expected: str) -> None:
    with pytest.raises(ProcfsFormatError, match=expected) as caught:
        parse_frag_index(text, procfs.UNUSABLE_INDEX)
    assert "/sys/kernel/debug/extfrag/unusable_index line" in str(caught.value)


def test_a_kernel_without_the_indices_gives_none_and_a_partial_output_an_error() -> None:
    assert procfs.parse_frag_indices("") is None
    with pytest.raises(HarnessError, match="expected unusable_index and extfrag_index"):
        procfs.parse_frag_indices(f"==> {procfs.UNUSABLE_INDEX} <==\nNode 0, zone DMA 0.000\n")


def test_an_unknown_zone_is_an_error_naming_the_zones() -> None:
    with pytest.raises(HarnessError, match="zones: node0/DMA32"):
        parse_frag_index("Node 0, zone DMA32 0.000\n").zone("Normal")


@pytest.mark.parametrize("path", RECORDED[:1], ids=ids)
def test_a_sides_indices_survive_its_json_and_old_evidence_has_none(path: Path) -> None:
    indices = load(path)
    side = movable()
    assert side.indices_before is None  # evidence saved before the indices were recorded
    data = side.to_dict()
    assert data["fragmentation_indices"] == {"before": None, "after": None}
    del data["fragmentation_indices"]
    assert type(side).from_dict(data) == side
    with_indices = replace(side, indices_before=indices, indices_after=indices)
    again = type(side).from_dict(with_indices.to_dict())
    assert again.indices_before == indices and again.indices_after == indices


@pytest.mark.parametrize("path", RECORDED[:1], ids=ids)
def test_the_picture_draws_the_indices_beside_the_buddy_counts(path: Path) -> None:
    indices = load(path)
    zone = list(indices.unusable.per_zone)[-1]
    sides = {name: replace(getattr(result(), name), indices_before=indices,
                           indices_after=indices) for name in ("movable", "unmovable")}
    figure = build_figure([result(**sides)])
    twins = [axes for axes in figure.axes if axes.get_ylabel().startswith("unusable index")]
    assert len(twins) == 2 and twins[0].get_ylabel() == f"unusable index ({zone.zone})"
    texts = [text.get_text() for axes in figure.axes for text in axes.texts]
    value = indices.unusable.per_zone[zone][4]
    assert any(f"{zone.zone} order 4: unusable index {value:.3f} → {value:.3f}" in text
               for text in texts), texts
    without = build_figure([result()])
    assert not [axes for axes in without.axes if axes.get_ylabel().startswith("unusable")]
