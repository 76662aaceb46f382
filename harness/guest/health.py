"""Kernel health watch: a step fails when the kernel reports trouble during it.

A check can pass at the Guest level while the kernel printed an Oops or a
WARNING behind its back; those lines are the evidence that matters most for
a driver test. The watch reads the kernel log from a source that grows for
the whole life of the machine (the UART console log of a VM, or ``dmesg``
over the Guest itself on a board) and remembers how far it has read, so each
problem is reported exactly once, by the step during which it appeared. What
counts as a problem, and how a report is named, is harness.guest.reports.

A VM's console log is read while a step waits too (the transports call the
watch's check), so a kernel that Oopsed holding a lock fails the step at once
instead of at its timeout; and once the guest is known to be dead, no step
runs at all (cleanup after a crash must not wait for a dead machine).
"""

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from harness.guest import (
    CommandResult,
    Guest,
    GuestError,
    KernelProblem,
    LocalPath,
    WatchesWhileWaiting,
)
from harness.guest.reports import find_problem, scan

_SETTLE_SECONDS = 1.0
# A report is taken as whole once it ended and nothing more came for this long
# (a panic follows an Oops's end marker within milliseconds).
_QUIET_SECONDS = 0.2
T = TypeVar("T")


class LogSource(Protocol):
    """Something that returns the kernel log text that appeared since the last call."""

    # True when reading does not go through the guest, so the log can be read
    # while a step waits for the guest (and a report ends the step at once).
    independent: bool

    def read_new(self) -> str:
        """Text added since the previous call."""
        ...


class ConsoleLogSource:
    """New text of a console log file that another process (QEMU) appends to."""

    independent = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def read_new(self) -> str:
        """Text appended to the file since the previous call."""
        if not self.path.exists():
            return ""
        with self.path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        # Keep a partial last line for the next call so a pattern is never split.
        cut = data.rfind(b"\n") + 1
        self._offset += cut
        return data[:cut].decode(errors="replace")


class DmesgSource:
    """New kernel log lines of a machine reached only through a Guest (a board).

    Lines are told apart by their ``[seconds]`` timestamp prefix, so the
    source needs CONFIG_PRINTK_TIME (or ``printk.time=1``) on the board.
    """

    independent = False

    def __init__(self, guest: Guest) -> None:
        self._guest = guest
        self._last_stamp = self._stamp_of(self._dmesg().splitlines()[-1:] or [""])

    def _dmesg(self) -> str:
        result = self._guest.run("dmesg", timeout=30)
        if not result.ok:
            raise GuestError(f"dmesg failed on the guest: {result.stdout.strip()}")
        return result.stdout

    @staticmethod
    def _stamp_of(lines: list[str]) -> float:
        match = re.match(r"\[\s*(\d+\.\d+)\]", lines[0]) if lines else None
        return float(match.group(1)) if match else -1.0

    def read_new(self) -> str:
        """dmesg lines stamped after the newest line seen before."""
        fresh: list[str] = []
        for line in self._dmesg().splitlines():
            stamp = self._stamp_of([line])
            if stamp > self._last_stamp or (stamp < 0 and fresh):
                fresh.append(line)
        if fresh:
            self._last_stamp = max(self._last_stamp, *(self._stamp_of([x]) for x in fresh))
        return "\n".join(fresh) + ("\n" if fresh else "")


