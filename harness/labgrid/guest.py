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
"""

import subprocess
from collections.abc import Callable
from typing import Any

from labgrid.driver.exception import ExecutionError
from labgrid.protocol import CommandProtocol, FileTransferProtocol

from harness.guest import CommandResult, GuestError, GuestTimeout, LocalPath

# ssh's own exit status when the connection failed or was lost (a command's
# status is passed through; 255 is what ssh itself returns on its errors).
SSH_FAILED = 255
ALIVE_PROBE_SECONDS = 15.0


def _reraise_interrupt(error: ExecutionError) -> None:
    """Raise the ^C that SSHDriver turned into ``error``: it starts ssh and scp under a
    bare ``except:``, so a KeyboardInterrupt there comes out as an ExecutionError."""
    if isinstance(error.__context__, KeyboardInterrupt):
        raise error.__context__


class LabgridGuest:
    """A Guest whose steps run through labgrid drivers of one acquired place."""

    def __init__(self, command: CommandProtocol, files: FileTransferProtocol, where: str,
                 close: Callable[[], Any]) -> None:
        self._command = command
        self._files = files
        self.where = where  # "labgrid place NAME (user@host:port)", for messages
        self._close = close

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        """Run ``command`` through the driver's shell; stdout and stderr merged
        (the driver is made with ``stderr_merge``)."""
        try:
            lines, _, status = self._command.run(command, timeout=timeout,
                                                 decodeerrors="replace")
        except subprocess.TimeoutExpired:
            raise GuestTimeout(f"{command!r} did not finish within {timeout:g} s on "
                               f"{self.where}") from None
        except ExecutionError as error:
            _reraise_interrupt(error)
            raise GuestError(f"cannot run {command!r} on {self.where}: {error.msg}") from None
        if status == SSH_FAILED and not self._alive():
            raise GuestError(f"the connection to {self.where} was lost while {command!r} "
                             "ran: the board died or rebooted")
        return CommandResult(command=command, stdout="".join(f"{line}\n" for line in lines),
                             exit_status=status)

    def _alive(self) -> bool:
        """Whether the board still answers (a 255 was ssh failing, or the command's own)."""
        try:
            _, _, status = self._command.run("true", timeout=ALIVE_PROBE_SECONDS)
        except (ExecutionError, subprocess.TimeoutExpired):
            return False
        return bool(status == 0)

    def put(self, local: LocalPath, remote: str) -> None:
        """Copy ``local`` to ``remote`` on the board with the driver's file transfer."""
        self._transfer(f"copying {local} to {remote}",
                       lambda: self._files.put(str(local), remote))

    def get(self, remote: str, local: LocalPath) -> None:
        """Copy ``remote`` from the board into ``local``."""
        self._transfer(f"reading {remote}", lambda: self._files.get(remote, str(local)))

    def _transfer(self, what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except ExecutionError as error:
            _reraise_interrupt(error)
            # The driver's message is its whole command line; scp's own reason
            # is already on stderr.
            raise GuestError(f"{what} on {self.where} failed (scp's reason above; the "
                             "board needs an SFTP server, e.g. OpenSSH's sftp-server)") from None

    def close(self) -> None:
        """Deactivate the drivers (the place stays acquired until its block ends)."""
        self._close()
