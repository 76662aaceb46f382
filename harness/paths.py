"""Where the harness finds its shipped files and keeps caches and run directories.

The config fragments, the sample driver's source and the image templates live
at the repository's root (kernel-configs/, guest-modules/, images/) and are
found as package resources (harness/_data/ links to them; a wheel carries
copies), so a checkout, an editable install and an installed wheel all work.
Caches follow XDG (``~/.cache/harness``) and are content-keyed, so they can be
deleted at any time. Run directories (console logs, QEMU command lines, JSON,
pictures) live under ``~/.local/state/harness/runs`` with a ``latest`` link,
unless HARNESS_RUNS_DIR says otherwise.
"""

import importlib.resources
import os
import secrets
import tempfile
import time
from contextlib import suppress
from pathlib import Path

from harness.errors import HarnessError

SHIPPED = ("kernel-configs", "guest-modules", "images")


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
    return open_run_dir(planned_run_dir(label))


def planned_run_dir(label: str) -> Path:
    """The path of a new run directory for ``label``, not made yet: a pytest-xdist
    controller hands it to its workers, and the first that needs it makes it."""
    return runs_root() / f"{time.strftime('%Y%m%d-%H%M%S')}-{label}-{secrets.token_hex(3)}"


def open_run_dir(run_dir: Path) -> Path:
    """Make ``run_dir`` unless another process did, and point ``latest`` at it."""
    root = run_dir.parent
    run_dir.mkdir(parents=True, exist_ok=True)
    latest = root / "latest"
    with suppress(OSError):
        tmp = root / f".latest-{secrets.token_hex(4)}"
        tmp.symlink_to(run_dir.name)
        tmp.replace(latest)
    return run_dir


def shipped_dir(name: str) -> Path:
    """The shipped directory ``name`` (one of SHIPPED) of this installation.

    A real directory, not just a resource: make, sh and jinja2 read files in it.
    """
    if name not in SHIPPED:
        raise ValueError(f"{name!r} is not one of {SHIPPED}")
    path = importlib.resources.files("harness") / "_data" / name
    if not isinstance(path, Path) or not path.is_dir():
        raise HarnessError(f"{path} is missing: this harness installation is incomplete "
                           "(reinstall it, or check out the repository again)")
    return path


def write_atomically(path: Path, data: str | bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` through a temporary file renamed over it (with
    permission bits ``mode``, else mkstemp's 0600), so a reader, or a run killed
    meanwhile, sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
