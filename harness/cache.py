"""Content-keyed cache entries that are either whole or absent.

Every stage (downloads, kernel builds, module builds, images) stores its
output as one directory named by a key derived from everything that changes
the result. An entry is produced in a temporary sibling directory and renamed
into place only when the producer finished, so an interrupted or failed build
never leaves a half-written entry behind.
"""

import fcntl
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from harness.paths import cache_root


def cache_key(parts: dict[str, Any]) -> str:
    """A short, stable hash of a JSON-serialisable description of an input."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def entry_path(kind: str, key: str) -> Path:
    """Where the entry ``key`` of cache ``kind`` lives (it may not exist)."""
    return cache_root() / kind / key


def take_lock(lock: IO[str], waiting: str) -> None:
    """Lock ``lock`` exclusively; when another process holds it, say ``waiting`` and wait.

    flock is released by the kernel when its holder dies, so a killed
    process never blocks anyone.
    """
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"harness: {waiting}", file=sys.stderr, flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)


def lookup(kind: str, key: str) -> Path | None:
    """The finished entry, or None when it was never completed."""
    path = entry_path(kind, key)
    return path if path.is_dir() else None


@contextmanager
def produce(kind: str, key: str, force: bool = False) -> Iterator[Path]:
    """Yield an empty work directory that becomes entry ``key`` on success.

    On any exception (including KeyboardInterrupt) the work directory is
    removed and the previous entry, if any, is left untouched.
    """
    final = entry_path(kind, key)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".partial", dir=final.parent))
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if final.exists():
        if not force:
            shutil.rmtree(work, ignore_errors=True)
            return
        shutil.rmtree(final)
    work.rename(final)

