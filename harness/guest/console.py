"""Guest transport over a console stream (a virtio console, a serial line), via pexpect.

Console-driven tools are notorious for two failures: exit statuses lost and
kernel messages mixed into a command's output. Both are designed out here:

* The stream carries no kernel messages at all: the guest sends those to
  another console (the UART), which the health watch reads separately.
* The interactive shell on the stream is replaced by a small loop that reads
  one line and evaluates it, with echo and ``\\n``->``\\r\\n`` translation off,
  so the bytes between two markers are exactly what the command printed.
* Each command travels base64-encoded and runs as ``sh -c`` (what sshd
  does too), framed by markers with a random id that the encoded command
  cannot contain; the end marker carries ``$?``.

Files travel base64-encoded in 76-character lines, because a terminal in
canonical mode limits a line to 4095 bytes and interprets control bytes.
This module knows nothing about QEMU: any stream reaching a Linux shell works.
"""

import base64
import re
import secrets
import shlex
import socket
import time
from pathlib import Path
from typing import Protocol

import pexpect
import pexpect.fdpexpect

from harness.guest import CommandResult, GuestError, GuestTimeout

# Longest encoded command sent as a single line; longer ones are staged in a file.
_MAX_INLINE = 3000
_REPL = 'set -o pipefail; while IFS= read -r line; do eval "$line"; done'
_SETUP = f"stty -echo -onlcr 2>/dev/null; exec sh -c '{_REPL}'\n"


def _marker(kind: str, tag: str) -> tuple[str, bytes]:
    """The shell text that prints a marker, and the bytes it prints.

    The two halves are quoted apart so that the marker never appears in the
    command line itself, should the terminal echo it after all.
    """
    return f'"__HX""_{kind}_{tag}"', f"__HX_{kind}_{tag}".encode()


