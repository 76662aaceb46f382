"""The console transport against a real busybox shell on a local pty (no VM).

The guest runs Debian's busybox ash on a virtio console; the host's busybox
is the same program, and a pty gives the same terminal behaviour (echo,
canonical lines, ^C), so the framing, exit statuses, files and timeouts are
tested here exactly as they run in the guest, in a fraction of a second.
"""

import hashlib
import os
import pty
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.check.steps import read_together
from harness.guest import GuestError, GuestTimeout, KernelProblem
from harness.guest.console import ConsoleGuest
from harness.procfs import read_files_command, split_files

BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.needs_program("busybox")


class PtyStream:
    """The master side of a pty, shaped like a socket for ConsoleGuest."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def close(self) -> None:
        os.close(self.fd)


def _default_signals() -> None:
    """In the child before exec: SIGINT and SIGQUIT as a terminal's shell expects them."""
    for signum in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)


def _start_shell(tmp_path: Path, *command: str,
                 ) -> tuple[ConsoleGuest, subprocess.Popen[bytes]]:
    """busybox ``command`` (an interactive ash by default) on a fresh pty, and a console."""
    applets = tmp_path / "bin"
    applets.mkdir()
    subprocess.run([BUSYBOX or "busybox", "--install", "-s", str(applets)], check=True)
    master, slave = pty.openpty()
    env = {"PATH": str(applets), "HOME": str(tmp_path)}
    # A guest's shell takes ^C; a pytest started in the background by a
    # non-interactive shell (`cmd &`) ignores SIGINT and SIGQUIT, and an ignored
    # signal stays ignored across exec, so the stand-in gets default dispositions.
    process = subprocess.Popen([str(applets / "setsid"), "-c", str(applets / "sh"), *command],
                               stdin=slave, stdout=slave, stderr=slave, env=env,
                               cwd=tmp_path, close_fds=True, preexec_fn=_default_signals)
    os.close(slave)
    return ConsoleGuest(PtyStream(master), name="test pty", connect_timeout=10), process


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[tuple[ConsoleGuest, subprocess.Popen[bytes]]]:
    """An interactive busybox ash on a fresh pty, as the guest's console loop starts it."""
    guest, process = _start_shell(tmp_path)
    try:
        yield guest, process
    finally:
        process.kill()
        process.wait()
        guest.close()


@pytest.fixture
def respawning_shell(tmp_path: Path) -> Iterator[ConsoleGuest]:
    """A shell that comes back after ^C kills it, as the guest's /init gives hvc0 one."""
    guest, process = _start_shell(tmp_path, "-c", "trap : INT; while :; do sh; done")
    try:
        yield guest
    finally:
        process.kill()
        process.wait()
        guest.close()


def test_exit_statuses_are_exact(shell: tuple[ConsoleGuest, subprocess.Popen[bytes]]) -> None:
    guest, _ = shell
    assert [guest.run(c).exit_status for c in ("true", "false", "sh -c 'exit 3'")] == [0, 1, 3]


def test_output_is_exact(shell: tuple[ConsoleGuest, subprocess.Popen[bytes]]) -> None:
    guest, _ = shell
    assert guest.run("printf 'a\\r\\nb'").stdout == "a\r\nb"
    assert guest.run("echo out; echo err >&2").stdout == "out\nerr\n"
    assert guest.run("echo '__HX_E_x_0'; echo \"it's\" \"$((6*7))\"").stdout == (
        "__HX_E_x_0\nit's 42\n")
    # What the shell writes back is not read as options or escapes on the way out.
    assert guest.run("printf '%s\\n' -n -e 'a\\nb\\c' '%s'").stdout == "-n\n-e\na\\nb\\c\n%s\n"


