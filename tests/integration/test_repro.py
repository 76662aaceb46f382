"""``harness repro --batch`` on the cell's kernel, as a person would run it.

With the driver's pages unmovable (movable=0) and no free block of the order
left, one GFP_KERNEL order-9 allocation must fail and the allocator must print
its own report (``page allocation failure: order:9, mode:…``, Mem-Info, the free
blocks per order); with movable pages (movable=1) the same allocation must
succeed because compaction moved the driver's pages. Exit status 0 means that
is what happened (harness.repro.outcome); repro.json must say why.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.artifacts import KernelBuild
from harness.pytest_plugin import cell_fragments

pytestmark = pytest.mark.vm


def repro(kernel: KernelBuild, movable: int, tmp_path: Path, config: pytest.Config,
          *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run ``harness repro --batch`` in a process of its own; its output and repro.json."""
    runs = tmp_path / "runs"
    configs = [word for name in cell_fragments(config) for word in ("--config", name)]
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "repro", "--batch", "--arch", kernel.arch,
         "--kernel", kernel.spec, *configs, "--cpus", str(config.getoption("--cpus")),
         "--movable", str(movable), *extra],
        env={**os.environ, "HARNESS_RUNS_DIR": str(runs)},
        capture_output=True, text=True, timeout=900)
    path = runs / "latest" / "repro.json"
    assert path.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    return done, json.loads(path.read_text())


def test_unmovable_pages_make_the_allocator_report_the_failure(
        kernel_build: KernelBuild, tmp_path: Path, pytestconfig: pytest.Config) -> None:
    done, result = repro(kernel_build, 0, tmp_path, pytestconfig)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert result["expected"] and not result["allocation_succeeded"], result["reasons"]
    order = result["order"]
    (report,) = [r for r in result["failure_reports"] if r["order"] == order]
    assert report["complete"] and "GFP_KERNEL" in report["mode"], report
    assert "Mem-Info:" in report["excerpt"]
    assert f"page allocation failure: order:{order}, mode:" in done.stdout
    assert result["free_blocks_at_least_order"] == {"before": 0, "after": 0}
    assert result["driver_counters"].get("migrated", 0) == 0
    # The kernel's own diagnosis: the free memory is there, but fragmented.
    extfrag = result["indices"]["after"]["extfrag_index"]
    assert max(values[order] for values in extfrag.values()) > 0.5, extfrag


def test_movable_pages_let_compaction_make_room(
        kernel_build: KernelBuild, tmp_path: Path, pytestconfig: pytest.Config) -> None:
    done, result = repro(kernel_build, 1, tmp_path, pytestconfig)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert result["expected"] and result["allocation_succeeded"], result["reasons"]
    assert result["failure_reports"] == []
    assert result["free_blocks_at_least_order"]["before"] == 0
    assert result["driver_counters"]["migrated"] > 0
    assert result["vmstat_delta"]["compact_stall"] >= 1  # the allocation's own compaction
