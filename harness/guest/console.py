"""Guest transport over a console stream (a virtio console, a serial line), via pexpect.

Console-driven tools are notorious for two failures: exit statuses lost and
kernel messages mixed into a command's output. Both are designed out here:

* The stream carries no kernel messages at all: the guest sends those to
  another console (the UART), which the health watch reads separately.
* The interactive shell on the stream is replaced by a small loop that reads
  one line and evaluates it, with echo and ``\\n``->``\\r\\n`` translation off,
  so the bytes between two markers are exactly what the command printed.
* Each command travels as one line of printable ASCII (a ``$'...'`` string
  with every other byte escaped) and runs in a subshell, framed by markers
  with a random id that the encoded command cannot contain; the end marker
  carries ``$?`` and the number of bytes the command printed, so output lost
  on the way is an error, never a short result.
* A command costs the guest one process (the subshell) besides its own: the
  shell decodes the line, holds the output in a variable and writes marker,
  output and end marker at once. Under TCG every process costs milliseconds,
  and the helpers this replaced (base64 to decode, ``sh -c``, tee, wc, rm:
  eight processes) made each step of a check cost ~30 ms before it ran
  (issue 19). The price: the output is text, and a NUL byte a command prints
  is dropped by the shell (files travel base64-encoded, in get()).

Files travel base64-encoded, because a terminal interprets control bytes, in
lines of at most 4000 characters to the guest (in canonical mode a terminal
holds 4095 bytes a line; each line is a read and a wake-up in the guest, so
76-character lines cost a 64 KB module 1,100 of them) and in base64's own
76-character lines back.
This module knows nothing about QEMU: any stream reaching a Linux shell works.
"""

import base64
import contextlib
import fcntl
import os
import re
import secrets
import select
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pexpect
import pexpect.fdpexpect

from harness.guest import (
    WAIT_CHECK_SECONDS,
    CommandResult,
    GuestError,
    GuestTimeout,
    LocalPath,
)

# Longest encoded command sent as a single line; longer ones are staged in a
# variable, a line at a time (a terminal's canonical line holds 4095 bytes).
_MAX_INLINE = 3000
# Bytes that travel as themselves in a $'...' string; every other is escaped \xHH.
_PLAIN = frozenset(range(0x20, 0x7F)) - {ord("\\"), ord("'")}
# Most file bytes one get() command sends (base64 adds a third, plus newlines).
_MAX_CHUNK = 384 * 1024
_REPL = 'set -o pipefail; while IFS= read -r line; do eval "$line"; done'
# Longest base64 line put() sends (a canonical terminal line holds 4095 bytes).
_PUT_LINE = 4000
# How often _synchronise repeats its set-up line, and for how long before backing off.
_RESEND_SECONDS = 0.03
_FREQUENT_RESENDS_SECONDS = 5.0
# Longest wait for the shell to answer again after ^C (a timeout, an abandoned step).
_RECOVERY_SECONDS = 10.0


def _setup(marker_text: str) -> bytes:
    """The line that turns the shell on the stream into the evaluation loop, which
    first prints the marker (``marker_text`` is the shell text printing it).

    The marker is printed by the loop itself, not by a second line sent along: a
    line sent together with this one was lost in 2 of 3 boots here (the terminal
    settings changing under it), and each loss cost a 0.2 s retry.

    _synchronise repeats the line until an answer comes, so copies of it reach the
    loop it started; there ``_hx`` is set and a copy only prints the marker (a
    builtin), where setting up again (stty and a new shell, two processes) cost
    an x86_64 TCG guest ~50 ms, which every later step waited behind.
    """
    return (f"[ \"$_hx\" = 1 ] && echo {marker_text} || {{ stty -echo -onlcr 2>/dev/null; "
            f"exec sh -c '_hx=1; echo {marker_text}; {_REPL}'; }}\n").encode()


