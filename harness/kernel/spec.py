"""Kernel specs: the one spelling the CLI and pytest share for "which kernel".

Parsing is pure (no network, no unpacking) so a typo fails in milliseconds,
before anything is downloaded. Forms:

- ``/path/to/linux``                a local unpacked tree, used in place
- ``git:/path/to/repo@REF``         a ref of a local git repository
- ``/path/linux-4.8.17.tar.xz``     a local tarball
- ``https://.../linux-4.8.17.tar.xz[#sha256=HEX]``  a tarball URL
- ``debian:X.Y``                    Debian's linux-source-X.Y, from whichever suite has
                                    the newest
- ``debian:latest``                 the newest linux-source-* the archive has
- ``debian:SUITE``                  a suite's newest (trixie, stable, trixie-backports)

A tarball URL needs a sha256: given after ``#sha256=`` or pinned in
PINNED_SHA256 for a few upstream tarballs whose hash is published. Which
Debian package a ``debian:`` spec means is decided by the source stage
(harness.kernel.debian), from the archive's signed indices.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.errors import HarnessError

# The non-LRU movable page API (isolate_page/migratepage/putback_page and
# __SetPageMovable) arrived in 4.8 (commit bda807d444); older kernels cannot
# run the driver under test at all.
MIN_VERSION = (4, 8)

FORMS = (
    "a kernel tree path, git:/path/to/repo@REF, a tarball path or URL "
    "(linux-X.Y[.Z].tar.{xz,gz,bz2}[#sha256=HEX]), debian:X.Y (e.g. debian:6.1), "
    "debian:latest or debian:SUITE (e.g. debian:trixie)"
)

# sha256 of upstream release tarballs, by file name. Only hashes published in
# kernel.org's signed sha256sums.asc and quoted identically by several
# independent distribution recipes are listed; anything else needs #sha256=.
PINNED_SHA256: dict[str, str] = {
    "linux-5.10.tar.xz": "dcdf99e43e98330d925016985bfbc7b83c66d367b714b2de0cbbfcbf83d8ca43",
    "linux-6.1.tar.xz": "2ca1f17051a430f6fed1196e4952717507171acfd97d96577212502703b25deb",
}

_TARBALL_SUFFIXES = (".tar.xz", ".tar.gz", ".tgz", ".tar.bz2", ".tar")
_TARBALL_VERSION = re.compile(r"linux-(\d+)\.(\d+)(?:\.(\d+))?(?:[-.]|$)")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DEBIAN_VERSION = re.compile(r"(\d+)\.(\d+)")
_DEBIAN_SUITE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")

Kind = Literal["tree", "git", "tarball", "debian"]


@dataclass(frozen=True)
class KernelSpec:
    """A parsed kernel spec; which fields are set depends on ``kind``."""

    kind: Kind
    text: str  # as the user wrote it, for messages and KernelBuild.spec
    path: Path | None = None  # tree, git repository, or local tarball
    url: str | None = None  # tarball URL
    ref: str = "HEAD"  # git ref
    sha256: str | None = None  # expected tarball hash (given or pinned)
    debian_query: str | None = None  # X.Y, "latest" or a suite name


def check_version(version: tuple[int, ...], what: str) -> None:
    """Refuse kernels that predate the movable-page API."""
    if tuple(version[:2]) < MIN_VERSION:
        shown = ".".join(str(part) for part in version)
        raise HarnessError(
            f"{what} is Linux {shown}, older than 4.8: it has no non-LRU movable page API "
            "(isolate_page/migratepage/putback_page), use a 4.8 or newer kernel"
        )


def tarball_version(name: str) -> tuple[int, int, int] | None:
    """(major, minor, sublevel) from a kernel.org style file name, if it has one."""
    match = _TARBALL_VERSION.search(name)
    if not match:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


def _is_tarball(name: str) -> bool:
    return name.endswith(_TARBALL_SUFFIXES)


def _parse_tarball(text: str) -> KernelSpec:
    location, _, fragment = text.partition("#")
    sha256 = None
    if fragment:
        key, _, value = fragment.partition("=")
        value = value.strip().lower()
        if key != "sha256" or not _SHA256.fullmatch(value):
            raise HarnessError(
                f"bad checksum in kernel spec {text!r}: write it as #sha256=<64 hex digits>"
            )
        sha256 = value
    name = location.rstrip("/").rsplit("/", 1)[-1]
    version = tarball_version(name)
    if version:
        check_version(version, name)
    sha256 = sha256 or PINNED_SHA256.get(name)
    if "://" in location:
        scheme = location.split("://", 1)[0]
        if scheme not in ("http", "https"):
            raise HarnessError(f"cannot download {location!r}: only http(s) URLs are supported")
        if sha256 is None:
            raise HarnessError(
                f"no known sha256 for {name}: append #sha256=<hex> to the URL "
                f"(from the release's sha256sums.asc), e.g. {location}#sha256=..."
            )
        return KernelSpec(kind="tarball", text=text, url=location, sha256=sha256)
    return KernelSpec(kind="tarball", text=text, path=Path(location).expanduser(), sha256=sha256)


def _parse_git(text: str) -> KernelSpec:
    body = text[len("git:"):]
    repo, at, ref = body.rpartition("@")
    if not at:
        repo, ref = body, "HEAD"
    if not repo or not ref:
        raise HarnessError(f"bad git kernel spec {text!r}: write git:/path/to/repo@REF")
    return KernelSpec(kind="git", text=text, path=Path(repo).expanduser(), ref=ref)


def debian_kernel_version(query: str) -> tuple[int, int] | None:
    """(X, Y) when a ``debian:`` query names a kernel line, None for latest or a suite."""
    match = _DEBIAN_VERSION.fullmatch(query)
    return (int(match[1]), int(match[2])) if match else None


def _parse_debian(text: str) -> KernelSpec:
    """Check the form only: which package it means needs the archive (the source stage)."""
    query = text[len("debian:"):]
    version = debian_kernel_version(query)
    if version is not None:
        check_version(version, f"linux-source-{query}")
    elif not _DEBIAN_SUITE.fullmatch(query):
        raise HarnessError(
            f"bad Debian kernel spec {text!r}: write debian:X.Y (e.g. debian:6.1), "
            "debian:latest or debian:SUITE (e.g. debian:trixie, debian:stable-backports)"
        )
    return KernelSpec(kind="debian", text=text, debian_query=query)


def parse_spec(text: str) -> KernelSpec:
    """Parse a kernel spec; anything unrecognised fails with the list of forms."""
    text = text.strip()
    if not text:
        raise HarnessError(f"empty kernel spec: give {FORMS}")
    if text.startswith("debian:"):
        return _parse_debian(text)
    if text.startswith("git:"):
        return _parse_git(text)
    if _is_tarball(text.partition("#")[0]):
        return _parse_tarball(text)
    if "://" in text or text.startswith("#") or ":" in text.split("/", 1)[0]:
        raise HarnessError(f"unrecognised kernel spec {text!r}: give {FORMS}")
    return KernelSpec(kind="tree", text=text, path=Path(text).expanduser())
