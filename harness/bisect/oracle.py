"""The bisect oracle: one commit built and checked the way ``harness run`` does it.

It calls what ``harness run`` calls (build_kernel with every cell's
fragments, then runner.check), so a step's verdict is the one ``harness run
--kernel git:REPO@SHA`` would give, mapped onto git bisect's words:

- proven -> good; not proven, a kernel report during the check included -> bad
  (the kernel failing it);
- the tree does not build, or the kernel reports trouble before the guest's
  shell -> skip: such a commit says nothing about migration, never "bad";
- any other harness error (QEMU died, a transport timeout with no kernel
  report) is the infrastructure's, not the commit's: tried once more, then skip.

With ``repeat`` the check runs that many times on the one build and every
verdict must agree; otherwise the step is "uncertain" (told to git as skip).
"""

import time
from dataclasses import dataclass
from pathlib import Path

from harness.artifacts import KernelBuild
from harness.check import runner
from harness.check.target import TargetOptions
from harness.errors import HarnessError
from harness.guest import KernelProblem

GOOD, BAD, SKIP, UNCERTAIN = "good", "bad", "skip", "uncertain"
INFRA_ATTEMPTS = 2  # an infrastructure error is retried once


@dataclass(frozen=True)
class Attempt:
    """One check's verdict and the line of evidence that decided it."""

    verdict: str
    evidence: str


@dataclass(frozen=True)
class Step:
    """One commit judged: its verdict, why, and what it cost."""

    commit: str
    verdict: str
    evidence: str
    attempts: tuple[Attempt, ...]
    build_seconds: float
    check_seconds: float
    built: bool  # False when the build came from the build directory as it was


def judge(repo: Path, commit: str, arch: str, scenario: str, repeat: int,
          run_dir: Path) -> Step:
    """Build ``commit`` of ``repo`` for ``arch`` and check ``scenario`` on it ``repeat`` times."""
    from harness.kernel.build import build_kernel

    started = time.monotonic()
    try:
        kernel = build_kernel(f"git:{repo}@{commit}", arch, runner.cell_fragments())
    except HarnessError as error:
        return Step(commit, SKIP, f"does not build: {_first_line(error)}", (),
                    round(time.monotonic() - started, 1), 0.0, True)
    build_seconds = round(time.monotonic() - started, 1)
    started = time.monotonic()
    attempts = tuple(_check(kernel, scenario, run_dir / f"{commit[:12]}-{index}")
                     for index in range(repeat))
    check_seconds = round(time.monotonic() - started, 1)
    verdicts = {attempt.verdict for attempt in attempts}
    if len(verdicts) == 1:
        verdict, evidence = attempts[0].verdict, attempts[0].evidence
    else:
        verdict = UNCERTAIN
        evidence = " / ".join(f"{a.verdict}: {a.evidence}" for a in attempts)
    return Step(commit, verdict, evidence, attempts, build_seconds, check_seconds,
                not kernel.cached)


def _check(kernel: KernelBuild, scenario: str, run_dir: Path) -> Attempt:
    """One check; an infrastructure error is tried once more before it becomes a skip."""
    failure = ""
    for attempt in range(INFRA_ATTEMPTS):
        try:
            result = runner.check(runner.scenario_named(scenario), kernel, TargetOptions(),
                                  run_dir=run_dir / f"try{attempt}",
                                  evidence_path=run_dir / f"try{attempt}" / "evidence.json")
        except KernelProblem as problem:  # before the shell: the kernel's own doing
            return Attempt(SKIP, f"kernel never reached its shell: {_first_line(problem)}")
        except HarnessError as error:
            failure = _first_line(error)
            continue
        if result.proven:
            return Attempt(GOOD, result.reasons[0] if result.reasons else "proven")
        report = result.kernel_report
        evidence = (f"kernel {report.kind}: {report.headline}" if report is not None
                    else result.reasons[0] if result.reasons else "not proven")
        return Attempt(BAD, evidence)
    return Attempt(SKIP, f"infrastructure error, {INFRA_ATTEMPTS} tries: {failure}")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
