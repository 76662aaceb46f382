"""Verified downloads and safe unpacking of kernel tarballs.

A download lands in the cache only after its sha256 matched, so a corrupt or
tampered file can never be used by a later run; unpacking refuses members
that would escape the destination (absolute paths, ``..``, links pointing
outside, device files), because a tarball is untrusted input.
"""

import errno
import hashlib
import tarfile
from pathlib import Path
from typing import IO

from harness import cache
from harness.errors import HarnessError

DOWNLOADS = "downloads"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so a large tarball costs no memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(actual: str, expected: str, what: str) -> None:
    """One-line error on a mismatch, naming both hashes."""
    if actual != expected:
        raise HarnessError(
            f"sha256 mismatch for {what}: expected {expected}, got {actual}; "
            "check the URL and the #sha256= you gave (nothing was cached)"
        )


def download(url: str, sha256: str, timeout: float = 60.0) -> Path:
    """The file at ``url``, fetched once into the cache and verified.

    The entry is keyed by the expected hash, so a second call (or another URL
    for the same file) is a lookup; a mismatch or a network failure leaves no
    entry behind.
    """
    name = url.rstrip("/").rsplit("/", 1)[-1] or "download"
    entry = cache.lookup(DOWNLOADS, sha256)
    if entry is not None and (entry / name).is_file():
        return entry / name
    with cache.produce(DOWNLOADS, sha256, force=entry is not None) as work:
        target = work / name
        digest = _fetch(url, target, timeout)
        check_sha256(digest, sha256, url)
    return cache.entry_path(DOWNLOADS, sha256) / name


def _fetch(url: str, target: Path, timeout: float) -> str:
    """Stream ``url`` into ``target`` with a progress bar; return its sha256."""
    # Imported here: only a download needs them, and a cache hit should start fast.
    import urllib.error
    import urllib.request

    from rich.console import Console
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, target.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with Progress(
                *Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(),
                transient=True, console=Console(stderr=True),
            ) as progress:
                task = progress.add_task(f"downloading {target.name}", total=total)
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    progress.advance(task, len(chunk))
    except urllib.error.HTTPError as error:
        raise HarnessError(f"download of {url} failed: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        raise HarnessError(
            f"download of {url} failed: {reason}; check the URL and the network"
        ) from None
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise HarnessError(
                f"disk full while downloading {url} into {target.parent}: free space or "
                "set HARNESS_CACHE_DIR (nothing was cached)"
            ) from None
        raise
    return digest.hexdigest()


def extract_tar(source: Path | IO[bytes], dest: Path) -> None:
    """Unpack a (compressed) tar file or an uncompressed tar stream into ``dest``.

    Uses tarfile's ``data`` filter, which rejects every member that would land
    outside ``dest`` or is a device node; such a member fails the whole unpack
    with a one-line error naming it.
    """
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if isinstance(source, Path):
            with tarfile.open(source, mode="r:*") as archive:
                archive.extractall(dest, filter="data")
        else:
            with tarfile.open(fileobj=source, mode="r|") as archive:
                archive.extractall(dest, filter="data")
    except tarfile.FilterError as error:
        member = error.tarinfo.name if error.tarinfo else "?"
        raise HarnessError(
            f"refusing to unpack {source if isinstance(source, Path) else 'archive'}: "
            f"member {member!r} is unsafe ({error})"
        ) from None
    except (tarfile.TarError, EOFError, OSError) as error:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            raise HarnessError(
                f"disk full while unpacking into {dest}: free space or set HARNESS_CACHE_DIR"
            ) from None
        raise HarnessError(f"cannot unpack {source}: {error}") from None


def source_root(unpacked: Path) -> Path:
    """The kernel tree inside an unpacked archive (one top directory, or none)."""
    if (unpacked / "Makefile").is_file():
        return unpacked
    children = [child for child in unpacked.iterdir() if child.is_dir()]
    if len(children) == 1 and (children[0] / "Makefile").is_file():
        return children[0]
    raise HarnessError(
        f"the archive unpacked into {unpacked} holds no kernel tree (no top-level Makefile)"
    )


def verify_local(path: Path, sha256: str | None) -> str:
    """Hash a local tarball, check it against ``sha256`` when given; return the hash."""
    if not path.is_file():
        raise HarnessError(f"kernel tarball {path} does not exist")
    actual = sha256_file(path)
    if sha256 is not None:
        check_sha256(actual, sha256, str(path))
    return actual