class Stream(Protocol):
    """A connected byte stream: a socket, or an adapter over a pty or serial device."""

    def fileno(self) -> int: ...

    def sendall(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class ConsoleGuest:
    """A Guest over a connected byte stream to a shell (socket or file descriptor)."""

    def __init__(self, stream: Stream, name: str = "console",
                 connect_timeout: float = 30.0) -> None:
        self._stream = stream
        self.name = name
        self._child = pexpect.fdpexpect.fdspawn(stream.fileno(), timeout=connect_timeout,
                                                maxread=65536)
        self._broken: str | None = None
        self._synchronise(connect_timeout)

    @classmethod
    def connect_unix(cls, path: Path, connect_timeout: float = 30.0) -> "ConsoleGuest":
        """Connect to a console exposed as a unix socket (QEMU's ``socket`` chardev)."""
        stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            stream.connect(str(path))
        except OSError as error:
            stream.close()
            raise GuestError(f"cannot connect to the guest console at {path}: {error}") from None
        try:
            return cls(stream, name=f"console {path.name}", connect_timeout=connect_timeout)
        except BaseException:
            stream.close()
            raise

    # -- protocol -----------------------------------------------------------------

    def _synchronise(self, timeout: float) -> None:
        """Turn whatever shell is on the stream into the quiet evaluation loop.

        The shell may not be reading yet (input sent to a console nobody has
        opened is lost), so the request is repeated with a growing pause;
        every attempt asks for the same marker, so a late answer still counts.
        """
        tag = secrets.token_hex(6)
        shell_text, expected = _marker("SYNC", tag)
        deadline = time.monotonic() + timeout
        pause = 0.2
        while True:
            self._send(_SETUP.encode() + f"echo {shell_text}\n".encode())
            try:
                self._child.expect_exact(expected + b"\n", timeout=pause)
                return
            except pexpect.TIMEOUT:
                if time.monotonic() >= deadline:
                    break
                pause = min(pause * 2, 2.0, max(0.05, deadline - time.monotonic()))
            except pexpect.EOF:
                raise self._closed("connecting") from None
        self._broken = f"no shell answered on the {self.name} within {timeout:.0f} s"
        raise GuestError(self._broken)

    def _send(self, data: bytes) -> None:
        try:
            self._stream.sendall(data)
        except OSError as error:
            raise GuestError(f"the {self.name} is gone ({error}): did the guest die?") from None

    def _closed(self, doing: str) -> GuestError:
        self._broken = f"the {self.name} closed while {doing}"
        return GuestError(f"{self._broken}: the guest crashed or powered off")

    def _check_usable(self) -> None:
        if self._broken:
            raise GuestError(f"{self._broken}; the transport cannot be used any more")

    def _framed(self, body: str, timeout: float, what: str) -> tuple[bytes, int]:
        """Run shell text ``body`` framed by markers; return (raw output, exit status)."""
        self._check_usable()
        tag = secrets.token_hex(8)
        start_text, start = _marker("S", tag)
        end_text, end = _marker("E", tag)
        self._send(f"echo {start_text}; {body}; echo {end_text}_$?\n".encode())
        end_pattern = re.compile(re.escape(end) + rb"_(\d+)\r?\n")
        try:
            self._child.expect_exact(start, timeout=timeout)
            self._child.expect(end_pattern, timeout=timeout, searchwindowsize=256)
        except pexpect.TIMEOUT:
            self._interrupt()
            raise GuestTimeout(
                f"{what} did not finish within {timeout:g} s on the {self.name} (interrupted)"
            ) from None
        except pexpect.EOF:
            raise self._closed(f"running {what}") from None
        output = bytes(self._child.before)
        status = int(self._child.match.group(1))
        # The start marker's own newline; \r\n means the terminal still translates.
        if output.startswith(b"\r\n"):
            output = output[2:].replace(b"\r\n", b"\n")
        elif output.startswith(b"\n"):
            output = output[1:]
        return output, status

    def _interrupt(self) -> None:
        """^C the timed-out command (it ends the loop too) and set the console up again."""
        try:
            self._send(b"\x03")
            self._synchronise(timeout=10.0)
        except GuestError:
            self._broken = self._broken or f"the {self.name} did not recover after a timeout"

    # -- Guest --------------------------------------------------------------------

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        """Run ``command`` with ``sh -c``; stdout and stderr merged, exit status exact."""
        encoded = base64.b64encode(command.encode()).decode()
        if len(encoded) <= _MAX_INLINE:
            source = f"echo {encoded} | base64 -d"
        else:
            staged = f"/tmp/.harness-command-{secrets.token_hex(4)}"
            for offset in range(0, len(encoded), _MAX_INLINE):
                self._send(f"printf %s {encoded[offset:offset + _MAX_INLINE]} >> {staged}\n"
                           .encode())
            source = f"base64 -d {staged}; rm -f {staged}"
        # "| cat": a terminal gets one write per line from most programs, and
        # each write to a virtio console is a slow round trip to the host;
        # through a pipe, cat forwards kilobytes per write (pipefail keeps $?).
        body = f'sh -c "$({source})" </dev/null 2>&1 | cat'
        output, status = self._framed(body, timeout, repr(command))
        return CommandResult(command=command, stdout=output.decode(errors="replace"),
                             exit_status=status)

    def put(self, local: Path, remote: str, timeout: float = 300.0) -> None:
        """Copy ``local`` to ``remote`` as base64 lines decoded by the guest."""
        _check_remote(remote)
        payload = base64.encodebytes(local.read_bytes())
        tag = secrets.token_hex(8)
        start_text, start = _marker("S", tag)
        end_text, end = _marker("E", tag)
        self._check_usable()
        self._send(f"echo {start_text}; head -c {len(payload)} | base64 -d > "
                   f"{shlex.quote(remote)}; echo {end_text}_$?\n".encode())
        try:
            self._child.expect_exact(start, timeout=timeout)
            self._send(payload)
            self._child.expect(re.compile(re.escape(end) + rb"_(\d+)\r?\n"), timeout=timeout,
                               searchwindowsize=256)
        except pexpect.TIMEOUT:
            self._interrupt()
            raise GuestTimeout(f"copying {local} to {remote} did not finish within "
                               f"{timeout:g} s (interrupted)") from None
        except pexpect.EOF:
            raise self._closed(f"copying {local} to {remote}") from None
        status = int(self._child.match.group(1))
        if status != 0:
            message = bytes(self._child.before).decode(errors="replace").strip()
            raise GuestError(f"cannot write {remote} on the guest: {message or status}")

    def get(self, remote: str, local: Path, timeout: float = 300.0) -> None:
        """Copy ``remote`` to ``local`` as base64 printed by the guest."""
        _check_remote(remote)
        output, status = self._framed(f"base64 {shlex.quote(remote)} 2>&1 | cat", timeout,
                                      f"reading {remote}")
        if status != 0:
            raise GuestError(f"cannot read {remote} on the guest: "
                             f"{output.decode(errors='replace').strip()}")
        try:
            data = base64.b64decode(output, validate=False)
        except ValueError as error:
            raise GuestError(f"{remote} arrived damaged over the {self.name}: {error}") from None
        local.write_bytes(data)

    def close(self) -> None:
        """Close the stream (the guest keeps running)."""
        self._broken = self._broken or f"the {self.name} was closed"
        self._stream.close()

    def fileno(self) -> int:
        """The stream's descriptor, for an interactive terminal bridge."""
        return self._stream.fileno()


def _check_remote(remote: str) -> None:
    if not remote or "\n" in remote:
        raise GuestError(f"invalid guest path {remote!r}")
