"""A board of a labgrid lab: ``--target labgrid://PLACE`` proves migration there the
same way ``ssh://`` does, and takes and gives back the place as a lab expects.

The lab is real: a labgrid coordinator and exporters run on 127.0.0.1 as
their own processes, started and stopped here, and the places are set up with
``labgrid-client`` as a lab's admin would. The board is a QEMU guest of the
cell's kernel started separately (as test_board.py's), which an exporter
publishes as the place's NetworkService; the checks run in new ``harness run``
and ``pytest`` processes that know only the place's name, the coordinator
(LG_COORDINATOR) and a key, and cannot import the harness's QEMU code.

Two more places have no board behind them: one held by another user (the
harness must refuse it in one line and leave it to them) and one whose board
is down (the run must fail with ssh's reason within labgrid's connect
timeout, not hang). Every test leaves every place released.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.artifacts import KernelBuild
from harness.paths import cache_root
from harness.pytest_plugin import cell_fragments
from harness.vm.boot import boot_guest
from tests.integration.test_board import WITHOUT_QEMU_CODE

# The first cell only: the place handling and the Guest over labgrid's drivers
# are the same code whatever the board runs, and each cell costs ~100 s.
pytestmark = [pytest.mark.needs_program("ssh"), pytest.mark.needs_program("scp"),
              pytest.mark.first_cell_only]

BIN = Path(sys.executable).parent
BOARD, TAKEN, DOWN = "board-1", "board-taken", "board-down"
SOMEONE_ELSE = "alice"
CONNECT_TIMEOUT = 5  # LG_SSH_CONNECT_TIMEOUT for the board that is down (labgrid's default: 30)
START_SECONDS = 30.0


@contextmanager
def daemon(argv: list[str], log: Path, env: dict[str, str],
           cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A labgrid daemon as its own process, stopped (SIGTERM, then SIGKILL) on exit."""
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env,
                                   cwd=cwd, stdin=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(what: str, ready: Callable[[], object], process: subprocess.Popen[bytes],
             log: Path) -> object:
    """Poll ``ready`` until it gives something true; fail if the daemon dies or stalls."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        found = ready()
        if found:
            return found
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    pytest.fail(f"{what} not ready within {START_SECONDS:g} s: {log.read_text()[-2000:]}")


@contextmanager
def closed_port() -> Iterator[int]:
    """A port that refuses connections (the board that is down): bound, never listening,
    so nothing else can take it while the block runs."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield int(bound.getsockname()[1])


def service(group: str, port: int) -> str:
    """An exporter's resource group: SSH to root@127.0.0.1:``port`` as a NetworkService."""
    return (f"{group}:\n  NetworkService:\n    address: 127.0.0.1\n    port: {port}\n"
            "    username: root\n")


