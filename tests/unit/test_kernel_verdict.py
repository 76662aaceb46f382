"""A kernel's fault is a verdict, not a harness error: NOT PROVEN with the report's
headline first and everything measured so far; ``harness run`` exits 1 for it and 2
only for the harness's own failures."""

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from rich.console import Console

from harness import cli
from harness.check import runner, steps
from harness.check.driver import SampleDriver
from harness.check.runner import check_ab_on
from harness.check.scenario import AFTER_LAST_STEP, Evidence, Needs, load_evidence, verdict
from harness.check.zram import ZramScenario
from harness.guest import Guest, GuestError, KernelProblem
from harness.kernel import build
from harness.report.chart import write_chart
from harness.report.in_tree import InTreeResult
from harness.report.json_report import read_results, write_json
from harness.report.model import RunResult
from harness.report.table import print_tables
from tests.unit.fake_guests import SampleKernel, ScriptedGuest, release_only, watched
from tests.unit.kernels import kernel_with_config
from tests.unit.report_texts import console_text

HEADLINE = "kernel BUG at mm/migrate.c:854!"


@pytest.fixture(autouse=True)
def quick_cleanup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(steps, "CLEANUP_SECONDS", 0.3)


def interrupted_ab(tmp_path: Path) -> RunResult:
    """The A/B on a kernel that BUGs in the movable=1 round's compaction."""
    kernel = kernel_with_config(tmp_path, "CONFIG_MIGRATION=y\n")
    guest = watched(SampleKernel(tmp_path / "console.log",
                                 console_text("vm-bug-on.4.8.15-x86_64")).guest)
    return check_ab_on(SampleDriver(guest), kernel)


def test_a_bug_in_round_two_keeps_round_one(tmp_path: Path) -> None:
    started = time.monotonic()
    result = interrupted_ab(tmp_path)
    assert time.monotonic() - started < 5  # not the compaction's 300 s timeout
    assert not result.proven and result.verdict == "not proven"
    assert result.reasons[0] == HEADLINE
    assert result.reasons[1] == (
        "the kernel reported BUG during 'echo 1 > /proc/sys/vm/compact_memory': the A/B "
        "stopped in its movable=1 round; the movable=0 round is kept")
    control = result.unmovable
    assert control is not None and result.movable is None
    assert (control.total_pages, control.migrated_pages, control.verify_checked) == (16, 0, 16)
    assert control.high_order is not None and control.high_order.after == 3
    report = result.kernel_report
    assert report is not None and (report.kind, report.headline) == ("BUG", HEADLINE)
    assert "invalid opcode: 0000 [#1] SMP" in report.excerpt and not report.fatal
    assert result.release == "4.8.15"
    assert any(note.startswith("unloading movable_sample afterwards: 'while pidof insmod")
               and note.endswith("rmmod movable_sample' did not finish within 0.3 s")
               for note in result.notes), result.notes


def test_the_interrupted_result_in_json_table_and_picture(tmp_path: Path) -> None:
    result = interrupted_ab(tmp_path)
    path = write_json([result], tmp_path / "result.json")
    (item,) = json.loads(path.read_text())["results"]
    assert item["verdict"] == "not proven" and item["reasons"][0] == HEADLINE
    assert item["kernel_report"]["kind"] == "BUG" and HEADLINE in item["kernel_report"]["excerpt"]
    assert item["migrated_pages"] is None and list(item["sides"]) == ["movable=0"]
    assert read_results(path) == [result]
    console = Console(width=160, record=True)
    print_tables([result], console=console)
    text = console.export_text()
    assert "NOT PROVEN" in text and HEADLINE in text and "movable=0" in text
    assert "kernel report (BUG) during 'echo 1 > /proc/sys/vm/compact_memory'" in text
    assert "invalid opcode: 0000 [#1] SMP" in text
    assert write_chart([result], tmp_path / "buddyinfo.png").read_bytes()[:4] == b"\x89PNG"


