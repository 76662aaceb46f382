"""One way to talk to a guest, whatever carries it (serial console, SSH).

Checks are written against ``Guest`` only, so the same check runs on a QEMU
VM over its console, over SSH, or on a real board over SSH.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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
    """The guest kernel reported a panic, Oops, BUG, WARNING, lockup, hung task, ...

    ``kind`` and ``headline`` name the first report of the step (the cause);
    ``later`` holds the headlines of the reports that followed it in the same
    step (often the panic it led to), and ``fatal`` says the kernel panicked,
    so the guest can run nothing more. ``step`` is set by the watch: the
    command during which the report appeared.
    """

    def __init__(self, kind: str, excerpt: str, headline: str | None = None,
                 fatal: bool = False, later: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.excerpt = excerpt
        self.headline = headline or excerpt.strip().splitlines()[0]
        self.fatal = fatal
        self.later = later
        self.step: str | None = None
        then = f" (then: {later[0]}" if later else ""
        if len(later) > 1:
            then += f", and {len(later) - 1} more reports"
        super().__init__(f"guest kernel reported {kind}: {self.headline}"
                         + (then + ")" if then else ""))


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


# How often a transport that waits for the guest runs its check (WatchesWhileWaiting).
WAIT_CHECK_SECONDS = 0.5


@runtime_checkable
class WatchesWhileWaiting(Protocol):
    """A transport that runs a check while a step waits for the guest.

    A kernel report then ends the step within a second or two, instead of at
    the step's timeout (a kernel that Oopsed under a lock never finishes it).
    """

    def check_while_waiting(self, check: Callable[[], None]) -> None:
        """Call ``check`` about every WAIT_CHECK_SECONDS while a step waits; what it
        raises ends the step at once (the transport stays usable where it can)."""
        ...


# What a target can offer besides running commands: a capability is a protocol
# the object the target yields implements (QEMU's VmGuest does), so a scenario
# asks for it by type and never reaches into the machine behind the guest.


class BalloonControl(Protocol):
    """The host side of a memory balloon."""

    def set_target(self, guest_bytes: int) -> None:
        """Ask the guest to shrink or grow to ``guest_bytes`` of memory."""
        ...

    def actual(self) -> int:
        """The guest's memory size as the balloon device reports it, in bytes."""
        ...


@runtime_checkable
class OffersBalloon(Protocol):
    """a balloon the host inflates and deflates (QEMU's monitor; run it on a qemu
    target, a board over ssh:// has none)"""

    def balloon(self) -> BalloonControl:
        """The balloon control of this guest's machine."""
        ...


def require_capabilities(guest: Guest, capabilities: tuple[type, ...], who: str) -> None:
    """Refuse a guest whose target lacks one of ``capabilities`` (runtime-checkable
    protocols), saying what it is from the protocol's docstring."""
    for kind in capabilities:
        if not isinstance(guest, kind):
            what = " ".join((kind.__doc__ or kind.__name__).split())
            raise HarnessError(f"{who} needs a target that offers {what}")
