"""Turn a KernelSpec into a kernel source directory the build only ever reads.

Local trees are used in place (they must be clean, since ``make O=`` refuses a
tree that was configured in place); a git ref is checked out in the
repository's private clone (harness.kernel.worktree), so that neighbouring
commits build incrementally; everything else is unpacked once into the cache
under a key derived from its content (tarball sha256, Debian package hash).
The ``identity`` string is what the build cache key uses, so it must change
whenever the source can.
"""

import hashlib
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from harness import cache
from harness.errors import HarnessError
from harness.kernel import download
from harness.kernel.spec import KernelSpec, check_version
from harness.kernel.worktree import check_out, resolve_commit

SOURCES = "kernel-source"
TREE = "linux"  # the tree's directory inside a source cache entry

_MAKEFILE_VAR = re.compile(r"^(VERSION|PATCHLEVEL|SUBLEVEL)\s*=\s*(\d*)\s*$", re.M)


@dataclass(frozen=True)
class KernelSource:
    """A kernel tree ready for ``make -C path O=...``."""

    path: Path
    identity: str  # stable fingerprint of the content, for cache keys
    version: tuple[int, int, int]
    origin: str = ""  # what a spec resolved to, when that was a choice (debian:latest)
    # A git spec's tree is a checkout that moves between commits: the build
    # then happens in place, in a build directory under this worktree entry.
    worktree: Path | None = None


def read_version(tree: Path) -> tuple[int, int, int]:
    """(VERSION, PATCHLEVEL, SUBLEVEL) from the top-level Makefile."""
    makefile = tree / "Makefile"
    if not (makefile.is_file() and (tree / "Kconfig").is_file() and (tree / "arch").is_dir()):
        raise HarnessError(
            f"{tree} is not a kernel tree (no top-level Makefile, Kconfig and arch/): "
            "give the path of an unpacked Linux source"
        )
    found = dict(_MAKEFILE_VAR.findall(makefile.read_text(errors="replace")[:4096]))
    try:
        return int(found["VERSION"]), int(found["PATCHLEVEL"]), int(found.get("SUBLEVEL") or 0)
    except (KeyError, ValueError):
        raise HarnessError(
            f"{makefile} has no VERSION/PATCHLEVEL lines: is {tree} a Linux source tree?"
        ) from None


def check_clean(tree: Path) -> None:
    """Refuse a tree configured or built in place: ``make O=`` would fail later."""
    leftovers = [tree / ".config", tree / "include" / "config"]
    leftovers += list((tree / "arch").glob("*/include/generated"))
    dirty = [str(path.relative_to(tree)) for path in leftovers if path.exists()]
    if dirty:
        raise HarnessError(
            f"kernel tree {tree} is not clean (has {', '.join(dirty)}): out-of-tree builds "
            f"need a clean source, run `make -C {tree} mrproper` or give a clean copy"
        )


def tree_fingerprint(tree: Path) -> str:
    """A cheap content fingerprint: every path with its type, size and mtime.

    find(1) stats 60k inodes in about half a second, against minutes for
    hashing the files (and twice as fast as a Python walk); any edit, added or
    deleted file changes an mtime or the list. find's order only changes when
    a directory does, which then costs a rebuild, never a wrong cache hit.
    """
    listing = subprocess.run(
        # .git changes on every fetch and never changes what a checkout builds.
        ["find", str(tree), "-name", ".git", "-prune", "-o",
         "-printf", "%P\\t%y\\t%s\\t%T@\\n"],
        capture_output=True, check=False,
    )
    if listing.returncode != 0:
        error = listing.stderr.decode(errors="replace").strip().splitlines()[:1]
        raise HarnessError(f"cannot read kernel tree {tree}: {' '.join(error)}")
    return hashlib.sha256(listing.stdout).hexdigest()


def obtain_source(spec: KernelSpec) -> KernelSource:
    """The source tree for ``spec``: in place, or unpacked once into the cache."""
    if spec.kind == "tree":
        return _local_tree(spec)
    if spec.kind == "git":
        return _git(spec)
    if spec.kind == "tarball":
        return _tarball(spec)
    return _debian(spec)


def _checked(path: Path, identity: str, what: str) -> KernelSource:
    version = read_version(path)
    check_version(version, what)
    return KernelSource(path=path, identity=identity, version=version)


def _local_tree(spec: KernelSpec) -> KernelSource:
    assert spec.path is not None
    tree = spec.path.resolve()
    if not tree.is_dir():
        raise HarnessError(f"kernel tree {spec.path} does not exist")
    version = read_version(tree)
    check_version(version, str(tree))
    check_clean(tree)
    return KernelSource(path=tree, identity=f"tree:{tree}:{tree_fingerprint(tree)}",
                        version=version)


def _unpacked(identity: str, fill: Callable[[Path], None], what: str) -> KernelSource:
    """The cached tree for ``identity``, produced by ``fill(work)`` when absent."""
    key = cache.cache_key({"source": identity})
    entry = cache.lookup(SOURCES, key)
    if entry is None or not (entry / TREE).is_dir():
        with cache.produce(SOURCES, key, force=entry is not None) as work:
            fill(work)
            tree = work / TREE
            check_version(read_version(tree), what)
        entry = cache.entry_path(SOURCES, key)
    return _checked(entry / TREE, identity, what)


def _move_root(unpacked: Path, work: Path) -> None:
    download.source_root(unpacked).rename(work / TREE)
    shutil.rmtree(unpacked, ignore_errors=True)


def _tarball(spec: KernelSpec) -> KernelSource:
    if spec.url is not None:
        assert spec.sha256 is not None
        tarball = download.download(spec.url, spec.sha256)
        sha256 = spec.sha256
    else:
        assert spec.path is not None
        tarball = spec.path.resolve()
        sha256 = download.verify_local(tarball, spec.sha256)

    def fill(work: Path) -> None:
        download.extract_tar(tarball, work / "unpacked")
        _move_root(work / "unpacked", work)

    return _unpacked(f"tarball:{sha256}", fill, tarball.name)


def _git(spec: KernelSpec) -> KernelSource:
    """The repository's private checkout at the commit (harness.kernel.worktree)."""
    assert spec.path is not None
    repo = spec.path.resolve()
    commit = resolve_commit(repo, spec.ref, f"kernel spec {spec.text}")
    tree = check_out(repo, commit)
    source = _checked(tree, f"git:{commit}", f"{spec.text} ({commit[:12]})")
    return replace(source, worktree=tree.parent)


def _debian(spec: KernelSpec) -> KernelSource:
    # Imported here: the archive client is only needed for debian: specs.
    from harness.debian_archive import fetch_deb, unpack_deb
    from harness.kernel.debian import resolve

    assert spec.debian_query is not None
    offer = resolve(spec.debian_query)
    package = offer.package
    deb = fetch_deb(package, offer.suite, "all", version=offer.version)

    def fill(work: Path) -> None:
        unpack_deb(deb, work / "deb")
        # linux-source-X ships the tree as one tarball, /usr/src/linux-source-X.tar.xz.
        inner = work / "deb" / "usr" / "src" / f"{package}.tar.xz"
        if not inner.is_file():
            raise HarnessError(f"{deb.name} does not contain usr/src/{package}.tar.xz")
        download.extract_tar(inner, work / "unpacked")
        shutil.rmtree(work / "deb")
        _move_root(work / "unpacked", work)

    # A Debian version is never re-uploaded with other content and apt checked
    # the file against the signed index, so the file name (package_version_all)
    # identifies the source without hashing 150 MB on every call.
    return replace(_unpacked(f"debian:{deb.name}", fill, deb.name), origin=offer.describe())
