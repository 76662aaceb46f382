"""Scripted guests for the tests of what happens when a kernel reports trouble.

``ScriptedGuest`` is a transport: each command's output comes from ``answer``,
and a command can make the kernel print a report to the console log (as the
UART would) and then hang, as a command does on a kernel that Oopsed holding a
lock. While it hangs it runs the watch's check, as the real transports do.
"""

import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from harness import page_owner, procfs
from harness.check.driver import DEBUGFS, STATE_COMMAND, STATS_MARKER
from harness.check.sample import READ_FILES
from harness.check.steps import KNOB_ABSENT, READ_PART
from harness.guest import CommandResult, GuestTimeout
from harness.guest.health import ConsoleLogSource, HealthWatch, WatchedGuest

# One read of steps.read_together's command: its name and its own command.
_READ_TOGETHER = re.compile(r"echo '" + re.escape(READ_PART).replace(r"\{\}", "(.+?)")
                            + r"' && \{ (.*?); \}(?= && echo '|$)")
PROCFS = Path(__file__).resolve().parent.parent / "data" / "procfs" / "4.8.15-x86_64"
# The auxiliary vector of an x86_64 guest (4 KiB pages), as procfs.PAGE_SIZE_COMMAND prints it.
AUXV = (PROCFS.parent / "5.10.223-x86_64" / "auxv.boot.txt").read_text()


def release_only(release: str) -> Callable[[str], str]:
    """Answers for a guest that is only asked what ``observe`` asks first: its
    release (every command) and its page size."""
    return lambda command: AUXV if command == procfs.PAGE_SIZE_COMMAND else f"{release}\n"


class ScriptedGuest:
    """A transport whose commands are answered by ``answer`` (None: the command hangs)."""

    def __init__(self, log: Path, answer: Callable[[str], str | None]) -> None:
        self.log = log
        self.answer = answer
        self.commands: list[tuple[str, float]] = []  # (command, timeout) as run
        self._check: Callable[[], None] | None = None

    def check_while_waiting(self, check: Callable[[], None]) -> None:
        self._check = check

    def print_report(self, text: str) -> None:
        """The kernel prints ``text`` on its console."""
        with self.log.open("a") as console:
            console.write(text)

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        self.commands.append((command, timeout))
        if parts := _READ_TOGETHER.findall(command):  # steps.read_together's command
            return CommandResult(command, "".join(
                f"{READ_PART.format(name)}\n{self._output(part, timeout)}"
                for name, part in parts), 0)
        return CommandResult(command, self._output(command, timeout), 0)

    def _output(self, command: str, timeout: float) -> str:
        output = self.answer(command)
        if output is None:
            self._hang(command, timeout)
        if command.startswith("if [ -w /proc/sys/vm/"):  # no such knob on these kernels
            output = KNOB_ABSENT + "\n"
        return output or ""

    def _hang(self, command: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if self._check is not None:
                self._check()
        raise GuestTimeout(f"{command!r} did not finish within {timeout:g} s")

    def put(self, local: Path, remote: str) -> None:
        pass

    def get(self, remote: str, local: Path) -> None:
        pass

    def close(self) -> None:
        pass


def watched(guest: ScriptedGuest) -> WatchedGuest:
    """``guest`` behind the health watch, as a QEMU guest is."""
    guest.log.touch()
    return WatchedGuest(guest, HealthWatch(ConsoleLogSource(guest.log), settle_seconds=0.5))


class SampleKernel:
    """Answers for the sample driver's A/B on a 4.8.15 guest (recorded procfs texts),
    or on the guest whose recordings are in ``procfs`` and whose auxiliary vector
    (its page size) is ``auxv``.

    ``crash`` is printed when the movable=1 round compacts; that compaction and
    everything after it hang, as on a kernel that died holding a lock.
    """

    PAGES = 16

    def __init__(self, guest_log: Path, crash: str | None, procfs: Path = PROCFS,
                 auxv: str = AUXV) -> None:
        self.guest = ScriptedGuest(guest_log, self.answer)
        self.crash = crash
        self.procfs = procfs
        self.auxv = auxv
        self.movable = False
        self.crashed = False
        self.reads = 0

    def answer(self, command: str) -> str | None:
        if self.crashed:
            return None
        if command == "echo 1 > /proc/sys/vm/compact_memory" and self.movable and self.crash:
            self.crashed = True
            self.guest.print_report(self.crash)
            return None
        if command.startswith("insmod"):
            self.movable = "movable=1" in command
        if command == "uname -r":
            return "4.8.15\n"
        if command == procfs.PAGE_SIZE_COMMAND:
            return self.auxv
        if command == "cat /proc/pagetypeinfo":
            return (self.procfs / "pagetypeinfo.boot.txt").read_text()
        if command.endswith("cat /proc/meminfo"):
            return "MemTotal: 250000 kB\nMemFree: 200000 kB\n"
        if command == STATE_COMMAND:
            return ("".join(f"{index} {1000 + 8 * index}\n" for index in range(self.PAGES))
                    + STATS_MARKER + "isolated 0\nmigrated 0\nputback 0\neagain 0\nfailed 0\n")
        if command == f"cat {DEBUGFS}/verify":
            return f"checked {self.PAGES} mismatches 0\n"
        if match := re.fullmatch(r"echo (\d+) (\d+) > \S+/try_alloc && cat \S+", command):
            return f"order {match[1]} requested {match[2]} succeeded 3\n"
        if command == procfs.read_files_command(READ_FILES):  # no indices recorded
            self.reads += 1  # once on each side of a compaction
            return files_text(READ_FILES[:2], "before" if self.reads % 2 else "after",
                              self.procfs)
        if command.startswith(f"if [ -r {page_owner.PAGE_OWNER} ]"):
            return page_owner.ABSENT + "\n"  # built without the page_owner fragment
        return ""


def files_text(paths: Iterable[str], when: str, directory: Path = PROCFS) -> str:
    """What ``procfs.read_files_command(paths)`` prints (head -v) from the texts recorded
    in ``directory`` (``NAME.WHEN.txt`` for /proc/NAME)."""
    return "\n".join(f"==> {path} <==\n"
                     + (directory / f"{Path(path).name}.{when}.txt").read_text()
                     for path in paths)


def snapshot_text(when: str, directory: Path = PROCFS) -> str:
    """What ``procfs.snapshot_command()`` prints, from the texts recorded in ``directory``."""
    return files_text((f"/proc/{name}" for name in procfs.PROCFS_FILES), when, directory)