@dataclass
class Lab:
    """A running coordinator and how to talk to it."""

    coordinator: str
    directory: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "LG_COORDINATOR": self.coordinator, **extra}

    def client(self, *args: str, user: str | None = None) -> str:
        """``labgrid-client ARGS`` (as ``user``), its output; fails the test on an error."""
        env = self.env(**({"LG_USERNAME": user} if user else {}))
        done = subprocess.run([str(BIN / "labgrid-client"), *args], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"labgrid-client {' '.join(args)}: {done.stderr}"
        return done.stdout

    def holder(self, place: str) -> str | None:
        """Who holds ``place`` (host/user), or None."""
        match = re.search(r"^\s*acquired: (\S+)$", self.client("-p", place, "show"), re.M)
        assert match, f"no 'acquired:' line for place {place}"
        return None if match.group(1) == "None" else match.group(1)

    @contextmanager
    def exporter(self, name: str, config: str) -> Iterator[None]:
        """An exporter publishing ``config`` (exporter YAML), until the block exits."""
        path = self.directory / f"{name}.yaml"
        path.write_text(config)
        log = self.directory / f"{name}.log"
        argv = [str(BIN / "labgrid-exporter"), "--name", name, "--hostname", "127.0.0.1",
                str(path)]
        groups = re.findall(r"^(\S+):$", config, re.M)
        with daemon(argv, log, self.env(), self.directory) as process:
            wait_for(f"exporter {name}", lambda: all(
                f"{name}/{group}/NetworkService" in self.client("resources")
                for group in groups), process, log)
            yield


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A coordinator, an exporter for the two boardless places, and every place made."""
    directory = tmp_path_factory.mktemp("lab")
    log = directory / "coordinator.log"
    with daemon([str(BIN / "labgrid-coordinator"), "--listen", "127.0.0.1:0"], log,
                dict(os.environ), directory) as process:
        listening = wait_for("labgrid-coordinator", lambda: re.search(
            r"listening on (127\.0\.0\.1:\d+)", log.read_text()), process, log)
        assert isinstance(listening, re.Match)
        lab = Lab(listening.group(1), directory)
        with closed_port() as dead, lab.exporter("spare", service(TAKEN, dead)
                                                  + service(DOWN, dead)):
            for place, exporter in ((BOARD, "board"), (TAKEN, "spare"), (DOWN, "spare")):
                lab.client("-p", place, "create")
                lab.client("-p", place, "add-match", f"{exporter}/{place}/NetworkService")
            yield lab
        assert process.poll() is None, "the coordinator died during the tests"


@dataclass(frozen=True)
class Board:
    """The cell's board in the lab: its place and the key that logs in."""

    lab: Lab
    key: Path


@pytest.fixture(scope="module")
def board(lab: Lab, kernel_build: KernelBuild, runs_dir: Path) -> Iterator[Board]:
    """A QEMU guest of the cell's kernel, exported as place board-1's NetworkService."""
    with boot_guest(kernel_build, transport="ssh") as machine:
        assert machine.keys is not None and machine.vm.ssh_port is not None
        with lab.exporter("board", service(BOARD, machine.vm.ssh_port)):
            yield Board(lab, machine.keys.client_key)
            assert lab.holder(BOARD) is None, f"{BOARD} was left acquired"


def harness(lab: Lab, *args: str, **env: str) -> subprocess.Popen[str]:
    """``harness ARGS`` in a new process that knows the lab only by LG_COORDINATOR."""
    return subprocess.Popen([sys.executable, "-c", WITHOUT_QEMU_CODE, *args],
                            env=lab.env(HARNESS_CACHE_DIR=str(cache_root()), **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_args(place: str, kernel: KernelBuild, config: pytest.Config, key: Path) -> list[str]:
    configs = [word for name in cell_fragments(config) for word in ("--config", name)]
    return ["run", "--target", f"labgrid://{place}", "--ssh-key", str(key), "--kernel",
            kernel.spec, "--arch", kernel.arch, *configs]


def finish(process: subprocess.Popen[str], timeout: float = 900) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise


def test_harness_run_proves_migration_and_zram_on_a_labgrid_place(
        board: Board, kernel_build: KernelBuild, pytestconfig: pytest.Config) -> None:
    """The sample's A/B and the zram check over labgrid://: PROVEN, the board's evidence."""
    process = harness(board.lab, *run_args(BOARD, kernel_build, pytestconfig, board.key),
                      "--scenario", "sample", "--scenario", "zram", "--json")
    out, err = finish(process)
    assert process.returncode == 0, err[-3000:]
    sample, zram = json.loads(out)
    print(f"labgrid place {BOARD}: {sample['reasons'][0]}; zram: {zram['reasons'][0]}")
    assert sample["proven"] and sample["release"] == kernel_build.release
    assert sample["migrated_pages"] > 0 and sample["verify_mismatches"] == 0
    assert sample["sides"]["movable=0"]["migrated_pages"] == 0
    assert zram["proven"] and zram["release"] == kernel_build.release
    assert board.lab.holder(BOARD) is None


def test_pytest_runs_the_driver_tests_on_a_labgrid_place(
        board: Board, kernel_build: KernelBuild, tmp_path: Path) -> None:
    """``pytest --target labgrid://PLACE``: the plugin's guest is the place's board."""
    junit = tmp_path / "junit.xml"
    tests = Path(__file__).with_name("test_driver.py")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(tests), "-p", "no:cacheprovider", "-q",
         "-k", "interface_files or control_group", "--target", f"labgrid://{BOARD}",
         "--ssh-key", str(board.key), "--kernel", kernel_build.spec, "--arch",
         kernel_build.arch, f"--junitxml={junit}"],
        env=board.lab.env(HARNESS_CACHE_DIR=str(cache_root())), capture_output=True,
        text=True, timeout=900, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stdout[-3000:]
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"),
            suite.get("skipped")) == ("2", "0", "0", "0")
    assert board.lab.holder(BOARD) is None


def test_a_place_someone_else_holds_is_refused_in_one_line(
        board: Board, kernel_build: KernelBuild, pytestconfig: pytest.Config) -> None:
    """No waiting, no traceback, and their place stays theirs."""
    lab = board.lab
    lab.client("-p", TAKEN, "acquire", user=SOMEONE_ELSE)
    try:
        process = harness(lab, *run_args(TAKEN, kernel_build, pytestconfig, board.key))
        _, err = finish(process, timeout=300)
        assert process.returncode == 2, err[-3000:]
        assert "Traceback" not in err
        (line,) = [line for line in err.splitlines() if line.startswith("harness: error:")]
        assert re.fullmatch(rf"harness: error: labgrid place {TAKEN} is acquired by "
                            rf"\S+/{SOMEONE_ELSE}: wait until it is released, or ask them "
                            rf"to run `labgrid-client -p {TAKEN} allow \S+/\S+`", line), line
        assert lab.holder(TAKEN).endswith(f"/{SOMEONE_ELSE}")
    finally:
        lab.client("-p", TAKEN, "release", user=SOMEONE_ELSE)


def test_a_place_whose_board_is_down_fails_with_the_reason(
        board: Board, kernel_build: KernelBuild, pytestconfig: pytest.Config) -> None:
    """ssh's reason within labgrid's connect timeout, and the place is given back."""
    started = time.monotonic()
    process = harness(board.lab, *run_args(DOWN, kernel_build, pytestconfig, board.key),
                      LG_SSH_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT))
    _, err = finish(process, timeout=300)
    took = time.monotonic() - started
    print(f"board down: failed after {took:.1f} s")
    assert process.returncode == 2, err[-3000:]
    assert "Traceback" not in err
    assert re.search(rf"harness: error: labgrid place {DOWN}: its board at root@127\.0\.0\.1:"
                     rf"\d+ did not answer SSH within {CONNECT_TIMEOUT} s \(ssh: connect to "
                     r"host 127\.0\.0\.1 port \d+: Connection refused\)", err), err
    assert took < CONNECT_TIMEOUT + 60
    assert board.lab.holder(DOWN) is None


