"""virtio-balloon with balloon compaction is the other in-tree user of the movable
page API: balloon pages migrate under compaction, and the guest works after the
balloon deflates.

Written with the plugin's public fixtures, like a user's own test: the cell's
kernel carries the in-tree scenarios' fragments (the plugin adds them); the
guest gets a virtio-balloon device (``virtio_devices``), which only a QEMU
target has: the balloon is driven through QEMU's monitor.
"""

import pytest

from harness.check import balloon
from harness.check.scenario import require, run_on
from harness.errors import HarnessError
from harness.report.in_tree import InTreeResult


def test_balloon_pages_migrate_and_guest_survives_deflate(kernel_build, guest_with,  # type: ignore[no-untyped-def]
                                                          harness_results: list) -> None:
    """Inflate into interleaved holes, compact: balloon pages move; deflate, memory usable."""
    kernel = kernel_build
    require(balloon.BalloonScenario(), kernel)  # before booting
    guest = guest_with(virtio_devices=balloon.BalloonScenario.needs.virtio_devices)
    result = run_on(balloon.BalloonScenario(), guest, kernel)
    assert isinstance(result, InTreeResult)
    harness_results.append(result)
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
