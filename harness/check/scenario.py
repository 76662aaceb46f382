"""One shape for every scenario: what it needs, ``collect`` → Evidence → ``judge`` → result.

A scenario (the sample driver's A/B, zram, balloon, the ones still to come) is
one module with an object that says what it needs from the kernel (config
fragments and the options they must set, checked on the .config before
anything boots) and from the machine (virtio devices for a QEMU guest, host
capabilities such as a balloon control the target offers), then

- ``collect(guest, evidence)``: runs the experiment on a guest and records raw
  facts into ``evidence.facts`` (JSON types only: counts, procfs figures,
  driver counters) as soon as each is measured, so a kernel report that cuts
  the experiment short leaves everything measured before it;
- ``judge(evidence)``: pure, no guest; the rules it applies are documented
  beside it. Partial evidence (cut short) is judged NOT PROVEN with what it has.

``observe`` runs ``collect`` and saves the evidence (``save_evidence``: JSON,
written atomically) the moment it ends; ``verdict`` judges it and applies a
kernel report, so ``harness run`` and ``harness report RUN_DIR`` (which only
reads the saved files) give the same verdict from the same evidence.

Adding a scenario is one module with such an object and one line in
``harness.check.runner.SCENARIOS``: README.md, "Scenarios (for developers)",
has a sketch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.artifacts import KernelBuild
from harness.check.in_tree import ConfigNeed, require_config
from harness.check.reported import reported
from harness.check.steps import release_and_page_size
from harness.errors import HarnessError
from harness.guest import Guest, KernelProblem, require_capabilities
from harness.paths import write_atomically
from harness.phases import Phases
from harness.report.model import KernelReport, ScenarioResult

EVIDENCE_SCHEMA = "harness.evidence"
EVIDENCE_VERSION = 1
# The phase that spans a whole scenario run (harness.phases): the last one recorded.
TOTAL = "total"
# What a kernel report found after collect returned (as the target closes) cut short.
AFTER_LAST_STEP = "after the scenario's last step; its measurements are kept"


@dataclass(frozen=True)
class Needs:
    """What a scenario needs before it can run, checked as early as each can be."""

    fragments: tuple[str, ...] = ()  # kernel-configs/ fragments every cell's kernel gets
    config: tuple[ConfigNeed, ...] = ()  # options the .config must build in
    virtio_devices: tuple[str, ...] = ()  # extra virtio devices of a QEMU guest, by kind
    capabilities: tuple[type, ...] = ()  # what the target must offer (harness.guest)


@dataclass
class Evidence:
    """Everything one scenario measured on one guest: raw facts, no verdict.

    ``facts`` is the scenario's own record (JSON types). ``stopped`` says what
    a kernel report at this moment would cut short; the scenario keeps it up to
    date as it goes, and it is frozen once ``kernel_report`` is set.
    """

    scenario: str
    arch: str
    kernel: str  # the kernel spec as the user gave it
    release: str = ""  # uname -r in the guest
    facts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per phase
    stopped: str = "before the scenario's first measurement"
    kernel_report: KernelReport | None = None
    page_size: int | None = None  # bytes, read from the guest before collect (steps.page_size)

    @classmethod
    def start(cls, scenario: str, kernel: KernelBuild) -> Evidence:
        """Empty evidence of ``scenario`` on ``kernel``, noting where the kernel came from."""
        notes = [f"kernel {kernel.spec} is {kernel.origin}"] if kernel.origin else []
        return cls(scenario=scenario, arch=kernel.arch, kernel=kernel.spec, notes=notes)

    def doing(self, what: str) -> None:
        """Record that the scenario is now in ``what`` (for a report that stops it)."""
        self.stopped = (f"the {self.scenario} scenario stopped in {what}; what it measured "
                        "before is kept")

    @property
    def timer(self) -> Phases:
        """The recorder of this run's phases (harness.phases), into ``seconds``."""
        return Phases(self.seconds)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as ``seconds[name]``; a report during it stops ``name``."""
        self.doing(f"its {name} phase")
        with self.timer.phase(name):
            yield

    def interrupted(self, problem: KernelProblem) -> None:
        """Record ``problem``; the first report wins, a later one becomes a note, and
        what the problem collected on its way (a failed cleanup) becomes notes too."""
        self.notes += getattr(problem, "__notes__", ())
        if self.kernel_report is not None:
            self.notes.append(f"afterwards, {problem}")
            return
        self.kernel_report = KernelReport(kind=problem.kind, headline=problem.headline,
                                          excerpt=problem.excerpt, fatal=problem.fatal,
                                          step=problem.step)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object saved in the run directory."""
        return {"schema": EVIDENCE_SCHEMA, "schema_version": EVIDENCE_VERSION,
                **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evidence:
        """Rebuild what ``to_dict`` wrote (KeyError/TypeError/ValueError on a bad one)."""
        if (data.get("schema"), data.get("schema_version")) != (EVIDENCE_SCHEMA,
                                                               EVIDENCE_VERSION):
            raise ValueError(f"not {EVIDENCE_SCHEMA} v{EVIDENCE_VERSION}")
        fields = {key: value for key, value in data.items() if key not in ("schema",
                                                                            "schema_version")}
        report = fields.pop("kernel_report")
        return cls(**fields, kernel_report=KernelReport(**report) if report else None)

    def guest_page_size(self) -> int:
        """The page size every figure of ``collect`` is counted in: ``observe`` reads
        it from the guest first, so no computation has to assume 4 KiB."""
        if self.page_size is None:
            raise HarnessError(f"the {self.scenario} scenario's evidence has no page size: "
                               "collect runs through observe(), which reads it")
        return self.page_size


class Scenario(Protocol):
    """One experiment that proves (or fails to prove) that some pages migrate."""

    name: str
    needs: Needs

    def prepare(self, kernel: KernelBuild, force: bool) -> None:
        """Host-side work before a guest boots (build a module); HarnessError if impossible."""
        ...

    def collect(self, guest: Guest, evidence: Evidence) -> None:
        """Run the experiment on ``guest``, recording raw facts into ``evidence``."""
        ...

    def judge(self, evidence: Evidence) -> ScenarioResult:
        """The result of ``evidence`` by the scenario's documented rules (pure): a
        RunResult for the A/B, an InTreeResult for the kernel's own users, or a
        result type of the scenario's own (its rows, panels and JSON object are its
        own too: harness.report.model.ScenarioResult)."""
        ...


def require(scenario: Scenario, kernel: KernelBuild) -> None:
    """Refuse, before booting, a kernel whose .config lacks what ``scenario`` needs."""
    require_config(kernel, scenario.name, scenario.needs.config)


def observe(scenario: Scenario, guest: Guest, evidence: Evidence,
            path: Path | None = None) -> Evidence:
    """Collect ``scenario`` on ``guest`` into ``evidence``, saved to ``path`` as it ends.

    A kernel report ends it and is recorded; any other failure (a harness error)
    propagates, and the evidence is not saved: it would be judged as a kernel's fault.
    """
    try:
        with evidence.timer.phase("guest info"):
            require_capabilities(guest, scenario.needs.capabilities,
                                 f"the {scenario.name} scenario")
            evidence.release, evidence.page_size = release_and_page_size(guest)
        scenario.collect(guest, evidence)
        evidence.stopped = AFTER_LAST_STEP
    except KernelProblem as problem:
        evidence.interrupted(problem)
    if path is not None:
        save_evidence(evidence, path)
    return evidence


def run_on(scenario: Scenario, guest: Guest, kernel: KernelBuild,
           path: Path | None = None) -> ScenarioResult:
    """Collect ``scenario`` on a guest already running ``kernel`` (a pytest fixture's)
    and judge it: what a test calls."""
    evidence = Evidence.start(scenario.name, kernel)
    with evidence.timer.phase(TOTAL):
        observe(scenario, guest, evidence)
    if path is not None:
        save_evidence(evidence, path)
    return verdict(scenario, evidence)


def verdict(scenario: Scenario, evidence: Evidence) -> ScenarioResult:
    """Judge ``evidence``; a kernel report makes it NOT PROVEN (harness.check.reported)."""
    result = scenario.judge(evidence)
    if evidence.kernel_report is None:
        return result
    return reported(result, evidence.kernel_report, evidence.stopped)


EVIDENCE = "evidence"  # a run directory's folder of saved evidence, one file per scenario run


def evidence_folder(run_dir: Path) -> Path:
    """Where ``run_dir`` keeps its saved evidence (what ``harness report`` reads)."""
    return run_dir / EVIDENCE


def next_evidence_path(run_dir: Path, label: str) -> Path:
    """The file for the next scenario run's evidence in ``run_dir``: numbered after the
    files already there, so ``harness report`` reads them back in run order."""
    folder = evidence_folder(run_dir)
    taken = len(list(folder.glob("*.json"))) if folder.is_dir() else 0
    return folder / f"{taken:02d}-{label}.json"


def save_evidence(evidence: Evidence, path: Path) -> Path:
    """Write ``evidence`` as JSON atomically: a crash leaves the previous file or
    none, never half of one."""
    return write_atomically(path, json.dumps(evidence.to_dict(), indent=1) + "\n")


def load_evidence(path: Path) -> Evidence:
    """Read a file ``save_evidence`` wrote, or a HarnessError saying what is wrong."""
    try:
        return Evidence.from_dict(json.loads(path.read_text()))
    except OSError as error:
        raise HarnessError(f"cannot read evidence {path}: {error.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise HarnessError(f"{path} is not valid evidence: {error!r}") from None
