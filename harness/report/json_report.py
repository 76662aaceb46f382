"""The JSON result file: all evidence of a run, for machines and for later reading.

Plain JSON with a schema version, so CI scripts and dashboards can read it
without the harness, and ``read_results`` can rebuild the records (to redraw the
picture from an old run, for instance). Each result writes its own object
(``ScenarioResult.to_dict``) into the list its type names (``json_key``): the
sample A/B's under ``results``, the in-tree scenarios' under ``in_tree``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, overload

from harness.errors import HarnessError
from harness.paths import write_atomically
from harness.report.in_tree import InTreeResult
from harness.report.model import RunResult, ScenarioResult

SCHEMA = "harness.result"
SCHEMA_VERSION = 1
# Lists every v1 file has, empty or not (readers of v1 expect them).
_V1_KEYS = ("results", "in_tree")

R = TypeVar("R", bound=ScenarioResult)
# Every result type, by the list of result.json it goes into.
KINDS: dict[str, type[ScenarioResult]] = {kind.json_key: kind for kind in (RunResult, InTreeResult)}


def run_document(results: Sequence[ScenarioResult]) -> dict[str, Any]:
    """The whole run: schema, time, and each result's object under its type's
    ``json_key``, in run order."""
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "proven": all(result.proven for result in results) and bool(results),
        **{key: [] for key in _V1_KEYS},
    }
    for result in results:
        document.setdefault(result.json_key, []).append(result.to_dict())
    return document


def write_json(results: Sequence[ScenarioResult], path: Path) -> Path:
    """Write the run's JSON file atomically (a reader never sees half a file)."""
    return write_atomically(path, json.dumps(run_document(results), indent=2) + "\n")


@overload
def read_results(path: Path) -> list[RunResult]: ...
@overload
def read_results(path: Path, kind: type[R]) -> list[R]: ...


def read_results(path: Path, kind: type[ScenarioResult] = RunResult) -> list[Any]:
    """Rebuild the results of type ``kind`` (default: the sample A/B's) from a file
    ``write_json`` wrote (none when the file has none of them)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise HarnessError(f"cannot read result file {path}: {error}") from None
    if document.get("schema") != SCHEMA or document.get("schema_version") != SCHEMA_VERSION:
        raise HarnessError(
            f"{path} is not a {SCHEMA} v{SCHEMA_VERSION} file "
            f"(schema {document.get('schema')!r} v{document.get('schema_version')!r})"
        )
    try:
        return [kind.from_dict(item) for item in document.get(kind.json_key, [])]
    except (KeyError, TypeError, ValueError) as error:
        raise HarnessError(f"{path} has a malformed result: {error!r}") from None


def result_from_dict(json_key: str, item: dict[str, Any]) -> ScenarioResult:
    """Rebuild one result from its ``to_dict()`` object and its type's ``json_key``
    (what a pytest-xdist worker sends its controller)."""
    return KINDS[json_key].from_dict(item)
