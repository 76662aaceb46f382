"""Kernel health watch: a step fails when the kernel reports trouble during it.

A check can pass at the Guest level while the kernel printed an Oops or a
WARNING behind its back; those lines are the evidence that matters most for
a driver test. The watch reads the kernel log from a source that grows for
the whole life of the machine (the UART console log of a VM, or ``dmesg``
over the Guest itself on a board) and remembers how far it has read, so each
problem is reported exactly once, by the step during which it appeared.
"""

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.guest import CommandResult, Guest, GuestError, KernelProblem, LocalPath

# (kind, pattern), most severe first: the kind reported is the most severe seen.
PROBLEMS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("panic", re.compile(r"Kernel panic - not syncing")),
    ("Oops", re.compile(r"\bOops\b|Internal error: |general protection fault")),
    ("soft lockup", re.compile(r"soft lockup - CPU#")),
    ("hung task", re.compile(r"INFO: task .+ blocked for more than \d+ seconds")),
    ("RCU stall", re.compile(r"rcu_\w+ (self-)?detected stall|rcu: INFO: \w+ detected stall")),
    ("BUG", re.compile(r"\bBUG: ")),
    # Page poisoning (debug kernels) found a freed page written to: pr_err, no BUG.
    ("page poison corruption", re.compile(r"pagealloc: (memory corruption|single bit error)")),
    ("WARNING", re.compile(r"\bWARNING: ")),
)

# A report is whole once one of these follows it (or the guest died).
_REPORT_END = re.compile(r"---\[ end (trace|Kernel panic)")
_CONTEXT_BEFORE = 3
_MAX_EXCERPT_LINES = 80
_SETTLE_SECONDS = 1.0


def find_problem(text: str) -> KernelProblem | None:
    """The most severe problem in ``text`` with its excerpt, or None."""
    lines = text.splitlines()
    hits = [(index, kind_rank, kind)
            for index, line in enumerate(lines)
            for kind_rank, (kind, pattern) in enumerate(PROBLEMS)
            if pattern.search(line)]
    if not hits:
        return None
    first = min(index for index, _, _ in hits)
    worst_index, _, worst_kind = min(hits, key=lambda hit: (hit[1], hit[0]))
    last = max(index for index, _, _ in hits)
    stop = last + 1
    while stop < len(lines) and stop - first < _MAX_EXCERPT_LINES:
        stop += 1
        if _REPORT_END.search(lines[stop - 1]):
            break
    excerpt = "\n".join(lines[max(0, first - _CONTEXT_BEFORE):stop])
    return KernelProblem(worst_kind, excerpt, headline=lines[worst_index].strip())


class LogSource(Protocol):
    """Something that returns the kernel log text that appeared since the last call."""

    def read_new(self) -> str:
        """Text added since the previous call."""
        ...


class ConsoleLogSource:
    """New text of a console log file that another process (QEMU) appends to."""

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
        problem = find_problem(text)
        if problem is None:
            return None
        # A report is printed over time: give it a moment to finish.
        deadline = time.monotonic() + self.settle_seconds
        while not _REPORT_END.search(text) and time.monotonic() < deadline:
            time.sleep(0.05)
            text += self.source.read_new()
        problem = find_problem(text) or problem
        self.seen_problems.append(problem)
        return problem


class WatchedGuest:
    """A Guest whose every step fails if the kernel reported a problem during it.

    ``explain`` is asked about a transport failure first (for instance to wait
    for a dying VM and say how it died); a kernel problem found in the log
    still takes precedence, since it is the cause.
    """

    def __init__(self, guest: Guest, watch: HealthWatch,
                 explain: Callable[[GuestError], GuestError | None] | None = None) -> None:
        self.guest = guest
        self.watch = watch
        self._explain = explain

    def _step(self, action: Callable[[], CommandResult | None]) -> CommandResult | None:
        try:
            result = action()
        except KernelProblem:
            raise
        except GuestError as error:
            better = self._explain(error) if self._explain is not None else None
            problem = self.watch.poll()
            if problem is not None:
                raise problem from error
            if better is not None:
                raise better from error
            raise
        self.watch.check()
        return result

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        """Guest.run, then a health check."""
        result = self._step(lambda: self.guest.run(command, timeout))
        assert result is not None
        return result

    def put(self, local: LocalPath, remote: str) -> None:
        """Guest.put, then a health check."""
        self._step(lambda: self.guest.put(local, remote))

    def get(self, remote: str, local: LocalPath) -> None:
        """Guest.get, then a health check."""
        self._step(lambda: self.guest.get(remote, local))

    def close(self) -> None:
        """Close the wrapped transport."""
        self.guest.close()
