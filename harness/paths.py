"""Where the harness keeps caches and run directories.

Caches follow XDG (``~/.cache/harness``) and are content-keyed, so they can be
deleted at any time. Run directories (console logs, QEMU command lines, JSON,
pictures) live under ``~/.local/state/harness/runs`` with a ``latest`` link,
unless HARNESS_RUNS_DIR says otherwise.
"""

import os
import secrets
import time
from contextlib import suppress
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


def new_run_dir(label: str) -> Path:
    """A fresh run directory under runs_root(), and a ``latest`` link to it."""
    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    run_dir = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{label}-{secrets.token_hex(3)}"
    run_dir.mkdir()
    latest = root / "latest"
    with suppress(OSError):
        tmp = root / f".latest-{secrets.token_hex(4)}"
        tmp.symlink_to(run_dir.name)
        tmp.replace(latest)
    return run_dir


def project_root() -> Path:
    """The checkout holding kernel-configs/, guest-modules/ and images/."""
    return Path(__file__).resolve().parent.parent