@pytest.mark.parametrize("stop,status,said", [(signal.SIGINT, 130, "interrupted"),
                                              (signal.SIGTERM, 143, "terminated")],
                         ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_releases_the_place(
        board: Board, kernel_build: KernelBuild, pytestconfig: pytest.Config,
        stop: signal.Signals, status: int, said: str) -> None:
    """^C, or a cancelled CI job's SIGTERM, once the place is taken: the run stops, and
    the place is free again."""
    lab = board.lab
    process = harness(lab, *run_args(BOARD, kernel_build, pytestconfig, board.key))
    try:
        deadline = time.monotonic() + 300
        while lab.holder(BOARD) is None:
            assert process.poll() is None, finish(process)[1][-3000:]
            assert time.monotonic() < deadline, "the run never acquired the place"
            time.sleep(0.2)
        process.send_signal(stop)
        _, err = finish(process, timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == status, err[-3000:]
    assert f"harness: {said}" in err
    assert lab.holder(BOARD) is None


def test_a_place_acquired_beforehand_is_used_and_left_acquired(
        board: Board, kernel_build: KernelBuild) -> None:
    """labgrid's own way: acquire with labgrid-client, run, release yourself."""
    from harness.labgrid import PlaceAddress, open_board

    lab = board.lab
    lab.client("-p", BOARD, "acquire")
    try:
        with open_board(PlaceAddress.parse(f"labgrid://{lab.coordinator}/{BOARD}"),
                        key=board.key) as guest:
            assert guest.run("uname -r").stdout.strip() == kernel_build.release
        assert lab.holder(BOARD) is not None
    finally:
        lab.client("-p", BOARD, "release")


def test_a_connection_that_drops_is_reopened_on_the_same_boot(
        board: Board, kernel_build: KernelBuild, capsys: pytest.CaptureFixture[str]) -> None:
    """The control connection closed under the harness (as an OOM kill of the board's SSH
    server would): the next step reconnects, checks the boot id and runs once."""
    from harness.labgrid import PlaceAddress, open_board

    address = PlaceAddress.parse(f"labgrid://{board.lab.coordinator}/{BOARD}")
    with open_board(address, key=board.key) as guest:
        assert guest.run("echo one > /tmp/steps").ok
        control = guest._command.control  # type: ignore[attr-defined]
        subprocess.run(["ssh", "-S", control, "-O", "exit", "board"], check=True,
                       capture_output=True, timeout=30)
        assert guest.run("echo two >> /tmp/steps; uname -r").stdout.strip() \
            == kernel_build.release
        assert guest.run("cat /tmp/steps").stdout == "one\ntwo\n"
    assert f"the connection to labgrid place {BOARD}" in capsys.readouterr().err
    assert board.lab.holder(BOARD) is None
