"""Where the harness keeps caches and run directories.

Caches follow XDG (``~/.cache/harness``) and are content-keyed, so they can be
deleted at any time. Run directories (console logs, QEMU command lines, JSON,
pictures) live under ``~/.local/state/harness/runs`` with a ``latest`` link,
unless HARNESS_RUNS_DIR says otherwise.
"""

import os
from pathlib import Path


def cache_root() -> Path:
    """Root of every cache; HARNESS_CACHE_DIR overrides the XDG default."""
    explicit = os.environ.get("HARNESS_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "harness"


def runs_root() -> Path:
    """Root of the per-run directories; HARNESS_RUNS_DIR overrides it."""
    explicit = os.environ.get("HARNESS_RUNS_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "harness" / "runs"


def project_root() -> Path:
    """The checkout holding kernel-configs/, guest-modules/ and images/."""
    return Path(__file__).resolve().parent.parent
