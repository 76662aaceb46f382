"""SSH transport: addresses, keys and connection errors (no SSH server needed)."""

import socket
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.guest import GuestError
from harness.guest.ssh import SshTarget, connect_ssh


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
