"""The host programs the harness and its tests need, and the Debian packages that ship them.

Pure standard library on purpose: the set-up script runs this file with the
system python3 before any virtual environment exists
(``python3 harness/hostdeps.py``) to learn which packages to install, and
``harness doctor`` uses the same table, so the two can never disagree.

Three groups, by who installs them: what the harness needs (every ``./dev``
command), what only the test suite needs (``./dev test``), and what only the
checks of this repository's own files need (``.ci/run``). The test suite
guards each host program with ``@pytest.mark.needs_program``, which refuses a
program missing from these tables, so a test cannot need a tool no set-up installs.
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
    HostDep("ssh", "openssh-client", "labgrid:// targets (labgrid's SSHDriver runs OpenSSH)"),
    HostDep("scp", "openssh-client", "copying files to a labgrid:// board"),
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

# Needed only by the test suite: ./dev test installs them.
TEST_DEPS: tuple[HostDep, ...] = (
    HostDep("busybox", "busybox-static",
            "console transport tests against the busybox ash the guest runs"),
    HostDep("patch", "patch", "the deliberately broken sample drivers of tests/broken-drivers/"),
)

# Needed only to check this repository's Vagrantfile. vagrant and its libvirt
# provider (validate needs one) pull in Ruby and libvirt, about 70 packages, for
# two tests of a file no harness stage reads: .ci/run installs them, ./dev test
# does not.
CI_DEPS: tuple[HostDep, ...] = (
    HostDep("vagrant", "vagrant", "validating the Vagrantfile"),
)
CI_PACKAGES: tuple[str, ...] = ("vagrant", "vagrant-libvirt")

# Who installs each group, as the test suite's skip messages name it.
INSTALLERS: tuple[tuple[tuple[HostDep, ...], str], ...] = (
    (HOST_DEPS + HOST_FILES, "./dev setup"),
    (TEST_DEPS, "./dev test"),
    (CI_DEPS, ".ci/run"),
)


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


def all_packages(tests: bool = False) -> list[str]:
    """Every Debian package the harness and its set-up need (and with ``tests``,
    the test suite's too), sorted, unique."""
    deps = HOST_DEPS + HOST_FILES + (TEST_DEPS if tests else ())
    return sorted({d.package for d in deps} | set(SETUP_PACKAGES))


def installer(program: str) -> tuple[HostDep, str] | None:
    """The entry for ``program`` and the command that installs it; None if no table has it."""
    for deps, command in INSTALLERS:
        for dep in deps:
            if dep.program == program:
                return dep, command
    return None


if __name__ == "__main__":
    # --all: the harness's packages; --all --test: and the test suite's;
    # --ci: the CI-only ones; no option: the harness's packages missing here.
    if "--ci" in sys.argv:
        packages = list(CI_PACKAGES)
    elif "--all" in sys.argv:
        packages = all_packages(tests="--test" in sys.argv)
    else:
        packages = sorted({d.package for d in missing()})
    print("\n".join(packages))