def test_files_read_in_one_process_come_apart_exactly(
        shell: tuple[ConsoleGuest, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    """procfs.read_files_command: head -v of the files that exist, split by path with
    each file's text exactly (a last line without its newline included)."""
    guest, _ = shell
    (tmp_path / "a").write_text("1\n2\n")
    (tmp_path / "b").write_text("x")
    (tmp_path / "c").write_text("\n")
    paths = [str(tmp_path / name) for name in ("a", "missing", "b", "c")]
    result = guest.run(read_files_command(paths))
    assert result.ok
    assert split_files(result.stdout) == {paths[0]: "1\n2\n", paths[2]: "x", paths[3]: "\n"}
    assert split_files(guest.run(read_files_command([paths[1]])).stdout) == {}


def test_reads_run_together_and_come_apart(
        shell: tuple[ConsoleGuest, subprocess.Popen[bytes]]) -> None:
    """steps.read_together: one command, each read's output by name; the first read
    that fails stops the rest and is named with its output."""
    guest, _ = shell
    assert read_together(guest, {"a": "echo one; echo two", "b": "printf x",
                                 "c": "if false; then echo no; fi"}) == {
        "a": "one\ntwo\n", "b": "x", "c": ""}
    with pytest.raises(GuestError, match=r"^`cat /nonexistent` failed \(exit 1\): .*nonexist"):
        read_together(guest, {"a": "echo one", "b": "cat /nonexistent", "c": "touch ran"})
    assert guest.run("test -e ran").exit_status == 1


def test_every_byte_of_a_command_arrives_as_sent(
        shell: tuple[ConsoleGuest, subprocess.Popen[bytes]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The $'...' encoding: each byte but NUL (which no shell word holds) and the quote
    itself reaches the shell as sent, also across staged lines (an escape is never
    split), and the command's own exit does not end the console loop."""
    from harness.guest import console

    guest, _ = shell
    # Every ASCII byte, escapes the shell would decode if sent bare, and UTF-8.
    text = ("".join(chr(code) for code in range(1, 128) if chr(code) != "'")
            + "\\n\\x41\\\\é€😀")
    expected = " ".join(f"{byte:02x}" for byte in text.encode())
    for inline in (console._MAX_INLINE, 7):  # one line; staged, 7 characters a line
        monkeypatch.setattr(console, "_MAX_INLINE", inline)
        result = guest.run(f"printf %s '{text}' | od -An -v -tx1")
        assert " ".join(result.stdout.split()) == expected and result.ok
    assert guest.run("exit 3").exit_status == 3 and guest.run("echo alive").stdout == "alive\n"
    ended = guest.run("echo out; exit 4")
    assert (ended.stdout, ended.exit_status) == ("out\n", 4)
    # Each command in a subshell of its own, as with sh -c: nothing it changes stays.
    home = guest.run("pwd").stdout
    assert guest.run("cd /; x=1; pwd").stdout == "/\n"
    assert guest.run('pwd; echo "${x:-unset}"').stdout == home + "unset\n"


def test_the_output_is_the_commands_to_the_last_newline(
        shell: tuple[ConsoleGuest, subprocess.Popen[bytes]]) -> None:
    """Collected in a shell variable, the output keeps its trailing newlines and an
    ending that looks like the status sentinel; a NUL byte is dropped (text only:
    files travel base64-encoded through get())."""
    guest, _ = shell
    assert guest.run("printf 'a\\n\\n\\n'").stdout == "a\n\n\n"
    assert guest.run("printf 'x5'; exit 2").stdout == "x5"
    assert guest.run("printf ''").stdout == ""
    assert guest.run("printf 'a\\0b'").stdout == "ab"


def test_ten_thousand_lines_arrive_whole(
        shell: tuple[ConsoleGuest, subprocess.Popen[bytes]]) -> None:
    guest, _ = shell
    lines = guest.run("seq 10000").stdout.splitlines()
    assert lines == [str(n) for n in range(1, 10001)]


def test_long_command_is_staged(shell: tuple[ConsoleGuest, subprocess.Popen[bytes]]) -> None:
    guest, _ = shell
    payload = "x" * 9000
    result = guest.run(f"echo {payload} | wc -c")
    assert result.stdout.strip() == "9001" and result.ok


def test_file_round_trip(shell: tuple[ConsoleGuest, subprocess.Popen[bytes]],
                         tmp_path: Path) -> None:
    guest, _ = shell
    data = os.urandom(200_000)
    local = tmp_path / "in.bin"
    local.write_bytes(data)
    guest.put(local, str(tmp_path / "remote.bin"))
    guest.get(str(tmp_path / "remote.bin"), tmp_path / "out.bin")
    assert hashlib.sha256((tmp_path / "out.bin").read_bytes()).digest() == \
        hashlib.sha256(data).digest()


def test_file_paths_may_be_strings(shell: tuple[ConsoleGuest, subprocess.Popen[bytes]],
                                  tmp_path: Path) -> None:
    guest, _ = shell
    (tmp_path / "in.txt").write_bytes(b"str paths\n")
    guest.put(str(tmp_path / "in.txt"), str(tmp_path / "remote.txt"))
    guest.get(str(tmp_path / "remote.txt"), str(tmp_path / "out.txt"))
    assert (tmp_path / "out.txt").read_bytes() == b"str paths\n"


def test_missing_remote_file_is_an_error(
        shell: tuple[ConsoleGuest, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    guest, _ = shell
    with pytest.raises(GuestError, match="cannot read /nonexistent"):
        guest.get("/nonexistent", tmp_path / "x")


def test_timeout_interrupts_and_recovers(
        shell: tuple[ConsoleGuest, subprocess.Popen[bytes]]) -> None:
    guest, _ = shell
    with pytest.raises(GuestTimeout, match="did not finish within 1 s"):
        guest.run("sleep 30", timeout=1)
    # The loop died with the command on ^C; a fresh shell is not there in
    # this test (no init respawns it), so the transport says it is unusable...
    with pytest.raises(GuestError):
        guest.run("true")


def test_a_check_ends_a_waiting_command_at_once_and_the_console_recovers(
        respawning_shell: ConsoleGuest) -> None:
    """What the health watch raises while a command hangs ends the step within a second;
    the next step finds the console set up again."""
    guest = respawning_shell
    checks: list[float] = []

    def kernel_reports_on_second_check() -> None:
        checks.append(time.monotonic())
        if len(checks) == 2:
            raise KernelProblem("Oops", "[ 1.0] general protection fault: 0000 [#1] SMP")

    guest.check_while_waiting(kernel_reports_on_second_check)
    started = time.monotonic()
    with pytest.raises(KernelProblem, match="general protection fault"):
        guest.run("sleep 30", timeout=60)
    assert time.monotonic() - started < 2.5
    assert guest.run("echo back", timeout=10).stdout == "back\n"


def test_shell_dying_mid_command_is_reported(
        shell: tuple[ConsoleGuest, subprocess.Popen[bytes]]) -> None:
    guest, process = shell
    with pytest.raises(GuestError, match="closed while running"):
        guest.run(f"kill -9 {process.pid}; sleep 5", timeout=20)


def test_get_in_several_chunks(shell: tuple[ConsoleGuest, subprocess.Popen[bytes]],
                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.guest import console

    guest, _ = shell
    monkeypatch.setattr(console, "_MAX_CHUNK", 4096)
    data = os.urandom(4096 * 4 + 123)
    (tmp_path / "remote.bin").write_bytes(data)
    guest.get(str(tmp_path / "remote.bin"), tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == data
    guest.get(str(tmp_path / "out.bin"), tmp_path / "again.bin")  # not a chunk multiple
    (tmp_path / "empty").write_bytes(b"")
    guest.get(str(tmp_path / "empty"), tmp_path / "empty.out")
    assert (tmp_path / "empty.out").read_bytes() == b""


class DroppingStream(PtyStream):
    """Reads through a relay that drops bytes once, as QEMU does when the host is slow."""

    def __init__(self, fd: int) -> None:
        super().__init__(fd)
        self.skip, self.drop = 0, 0  # pass `skip` more bytes on, then drop `drop` bytes
        self._read, self._write = os.pipe()
        threading.Thread(target=self._relay, daemon=True).start()

    def _relay(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                data = b""
            if not data:
                os.close(self._write)
                return
            kept = bytearray()
            for byte in data:
                if self.skip:
                    self.skip -= 1
                elif self.drop:
                    self.drop -= 1
                    continue
                kept.append(byte)
            os.write(self._write, bytes(kept))

    def fileno(self) -> int:
        return self._read


def test_lost_output_is_an_error_not_a_short_result(tmp_path: Path) -> None:
    applets = tmp_path / "bin"
    applets.mkdir()
    subprocess.run([BUSYBOX or "busybox", "--install", "-s", str(applets)], check=True)
    master, slave = pty.openpty()
    process = subprocess.Popen([str(applets / "setsid"), "-c", str(applets / "sh")],
                               stdin=slave, stdout=slave, stderr=slave,
                               env={"PATH": str(applets)}, cwd=tmp_path)
    os.close(slave)
    stream = DroppingStream(master)
    guest = ConsoleGuest(stream, name="lossy pty", connect_timeout=10)
    try:
        stream.skip, stream.drop = 5000, 1000
        with pytest.raises(GuestError, match=r"delivered 47894 of the 48894 bytes"):
            guest.run("seq 10000")
        assert guest.run("echo fine").stdout == "fine\n"  # the transport is still usable
    finally:
        process.kill()
        process.wait()
        guest.close()
