"""virtio-balloon with balloon compaction is the other in-tree user of the movable
page API: balloon pages migrate under compaction, and the guest works after the
balloon deflates.

Written with the plugin's public fixtures, like a user's own test: the cell's
kernel carries the in-tree scenarios' fragments (the plugin adds them); the
scenario's needs give the guest a virtio-balloon device, which only a QEMU target
has, and the balloon control QEMU's guest offers (QMP) drives it.
"""

import pytest

from harness.check import balloon
from harness.check.scenario import require
from harness.errors import HarnessError
from harness.report.in_tree import InTreeResult


def test_balloon_pages_migrate_and_guest_survives_deflate(run_scenario) -> None:  # type: ignore[no-untyped-def]
    """Inflate into interleaved holes, compact: balloon pages move; deflate, memory usable."""
    result = run_scenario(balloon.BalloonScenario())  # on a guest with the balloon device
    assert isinstance(result, InTreeResult)
    print(f"{result.label}: {result.reasons[0]}; seconds {dict(result.seconds)}")
    assert result.proven, "; ".join(result.reasons)  # a kernel report: its headline first
    assert result.tracked is not None and result.tracked.moved > 0
    assert result.figures["balloon_migrate"] >= result.tracked.moved
    assert result.data_mismatches == 0


def test_balloon_scenario_refuses_a_kernel_built_without_balloon(  # type: ignore[no-untyped-def]
        kernel_without, kernel_build) -> None:
    """A kernel whose .config lacks balloon migration (CONFIG_BALLOON_COMPACTION, from
    7.0 CONFIG_BALLOON_MIGRATION) is refused before any VM boots, by name."""
    need = next(need for need in balloon.CONFIG_NEEDS if need.symbol == "BALLOON_COMPACTION")
    config = kernel_build.config.read_text()
    present = next(name for name in (need.symbol, *need.renamed) if f"CONFIG_{name}=y" in config)
    with pytest.raises(HarnessError, match=r"CONFIG_BALLOON_COMPACTION .*not set in "
                                           r"\S+/\.config: the balloon scenario needs "
                                           r".*--config balloon$"):
        require(balloon.BalloonScenario(), kernel_without(present))
