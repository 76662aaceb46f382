"""Hand a guest shell to the person at the keyboard (``harness boot`` without a command).

Works with anything that has ``fileno()``, ``recv()`` and ``sendall()``: a
socket to a console, or a paramiko channel with a shell. The local terminal
goes raw so keys like ^C reach the guest; Ctrl-] leaves, as in telnet.
"""

import os
import select
import sys
import termios
import tty
from typing import Protocol

ESCAPE = b"\x1d"  # Ctrl-]


class Channel(Protocol):
    """A bidirectional byte stream with a pollable descriptor."""

    def fileno(self) -> int: ...

    def recv(self, size: int) -> bytes: ...

    def sendall(self, data: bytes) -> None: ...


def attach(channel: Channel, escape: bytes = ESCAPE) -> None:
    """Copy stdin to ``channel`` and ``channel`` to stdout until EOF or the escape key."""
    stdin = sys.stdin.fileno()
    stdout = sys.stdout.fileno()
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    try:
        if saved is not None:
            tty.setraw(stdin)
        while True:
            readable, _, _ = select.select([stdin, channel], [], [])
            if channel in readable:
                data = channel.recv(65536)
                if not data:
                    return
                os.write(stdout, data)
            if stdin in readable:
                keys = os.read(stdin, 1024)
                if not keys or escape in keys:
                    before = keys.split(escape)[0]
                    if before:
                        channel.sendall(before)
                    return
                channel.sendall(keys)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
