"""The harness's Guest over labgrid's driver protocols.

Commands go through a ``CommandProtocol`` driver and files through a
``FileTransferProtocol`` one (labgrid's SSHDriver gives both, over OpenSSH's
``ssh`` and ``scp`` sharing one control connection): the harness adds no SSH
stack of its own on this path, so whatever the lab configured for its drivers
(proxies through the exporter, keys) applies to the harness's steps too.

What labgrid reports is turned into the harness's errors: a command that
outlives its timeout is a GuestTimeout, a connection that is gone a GuestError
naming the place, so a WatchedGuest above it reads the board's dmesg for the
cause exactly as it does on an ``ssh://`` board.

A connection can drop while the board lives on (its SSH server killed, say).
SSHDriver then refuses every step with "Keepalive no longer running"; a
command that slipped in first fails in ssh ("Host key verification failed.":
with the control connection gone it tries to connect on its own). Neither ran
anything on the board (each command is preceded by a marker line the board's
shell prints, so this is known, not guessed): the drivers are activated anew
and the step run once more, provided the board still runs the boot it ran
when the place was taken (its ``boot_id``). A command whose connection went
while it ran is not run again: what it did is unknown, so it fails, after
the reconnection that lets the harness read the board's dmesg for a cause.
"""

import subprocess
from collections.abc import Callable
from typing import Any, TypeVar

from labgrid.driver.exception import ExecutionError
from labgrid.protocol import CommandProtocol, FileTransferProtocol

from harness.errors import notice
from harness.guest import CommandResult, GuestError, GuestTimeout, LocalPath

# ssh's own exit status when the connection failed or was lost (a command's
# status is passed through; 255 is what ssh itself returns on its errors).
SSH_FAILED = 255
ALIVE_PROBE_SECONDS = 15.0
# What SSHDriver raises, before running anything, once the session that keeps
# its control connection open has ended (the connection is gone).
KEEPALIVE_GONE = "Keepalive no longer running"
BOOT_ID = "cat /proc/sys/kernel/random/boot_id"
# Printed by the board's shell before each command: without it in the output,
# ssh failed before the board ran anything (so running the command again is safe).
STARTED = "harness-command-started"

T = TypeVar("T")


def _reraise_interrupt(error: ExecutionError) -> None:
    """Raise the ^C that SSHDriver turned into ``error``: it starts ssh and scp under a
    bare ``except:``, so a KeyboardInterrupt there comes out as an ExecutionError."""
    if isinstance(error.__context__, KeyboardInterrupt):
        raise error.__context__


class LabgridGuest:
    """A Guest whose steps run through labgrid drivers of one acquired place."""

    def __init__(self, command: CommandProtocol, files: FileTransferProtocol, where: str,
                 close: Callable[[], Any], reopen: Callable[[], str]) -> None:
        """``reopen`` deactivates and activates the drivers again, returning what
        the lost connection's ssh said last (raising GuestError if the board does
        not answer again)."""
        self._command = command
        self._files = files
        self.where = where  # "labgrid place NAME (user@host:port)", for messages
        self._close = close
        self._reopen = reopen
        self._last_words = ""  # what ssh said when the last connection was lost
        self._boot_id = self._read_boot_id()

    def _read_boot_id(self) -> str:
        try:
            lines, _, status = self._command.run(BOOT_ID, timeout=ALIVE_PROBE_SECONDS)
        except (ExecutionError, subprocess.TimeoutExpired) as error:
            raise GuestError(f"cannot read the boot id of {self.where}: "
                             f"{getattr(error, 'msg', error)}") from None
        if status != 0 or not lines:
            raise GuestError(f"cannot read the boot id of {self.where} ({BOOT_ID!r} "
                             f"exited {status})")
        return str(lines[0]).strip()

    def _reconnect(self) -> None:
        """Activate the drivers anew, on the boot of the board they were on (GuestError
        if the board does not answer, or answers from another boot)."""
        self._last_words = self._reopen()
        if self._read_boot_id() != self._boot_id:
            raise GuestError(f"the connection to {self.where} was lost ({self._last_words}) "
                             "and the board has rebooted since (a new boot id)")
        notice(f"the connection to {self.where} was lost ({self._last_words}); reconnected "
               "to the same boot of the board")

    def _connected(self, call: Callable[[], T]) -> T:
        """``call`` through the drivers; if labgrid found the connection gone before
        ``call`` started anything, once more on a new connection to the same boot."""
        try:
            return call()
        except ExecutionError as error:
            _reraise_interrupt(error)
            if error.msg != KEEPALIVE_GONE:
                raise
        self._reconnect()
        try:
            return call()
        except ExecutionError as error:
            _reraise_interrupt(error)
            raise

    def _answers(self) -> bool:
        """Whether the connection as it is runs a command (after ssh exited 255)."""
        try:
            _, _, status = self._command.run("true", timeout=ALIVE_PROBE_SECONDS)
        except ExecutionError as error:
            _reraise_interrupt(error)
            return False
        except subprocess.TimeoutExpired:
            return False
        return bool(status == 0)

    def _run_marked(self, command: str, timeout: float) -> tuple[list[str], int] | str:
        """``command``'s output and status, or what ssh said when it failed before
        the board started the command."""
        try:
            lines, _, status = self._connected(lambda: self._command.run(
                f"echo {STARTED}; {command}", timeout=timeout, decodeerrors="replace"))
        except subprocess.TimeoutExpired:
            raise GuestTimeout(f"{command!r} did not finish within {timeout:g} s on "
                               f"{self.where}") from None
        except ExecutionError as error:
            raise GuestError(f"cannot run {command!r} on {self.where}: {error.msg}") from None
        if STARTED not in lines:
            return " ".join(line.strip() for line in lines) or f"ssh exited {status}"
        return lines[lines.index(STARTED) + 1:], status

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        """Run ``command`` through the driver's shell; stdout and stderr merged
        (the driver is made with ``stderr_merge``). A command ssh could not start
        because the connection had gone is run once on a new one; a command whose
        connection went while it ran fails."""
        ran = self._run_marked(command, timeout)
        if isinstance(ran, str) and not self._answers():
            self._reconnect()
            ran = self._run_marked(command, timeout)
        if isinstance(ran, str):
            raise GuestError(f"cannot run {command!r} on {self.where}: {ran}")
        lines, status = ran
        if status == SSH_FAILED and not self._answers():
            self._reconnect()
            raise GuestError(f"the connection to {self.where} was lost while {command!r} "
                             f"ran ({self._last_words}): reconnected to the same boot, but "
                             "what the command did is unknown")
        return CommandResult(command=command, stdout="".join(f"{line}\n" for line in lines),
                             exit_status=status)

    def put(self, local: LocalPath, remote: str) -> None:
        """Copy ``local`` to ``remote`` on the board with the driver's file transfer."""
        self._transfer(f"copying {local} to {remote}",
                       lambda: self._files.put(str(local), remote))

    def get(self, remote: str, local: LocalPath) -> None:
        """Copy ``remote`` from the board into ``local``."""
        self._transfer(f"reading {remote}", lambda: self._files.get(remote, str(local)))

    def _transfer(self, what: str, action: Callable[[], object]) -> None:
        try:
            self._connected(action)
        except ExecutionError:
            # The driver's message is its whole command line; scp's own reason
            # is already on stderr.
            raise GuestError(f"{what} on {self.where} failed (scp's reason above; the "
                             "board needs an SFTP server, e.g. OpenSSH's sftp-server)") from None

    def close(self) -> None:
        """Deactivate the drivers (the place stays acquired until its block ends)."""
        self._close()
