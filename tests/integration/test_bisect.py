"""`harness bisect` on a real kernel repository with a regression of our own.

The repository (tests/integration/kernel_repo.py) is the cached debian:5.10
tree plus nine commits in mm/: one does not build, one makes
isolate_movable_page() refuse every page. Bisect must name that commit, skip
the one that does not build, and leave the repository as it was. x86_64
only: it is the cheapest kernel here, and every step is a real build (the
first one cold, ≈ 4 min on an idle 2-core machine; the rest incremental) and
a real boot. It runs when the session's matrix has debian:5.10 on x86_64 (the
default), so a CI job for another kernel does not pay for it; marked ``build``
only, because a skip of a ``vm`` test is a failure in CI.
"""

import json
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.paths import cache_root
from harness.pytest_plugin import Cell, matrix
from tests.integration.kernel_repo import (
    BASE_SPEC,
    BREAKING,
    UNBUILDABLE,
    git,
    make_kernel_repo,
)

# One pytest-xdist worker for both modules: they build commits of the same
# repository in one build directory (tests/integration/kernel_repo.py).
pytestmark = [pytest.mark.build, pytest.mark.xdist_group("bisect-repository")]


def test_bisect_names_the_breaking_commit_and_skips_the_broken_build(
        runs_dir: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    if Cell("x86_64", BASE_SPEC) not in matrix(request.config):
        pytest.skip(f"the bisect repository is {BASE_SPEC} on x86_64, not in this matrix")
    # A fixed place: a second run reuses the repository and its build directory.
    repo = make_kernel_repo(cache_root() / "test-repos" / "bisect-5.10")
    status = git(repo.path, "status", "--porcelain")
    started = time.monotonic()
    code = main(["bisect", "--kernel", f"git:{repo.path}", "--good", repo.base,
                 "--bad", repo.head, "--arch", "x86_64"])
    seconds = time.monotonic() - started
    out = capsys.readouterr().out
    result = json.loads(next(runs_dir.glob("*-bisect-*/bisect.json")).read_text())
    print(out, f"\nbisect took {seconds:.0f} s")
    assert code == 0, out
    assert result["status"] == "found"
    assert result["culprit"]["commit"] == repo.commits[BREAKING]
    assert result["culprit"]["files"] == ["mm/migrate.c"]
    assert [step["verdict"] for step in result["endpoints"]] == ["good", "bad"]
    verdicts = {step["commit"]: step for step in result["steps"]}
    unbuildable = verdicts[repo.commits[UNBUILDABLE]]
    assert unbuildable["verdict"] == "skip" and "does not build" in unbuildable["evidence"]
    assert verdicts[repo.commits[BREAKING]]["verdict"] == "bad"
    assert f"git:{repo.path}@{repo.commits[BREAKING]}" in result["reproducer"]
    assert "git bisect skip" in result["log"]
    assert git(repo.path, "status", "--porcelain") == status
    assert not (repo.path / ".git" / "BISECT_LOG").exists()