def _marker(kind: str, tag: str) -> tuple[str, bytes]:
    """The shell text that prints a marker, and the bytes it prints.

    The two halves are quoted apart so that the marker never appears in the
    command line itself, should the terminal echo it after all.
    """
    return f'"__HX""_{kind}_{tag}"', f"__HX_{kind}_{tag}".encode()


class Stream(Protocol):
    """A connected byte stream: FIFOs (PipeStream), a socket, or a pty or serial adapter."""

    def fileno(self) -> int: ...

    def sendall(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class PipeStream:
    """A console reached through two FIFOs: ``base``.in is written, ``base``.out is read.

    This is QEMU's ``pipe`` chardev. QEMU writes virtio *console* output
    without waiting and drops whatever does not fit (see QEMU's
    hw/char/virtio-console.c), so the buffer between QEMU and the host decides
    how far the host may fall behind. A FIFO's buffer can be raised to 1 MiB
    here (a socket's is QEMU's to set); ConsoleGuest keeps each command's
    output within it where it can (get() chunks) and detects any loss. A
    stalled guest cannot hang the host: writes give up after
    ``stall_seconds`` without progress.
    """

    def __init__(self, base: Path, stall_seconds: float = 60.0) -> None:
        self.stall_seconds = stall_seconds
        try:
            # The other end (QEMU) holds both FIFOs open, so neither open waits;
            # O_NONBLOCK only makes a missing peer an error instead of a hang.
            self._read = os.open(f"{base}.out", os.O_RDONLY | os.O_NONBLOCK)
        except OSError as error:
            raise GuestError(f"cannot open the guest console {base}.out: {error}") from None
        try:
            self._write = os.open(f"{base}.in", os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            os.close(self._read)
            raise GuestError(f"cannot open the guest console {base}.in: {error} "
                             "(is the VM running?)") from None
        os.set_blocking(self._read, True)
        self.buffer_bytes = _grow_pipe(self._read)

    def fileno(self) -> int:
        """The descriptor to read (and poll) the console from."""
        return self._read

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes the guest wrote; b"" once the VM is gone."""
        return os.read(self._read, size)

    def sendall(self, data: bytes) -> None:
        """Write all of ``data``, waiting while the guest has not read the previous bytes."""
        view = memoryview(data)
        while view:
            _, writable, _ = select.select([], [self._write], [], self.stall_seconds)
            if not writable:
                raise TimeoutError(f"the guest read nothing for {self.stall_seconds:g} s")
            view = view[os.write(self._write, view):]

    def close(self) -> None:
        """Close both FIFOs (the guest and QEMU keep running)."""
        for descriptor in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(descriptor)


def _grow_pipe(descriptor: int) -> int:
    """Make a FIFO's buffer as large as allowed (1 MiB by default); return its size.

    QEMU drops what does not fit while the host is not reading, so the buffer
    bounds how much output may arrive between two reads; get() sizes its
    chunks from it.
    """
    try:
        limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        fcntl.fcntl(descriptor, fcntl.F_SETPIPE_SZ, limit)
    except (OSError, ValueError):
        pass
    return int(fcntl.fcntl(descriptor, fcntl.F_GETPIPE_SZ))


class ConsoleGuest:
    """A Guest over a connected byte stream to a shell (socket or file descriptor)."""

    def __init__(self, stream: Stream, name: str = "console",
                 connect_timeout: float = 30.0) -> None:
        self._stream = stream
        self.name = name
        self._child = pexpect.fdpexpect.fdspawn(stream.fileno(), timeout=connect_timeout,
                                                maxread=65536)
        self._broken: str | None = None
        self._check: Callable[[], None] | None = None
        self._abandoned = False  # a step was given up while the guest still ran it
        self._synchronise(connect_timeout)

    @classmethod
    def connect_pipes(cls, base: Path, connect_timeout: float = 30.0) -> "ConsoleGuest":
        """Connect to a console exposed as the FIFO pair ``base``.in/``base``.out."""
        stream = PipeStream(base)
        try:
            return cls(stream, name=f"console {base.name}", connect_timeout=connect_timeout)
        except BaseException:
            stream.close()
            raise

    def check_while_waiting(self, check: Callable[[], None]) -> None:
        """Call ``check`` about every WAIT_CHECK_SECONDS while waiting for the guest; what
        it raises ends the step at once: the command gets ^C, and the console is set
        up again before the next step."""
        self._check = check

    # -- protocol -----------------------------------------------------------------

    def _synchronise(self, timeout: float) -> None:
        """Turn whatever shell is on the stream into the quiet evaluation loop.

        The shell may not be reading yet (input sent to a console nobody has
        opened is lost), so the request is repeated; every attempt asks for the
        same marker, so a late answer still counts, and a copy arriving after
        the first costs the guest an echo (_setup).

        The repeats are frequent for the first seconds because of what a guest
        with 2 vCPUs does with its first input after booting: on x86_64 (5.10,
        TCG, virtio console over PCI) the line sat unanswered until a later line
        was written, in 2 of 3 boots, for anything from 0.05 s to 3.5 s after the
        ready marker, and then both were answered at once; 1 vCPU and arm64 never
        showed it (cause not found). Repeating every 30 ms has the answer within
        30 ms of the guest taking input, where a pause doubling from 50 ms left up
        to the last pause (0.2 s and more) between the two; how long the guest
        takes before it answers stays as it was (bench medians of the connection:
        0.04 and 0.07 s).
        """
        tag = secrets.token_hex(6)
        shell_text, expected = _marker("SYNC", tag)
        started = time.monotonic()
        deadline = started + timeout
        pause = _RESEND_SECONDS
        while True:
            self._send(_setup(shell_text))
            try:
                self._child.expect_exact(expected + b"\n", timeout=pause)
                return
            except pexpect.TIMEOUT:
                now = time.monotonic()
                if now >= deadline:
                    break
                if now - started > _FREQUENT_RESENDS_SECONDS:  # a dead guest: less input
                    pause = min(pause * 2, 2.0, max(_RESEND_SECONDS, deadline - now))
            except pexpect.EOF:
                raise self._closed("connecting") from None
        self._broken = f"no shell answered on the {self.name} within {timeout:.0f} s"
        raise GuestError(self._broken)

    def _send(self, data: bytes) -> None:
        try:
            self._stream.sendall(data)
        except TimeoutError as error:
            self._broken = f"the {self.name} stopped reading input"
            raise GuestError(f"{self._broken} ({error}): is the guest hung?") from None
        except OSError as error:
            raise GuestError(f"the {self.name} is gone ({error}): did the guest die?") from None

    def _closed(self, doing: str) -> GuestError:
        self._broken = f"the {self.name} closed while {doing}"
        return GuestError(f"{self._broken}: the guest crashed or powered off")

    def _check_usable(self, timeout: float) -> None:
        """Refuse a broken console; after an abandoned step, set the console up again."""
        if self._broken:
            raise GuestError(f"{self._broken}; the transport cannot be used any more")
        if self._abandoned:
            self._abandoned = False
            self._synchronise(_recovery_seconds(timeout))

    def _expect(self, pattern: bytes | re.Pattern[bytes], timeout: float) -> None:
        """Wait up to ``timeout`` for ``pattern`` (bytes: exactly; else a regex), running
        the check in between; pexpect.TIMEOUT and EOF as pexpect raises them."""
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            wait = left if self._check is None else min(left, WAIT_CHECK_SECONDS)
            try:
                if isinstance(pattern, bytes):
                    self._child.expect_exact(pattern, timeout=wait)
                else:
                    self._child.expect(pattern, timeout=wait, searchwindowsize=256)
                return
            except pexpect.TIMEOUT:
                if time.monotonic() >= deadline or self._check is None:
                    raise
            try:
                self._check()
            except BaseException:
                self._abandon()
                raise

    def _abandon(self) -> None:
        """^C the running command now; the next step sets the console up again first."""
        self._abandoned = True
        with contextlib.suppress(GuestError):
            self._send(b"\x03")

    def _framed(self, producer: str, timeout: float, what: str) -> tuple[bytes, int]:
        """Run shell text ``producer`` framed by markers; return (its output, exit status).

        The output is collected in the guest (a command substitution, with a
        sentinel so trailing newlines survive) and written with the end marker,
        which carries its byte count: output lost on the way is an error, never
        a silently shorter result. One echo writes it all, and each write to
        a virtio console is a slow round trip to the host: busybox's printf
        writes a terminal a line at a time (its stdio is line-buffered there),
        which made the driver's 6,600-line PFN table 6,600 round trips.
        """
        self._check_usable(timeout)
        tag = secrets.token_hex(8)
        start_text, start = _marker("S", tag)
        end_text, end = _marker("E", tag)
        # The sentinel after the output carries $?, printed as the substitution's
        # shell exits (also by ``exit 3``); one that exits without it (``exec``)
        # leaves $? of the substitution as the status.
        sentinel = f"_HX{tag}_"
        self._send(f'_o=$(trap \'echo "{sentinel}$?"\' EXIT; {{ {producer}; }} </dev/null 2>&1); '
                   f'_s=$?; '
                   f'case $_o in *{sentinel}*) _s=${{_o##*{sentinel}}}; '
                   f'_o=${{_o%{sentinel}*}};; esac; '
                   f'echo {start_text}$\'\\n\'"$_o"{end_text}_"$_s"_"${{#_o}}"\n'.encode())
        end_pattern = re.compile(re.escape(end) + rb"_(\d+)_(\d+)\r?\n")
        try:
            self._expect(start, timeout)
            self._expect(end_pattern, timeout)
        except pexpect.TIMEOUT:
            self._interrupt(timeout)
            raise GuestTimeout(
                f"{what} did not finish within {timeout:g} s on the {self.name} (interrupted)"
            ) from None
        except pexpect.EOF:
            raise self._closed(f"running {what}") from None
        output = bytes(self._child.before)
        status, written = int(self._child.match.group(1)), int(self._child.match.group(2))
        # The start marker's own newline; \r\n means the terminal still translates.
        if output.startswith(b"\r\n"):
            output = output[2:].replace(b"\r\n", b"\n")
        elif output.startswith(b"\n"):
            output = output[1:]
        if len(output) != written:
            raise GuestError(
                f"the {self.name} delivered {len(output)} of the {written} bytes {what} "
                "printed (the host read too slowly); use the SSH transport for large outputs"
            )
        return output, status

    def _interrupt(self, timeout: float) -> None:
        """^C the timed-out command (it ends the loop too) and set the console up again."""
        try:
            self._send(b"\x03")
            self._synchronise(_recovery_seconds(timeout))
        except GuestError:
            self._broken = self._broken or f"the {self.name} did not recover after a timeout"

    # -- Guest --------------------------------------------------------------------

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        """Run ``command`` in a subshell (as ``sh -c`` would: its ``exit``, ``cd`` and
        variables stay in it: the command substitution that collects its output);
        stdout and stderr merged, exit status exact."""
        lines = _ansi_c_lines(command.encode())
        if len(lines) == 1:
            source = lines[0]
        else:  # staged in a variable, a line at a time, then run from it
            self._check_usable(timeout)
            self._send("".join(f'_c={"" if index == 0 else "$_c"}{line}\n'
                               for index, line in enumerate(lines)).encode())
            source = '"$_c"'
        output, status = self._framed(f"eval {source}", timeout, repr(command))
        return CommandResult(command=command, stdout=output.decode(errors="replace"),
                             exit_status=status)

    def put(self, local: LocalPath, remote: str, timeout: float = 300.0) -> None:
        """Copy ``local`` to ``remote`` as base64 lines decoded by the guest."""
        local = Path(local)
        _check_remote(remote)
        encoded = base64.b64encode(local.read_bytes())
        payload = b"".join(encoded[offset:offset + _PUT_LINE] + b"\n"
                           for offset in range(0, len(encoded), _PUT_LINE))
        tag = secrets.token_hex(8)
        start_text, start = _marker("S", tag)
        end_text, end = _marker("E", tag)
        self._check_usable(timeout)
        self._send(f"echo {start_text}; head -c {len(payload)} | base64 -d > "
                   f"{shlex.quote(remote)}; echo {end_text}_$?\n".encode())
        try:
            self._expect(start, timeout)
            self._send(payload)
            self._expect(re.compile(re.escape(end) + rb"_(\d+)\r?\n"), timeout)
        except pexpect.TIMEOUT:
            self._interrupt(timeout)
            raise GuestTimeout(f"copying {local} to {remote} did not finish within "
                               f"{timeout:g} s (interrupted)") from None
        except pexpect.EOF:
            raise self._closed(f"copying {local} to {remote}") from None
        status = int(self._child.match.group(1))
        if status != 0:
            message = bytes(self._child.before).decode(errors="replace").strip()
            raise GuestError(f"cannot write {remote} on the guest: {message or status}")

    def get(self, remote: str, local: LocalPath, timeout: float = 300.0) -> None:
        """Copy ``remote`` to ``local`` as base64 printed by the guest, in chunks.

        Each chunk is a separate command whose output fits in the stream's
        buffer, so even a host that reads slowly never makes QEMU drop any.
        """
        local = Path(local)
        _check_remote(remote)
        deadline = time.monotonic() + timeout
        quoted = shlex.quote(remote)
        answer, status = self._framed(f"wc -c < {quoted} 2>&1", timeout, f"reading {remote}")
        if status != 0 or not answer.strip().isdigit():
            raise GuestError(f"cannot read {remote} on the guest: "
                             f"{answer.decode(errors='replace').strip()}")
        size = int(answer)
        chunk = self._chunk_bytes()
        with local.open("wb") as copy:
            for index in range(-(-size // chunk)):
                left = max(1.0, deadline - time.monotonic())
                text, status = self._framed(
                    f"dd if={quoted} bs={chunk} skip={index} count=1 2>/dev/null | base64",
                    left, f"reading {remote}")
                if status != 0:
                    raise GuestError(f"cannot read {remote} on the guest (status {status})")
                try:
                    copy.write(base64.b64decode(text, validate=False))
                except ValueError as error:
                    raise GuestError(f"{remote} arrived damaged over the {self.name}: "
                                     f"{error}") from None
        if local.stat().st_size != size:
            raise GuestError(f"{remote} changed while it was copied "
                             f"({local.stat().st_size} of {size} bytes)")

    def _chunk_bytes(self) -> int:
        """File bytes per get() command: their base64 must fit in the stream's buffer."""
        buffer = getattr(self._stream, "buffer_bytes", None) or 1 << 20
        return max(4096, min(_MAX_CHUNK, int(buffer * 0.5 / 1.37)) // 4096 * 4096)

    def close(self) -> None:
        """Close the stream (the guest keeps running)."""
        self._broken = self._broken or f"the {self.name} was closed"
        self._stream.close()


def _ansi_c_lines(data: bytes) -> list[str]:
    """``data`` as $'...' strings of printable ASCII, none longer than _MAX_INLINE,
    that the shell joins back into ``data`` (an escape is never split)."""
    lines: list[str] = []
    line: list[str] = []
    length = 0
    for byte in data:
        piece = chr(byte) if byte in _PLAIN else f"\\x{byte:02x}"
        if length + len(piece) > _MAX_INLINE:
            lines.append("$'" + "".join(line) + "'")
            line, length = [], 0
        line.append(piece)
        length += len(piece)
    lines.append("$'" + "".join(line) + "'")
    return lines


def _recovery_seconds(timeout: float) -> float:
    """How long the shell gets to answer again after ^C: the step's own bound (a
    bounded cleanup stays bounded), between 2 and _RECOVERY_SECONDS."""
    return max(2.0, min(_RECOVERY_SECONDS, timeout))


def _check_remote(remote: str) -> None:
    if not remote or "\n" in remote:
        raise GuestError(f"invalid guest path {remote!r}")
