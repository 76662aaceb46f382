"""Errors a user can act on.

Every stage raises HarnessError (or a subclass) for bad input or a missing
dependency. The CLI and the pytest plugin print ``str(error)`` as one line and
never a traceback, so the message must say what to do. A fallback the run
survives (TCG instead of KVM, a debug switch left off) is a ``notice`` instead.
"""

import signal
import sys
import threading

_noticed: set[str] = set()


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cancelled CI job, ``kill``), raised where the process was so it
    unwinds as ^C does: QEMU stopped, a labgrid place released, evidence kept,
    no half-written cache entry. Python's default would end the process at once."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated


def terminate_by_unwinding() -> None:
    """From now on, SIGTERM raises Terminated in the main thread (elsewhere Python
    cannot install handlers, and the default stays)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)


def notice(message: str) -> None:
    """Print a fallback notice once per process, not once per VM."""
    if message not in _noticed:
        _noticed.add(message)
        print(f"harness: notice: {message}", file=sys.stderr)


class HarnessError(Exception):
    """A failure the user can fix; ``str()`` is a single line saying how."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class MissingTool(HarnessError):
    """A host program is missing; names the Debian package that provides it."""

    def __init__(self, program: str, package: str, purpose: str) -> None:
        self.program = program
        self.package = package
        super().__init__(
            f"{program} not found (needed for {purpose}): "
            f"install it with `apt-get install {package}` or run `harness doctor`"
        )
