"""SSH transport: addresses, keys, connection errors and waiting (no SSH server needed)."""

import socket
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