@dataclass
class HealthWatch:
    """Reads a LogSource and raises KernelProblem for anything new and bad in it."""

    source: LogSource
    settle_seconds: float = _SETTLE_SECONDS
    seen_problems: list[KernelProblem] = field(default_factory=list)

    def check(self) -> None:
        """Raise KernelProblem when the log shows a problem since the last check."""
        problem = self.poll()
        if problem is not None:
            raise problem

    def poll(self) -> KernelProblem | None:
        """The problem in the log since the last call, or None (never raises it)."""
        text = self.source.read_new()
        if not scan(text):
            return None
        # A report is printed over time: give it a moment to finish, and what
        # it leads to (a panic) a moment to follow.
        quiet_from = time.monotonic()
        deadline = quiet_from + self.settle_seconds
        while time.monotonic() < deadline:
            if (all(report.complete for report in scan(text))
                    and time.monotonic() - quiet_from >= _QUIET_SECONDS):
                break
            time.sleep(0.05)
            more = self.source.read_new()
            if more:
                text, quiet_from = text + more, time.monotonic()
        problem = find_problem(text)
        assert problem is not None  # scan() found a report in this text
        self.seen_problems.append(problem)
        return problem


class WatchedGuest:
    """A Guest whose every step fails if the kernel reported a problem during it.

    A transport failure is the kernel problem in the log when there is one
    (the cause); otherwise ``explain`` is asked about it (for instance to wait
    for a dying VM and say how it died), and the log read again. When the transport can
    check while it waits and the log is read without the guest, the watch is
    read during the step too, so a report ends the step within a second or
    two rather than at its timeout.

    Once the guest is known to be dead (its kernel panicked, or ``explain``
    says the machine is gone), no step runs any more: each raises at once, so
    cleanup after a crash costs nothing and waits for nothing.
    """

    def __init__(self, guest: Guest, watch: HealthWatch,
                 explain: Callable[[GuestError], GuestError | None] | None = None) -> None:
        self.guest = guest
        self.watch = watch
        self._explain = explain
        self.dead: str | None = None  # why the guest can run nothing more
        self._step_cap: float | None = None
        if watch.source.independent and isinstance(guest, WatchesWhileWaiting):
            guest.check_while_waiting(watch.check)

    @contextmanager
    def bounded(self, seconds: float) -> Iterator[None]:
        """No command in the block may take longer than ``seconds`` (cleanup after a
        failure: the guest may be wedged, and the failure is already known)."""
        previous, self._step_cap = self._step_cap, seconds
        try:
            yield
        finally:
            self._step_cap = previous

    def _step(self, what: str, action: Callable[[], T]) -> T:
        if self.dead is not None:
            raise GuestError(f"{what} not run: {self.dead}")
        try:
            result = action()
        except KernelProblem as problem:
            self._reported(problem, what)
            raise
        except GuestError as error:
            # A report already in the log is the cause: raised at once, without
            # first waiting to see whether the machine is going (an Oops that
            # kills the command's task ends an SSH command with no exit status;
            # QEMU lives on, and asking how it died would cost seconds).
            cause = self.watch.poll()
            better = None
            if cause is None:
                better = self._explain(error) if self._explain is not None else None
                if better is not None:
                    self.dead = str(better)
                cause = self.watch.poll()
            if cause is not None:
                raise self._reported(cause, what) from error
            if better is not None:
                raise better from error
            raise
        found = self.watch.poll()
        if found is not None:
            raise self._reported(found, what)
        return result

    def _reported(self, problem: KernelProblem, what: str) -> KernelProblem:
        """Note the step a report appeared in, and whether the guest died of it."""
        problem.step = problem.step or what
        if problem.fatal and self.dead is None:
            cause = "" if problem.kind == "panic" else f" after {problem.kind}"
            self.dead = f"the guest kernel panicked{cause}: {problem.headline}"
        return problem

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        """Guest.run, then a health check."""
        if self._step_cap is not None:
            timeout = min(timeout, self._step_cap)
        return self._step(repr(command), lambda: self.guest.run(command, timeout))

    def put(self, local: LocalPath, remote: str) -> None:
        """Guest.put, then a health check."""
        self._step(f"copying {local} to {remote}", lambda: self.guest.put(local, remote))

    def get(self, remote: str, local: LocalPath) -> None:
        """Guest.get, then a health check."""
        self._step(f"reading {remote}", lambda: self.guest.get(remote, local))

    def close(self) -> None:
        """Close the wrapped transport."""
        self.guest.close()