ZRAM_FACTS = {
    "data_unit": "1 MiB zram chunk", "figures": {"zspages": 1200},
    "buddy_before": [3000, 900, 300, 40, 5, 1, 0, 0, 0, 0, 0],
    "buddy_after": [400, 200, 120, 80, 60, 40, 22, 12, 7, 3, 1],
    "tracked": {"kind": "zsmalloc zspage first pages", "before": 1200, "after": 1200,
                "moved": 545, "arrived": 545},
    "pgmigrate_success_delta": 2900, "zspages_before": 1200, "mem_used_before": 9 << 20,
    "zspages_after": 1200, "mem_used_after": 9 << 20,
}
# What the zram scenario records once it has read every chunk back.
READ_BACK = {"chunks": 48, "chunks_checked": 48, "mismatches": 0}


def cut_after_compaction() -> Evidence:
    """A zram run that a report stopped in zram's own compact, after compact_memory."""
    evidence = Evidence("zram", arch="x86_64", kernel="/src/linux-4.8.15", release="4.8.15",
                        facts=json.loads(json.dumps(ZRAM_FACTS)), seconds={"fill": 3.5})
    evidence.doing("its zram_compact phase")
    return evidence


def gpf() -> KernelProblem:
    problem = KernelProblem("Oops", console_text("gpf.4.8.15-x86_64"),
                            headline="general protection fault: 0000 [#1] SMP")
    problem.step = "'echo 1 > /sys/block/zram0/compact'"
    problem.add_note("resetting zram0 afterwards: 'echo 1 > /sys/block/zram0/reset' did not "
                     "finish within 5 s")
    return problem


def interrupted(evidence: Evidence, problem: KernelProblem) -> InTreeResult:
    evidence.interrupted(problem)
    result = verdict(ZramScenario(), evidence)
    assert isinstance(result, InTreeResult)
    return result


def test_an_in_tree_scenario_keeps_what_it_measured(tmp_path: Path) -> None:
    result = interrupted(cut_after_compaction(), gpf())
    assert not result.proven and result.reasons[0] == "general protection fault: 0000 [#1] SMP"
    assert "stopped in its zram_compact phase" in result.reasons[1]
    assert result.tracked is not None and result.tracked.moved == 545
    assert result.data_checked is None and result.seconds["fill"] == 3.5
    assert result.notes[-1].startswith("resetting zram0 afterwards")
    path = write_json([result], tmp_path / "result.json")
    (again,) = read_results(path, InTreeResult)
    assert again == result
    console = Console(width=160, record=True)
    print_tables([result], console=console)
    text = console.export_text()
    assert "545 / 1200" in text and "data read back" in text and "not measured" in text
    assert "zs_compact+0x1d9/0x5a0" in text
    nothing = interrupted(Evidence("zram", arch="arm64", kernel="debian:6.1"), gpf())
    assert nothing.buddy_before == () and nothing.tracked is None
    write_chart([result, nothing], tmp_path / "buddyinfo.png")


def test_the_first_report_stays_the_verdict() -> None:
    evidence = cut_after_compaction()
    first = interrupted(evidence, gpf())
    panic = KernelProblem("panic", "[ 9.0] Kernel panic - not syncing: Fatal exception",
                          headline="Kernel panic - not syncing: Fatal exception")
    again = interrupted(evidence, panic)
    assert again.reasons == first.reasons and again.kernel_report == first.kernel_report
    assert again.notes[-1] == ("afterwards, guest kernel reported panic: Kernel panic - not "
                               "syncing: Fatal exception")


def complete() -> Evidence:
    """The zram run, all measured (as observe leaves it when collect returns)."""
    evidence = cut_after_compaction()
    evidence.facts.update(READ_BACK)
    evidence.stopped = AFTER_LAST_STEP
    return evidence


def test_a_late_report_voids_a_proof() -> None:
    proven = verdict(ZramScenario(), complete())
    assert proven.proven, proven.reasons
    late = interrupted(complete(), gpf())
    assert not late.proven and late.reasons[0] == "general protection fault: 0000 [#1] SMP"
    assert late.reasons[1].endswith(AFTER_LAST_STEP)
    assert proven.reasons[0] not in late.reasons
    assert late.data_checked == 48


class FakeTarget:
    """open_target's stand-in: a guest, and a kernel report at boot or at the end."""

    def __init__(self, at: str) -> None:
        self.at = at

    @contextmanager
    def __call__(self, kernel: object, options: object, run_dir: object = None,
                 phases: object = None) -> Iterator[Guest]:
        if self.at == "boot":
            raise KernelProblem("WARNING", "[ 0.5] WARNING: CPU: 0 PID: 1 at init.c:1 x")
        yield ScriptedGuest(Path("/nonexistent"), release_only("4.8.15"))  # type: ignore[misc]
        if self.at == "end":
            raise KernelProblem("WARNING", "[ 9.5] WARNING: CPU: 0 PID: 9 at mm/c.c:1 y")


