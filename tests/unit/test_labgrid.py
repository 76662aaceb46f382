"""labgrid:// targets without a lab: addresses, refusals, the Guest over driver protocols.

The coordinator, exporter and board are exercised for real in
tests/integration/test_labgrid.py; here are the pieces that need none. labgrid
itself comes with the dev extra, as ruff and mypy do.
"""

import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from labgrid.driver.exception import ExecutionError
from labgrid.remote.client import UserError

from harness.check.target import TargetOptions, open_target, validate_target
from harness.errors import HarnessError
from harness.guest import GuestError, GuestTimeout
from harness.labgrid import DEFAULT_COORDINATOR, PlaceAddress, open_board
from harness.labgrid.guest import BOOT_ID, KEEPALIVE_GONE, SSH_FAILED, STARTED, LabgridGuest
from harness.labgrid.place import must_acquire, said, unreachable
from tests.unit.kernels import kernel_with_config


@pytest.mark.parametrize("url,environ,expected", [
    ("labgrid://board-1", {}, PlaceAddress("board-1", DEFAULT_COORDINATOR)),
    ("labgrid://board-1", {"LG_COORDINATOR": "lab:20408"}, PlaceAddress("board-1", "lab:20408")),
    ("labgrid://lab.example:1234/rpi4", {"LG_COORDINATOR": "other:1"},
     PlaceAddress("rpi4", "lab.example:1234")),
])
def test_place_addresses(url: str, environ: dict[str, str], expected: PlaceAddress) -> None:
    assert PlaceAddress.parse(url, environ) == expected


@pytest.mark.parametrize("url", ["labgrid://", "labgrid:board", "labgrid://lab:1/",
                                 "labgrid://lab:1/a/b", "labgrid://board?x=1",
                                 "labgrid://board#x", "ssh://board"])
def test_bad_place_addresses_say_the_two_forms(url: str) -> None:
    with pytest.raises(HarnessError, match=r"use labgrid://PLACE \(coordinator from "
                                           r"LG_COORDINATOR\) or labgrid://HOST:PORT/PLACE"):
        validate_target(url) if url.startswith("labgrid://") else PlaceAddress.parse(url)


def test_unknown_targets_name_all_three_kinds() -> None:
    with pytest.raises(HarnessError, match="use qemu, ssh://user@host\\[:port\\] or "
                                           "labgrid://PLACE"):
        validate_target("lab://board-1")
    assert validate_target("labgrid://board-1") == "labgrid://board-1"


