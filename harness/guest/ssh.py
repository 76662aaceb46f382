"""Guest transport over SSH (paramiko): a QEMU guest or any existing machine.

SSH reports a command's exit status in the protocol, so no markers are needed
here. Files are streamed through ``cat`` on an exec channel rather than SFTP
because a board's server may have no SFTP subsystem (dropbear without
sftp-server); ``cat`` works on any board.

Host keys are always checked: a QEMU guest's key is made for the run and
passed in; for a board the user's ``~/.ssh/known_hosts`` decides, and an
unknown key is refused with a hint rather than trusted on first use.
"""

import base64
import logging
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import paramiko

from harness.errors import HarnessError
from harness.guest import (
    WAIT_CHECK_SECONDS,
    CommandResult,
    GuestError,
    GuestTimeout,
    LocalPath,
)

_CHUNK = 65536

# paramiko logs failures of its transport thread (e.g. a connection reset
# while a guest's SSH server starts) with tracebacks; without a handler of
# its own they reach stderr through logging's last resort. The errors we act
# on are raised to the caller instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class SshTarget:
    """Where to connect: parsed from ``ssh://user@host:port``."""

    user: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> "SshTarget":
        """Parse ``ssh://[user@]host[:port]`` (user defaults to root, port to 22)."""
        parts = urlsplit(url)
        if parts.scheme != "ssh" or not parts.hostname:
            raise HarnessError(f"{url!r} is not an ssh://[user@]host[:port] address")
        try:
            port = parts.port or 22
        except ValueError:
            raise HarnessError(f"{url!r} has an invalid port") from None
        return cls(user=parts.username or "root", host=parts.hostname, port=port)

    def __str__(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"


def _load_key(path: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path)
    except (OSError, ValueError, paramiko.SSHException) as error:
        raise HarnessError(f"cannot load SSH key {path}: {error}") from None


def _host_key_entry(target: SshTarget) -> str:
    return target.host if target.port == 22 else f"[{target.host}]:{target.port}"


class SshGuest:
    """A Guest over one SSH connection."""

    def __init__(self, client: paramiko.SSHClient, target: SshTarget) -> None:
        self._client = client
        self.target = target
        transport = client.get_transport()
        if transport is None:
            raise GuestError(f"SSH connection to {target} is not open")
        transport.set_keepalive(5)
        self._transport = transport
        self._check: Callable[[], None] | None = None

    def check_while_waiting(self, check: Callable[[], None]) -> None:
        """Call ``check`` about every WAIT_CHECK_SECONDS while a command runs; what it
        raises ends the step at once (its channel is closed; the connection stays)."""
        self._check = check

    def _session(self, what: str) -> paramiko.Channel:
        if not self._transport.is_active():
            raise GuestError(f"the SSH connection to {self.target} is closed: did the guest die?")
        try:
            return self._transport.open_session(timeout=30)
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise GuestError(f"cannot start {what} over SSH on {self.target}: {error}") from None

    def _finish(self, channel: paramiko.Channel, what: str, deadline: float,
                timeout: float, sink: bytearray) -> int:
        """Drain ``channel``'s stdout into ``sink`` until the command exits; return its status.

        The channel stays open so the caller can still read stderr.
        """
        channel.settimeout(0.2)
        checked = time.monotonic()
        while True:
            if self._check is not None and time.monotonic() - checked >= WAIT_CHECK_SECONDS:
                checked = time.monotonic()
                try:
                    self._check()
                except BaseException:
                    channel.close()
                    raise
            try:
                data: bytes | None = channel.recv(_CHUNK)
            except TimeoutError:
                data = None
            except (OSError, EOFError) as error:
                raise GuestError(f"{what} lost its SSH connection: {error}") from None
            if data:
                sink += data
                continue
            if data == b"":
                if channel.exit_status_ready() or not self._transport.is_active():
                    break
                channel.status_event.wait(0.1)
            if time.monotonic() > deadline:
                channel.close()
                raise GuestTimeout(f"{what} did not finish within {timeout:g} s on {self.target}")
        status = channel.recv_exit_status() if channel.status_event.is_set() else -1
        if status < 0:
            channel.close()
            raise GuestError(f"the SSH connection to {self.target} closed while {what} ran, "
                             "without an exit status: the guest died or rebooted")
        return status

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        """Run ``command`` through the guest's shell; stdout and stderr merged."""
        deadline = time.monotonic() + timeout
        channel = self._session(repr(command))
        channel.set_combine_stderr(True)
        try:
            channel.exec_command(command)
            channel.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise GuestError(f"cannot run {command!r} on {self.target}: {error}") from None
        output = bytearray()
        status = self._finish(channel, repr(command), deadline, timeout, output)
        channel.close()
        return CommandResult(command=command, stdout=output.decode(errors="replace"),
                             exit_status=status)

    def put(self, local: LocalPath, remote: str, timeout: float = 300.0) -> None:
        """Stream ``local`` into ``cat > remote`` on the guest."""
        local = Path(local)
        deadline = time.monotonic() + timeout
        what = f"copying {local} to {remote}"
        channel = self._session(what)
        channel.set_combine_stderr(True)
        try:
            channel.exec_command(f"cat > {shlex.quote(remote)}")
            with local.open("rb") as source:
                while chunk := source.read(_CHUNK):
                    channel.sendall(chunk)
            channel.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise GuestError(f"{what} failed: {error}") from None
        messages = bytearray()
        status = self._finish(channel, what, deadline, timeout, messages)
        channel.close()
        if status != 0:
            raise GuestError(f"cannot write {remote} on {self.target}: "
                             f"{messages.decode(errors='replace').strip()}")

    def get(self, remote: str, local: LocalPath, timeout: float = 300.0) -> None:
        """Stream ``cat remote`` from the guest into ``local``."""
        local = Path(local)
        deadline = time.monotonic() + timeout
        what = f"reading {remote}"
        channel = self._session(what)
        try:
            channel.exec_command(f"cat {shlex.quote(remote)}")
            channel.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise GuestError(f"{what} failed: {error}") from None
        data = bytearray()
        status = self._finish(channel, what, deadline, timeout, data)
        message = channel.recv_stderr(_CHUNK).decode(errors="replace").strip() if status else ""
        channel.close()
        if status != 0:
            raise GuestError(f"cannot read {remote} on {self.target}: {message or status}")
        local.write_bytes(bytes(data))

    def open_shell(self) -> paramiko.Channel:
        """An interactive shell channel with a terminal, for a human at the keyboard."""
        channel = self._session("a shell")
        size = _terminal_size()
        channel.get_pty(term="xterm", width=size[0], height=size[1])
        channel.invoke_shell()
        return channel

    def close(self) -> None:
        """Close the SSH connection (the machine keeps running)."""
        self._client.close()


def _terminal_size() -> tuple[int, int]:
    size = shutil.get_terminal_size((80, 24))
    return size.columns, size.lines


def _reason(error: Exception) -> str:
    """Why a connection failed, in words (paramiko hides a refusal in an error map)."""
    causes = list(getattr(error, "errors", {}).values()) or [error]
    if all(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return "connection refused (is the SSH server running?)"
    return str(error)


def connect_ssh(
    url: str,
    key: Path | None = None,
    host_key: str | None = None,
    known_hosts: Path | None = None,
    timeout: float = 30.0,
    retry_until_ready: bool = False,
) -> SshGuest:
    """Connect to ``ssh://user@host:port`` and return a Guest.

    ``key``: a private key file; without one, the SSH agent and ~/.ssh/id_*
    are tried (as ``ssh`` would). ``host_key``: the exact public key
    (``ssh-ed25519 AAAA...``) the machine must present; without it the key
    must be in ``known_hosts`` (default ~/.ssh/known_hosts).
    ``retry_until_ready`` keeps retrying a refused or reset connection until
    ``timeout`` (a guest whose SSH server is still starting).
    """
    target = SshTarget.parse(url)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    entry = _host_key_entry(target)
    if host_key is not None:
        kind, _, blob = host_key.strip().partition(" ")
        try:
            client.get_host_keys().add(entry, kind, paramiko.PKey.from_type_string(
                kind, base64.b64decode(blob.split()[0])))
        except (ValueError, paramiko.SSHException, IndexError) as error:
            raise HarnessError(f"invalid host key {host_key!r}: {error}") from None
    else:
        path = known_hosts or Path.home() / ".ssh" / "known_hosts"
        if path.is_file():
            client.load_host_keys(str(path))
    pkey = _load_key(key) if key is not None else None
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.connect(
                target.host, port=target.port, username=target.user, pkey=pkey,
                allow_agent=key is None, look_for_keys=key is None,
                timeout=min(10.0, timeout), banner_timeout=timeout, auth_timeout=timeout,
            )
            return SshGuest(client, target)
        except paramiko.BadHostKeyException as error:
            client.close()
            raise GuestError(f"{target} presented host key {error.key.get_base64()[:24]}... "
                             "which is not the expected one: refusing to connect") from None
        except paramiko.SSHException as error:
            if "not found in known_hosts" in str(error):
                client.close()
                raise GuestError(f"{target}'s host key is unknown: add it to "
                                 f"{known_hosts or '~/.ssh/known_hosts'} (e.g. connect once "
                                 "with ssh) or pass the expected host key") from None
            if isinstance(error, paramiko.AuthenticationException):
                client.close()
                raise GuestError(f"{target} refused our key: {error}") from None
            last: Exception = error
        except (OSError, EOFError) as error:
            last = error
        if not retry_until_ready or time.monotonic() > deadline:
            client.close()
            raise GuestError(f"cannot connect to {target}: {_reason(last)}") from None
        time.sleep(0.1)

