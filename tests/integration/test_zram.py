"""zsmalloc, behind zram, is the kernel's own user of the movable page API that
motivated it: its pages migrate under compaction and zram's data stays intact.

Written with the plugin's public fixtures, like a user's own test: the cell's
kernel carries the in-tree scenarios' fragments (the plugin adds them), one VM
for the module; ``run_scenario`` saves the evidence in the session's run directory.
"""

import pytest

from harness.check.scenario import require
from harness.check.zram import ZramScenario
from harness.errors import HarnessError
from harness.report.in_tree import InTreeResult


def test_zsmalloc_pages_migrate_and_data_survives(run_scenario) -> None:  # type: ignore[no-untyped-def]
    """Fill zram, discard every other chunk, compact: zspages move, every chunk reads back."""
    result = run_scenario(ZramScenario())  # the .config is checked before the VM boots
    assert isinstance(result, InTreeResult)
    print(f"{result.label}: {result.reasons[0]}; seconds {dict(result.seconds)}")
    assert result.proven, "; ".join(result.reasons)  # a kernel report: its headline first
    assert result.tracked is not None and result.tracked.moved > 0
    assert result.data_checked and result.data_mismatches == 0


def test_zram_scenario_refuses_a_kernel_built_without_zram(kernel_without) -> None:  # type: ignore[no-untyped-def]
    """A kernel whose .config lacks CONFIG_ZRAM is refused before any VM boots, by name."""
    with pytest.raises(HarnessError, match=r"CONFIG_ZRAM .*not set in \S+/\.config: "
                                           r"the zram scenario needs .*--config zram$"):
        require(ZramScenario(), kernel_without("ZRAM"))