class Replayed(ZramScenario):
    """The zram scenario whose collect records complete facts without a guest, or
    meets a kernel report before measuring anything."""

    needs = Needs()

    def __init__(self, crash: KernelProblem | None = None) -> None:
        super().__init__()
        self.crash = crash

    def collect(self, guest: Guest, evidence: Evidence) -> None:
        if self.crash is not None:
            raise self.crash
        evidence.facts.update(complete().facts)


def test_a_report_while_booting_stays_a_harness_error(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "open_target", FakeTarget("boot"))
    kernel = kernel_with_config(tmp_path, "")
    saved = tmp_path / "evidence.json"
    with pytest.raises(KernelProblem, match="init.c:1"):
        runner.check(Replayed(), kernel, evidence_path=saved)
    assert not saved.exists()


def test_a_report_found_as_the_target_closes_marks_the_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "open_target", FakeTarget("end"))
    kernel = kernel_with_config(tmp_path, "")
    saved = tmp_path / "evidence.json"
    result = runner.check(Replayed(), kernel, evidence_path=saved)
    assert not result.proven and result.reasons[0].endswith("mm/c.c:1 y")
    assert isinstance(result, InTreeResult) and result.figures["zspages"] == 1200
    again = load_evidence(saved)  # saved again with the report
    assert again.kernel_report is not None and again.stopped == AFTER_LAST_STEP
    assert verdict(ZramScenario(), again) == result


def test_a_report_before_the_first_measurement_is_still_a_verdict(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "open_target", FakeTarget("none"))
    kernel = kernel_with_config(tmp_path, "")
    crash = KernelProblem("Oops", "[ 2.0] general protection fault: 0000 [#1] SMP",
                          headline="general protection fault: 0000 [#1] SMP")
    result = runner.check(Replayed(crash), kernel)
    assert result.reasons[0] == "general protection fault: 0000 [#1] SMP"
    assert result.reasons[1].endswith("before the scenario's first measurement")
    assert isinstance(result, InTreeResult) and result.tracked is None


def run_harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, check: object,
                capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``harness run`` on two arches with the build and the VM replaced by fakes."""
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(build, "build_kernel", lambda spec, arch, fragments, force: (
        kernel_with_config(tmp_path / arch, "CONFIG_MIGRATION=y\n")))
    monkeypatch.setattr(runner, "check", check)
    for arch in ("x86_64", "arm64"):
        (tmp_path / arch).mkdir()
    status = cli.main(["run", "--arch", "x86_64", "--arch", "arm64", "--kernel", "/src/linux"])
    return status, capsys.readouterr().err


def test_harness_run_exits_1_for_a_kernel_report_and_runs_every_cell(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    cells: list[str] = []

    def check(scenario: object, kernel: object, target: object, run_dir: Path,
              evidence_path: Path, force: bool) -> RunResult:
        cells.append(run_dir.name)
        return interrupted_ab(tmp_path / f"vm{len(cells)}")

    for index in (1, 2):
        (tmp_path / f"vm{index}").mkdir()
    status, _ = run_harness(tmp_path, monkeypatch, check, capsys)
    assert status == 1 and cells == ["x86_64-src_linux-sample", "arm64-src_linux-sample"]
    (run,) = (tmp_path / "runs").glob("*-run-*")
    document = json.loads((run / "result.json").read_text())
    assert [item["reasons"][0] for item in document["results"]] == [HEADLINE, HEADLINE]
    assert (run / "buddyinfo.png").is_file()


def test_harness_run_exits_2_for_its_own_failure_with_notes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def check(*args: object, **kwargs: object) -> RunResult:
        error = GuestError("QEMU exited with status 1 during the step")
        error.add_note("unloading movable_sample afterwards: 'rmmod movable_sample' not run")
        raise error

    status, stderr = run_harness(tmp_path, monkeypatch, check, capsys)
    assert status == 2
    assert stderr.splitlines() == [
        "harness: error: QEMU exited with status 1 during the step",
        "harness: note: unloading movable_sample afterwards: 'rmmod movable_sample' not run"]