def test_naming_a_labgrid_target_does_not_import_labgrid() -> None:
    """Checked before any kernel is built, on hosts without the extra too."""
    done = subprocess.run([sys.executable, "-c", (
        "import sys\n"
        "from harness.check.target import validate_target\n"
        "validate_target('labgrid://board-1')\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in "
        "('labgrid', 'grpc')))\n")], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_missing_labgrid_is_one_line_saying_what_to_install(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "labgrid", None)  # as if not installed
    with pytest.raises(HarnessError) as raised:
        open_board(PlaceAddress.parse("labgrid://board-1"))
    assert str(raised.value) == ("a labgrid:// target needs labgrid: pip install "
                                 "'harness[labgrid]' (labgrid >= 24, with its gRPC coordinator)")
    kernel = kernel_with_config(tmp_path, "CONFIG_MIGRATION=y\n")
    with pytest.raises(HarnessError, match=r"needs labgrid: pip install 'harness\[labgrid\]'"), \
            open_target(kernel, TargetOptions(target="labgrid://board-1")):
        pass


def test_a_free_place_is_acquired_and_our_own_is_used_as_it_is() -> None:
    assert must_acquire("board-1", None, (), "ci/runner") is True
    assert must_acquire("board-1", "ci/runner", (), "ci/runner") is False
    assert must_acquire("board-1", "desk/alice", ("ci/runner",), "ci/runner") is False


def test_a_place_someone_else_holds_is_refused_naming_them() -> None:
    with pytest.raises(HarnessError) as raised:
        must_acquire("board-1", "desk/alice", ("desk/bob",), "ci/runner")
    assert str(raised.value) == (
        "labgrid place board-1 is acquired by desk/alice: wait until it is released, or ask "
        "them to run `labgrid-client -p board-1 allow ci/runner`")


def test_a_board_that_does_not_answer_gives_ssh_s_last_words() -> None:
    attempt = ExecutionError("Failed to connect to 10.0.0.5 with ssh ...: return code 255",
                             stdout=[b"ssh: connect to host 10.0.0.5 port 22: No route to host\r",
                                     b""])
    timeout = Exception("Timeout while waiting for ssh connection")
    timeout.__cause__ = attempt
    assert str(unreachable("rpi4", "root@10.0.0.5:22", 30, timeout)) == (
        "labgrid place rpi4: its board at root@10.0.0.5:22 did not answer SSH within 30 s "
        "(ssh: connect to host 10.0.0.5 port 22: No route to host): is it powered and booted?")
    assert "(Timeout while waiting" in str(unreachable("rpi4", "x", 30, Exception(
        "Timeout while waiting for ssh connection")))


def test_a_coordinator_that_is_not_there_is_one_line_with_the_reason(
        capfd: pytest.CaptureFixture[str]) -> None:
    """Refused at once (a bound port nobody listens on), labgrid's own log line folded in."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with pytest.raises(HarnessError) as raised, \
                open_board(PlaceAddress.parse(f"labgrid://127.0.0.1:{port}/board-1")):
            pass
    assert str(raised.value).startswith(f"cannot reach the labgrid coordinator at "
                                        f"127.0.0.1:{port} (coordinator is unavailable: ")
    assert "Connection refused): is labgrid-coordinator running there?" in str(raised.value)
    assert capfd.readouterr().err == ""


def test_labgrid_errors_lose_their_prefix() -> None:
    assert said(UserError("place pattern x matches nothing")) == "place pattern x matches nothing"


MARK = f"echo {STARTED}; "


@dataclass(frozen=True)
class NeverRan:
    """ssh failing before the board ran the command (its only output line)."""

    said: str = "Host key verification failed."


class FakeDriver:
    """CommandProtocol and FileTransferProtocol as SSHDriver answers them: an answer
    is a result or an error, or a list of them given one per call (the last one stays)."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = {BOOT_ID: (["b00t"], [], 0), **answers}
        self.copies: list[tuple[str, str, str]] = []
        self.ran: list[str] = []

    def _answer(self, key: str) -> object:
        answer = self.answers.get(key)
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def run(self, command: str, timeout: float, decodeerrors: str = "strict") -> object:
        """A marked command's answer gets the board shell's marker line first,
        unless it is ssh failing to start it (NeverRan)."""
        marked = command.startswith(MARK)
        command = command.removeprefix(MARK)
        self.ran.append(command)
        answer = self._answer(command)
        if isinstance(answer, NeverRan):
            return [answer.said], [], SSH_FAILED
        if marked and isinstance(answer, tuple):
            return [STARTED, *answer[0]], *answer[1:]
        return answer

    def put(self, filename: str, remotepath: str) -> None:
        """Copies, unless ``answers`` holds an error for ``remotepath``."""
        self.copies.append(("put", filename, remotepath))
        self._answer(remotepath)

    def get(self, filename: str, destination: str) -> None:
        self.copies.append(("get", filename, destination))


def guest_of(driver: FakeDriver, closed: list[bool] | None = None,
             reopened: list[bool] | None = None) -> LabgridGuest:
    def reopen() -> str:
        (reopened if reopened is not None else []).append(True)
        return "ssh: Connection to h closed by remote host."

    return LabgridGuest(driver, driver, "labgrid place b (root@h:22)",  # type: ignore[arg-type]
                        close=lambda: (closed if closed is not None else []).append(True),
                        reopen=reopen)


def test_commands_give_merged_output_and_status() -> None:
    guest = guest_of(FakeDriver({"cat /proc/x": (["a", "b"], [], 0), "false": ([], [], 1)}))
    result = guest.run("cat /proc/x")
    assert (result.stdout, result.exit_status, result.ok) == ("a\nb\n", 0, True)
    assert guest.run("false").exit_status == 1


def test_a_command_past_its_timeout_is_a_guest_timeout() -> None:
    guest = guest_of(FakeDriver({"sleep 99": subprocess.TimeoutExpired("ssh", 5)}))
    with pytest.raises(GuestTimeout, match="'sleep 99' did not finish within 5 s on labgrid "
                                           r"place b \(root@h:22\)"):
        guest.run("sleep 99", timeout=5)


def test_a_lost_connection_is_a_guest_error_but_a_command_s_255_is_its_status() -> None:
    dead = guest_of(FakeDriver({"reboot -f": ([], [], 255), "true": ExecutionError(
        KEEPALIVE_GONE), BOOT_ID: [(["b00t"], [], 0), (["new boot"], [], 0)]}))
    with pytest.raises(GuestError, match="connection to labgrid place b .* was lost .* and "
                                         "the board has rebooted since"):
        dead.run("reboot -f")
    alive = guest_of(FakeDriver({"exit 255": ([], [], 255), "true": ([], [], 0)}))
    assert alive.run("exit 255").exit_status == 255
    with pytest.raises(GuestError, match="cannot run 'x' on labgrid place b .*: broken pipe"):
        guest_of(FakeDriver({"x": ExecutionError("broken pipe")})).run("x")
    with pytest.raises(GuestError, match="cannot run 'x' on labgrid place b .*: Permission"):
        guest_of(FakeDriver({"x": NeverRan("Permission denied"), "true": ([], [], 0)})).run("x")


def test_a_dropped_connection_is_reopened_and_the_step_run_on_the_same_boot(
        capsys: pytest.CaptureFixture[str]) -> None:
    """labgrid refuses before running anything: the step runs once, on the new connection."""
    driver = FakeDriver({"dmesg": [ExecutionError(KEEPALIVE_GONE), (["[0.1] hi"], [], 0)],
                         "/tmp/m.ko": [ExecutionError(KEEPALIVE_GONE), None]})
    reopened: list[bool] = []
    guest = guest_of(driver, reopened=reopened)
    assert guest.run("dmesg").stdout == "[0.1] hi\n"
    assert reopened == [True] and driver.ran == [BOOT_ID, "dmesg", BOOT_ID, "dmesg"]
    assert ("labgrid place b (root@h:22) was lost (ssh: Connection to h closed by remote "
            "host.); reconnected to the same boot") in capsys.readouterr().err
    guest.put(Path("m.ko"), "/tmp/m.ko")
    assert reopened == [True, True] and len(driver.copies) == 2


def test_a_command_ssh_could_not_start_for_a_dropped_connection_runs_once_more() -> None:
    """The control connection went between labgrid's check and the command: ssh tried
    on its own and failed; the board never saw the command."""
    driver = FakeDriver({"insmod m.ko": [NeverRan(), ([], [], 0)],
                         "true": ExecutionError(KEEPALIVE_GONE)})
    reopened: list[bool] = []
    assert guest_of(driver, reopened=reopened).run("insmod m.ko").ok
    assert reopened == [True] and driver.ran.count("insmod m.ko") == 2


def test_a_board_that_rebooted_behind_a_dropped_connection_fails_the_step() -> None:
    driver = FakeDriver({"dmesg": ExecutionError(KEEPALIVE_GONE),
                         BOOT_ID: [(["b00t"], [], 0), (["another"], [], 0)]})
    with pytest.raises(GuestError, match=r"lost \(ssh: Connection to h closed by remote "
                                         r"host.\) and the board has rebooted since"):
        guest_of(driver).run("dmesg")
    assert driver.ran.count("dmesg") == 1


def test_a_command_whose_connection_dropped_under_it_is_not_run_again() -> None:
    """Its 255 may be the lost connection: the probe reconnects, and the command fails."""
    driver = FakeDriver({"insmod m.ko": ([], [], 255),
                         "true": [ExecutionError(KEEPALIVE_GONE), ([], [], 0)]})
    reopened: list[bool] = []
    with pytest.raises(GuestError, match=r"lost while 'insmod m.ko' ran \(ssh: Connection to "
                                         r"h closed by remote host.\)"):
        guest_of(driver, reopened=reopened).run("insmod m.ko")
    assert reopened == [True] and driver.ran.count("insmod m.ko") == 1


def interrupted_start() -> ExecutionError:
    """What SSHDriver raises when ^C lands while it starts ssh (its bare ``except:``)."""
    try:
        try:
            raise KeyboardInterrupt
        except BaseException:
            raise ExecutionError("error executing command: ['ssh', ...]") from None
    except ExecutionError as error:
        return error


def test_a_ctrl_c_that_labgrid_turned_into_an_error_is_a_ctrl_c_again() -> None:
    with pytest.raises(KeyboardInterrupt):
        guest_of(FakeDriver({"dmesg": interrupted_start()})).run("dmesg")
    with pytest.raises(KeyboardInterrupt):
        guest_of(FakeDriver({"/tmp/m.ko": interrupted_start()})).put("m.ko", "/tmp/m.ko")


def test_files_go_through_the_file_transfer_driver(tmp_path: Path) -> None:
    driver = FakeDriver({"/ro/m.ko": ExecutionError("error executing command: ['scp', ...]")})
    closed: list[bool] = []
    guest = guest_of(driver, closed)
    guest.put(tmp_path / "m.ko", "/tmp/m.ko")
    guest.get("/proc/vmstat", tmp_path / "vmstat")
    assert driver.copies == [("put", str(tmp_path / "m.ko"), "/tmp/m.ko"),
                             ("get", "/proc/vmstat", str(tmp_path / "vmstat"))]
    with pytest.raises(GuestError, match="copying .* to /ro/m.ko on labgrid place b .* failed"):
        guest.put(tmp_path / "m.ko", "/ro/m.ko")
    guest.close()
    assert closed == [True]
