"""The ``harness`` command: a thin front end over the stages' library calls.

Each subcommand lives next to the stage it drives and exposes
``register(subparsers)``; this module only dispatches and turns a
HarnessError into one line on stderr (exit 2) instead of a traceback, with
one more line per note it collected (a cleanup that failed after it, say).
^C and SIGTERM both unwind (every ``finally`` runs) and exit 130 and 143, as
a shell reports a command killed by either.
"""

import argparse
import atexit
import contextlib
import importlib
import os
import signal
import sys
from typing import NoReturn

from harness.errors import HarnessError, Terminated, terminate_by_unwinding

# Modules that contribute subcommands, in the order --help lists them.
COMMAND_MODULES = (
    "harness.check.cli", "harness.bisect.cli", "harness.kernel.cli", "harness.vm.cli",
    "harness.repro.cli", "harness.doctor",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, assembled from every command module."""
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Prove that non-LRU movable driver pages migrate under compaction.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    args = build_parser().parse_args(argv)
    terminate_by_unwinding()
    try:
        return int(args.func(args))
    except HarnessError as error:
        print(f"harness: error: {error}", file=sys.stderr)
        _notes(error)
        return 2
    except KeyboardInterrupt as interrupt:
        terminated = isinstance(interrupt, Terminated)
        print(f"harness: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        _notes(interrupt)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)


def run() -> NoReturn:
    """The console script: ``main()``, then exit without Python's own teardown.

    By the time main returns, everything the harness held is released by its
    own ``with`` and ``finally`` blocks (QEMU stopped and reaped, a labgrid
    place released, temporary directories removed, results written atomically),
    and the exit handlers run here. What is skipped is the interpreter freeing
    every object of matplotlib, numpy and the rest one by one: 0.1 s of each
    ``harness run``, 5 % of a whole check (issue 19).
    """
    status = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a reader that went away (`harness ... | head`)
            stream.flush()
    os._exit(status)


def _notes(failure: BaseException) -> None:
    """One ``harness: note:`` line per note the failure collected on its way."""
    for note in getattr(failure, "__notes__", ()):
        print(f"harness: note: {note}", file=sys.stderr)


if __name__ == "__main__":
    run()
