"""The host programs the harness needs and the Debian packages that ship them.

Pure standard library on purpose: the set-up script runs this file with the
system python3 before any virtual environment exists
(``python3 harness/hostdeps.py``) to learn which packages to install, and
``harness doctor`` uses the same table, so the two can never disagree.
"""

import shutil
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class HostDep:
    """One program, the package that provides it, and why the harness needs it."""

    program: str
    package: str
    purpose: str


HOST_DEPS: tuple[HostDep, ...] = (
    HostDep("make", "make", "kernel and module builds"),
    HostDep("gcc", "gcc", "x86_64 kernel and module builds"),
    HostDep("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu", "arm64 cross builds"),
    HostDep("flex", "flex", "kernel kconfig and dtc"),
    HostDep("bison", "bison", "kernel kconfig and dtc"),
    HostDep("bc", "bc", "kernel timeconst generation"),
    HostDep("perl", "perl", "kernel build scripts"),
    HostDep("cpio", "cpio", "kernel headers archive"),
    HostDep("xz", "xz-utils", "unpacking kernel tarballs"),
    HostDep("zstd", "zstd", "unpacking Debian packages"),
    HostDep("dpkg-deb", "dpkg", "unpacking Debian packages"),
    HostDep("apt-get", "apt", "fetching Debian packages by name"),
    HostDep("gpgv", "gpgv", "verifying the Debian archive's signatures"),
    HostDep("git", "git", "git: kernel specs"),
    HostDep("ccache", "ccache", "fast rebuilds of identical configs"),
    HostDep("qemu-system-x86_64", "qemu-system-x86", "booting x86_64 guests"),
    HostDep("qemu-system-aarch64", "qemu-system-arm", "booting arm64 guests"),
    HostDep("dropbearkey", "dropbear-bin", "making each run's guest SSH host key"),
    HostDep("readelf", "binutils", "finding the libraries of the guest's SSH server"),
)

# Headers and data files that are not programs, checked by path.
HOST_FILES: tuple[HostDep, ...] = (
    HostDep("/usr/include/libelf.h", "libelf-dev", "objtool and module builds"),
    HostDep("/usr/include/openssl/ssl.h", "libssl-dev", "kernel signing tools"),
    HostDep(
        "/usr/share/keyrings/debian-archive-keyring.gpg",
        "debian-archive-keyring",
        "verifying Debian kernel sources",
    ),
)

# Needed by the set-up script itself rather than by a harness stage.
SETUP_PACKAGES: tuple[str, ...] = ("python3-venv", "ca-certificates")


def missing(deps: tuple[HostDep, ...] = HOST_DEPS + HOST_FILES) -> list[HostDep]:
    """The dependencies not present on this host."""
    from pathlib import Path

    absent = []
    for dep in deps:
        present = Path(dep.program).exists() if dep.program.startswith("/") else bool(
            shutil.which(dep.program)
        )
        if not present:
            absent.append(dep)
    return absent


def all_packages() -> list[str]:
    """Every Debian package the harness and its set-up need, sorted, unique."""
    return sorted({d.package for d in HOST_DEPS + HOST_FILES} | set(SETUP_PACKAGES))


if __name__ == "__main__":
    print("\n".join(all_packages() if "--all" in sys.argv else sorted(
        {d.package for d in missing()})))
