"""The build stage's cache behaviour and failure paths, with a fake make (no kernel build)."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness import cache
from harness.errors import HarnessError, MissingTool, Terminated
from harness.kernel import build as build_module
from harness.kernel.build import BUILDS, build_kernel, plan_build

from .test_kernel_source import make_tree


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "linux", (4, 9, 1))


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"


def fake_make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    """Put a `make` shell script first on PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / "make"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")


def running(pid: int, wait: float = 5.0) -> bool:
    """Whether ``pid`` still runs after up to ``wait`` seconds (a zombie does not count)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.05)
    return True


def leftovers(cache_dir: Path) -> list[str]:
    """Entries and work directories of the build cache (per-key lock files do not count)."""
    return [p.name for p in (cache_dir / BUILDS).iterdir() if not p.name.endswith(".lock")]


def fake_entry(tree: Path, arch: str = "x86_64") -> Path:
    """A finished cache entry for the plan of ``tree``, as a real build leaves it."""
    plan = plan_build(str(tree), arch)
    entry = cache.entry_path(BUILDS, plan.key())
    build_dir = entry / "build"
    (build_dir / plan.arch.image_path).parent.mkdir(parents=True)
    for name in (plan.arch.image_path, ".config", "System.map", "Module.symvers"):
        (build_dir / name).write_text("x")
    (entry / "build.json").write_text(json.dumps({
        "release": "4.9.1", "version": [4, 9, 1], "make_args": list(plan.make_args),
        "module_fixups": [],
    }))
    return entry


def test_key_follows_every_input(isolated_cache: Path, tree: Path, tmp_path: Path) -> None:
    base = plan_build(str(tree), "x86_64")
    assert plan_build(str(tree), "x86_64").key() == base.key()
    assert plan_build(str(tree), "arm64").key() != base.key()
    assert plan_build(str(tree), "x86_64", ["zram"]).key() != base.key()
    fragment = tmp_path / "mine.config"
    fragment.write_text("CONFIG_ZRAM=y\n")
    with_file = plan_build(str(tree), "x86_64", [str(fragment)]).key()
    fragment.write_text("# a comment changes nothing\nCONFIG_ZRAM=y\n")
    assert plan_build(str(tree), "x86_64", [str(fragment)]).key() == with_file
    fragment.write_text("CONFIG_ZRAM=m\n")
    assert plan_build(str(tree), "x86_64", [str(fragment)]).key() != with_file
    time.sleep(0.01)
    (tree / "mm.c").write_text("edited source\n")
    assert plan_build(str(tree), "x86_64").key() != base.key()


def test_key_includes_toolchain_and_quirks(isolated_cache: Path, tree: Path) -> None:
    parts = plan_build(str(tree), "arm64").key_parts()
    assert parts["quirks"] == ["dtc-yylloc-fcommon"]
    assert "HOSTCC=gcc -fcommon" in parts["make_args"]  # type: ignore[operator]
    assert any("gcc" in line for line in parts["toolchain"])  # type: ignore[attr-defined]
    assert parts["source"].startswith("tree:")  # type: ignore[union-attr]


def test_make_args_carry_what_module_builds_need(isolated_cache: Path, tree: Path) -> None:
    assert plan_build(str(tree), "x86_64").make_args == ("ARCH=x86_64",)
    assert plan_build(str(tree), "arm64").make_args == (
        "ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-", "HOSTCC=gcc -fcommon")


def test_hit_runs_no_make(
    isolated_cache: Path, tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = fake_entry(tree)
    fake_make(tmp_path, monkeypatch, "echo make must not run >&2; exit 99\n")
    started = time.monotonic()
    build = build_kernel(str(tree), "x86_64")
    assert time.monotonic() - started < 2
    assert build.cached and build.release == "4.9.1" and build.version == (4, 9, 1)
    assert build.build_dir == entry / "build"
    assert build.image == entry / "build" / "arch/x86/boot/bzImage"
    assert build.make_args == ("ARCH=x86_64",)


def test_damaged_entry_is_rebuilt_and_force_rebuilds(
    isolated_cache: Path, tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    runs: Path,
) -> None:
    fake_make(tmp_path, monkeypatch, "echo 'scripts/foo.c:1: error: boom'; exit 2\n")
    entry = fake_entry(tree)
    with pytest.raises(HarnessError, match="make tinyconfig failed"):
        build_kernel(str(tree), "x86_64", force=True)
    assert (entry / "build.json").exists()  # a failed rebuild keeps the old entry
    (entry / "build" / "System.map").unlink()
    with pytest.raises(HarnessError, match="make tinyconfig failed"):
        build_kernel(str(tree), "x86_64")


def test_failed_build_leaves_no_entry_and_keeps_the_log(
    isolated_cache: Path, tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    runs: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    fake_make(tmp_path, monkeypatch,
              "echo '  HOSTCC  scripts/basic/fixdep'\n"
              "echo 'scripts/dtc/dtc-parser.tab.o: multiple definition of yylloc'\n"
              "exit 2\n")
    with pytest.raises(HarnessError) as error:
        build_kernel(str(tree), "x86_64")
    message = str(error.value)
    assert "make tinyconfig failed" in message and "full log:" in message
    log = Path(message.split("full log: ")[1].rstrip(")"))
    assert log.is_file() and log.parent.parent == runs
    assert "multiple definition of yylloc" in log.read_text()
    assert "multiple definition of yylloc" in capsys.readouterr().err
    assert leftovers(isolated_cache) == []


@pytest.mark.parametrize("signal_name,raised", [("INT", KeyboardInterrupt),
                                               ("TERM", Terminated)])
@pytest.mark.parametrize("when", ["while-starting", "while-running"])
def test_interrupt_stops_make_and_leaves_nothing(
    isolated_cache: Path, tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    runs: Path, when: str, signal_name: str, raised: type[KeyboardInterrupt],
) -> None:
    pidfile = tmp_path / "child.pid"
    # The fake make interrupts the harness like ^C (or a cancelled CI job's
    # SIGTERM) would, before or after it started a long-running child of its own.
    start = f"sleep 300 & echo $! > {pidfile}\n"
    kill = f"kill -{signal_name} $PPID\n"
    fake_make(tmp_path, monkeypatch,
              (kill + start if when == "while-starting" else start + kill) + "wait\n")
    with pytest.raises(raised):
        build_kernel(str(tree), "x86_64")
    # make may have been stopped before it even started its child: then no pid.
    child = pidfile.read_text().strip() if pidfile.exists() else ""
    assert not (child and running(int(child))), "make's children must be stopped"
    assert leftovers(isolated_cache) == []


def test_missing_tool_names_the_package(
    isolated_cache: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_which = build_module.shutil.which
    monkeypatch.setattr("harness.kernel.toolchain.shutil.which",
                        lambda name: None if name == "bison" else real_which(name))
    with pytest.raises(MissingTool, match="apt-get install bison"):
        build_kernel(str(tree), "x86_64")


def test_missing_cross_compiler(
    isolated_cache: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_which = build_module.shutil.which
    monkeypatch.setattr("harness.kernel.toolchain.shutil.which",
                        lambda name: None if name.startswith("aarch64") else real_which(name))
    with pytest.raises(MissingTool, match="apt-get install gcc-aarch64-linux-gnu"):
        build_kernel(str(tree), "arm64")


def test_full_disk_is_refused_up_front(
    isolated_cache: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build_module.shutil, "disk_usage",
                        lambda path: type("Usage", (), {"free": 2**29})())
    with pytest.raises(HarnessError, match="only 0.5 GiB free"):
        build_kernel(str(tree), "x86_64")


def test_unknown_arch(isolated_cache: Path, tree: Path) -> None:
    with pytest.raises(HarnessError, match="unknown arch 'riscv'"):
        build_kernel(str(tree), "riscv")


def test_stop_kills_the_whole_group() -> None:
    process = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300"], start_new_session=True,
                               text=True)
    time.sleep(0.2)
    build_module._stop(process)
    assert process.returncode == -signal.SIGTERM
    group = subprocess.run(["pgrep", "-g", str(process.pid)], capture_output=True, text=True)
    assert not any(running(int(pid)) for pid in group.stdout.split())


def test_disk_full_during_make_is_named(
    isolated_cache: Path, tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    runs: Path,
) -> None:
    fake_make(tmp_path, monkeypatch,
              "echo 'cc1: error: write error: No space left on device'; exit 2\n")
    with pytest.raises(HarnessError, match="disk full while building"):
        build_kernel(str(tree), "x86_64")
    assert leftovers(isolated_cache) == []


def test_only_abandoned_work_directories_are_removed(isolated_cache: Path) -> None:
    builds = isolated_cache / BUILDS
    live, dead = builds / ".a.x.partial", builds / ".b.y.partial"
    for work in (live, dead):
        work.mkdir(parents=True)
        (work / "build.log").write_text("...")
    old = time.time() - (build_module.ABANDONED_HOURS + 1) * 3600
    os.utime(dead / "build.log", (old, old))
    build_module._remove_abandoned_work()
    assert live.exists() and not dead.exists()


def test_fragment_fighting_a_quirk_is_refused(
    isolated_cache: Path, tmp_path: Path
) -> None:
    tree = make_tree(tmp_path / "linux48", (4, 8, 15))
    kaslr = tmp_path / "kaslr.config"
    kaslr.write_text("CONFIG_RANDOMIZE_BASE=y\n")
    with pytest.raises(HarnessError, match="asks for CONFIG_RANDOMIZE_BASE=y.*"
                                           "quirk x86_64-plt32-relocations"):
        plan_build(str(tree), "x86_64", [str(kaslr)])
    plan_build(str(tree), "arm64", [str(kaslr)])  # no such quirk on arm64


def test_second_process_waits_and_takes_the_first_ones_entry(
    isolated_cache: Path, tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import fcntl
    import threading

    fake_make(tmp_path, monkeypatch, "echo make must not run; exit 99\n")
    key = plan_build(str(tree), "x86_64").key()
    lock_path = isolated_cache / BUILDS / f".{key}.lock"
    lock_path.parent.mkdir(parents=True)
    results: list[object] = []
    with lock_path.open("a") as held:  # "another process" is building this key
        fcntl.flock(held, fcntl.LOCK_EX)
        waiter = threading.Thread(target=lambda: results.append(
            build_kernel(str(tree), "x86_64")))
        waiter.start()
        time.sleep(1.0)
        assert waiter.is_alive() and not results  # blocked on the lock
        fake_entry(tree)  # the other process finishes its entry, then unlocks
    waiter.join(timeout=30)
    assert len(results) == 1 and results[0].cached  # type: ignore[attr-defined]
    assert "waiting for another process" in capsys.readouterr().err


def test_an_absolute_output_directory_in_the_generated_makefile_becomes_self_locating(
        tmp_path: Path) -> None:
    """7.x writes the work directory into build/Makefile; the entry is renamed after."""
    from harness.kernel.build import _self_locating_output

    makefile = tmp_path / "Makefile"
    makefile.write_text("# generated\nexport KBUILD_OUTPUT = /cache/.key.partial/build\n"
                        "include /src/Makefile\n")
    _self_locating_output(makefile)
    assert "/cache/.key.partial" not in makefile.read_text()
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / "Makefile").write_text(makefile.read_text().replace(
        "include /src/Makefile", "all:\n\t@echo $(KBUILD_OUTPUT)"))
    done = subprocess.run(["make", "-s", "-C", str(moved)], capture_output=True, text=True)
    assert done.stdout.strip() == str(moved)
    old = "# 5.10\ninclude /src/Makefile\n"
    makefile.write_text(old)
    _self_locating_output(makefile)
    assert makefile.read_text() == old


def test_git_specs_build_in_place_and_never_take_one_commit_for_another(
    isolated_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runs: Path,
) -> None:
    from .test_kernel_source import _git

    repo = make_tree(tmp_path / "repo", (4, 9, 1))
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    plan = plan_build(f"git:{repo}@main", "x86_64")
    assert plan.source.worktree is not None
    entry = plan.source.worktree / f"build-{plan.in_place_key()}"
    for name in (plan.arch.image_path, ".config", "System.map", "Module.symvers", "mm/kept.o"):
        (entry / "build" / name).parent.mkdir(parents=True, exist_ok=True)
        (entry / "build" / name).write_text("x")
    (entry / "build.json").write_text(json.dumps({
        "key": plan.key(), "release": "4.9.1", "version": [4, 9, 1],
        "make_args": list(plan.make_args), "module_fixups": []}))
    fake_make(tmp_path, monkeypatch, "echo 'mm/foo.c:1: error: boom'; exit 2\n")
    built = build_kernel(f"git:{repo}@main", "x86_64")  # the directory holds this commit
    assert built.cached and built.build_dir == entry / "build"
    assert built.source == plan.source.identity

    (repo / "mm").mkdir()
    (repo / "mm" / "foo.c").write_text("int x;\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "two")
    with pytest.raises(HarnessError, match="make tinyconfig failed"):
        build_kernel(f"git:{repo}@main", "x86_64")
    # The failed build is not taken for the last good one; make's objects stay for the next.
    assert not (entry / "build.json").exists() and not (entry / "unfinished").exists()
    assert (entry / "build" / "mm" / "kept.o").exists()
    (entry / "unfinished").touch()  # a build killed outright: start from an empty directory
    with pytest.raises(HarnessError, match="make tinyconfig failed"):
        build_kernel(f"git:{repo}@main", "x86_64")
    assert not (entry / "build" / "mm" / "kept.o").exists()
