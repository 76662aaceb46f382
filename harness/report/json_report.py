"""The JSON result file: all evidence of a run, for machines and for later reading.

Plain JSON with a schema version, so CI scripts and dashboards can read it
without the harness, and ``read_results`` can rebuild the records (to redraw the
picture from an old run, for instance).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.paths import write_atomically
from harness.procfs import FragIndices
from harness.report.in_tree import InTreeResult, in_tree_from_dict, in_tree_to_dict
from harness.report.model import (
    HighOrder,
    RunResult,
    ScenarioResult,
    Side,
    result_common_dict,
    result_common_fields,
)

SCHEMA = "harness.result"
SCHEMA_VERSION = 1


def _high_order_dict(high: HighOrder | None) -> dict[str, int] | None:
    if high is None:
        return None
    return {"order": high.order, "attempts": high.attempts,
            "before": high.before, "after": high.after}


def side_to_dict(side: Side) -> dict[str, Any]:
    return {
        "movable": int(side.movable),
        "migrated_pages": side.migrated_pages,
        "total_pages": side.total_pages,
        "migrated_share": round(side.migrated_share, 4),
        "pgmigrate_success_delta": side.pgmigrate_success_delta,
        "verify_mismatches": side.verify_mismatches,
        "verify_checked": side.verify_checked,
        "high_order_success": _high_order_dict(side.high_order),
        "buddyinfo_before": list(side.buddy_before),
        "buddyinfo_after": list(side.buddy_after),
        "vmstat_delta": dict(side.vmstat_delta),
        "driver_counters": dict(side.driver_counters),
        "fragmentation_indices": {
            "before": side.indices_before.as_dict() if side.indices_before else None,
            "after": side.indices_after.as_dict() if side.indices_after else None},
    }


def result_to_dict(result: RunResult) -> dict[str, Any]:
    """The result object of one arch x kernel: what ``harness run --json`` prints.

    The top-level evidence (migrated_pages, ...) is the movable=1 side, the one
    the verdict is about (null when a kernel report ended the A/B before it);
    ``sides`` has the sides of the A/B that were measured, in full.
    """
    sides = {side.label: side_to_dict(side) for side in result.sides}
    movable = sides.get("movable=1", {})
    return {
        **result_common_dict(result),
        **{key: movable.get(key) for key in ("migrated_pages", "total_pages", "migrated_share",
                                             "pgmigrate_success_delta", "verify_mismatches")},
        "high_order_success": {
            label: side["high_order_success"] for label, side in sides.items()
        },
        "sides": sides,
    }


def result_object(result: ScenarioResult) -> dict[str, Any]:
    """The JSON object of one result, whichever scenario's: what ``--json`` prints."""
    if isinstance(result, RunResult):
        return result_to_dict(result)
    assert isinstance(result, InTreeResult), result
    return in_tree_to_dict(result)


def run_document(results: Sequence[ScenarioResult]) -> dict[str, Any]:
    """The whole run: schema, time, the A/B results under ``results`` and the in-tree
    scenarios' (zram, balloon) under ``in_tree``, each in run order."""
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "proven": all(result.proven for result in results) and bool(results),
        "results": [result_object(result) for result in results
                    if isinstance(result, RunResult)],
        "in_tree": [result_object(result) for result in results
                    if not isinstance(result, RunResult)],
    }


def write_json(results: Sequence[ScenarioResult], path: Path) -> Path:
    """Write the run's JSON file atomically (a reader never sees half a file)."""
    return write_atomically(path, json.dumps(run_document(results), indent=2) + "\n")


def side_from_dict(data: dict[str, Any]) -> Side:
    high = data["high_order_success"]
    return Side(
        movable=bool(data["movable"]),
        buddy_before=tuple(data["buddyinfo_before"]),
        buddy_after=tuple(data["buddyinfo_after"]),
        migrated_pages=data["migrated_pages"],
        total_pages=data["total_pages"],
        pgmigrate_success_delta=data["pgmigrate_success_delta"],
        verify_mismatches=data["verify_mismatches"],
        high_order=HighOrder(**high) if high else None,
        vmstat_delta=data["vmstat_delta"],
        driver_counters=data["driver_counters"],
        verify_checked=data["verify_checked"],
        indices_before=_indices(data, "before"),
        indices_after=_indices(data, "after"),
    )


def _indices(side: dict[str, Any], when: str) -> FragIndices | None:
    """A side's fragmentation indices ``when`` (before/after compaction), if it has them
    (evidence saved before they were recorded has none)."""
    saved = (side.get("fragmentation_indices") or {}).get(when)
    return FragIndices.from_dict(saved) if saved else None


def _read_document(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise HarnessError(f"cannot read result file {path}: {error}") from None
    if document.get("schema") != SCHEMA or document.get("schema_version") != SCHEMA_VERSION:
        raise HarnessError(
            f"{path} is not a {SCHEMA} v{SCHEMA_VERSION} file "
            f"(schema {document.get('schema')!r} v{document.get('schema_version')!r})"
        )
    return document


def read_in_tree(path: Path) -> list[InTreeResult]:
    """Rebuild the in-tree scenario results from a file ``write_json`` wrote
    (none for a file written before they existed)."""
    document = _read_document(path)
    try:
        return [in_tree_from_dict(item) for item in document.get("in_tree", [])]
    except (KeyError, TypeError, ValueError) as error:
        raise HarnessError(f"{path} has a malformed in-tree result: {error!r}") from None


def read_results(path: Path) -> list[RunResult]:
    """Rebuild the results from a file ``write_json`` wrote."""
    document = _read_document(path)
    try:
        return [
            RunResult(
                **result_common_fields(item),
                movable=(side_from_dict(item["sides"]["movable=1"])
                         if "movable=1" in item["sides"] else None),
                unmovable=(side_from_dict(item["sides"]["movable=0"])
                           if "movable=0" in item["sides"] else None),
            )
            for item in document["results"]
        ]
    except (KeyError, TypeError, ValueError) as error:
        raise HarnessError(f"{path} has a malformed result: {error!r}") from None
