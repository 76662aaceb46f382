"""``git bisect`` driven step by step with the harness's check as the oracle.

git keeps the bisect state in a private bare clone (``--shared``: it reads
the user's objects, writes nothing there), started with ``--no-checkout``, so
the user's work tree, index and any bisect of their own are never touched.
Each commit git proposes is judged by harness.bisect.oracle, which builds it
in the repository's private checkout (harness.kernel.worktree), one
incremental build after another.

Before bisecting, GOOD must judge good and BAD bad: otherwise there is no
regression between them to find, and the outcome says which end was wrong.
"""

import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.bisect.oracle import BAD, GOOD, SKIP, Step
from harness.errors import HarnessError
from harness.kernel.toolchain import require
from harness.kernel.worktree import resolve_commit

FOUND, NOT_FOUND, UNDECIDED = "found", "not found", "could not decide"

Judge = Callable[[str], Step]


@dataclass(frozen=True)
class Culprit:
    """The first bad commit as git named it."""

    commit: str
    subject: str
    files: tuple[str, ...]


@dataclass
class Outcome:
    """What a bisect found, and every step that led there."""

    status: str  # FOUND, NOT_FOUND or UNDECIDED
    message: str  # one sentence for the user
    endpoints: list[Step] = field(default_factory=list)  # GOOD then BAD, as judged
    steps: list[Step] = field(default_factory=list)  # the commits git proposed, in order
    culprit: Culprit | None = None
    log: str = ""  # `git bisect log`
    subjects: dict[str, str] = field(default_factory=dict)  # commit -> subject


def resolve_range(repo: Path, good: str, bad: str) -> tuple[str, str]:
    """GOOD and BAD as full hashes; a HarnessError unless GOOD is an ancestor of BAD."""
    good_commit = resolve_commit(repo, good, f"--good {good}")
    bad_commit = resolve_commit(repo, bad, f"--bad {bad}")
    ancestor = subprocess.run([require("git"), "-C", str(repo), "merge-base", "--is-ancestor",
                               good_commit, bad_commit])
    if ancestor.returncode != 0:
        raise HarnessError(f"--good {good} is not an ancestor of --bad {bad} in {repo}: "
                           "bisect needs GOOD older than BAD on the same history")
    return good_commit, bad_commit


def bisect(repo: Path, good: str, bad: str, judge: Judge) -> Outcome:
    """Check both ends, then let git choose commits until it names the first bad one."""
    outcome = Outcome(status=UNDECIDED, message="")
    for commit, expected in ((good, GOOD), (bad, BAD)):
        step = judge(commit)
        outcome.endpoints.append(step)
        if step.verdict != expected:
            outcome.message = (f"{expected.upper()} {commit[:12]} is not {expected} here: it "
                               f"judged {step.verdict} ({step.evidence}); nothing to bisect")
            outcome.subjects = _subjects(repo, [s.commit for s in outcome.endpoints])
            return outcome
    with tempfile.TemporaryDirectory(prefix="harness-bisect-") as scratch:
        clone = Path(scratch) / "bisect.git"
        _git(None, "clone", "--quiet", "--bare", "--shared", str(repo), str(clone))
        said = _git(clone, "bisect", "start", "--no-checkout", bad, good)
        while not _finished(said):
            commit = _git(clone, "rev-parse", "BISECT_HEAD")
            step = judge(commit)
            outcome.steps.append(step)
            said = _git(clone, "bisect", step.verdict if step.verdict in (GOOD, BAD) else SKIP,
                        commit)
        outcome.log = _git(clone, "bisect", "log")
        if "is the first bad commit" in said:
            first = said.split()[0]
            outcome.status = FOUND
            outcome.culprit = Culprit(first, _git(repo, "log", "-1", "--format=%s", first),
                                      tuple(_git(repo, "show", "--format=", "--name-only",
                                                 first).splitlines()))
            outcome.message = f"first bad commit: {first[:12]} {outcome.culprit.subject}"
        else:
            outcome.status = NOT_FOUND
            outcome.message = ("only skipped commits are left: the first bad commit is one of "
                               + ", ".join(_candidates(said)))
    outcome.subjects = _subjects(repo, [s.commit for s in outcome.endpoints + outcome.steps])
    return outcome


def _finished(said: str) -> bool:
    """Whether git's answer to the last step ends the bisect."""
    return "is the first bad commit" in said or "only 'skip'ped commits left" in said


def _candidates(said: str) -> list[str]:
    """The hashes git lists when only skipped commits are left."""
    return [word[:12] for line in said.splitlines() for word in line.split()[:1]
            if len(word) == 40 and all(c in "0123456789abcdef" for c in word)]


def _subjects(repo: Path, commits: list[str]) -> dict[str, str]:
    return {commit: _git(repo, "log", "-1", "--format=%s", commit) for commit in commits}


def _git(repo: Path | None, *args: str) -> str:
    """git's stdout and stderr together (bisect speaks on both); a HarnessError on failure."""
    command = [require("git"), *(("-C", str(repo)) if repo else ()), *args]
    done = subprocess.run(command, capture_output=True, text=True)
    said = (done.stdout + done.stderr).strip()
    # With only skipped commits left, git bisect says so and exits 2.
    if done.returncode != 0 and not _finished(said):
        raise HarnessError(f"git {' '.join(args[:2])} failed: "
                           f"{(done.stderr or done.stdout).strip()[:300]}")
    return said
