"""SSH transport: addresses, keys, connection errors, file copies, waiting (no server)."""

import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.guest import GuestError, KernelProblem
from harness.guest.ssh import SshGuest, SshTarget, connect_ssh


@pytest.mark.parametrize("url,expected", [
    ("ssh://pi@board.local:2200", SshTarget("pi", "board.local", 2200)),
    ("ssh://10.0.0.5", SshTarget("root", "10.0.0.5", 22)),
    ("ssh://root@127.0.0.1:40022", SshTarget("root", "127.0.0.1", 40022)),
])
def test_target_parsing(url: str, expected: SshTarget) -> None:
    assert SshTarget.parse(url) == expected


@pytest.mark.parametrize("url", ["board.local", "http://board", "ssh://", "ssh://h:99999"])
def test_bad_addresses(url: str) -> None:
    with pytest.raises(HarnessError):
        SshTarget.parse(url)


HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIO4u/l2uPlNmmmiU0IaIMbNG8QmlOIE9Np2WXreadHl"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_refused_connection_is_a_clear_error() -> None:
    with pytest.raises(GuestError, match="cannot connect to ssh://root@127.0.0.1:.*refused"):
        connect_ssh(f"ssh://root@127.0.0.1:{_closed_port()}", timeout=2, host_key=HOST_KEY)


def test_unreadable_key_file(tmp_path: Path) -> None:
    bad = tmp_path / "id_ed25519"
    bad.write_text("not a key")
    with pytest.raises(HarnessError, match="cannot load SSH key"):
        connect_ssh(f"ssh://root@127.0.0.1:{_closed_port()}", key=bad, timeout=1)


def test_invalid_pinned_host_key() -> None:
    with pytest.raises(HarnessError, match="invalid host key"):
        connect_ssh("ssh://root@127.0.0.1:22", host_key="ssh-ed25519 !!!", timeout=1)


# ----------------------------------------------------------------------------- put and get

class LocalChannel:
    """A paramiko channel whose command runs in a local ``sh -c`` once stdin is closed."""

    def __init__(self) -> None:
        self.status_event = threading.Event()
        self._combine = False
        self._command = ""
        self._stdin = bytearray()
        self._stdout = b""
        self._stderr = b""
        self._status = -1

    def set_combine_stderr(self, combine: bool) -> None:
        self._combine = combine

    def exec_command(self, command: str) -> None:
        self._command = command

    def sendall(self, data: bytes) -> None:
        self._stdin += data

    def shutdown_write(self) -> None:
        done = subprocess.run(["sh", "-c", self._command], input=bytes(self._stdin),
                              stdout=subprocess.PIPE, check=False,
                              stderr=subprocess.STDOUT if self._combine else subprocess.PIPE)
        self._stdout, self._stderr = done.stdout, done.stderr or b""
        self._status = done.returncode
        self.status_event.set()

    def settimeout(self, timeout: float) -> None:
        pass

    def recv(self, size: int) -> bytes:
        data, self._stdout = self._stdout[:size], self._stdout[size:]
        return data

    def recv_stderr(self, size: int) -> bytes:
        return self._stderr[:size]

    def exit_status_ready(self) -> bool:
        return self.status_event.is_set()

    def recv_exit_status(self) -> int:
        return self._status

    def close(self) -> None:
        pass


class LocalTransport:
    """The transport of a connection to this machine: every session is a LocalChannel."""

    def set_keepalive(self, interval: int) -> None:
        pass

    def is_active(self) -> bool:
        return True

    def open_session(self, timeout: float) -> LocalChannel:
        return LocalChannel()


class LocalClient:
    def get_transport(self) -> LocalTransport:
        return LocalTransport()

    def close(self) -> None:
        pass


@pytest.fixture
def local_guest() -> SshGuest:
    """An SshGuest whose commands run on this machine (no SSH server needed)."""
    return SshGuest(LocalClient(), SshTarget("root", "local", 22))  # type: ignore[arg-type]


def test_file_round_trip_with_str_and_path_arguments(local_guest: SshGuest,
                                                      tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    (tmp_path / "in.bin").write_bytes(data)
    local_guest.put(str(tmp_path / "in.bin"), str(tmp_path / "remote.bin"))
    local_guest.get(str(tmp_path / "remote.bin"), str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == data
    local_guest.put(tmp_path / "out.bin", str(tmp_path / "again.bin"))
    local_guest.get(str(tmp_path / "again.bin"), tmp_path / "again.out")
    assert (tmp_path / "again.out").read_bytes() == data


def test_get_of_a_missing_file_says_why(local_guest: SshGuest, tmp_path: Path) -> None:
    with pytest.raises(GuestError, match="cannot read /nonexistent on ssh://root@local:22: .*"
                                         "No such file"):
        local_guest.get("/nonexistent", str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_put_into_a_missing_directory_says_why(local_guest: SshGuest, tmp_path: Path) -> None:
    (tmp_path / "in").write_bytes(b"x")
    with pytest.raises(GuestError, match="cannot write /nonexistent/dir/f"):
        local_guest.put(str(tmp_path / "in"), "/nonexistent/dir/f")


# ----------------------------------------------------------------------------- waiting

class SilentChannel:
    """An SSH channel whose command never prints, never exits (a wedged guest)."""

    def __init__(self) -> None:
        self.status_event = threading.Event()
        self.closed = False

    def settimeout(self, seconds: float) -> None:
        self.seconds = seconds

    def recv(self, size: int) -> bytes:
        time.sleep(self.seconds)
        raise TimeoutError

    def exit_status_ready(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


class Connection:
    """Just enough of paramiko's client and transport for SshGuest to wait on a channel."""

    def get_transport(self) -> "Connection":
        return self

    def set_keepalive(self, seconds: int) -> None:
        pass

    def is_active(self) -> bool:
        return True


def test_a_check_ends_a_waiting_command_at_once() -> None:
    guest = SshGuest(Connection(), SshTarget("root", "board", 22))  # type: ignore[arg-type]
    calls: list[float] = []

    def kernel_reports_on_second_check() -> None:
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise KernelProblem("Oops", "[ 1.0] general protection fault: 0000 [#1] SMP")

    guest.check_while_waiting(kernel_reports_on_second_check)
    channel = SilentChannel()
    started = time.monotonic()
    with pytest.raises(KernelProblem):
        guest._finish(channel, "'sleep 600'", time.monotonic() + 600, 600,  # type: ignore[arg-type]
                      bytearray())
    assert time.monotonic() - started < 2.5 and channel.closed
