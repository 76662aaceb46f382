"""harness bisect without kernels: git's side of it with a scripted oracle, and bad input."""

import subprocess
from pathlib import Path

import pytest

from harness.bisect.oracle import BAD, GOOD, SKIP, Step
from harness.bisect.session import FOUND, NOT_FOUND, UNDECIDED, bisect, resolve_range
from harness.cli import main
from harness.errors import HarnessError

_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=_ENV).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, list[str]]:
    """c0..c9, one line of ``n`` each; the user's own state: a dirty file, a bisect of theirs."""
    path = tmp_path / "repo"
    path.mkdir()
    _git(path, "init", "-q", "-b", "main")
    commits = []
    for index in range(10):
        (path / "n").write_text(f"{index}\n")
        _git(path, "add", "n")
        _git(path, "commit", "-qm", f"c{index}")
        commits.append(_git(path, "rev-parse", "HEAD"))
    (path / "n").write_text("dirty\n")
    return path, commits


def _scripted(commits: list[str], verdicts: dict[int, str]) -> tuple[list[int], object]:
    """An oracle: commit index -> verdict (good below 6, bad from 6 unless told)."""
    seen: list[int] = []

    def judge(commit: str) -> Step:
        index = commits.index(commit)
        seen.append(index)
        verdict = verdicts.get(index, GOOD if index < 6 else BAD)
        return Step(commit, verdict, f"c{index} is {verdict}", (), 1.0, 2.0, True)

    return seen, judge


def test_finds_the_first_bad_commit_skipping_one_that_does_not_build(
        repo: tuple[Path, list[str]]) -> None:
    path, commits = repo
    status = _git(path, "status", "--porcelain")
    seen, judge = _scripted(commits, {4: SKIP})
    outcome = bisect(path, commits[0], commits[9], judge)  # type: ignore[arg-type]
    assert outcome.status == FOUND and outcome.culprit is not None
    assert outcome.culprit.commit == commits[6]
    assert outcome.culprit.subject == "c6" and outcome.culprit.files == ("n",)
    assert seen[:2] == [0, 9] and 4 in seen
    assert "git bisect skip" in outcome.log
    assert _git(path, "status", "--porcelain") == status
    assert not (path / ".git" / "BISECT_LOG").exists()


def test_only_skipped_commits_left_is_not_found(repo: tuple[Path, list[str]]) -> None:
    path, commits = repo
    _, judge = _scripted(commits, {5: SKIP, 6: SKIP})
    outcome = bisect(path, commits[0], commits[9], judge)  # type: ignore[arg-type]
    assert outcome.status == NOT_FOUND
    assert commits[6][:12] in outcome.message


@pytest.mark.parametrize(("verdicts", "said"), [({0: BAD}, "GOOD"), ({9: GOOD}, "BAD")])
def test_wrong_ends_are_said_plainly(repo: tuple[Path, list[str]], verdicts: dict[int, str],
                                     said: str) -> None:
    path, commits = repo
    _, judge = _scripted(commits, verdicts)
    outcome = bisect(path, commits[0], commits[9], judge)  # type: ignore[arg-type]
    assert outcome.status == UNDECIDED and outcome.message.startswith(said)
    assert "nothing to bisect" in outcome.message


def test_range_must_be_ancestry(repo: tuple[Path, list[str]]) -> None:
    path, commits = repo
    with pytest.raises(HarnessError, match="not an ancestor"):
        resolve_range(path, commits[9], commits[0])


@pytest.mark.parametrize(("kernel", "good", "message"), [
    ("git:{tmp}", "HEAD", "is not a git repository"),
    ("git:{repo}", "nope", "git ref 'nope' not found"),
    ("git:{repo}@main", "HEAD", "give a repository as git:/path/to/repo"),
])
def test_bad_input_is_one_line_and_leaves_nothing(
        repo: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        isolated_cache: Path, kernel: str, good: str, message: str) -> None:
    path, _ = repo
    spec = kernel.format(tmp=tmp_path / "elsewhere", repo=path)
    (tmp_path / "elsewhere").mkdir()
    before = sorted(isolated_cache.rglob("*"))
    assert main(["bisect", "--kernel", spec, "--good", good, "--bad", "main"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("harness: error: ") and message in err[0]
    assert sorted(isolated_cache.rglob("*")) == before


class _Result:
    """What the oracle reads of a ScenarioResult."""

    def __init__(self, proven: bool, reason: str) -> None:
        self.proven, self.reasons, self.kernel_report = proven, (reason,), None


@pytest.mark.parametrize(("outcomes", "verdict", "evidence", "calls"), [
    ([_Result(True, "5784 moved")], GOOD, "5784 moved", 1),
    ([_Result(False, "none moved")], BAD, "none moved", 1),
    ([HarnessError("QEMU died"), _Result(True, "moved")], GOOD, "moved", 2),
    ([HarnessError("QEMU died"), HarnessError("QEMU died")], SKIP, "infrastructure error", 2),
])
def test_oracle_maps_checks_to_verdicts_and_retries_the_infrastructure_once(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, outcomes: list[object], verdict: str,
        evidence: str, calls: int) -> None:
    from harness.bisect import oracle
    from harness.kernel import build

    class Kernel:
        cached = False

    pending = list(outcomes)

    def check(*args: object, **kwargs: object) -> object:
        outcome = pending.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(build, "build_kernel", lambda *args, **kwargs: Kernel())
    monkeypatch.setattr(oracle.runner, "check", check)
    step = oracle.judge(tmp_path, "c" * 40, "x86_64", "sample", 1, tmp_path)
    assert step.verdict == verdict and evidence in step.evidence
    assert len(outcomes) - len(pending) == calls


def test_oracle_skips_what_does_not_build_and_calls_disagreement_uncertain(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from harness.bisect import oracle
    from harness.kernel import build

    def broken(*args: object, **kwargs: object) -> object:
        raise HarnessError("make build failed: mm/compaction.c:25:1: error: expected identifier")

    monkeypatch.setattr(build, "build_kernel", broken)
    step = oracle.judge(tmp_path, "c" * 40, "x86_64", "sample", 1, tmp_path)
    assert step.verdict == SKIP and "does not build" in step.evidence

    class Kernel:
        cached = True

    flaky = iter([_Result(True, "moved"), _Result(False, "none moved")])
    monkeypatch.setattr(build, "build_kernel", lambda *args, **kwargs: Kernel())
    monkeypatch.setattr(oracle.runner, "check", lambda *args, **kwargs: next(flaky))
    step = oracle.judge(tmp_path, "c" * 40, "x86_64", "sample", 2, tmp_path)
    assert step.verdict == "uncertain" and step.evidence == "good: moved / bad: none moved"
