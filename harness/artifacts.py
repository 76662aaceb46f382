"""The typed results that flow between stages.

Each stage returns one of these frozen records and the next stage takes it as
input, so stages never reach into each other's directories by convention.
"""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KernelBuild:
    """A built kernel and the tree that out-of-tree modules are built against."""

    arch: str  # harness arch name: x86_64 | arm64
    spec: str  # the kernel spec as the user wrote it
    release: str  # `make kernelrelease`, what `uname -r` prints in the guest
    version: tuple[int, int, int]  # (major, minor, sublevel) from the tree's Makefile
    image: Path  # bzImage or Image
    build_dir: Path  # the O= tree: `make -C build_dir M=...` builds a module
    config: Path  # the final .config
    system_map: Path
    make_args: tuple[str, ...]  # ARCH=, CROSS_COMPILE=, HOSTCC=... also needed for modules
    module_fixups: tuple[str, ...]  # names of post-link fixups a built .ko needs (quirks)
    cached: bool  # True when this call ran no make at all
    seconds: float  # wall time of this call
    origin: str = ""  # what the spec resolved to when that was a choice (debian:latest)
    # The source's identity (harness.kernel.source): an in-place build keeps one
    # build_dir for every commit of a repository, so the path alone names no tree.
    source: str = ""


@dataclass(frozen=True)
class ModuleArtifact:
    """An out-of-tree kernel module built for one KernelBuild."""

    path: Path  # the .ko, ready to insmod
    name: str  # module name as lsmod shows it
    kernel_release: str
    movable_api: str  # which movable-page API it was built with (see guest-modules/README)


@dataclass(frozen=True)
class Initramfs:
    """A guest userspace packed as a newc cpio archive."""

    path: Path
    arch: str
    ready_marker: str  # the line /init prints on the console when the guest is usable
