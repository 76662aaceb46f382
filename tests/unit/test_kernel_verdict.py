"""A kernel's fault is a verdict, not a harness error: NOT PROVEN with the report's
headline first and everything measured so far; ``harness run`` exits 1 for it and 2
only for the harness's own failures."""

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from harness import cli
from harness.check import runner, steps
from harness.check.driver import SampleDriver
from harness.check.in_tree import Progress
from harness.check.reported import reported
from harness.check.runner import Prepared, check_ab_on
from harness.guest import Guest, GuestError, KernelProblem
from harness.report.chart import write_chart
from harness.report.in_tree import InTreeResult, TrackedPages
from harness.report.json_report import read_in_tree, read_results, write_json
from harness.report.model import RunResult
from harness.report.table import print_tables
from tests.unit.fake_guests import SampleKernel, watched
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
                                 console_text("bug.4.8.15-x86_64")).guest)
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
    assert any(note.startswith("unloading movable_sample afterwards: 'rmmod movable_sample' "
                               "did not finish within 0.3 s") for note in result.notes)


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


def progress_cut_after_compaction() -> Progress:
    """A zram run that a report stopped in zram's own compact, after compact_memory."""
    progress = Progress("zram", arch="x86_64", kernel="/src/linux-4.8.15", release="4.8.15",
                        data_unit="1 MiB zram chunk")
    progress.buddy_before = (3000, 900, 300, 40, 5, 1, 0, 0, 0, 0, 0)
    progress.buddy_after = (400, 200, 120, 80, 60, 40, 22, 12, 7, 3, 1)
    progress.tracked = TrackedPages("zsmalloc zspage first pages", 1200, 1200, 545, 545)
    progress.pgmigrate_success_delta = 2900
    progress.figures["zspages"] = 1200
    progress.doing = "its zram_compact phase"
    return progress


def gpf() -> KernelProblem:
    problem = KernelProblem("Oops", console_text("gpf.4.8.15-x86_64"),
                            headline="general protection fault: 0000 [#1] SMP")
    problem.step = "'echo 1 > /sys/block/zram0/compact'"
    problem.add_note("resetting zram0 afterwards: 'echo 1 > /sys/block/zram0/reset' did not "
                     "finish within 5 s")
    return problem


def test_an_in_tree_scenario_keeps_what_it_measured(tmp_path: Path) -> None:
    result = progress_cut_after_compaction().interrupted(gpf())
    assert not result.proven and result.reasons[0] == "general protection fault: 0000 [#1] SMP"
    assert "stopped in its zram_compact phase" in result.reasons[1]
    assert result.tracked is not None and result.tracked.moved == 545
    assert result.data_checked is None and "total" in result.seconds
    assert result.notes[-1].startswith("resetting zram0 afterwards")
    path = write_json([], tmp_path / "result.json", in_tree=[result])
    (again,) = read_in_tree(path)
    assert replace(again, seconds={}) == replace(result, seconds={})  # JSON rounds seconds
    console = Console(width=160, record=True)
    print_tables([], console=console, in_tree=[result])
    text = console.export_text()
    assert "545 / 1200" in text and "data read back" in text and "not measured" in text
    assert "zs_compact+0x1d9/0x5a0" in text
    nothing = Progress("balloon", arch="arm64", kernel="debian:6.1").interrupted(gpf())
    assert nothing.buddy_before == () and nothing.tracked is None
    write_chart([], tmp_path / "buddyinfo.png", in_tree=[result, nothing])


def test_the_first_report_stays_the_verdict(tmp_path: Path) -> None:
    first = progress_cut_after_compaction().interrupted(gpf())
    panic = KernelProblem("panic", "[ 9.0] Kernel panic - not syncing: Fatal exception",
                          headline="Kernel panic - not syncing: Fatal exception")
    again = reported(first, panic, "after the scenario's last step")
    assert again.reasons == first.reasons and again.kernel_report == first.kernel_report
    assert again.notes[-1] == ("afterwards, guest kernel reported panic: Kernel panic - not "
                               "syncing: Fatal exception")


def test_a_late_report_voids_a_proof(tmp_path: Path) -> None:
    progress = progress_cut_after_compaction()
    proven = progress.result(proven=True, reasons=("545 of 1200 zspages moved",),
                             data_checked=48, data_mismatches=0)
    late = reported(proven, gpf(), "after the scenario's last step; its measurements are kept")
    assert not late.proven and late.reasons[0] == "general protection fault: 0000 [#1] SMP"
    assert "545 of 1200 zspages moved" not in late.reasons
    assert late.data_checked == 48


