"""One way to talk to a guest, whatever carries it (serial console, SSH).

Checks are written against ``Guest`` only, so the same check runs on a QEMU
VM over its console, over SSH, or on a real board over SSH.
"""

import os
from dataclasses import dataclass
from typing import Protocol

from harness.errors import HarnessError

# A host-side file for put/get: a str as well as a Path, like open() takes.
LocalPath = str | os.PathLike[str]


@dataclass(frozen=True)
class CommandResult:
    """What one command printed (stdout and stderr merged) and its exit status."""

    command: str
    stdout: str
    exit_status: int

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit_status == 0


class GuestError(HarnessError):
    """The guest could not run a step: timeout, connection lost, guest died."""


class GuestTimeout(GuestError):
    """A command did not finish in time."""


class KernelProblem(GuestError):
    """The guest kernel reported a panic, Oops, BUG, WARNING, lockup or hung task."""

    def __init__(self, kind: str, excerpt: str, headline: str | None = None) -> None:
        self.kind = kind
        self.excerpt = excerpt
        self.headline = headline or excerpt.strip().splitlines()[0]
        super().__init__(f"guest kernel reported {kind}: {self.headline}")


class Guest(Protocol):
    """A running Linux machine the harness can run commands on and copy files to."""

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        """Run a shell command; raise GuestTimeout or GuestError, never hang."""
        ...

    def put(self, local: LocalPath, remote: str) -> None:
        """Copy a local file to ``remote`` on the guest."""
        ...

    def get(self, remote: str, local: LocalPath) -> None:
        """Copy ``remote`` from the guest to a local file."""
        ...

    def close(self) -> None:
        """Release the transport (not the machine)."""
        ...
