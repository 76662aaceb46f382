"""``harness bisect``: the first commit of a git repository where migration stops being proven.

    harness bisect --kernel git:REPO --good REF --bad REF [--arch A] [--scenario S] [--repeat N]

Bad input (not a repository, an unknown ref, GOOD not an ancestor of BAD) is
refused before anything is created. Then both ends are checked, git bisects
in a private clone (harness.bisect.session) and every step is judged by
harness.bisect.oracle. The run directory gets bisect.json (every step with
its verdict, deciding evidence line and timings, the culprit, the bisect log,
the reproducer) and each check's own evidence; the terminal gets the table.

Exit status: 0 when the first bad commit was found; 1 when it was not (only
skipped commits left) or could not be decided (GOOD not good or BAD not bad);
2 for a harness error, bad input included.
"""

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from harness.arch import ARCHES, get_arch
from harness.bisect.oracle import Step
from harness.bisect.session import FOUND, Outcome
from harness.check.runner import SCENARIOS
from harness.check.sample import SAMPLE
from harness.errors import HarnessError
from harness.kernel.spec import parse_spec

RESULT = "bisect.json"


def command(args: argparse.Namespace) -> int:
    """Validate, bisect, write bisect.json, print the table; 0 only when a culprit was found."""
    from harness.bisect.oracle import judge
    from harness.bisect.session import bisect, resolve_range
    from harness.paths import new_run_dir

    spec = parse_spec(args.kernel)
    if spec.kind != "git" or "@" in args.kernel[len("git:"):]:
        raise HarnessError(f"--kernel {args.kernel}: give a repository as git:/path/to/repo "
                           "(the refs come from --good and --bad)")
    if args.repeat < 1:
        raise HarnessError(f"--repeat {args.repeat}: give 1 or more")
    assert spec.path is not None
    repo = spec.path.resolve()
    arch = get_arch(args.arch).name
    good, bad = resolve_range(repo, args.good, args.bad)
    run_dir = new_run_dir("bisect")
    started = time.monotonic()
    outcome = bisect(repo, good, bad,
                     lambda commit: judge(repo, commit, arch, args.scenario, args.repeat,
                                          run_dir / "checks"))
    seconds = round(time.monotonic() - started, 1)
    reproducer = (f"harness run --kernel git:{repo}@{outcome.culprit.commit} --arch {arch} "
                  f"--scenario {args.scenario}" if outcome.culprit else "")
    result = {"repository": str(repo), "good": good, "bad": bad, "arch": arch,
              "scenario": args.scenario, "repeat": args.repeat, "status": outcome.status,
              "message": outcome.message, "seconds": seconds,
              "culprit": asdict(outcome.culprit) if outcome.culprit else None,
              "reproducer": reproducer,
              "endpoints": [_step_object(step, outcome) for step in outcome.endpoints],
              "steps": [_step_object(step, outcome) for step in outcome.steps],
              "log": outcome.log}
    path = run_dir / RESULT
    path.write_text(json.dumps(result, indent=2) + "\n")
    _print(outcome, reproducer, path, seconds)
    return 0 if outcome.status == FOUND else 1


def _step_object(step: Step, outcome: Outcome) -> dict[str, object]:
    return {**asdict(step), "subject": outcome.subjects.get(step.commit, "")}


def _print(outcome: Outcome, reproducer: str, path: Path, seconds: float) -> None:
    """The steps as a table, then the outcome, the culprit's files and the reproducer."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="harness bisect", show_lines=False)
    for column in ("step", "commit", "subject", "verdict", "evidence", "build s", "check s"):
        table.add_column(column, overflow="fold")
    ends = ("GOOD", "BAD")[:len(outcome.endpoints)]
    rows = list(zip(ends, outcome.endpoints, strict=True))
    rows += [(str(index), step) for index, step in enumerate(outcome.steps, 1)]
    for name, step in rows:
        # Text, not markup: subjects and evidence carry brackets ("make[2]: *** [...]").
        table.add_row(name, step.commit[:12], Text(outcome.subjects.get(step.commit, "")),
                      step.verdict, Text(step.evidence), f"{step.build_seconds:.0f}",
                      f"{step.check_seconds:.0f}")
    console = Console(soft_wrap=True, highlight=False, markup=False)
    console.print(table)
    console.print(f"{outcome.status}: {outcome.message} ({seconds:.0f} s)")
    if outcome.culprit:
        console.print("files: " + ", ".join(outcome.culprit.files))
        console.print(f"reproduce: {reproducer}")
    console.print(f"result: {path}")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bisect`` subcommand."""
    parser = subparsers.add_parser(
        "bisect", help="find the first commit of a kernel repository where migration "
                       "is no longer proven (git bisect with the check as oracle)")
    parser.add_argument("--kernel", required=True, metavar="git:REPO",
                        help="the kernel repository, as git:/path/to/repo")
    parser.add_argument("--good", required=True, metavar="REF",
                        help="a commit where migration is proven")
    parser.add_argument("--bad", required=True, metavar="REF",
                        help="a later commit where it is not")
    parser.add_argument("--arch", default="x86_64", choices=list(ARCHES),
                        help="guest architecture (default: x86_64)")
    parser.add_argument("--scenario", default=SAMPLE, choices=list(SCENARIOS),
                        help=f"what to check (default: {SAMPLE})")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="check each commit N times; all must agree, else the step "
                             "is uncertain and skipped (default: 1)")
    parser.set_defaults(func=command)