class FakeTarget:
    """open_target's stand-in: a guest, and a kernel report at boot or at the end."""

    def __init__(self, at: str) -> None:
        self.at = at

    @contextmanager
    def __call__(self, kernel: object, options: object, run_dir: object = None
                 ) -> Iterator[Guest]:
        if self.at == "boot":
            raise KernelProblem("WARNING", "[ 0.5] WARNING: CPU: 0 PID: 1 at init.c:1 x")
        yield None  # type: ignore[misc]
        if self.at == "end":
            raise KernelProblem("WARNING", "[ 9.5] WARNING: CPU: 0 PID: 9 at mm/c.c:1 y")


def in_tree_result() -> InTreeResult:
    return progress_cut_after_compaction().result(proven=True, reasons=("fine",),
                                                  data_checked=48, data_mismatches=0)


def test_a_report_while_booting_stays_a_harness_error(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "open_target", FakeTarget("boot"))
    kernel = kernel_with_config(tmp_path, "")
    with pytest.raises(KernelProblem, match="init.c:1"):
        runner._on_target(kernel, runner.TargetOptions(), None, in_tree_result(),
                          lambda guest: in_tree_result())


def test_a_report_found_as_the_target_closes_marks_the_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "open_target", FakeTarget("end"))
    kernel = kernel_with_config(tmp_path, "")
    result = runner._on_target(kernel, runner.TargetOptions(), None, in_tree_result(),
                               lambda guest: in_tree_result())
    assert not result.proven and result.reasons[0].endswith("mm/c.c:1 y")
    assert result.figures["zspages"] == 1200


def test_a_report_outside_the_scenario_steps_is_still_a_verdict(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "open_target", FakeTarget("none"))
    kernel = kernel_with_config(tmp_path, "")
    nothing = RunResult(arch="x86_64", kernel="k", release="", proven=False, reasons=(),
                        movable=None)

    def install_crashes(guest: Guest) -> RunResult:
        raise KernelProblem("Oops", "[ 2.0] general protection fault: 0000 [#1] SMP",
                            headline="general protection fault: 0000 [#1] SMP")

    result = runner._on_target(kernel, runner.TargetOptions(), None, nothing, install_crashes)
    assert result.reasons[0] == "general protection fault: 0000 [#1] SMP"
    assert result.sides == ()


def run_harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, check_ab: object,
                capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``harness run`` on two arches with the build and the VM replaced by fakes."""
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(runner, "prepare", lambda arch, spec, fragments, force, driver: Prepared(
        kernel=kernel_with_config(tmp_path / arch, "CONFIG_MIGRATION=y\n"),
        module=None))  # type: ignore[arg-type]
    monkeypatch.setattr(runner, "check_ab", check_ab)
    for arch in ("x86_64", "arm64"):
        (tmp_path / arch).mkdir()
    status = cli.main(["run", "--arch", "x86_64", "--arch", "arm64", "--kernel", "/src/linux"])
    return status, capsys.readouterr().err


def test_harness_run_exits_1_for_a_kernel_report_and_runs_every_cell(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    cells: list[str] = []

    def check_ab(prepared: Prepared, target: object, settings: object,
                 run_dir: Path) -> RunResult:
        cells.append(run_dir.name)
        return interrupted_ab(tmp_path / f"vm{len(cells)}")

    for index in (1, 2):
        (tmp_path / f"vm{index}").mkdir()
    status, _ = run_harness(tmp_path, monkeypatch, check_ab, capsys)
    assert status == 1 and len(cells) == 2
    (run,) = (tmp_path / "runs").glob("*-run-*")
    document = json.loads((run / "result.json").read_text())
    assert [item["reasons"][0] for item in document["results"]] == [HEADLINE, HEADLINE]
    assert (run / "buddyinfo.png").is_file()


def test_harness_run_exits_2_for_its_own_failure_with_notes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def check_ab(*args: object, **kwargs: object) -> RunResult:
        error = GuestError("QEMU exited with status 1 during the step")
        error.add_note("unloading movable_sample afterwards: 'rmmod movable_sample' not run")
        raise error

    status, stderr = run_harness(tmp_path, monkeypatch, check_ab, capsys)
    assert status == 2
    assert stderr.splitlines() == [
        "harness: error: QEMU exited with status 1 during the step",
        "harness: note: unloading movable_sample afterwards: 'rmmod movable_sample' not run"]
