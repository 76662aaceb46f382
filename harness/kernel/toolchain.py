"""Host tools a kernel build needs, and the identity of the compilers used.

Missing tools are reported with the Debian package from harness.hostdeps, so
the message is the same one `harness doctor` would print. The compiler
identity (``--version`` first lines) is part of every build's cache key: a
gcc or binutils upgrade changes the objects, so it must miss the cache.
"""

import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from harness.arch import Arch
from harness.errors import HarnessError, MissingTool
from harness.hostdeps import HOST_DEPS, HOST_FILES, HostDep

# What every kernel build runs besides the compiler: kconfig needs flex and
# bison, timeconst needs bc, objtool/resolve_btfids need libelf, and
# sign-file/extract-cert need the OpenSSL headers (newer trees build them even
# without module signing).
BUILD_PROGRAMS = ("make", "flex", "bison", "bc", "perl")
BUILD_HEADERS = ("/usr/include/libelf.h", "/usr/include/openssl/ssl.h")


def _dep(name: str) -> HostDep | None:
    return next((dep for dep in HOST_DEPS + HOST_FILES if dep.program == name), None)


def require(program: str, purpose: str | None = None) -> str:
    """The absolute path of ``program``, or MissingTool naming its package."""
    found = shutil.which(program)
    if found:
        return found
    dep = _dep(program)
    if dep is None:
        raise HarnessError(f"{program} not found (needed for {purpose})")
    raise MissingTool(program, dep.package, purpose or dep.purpose)


def require_build_tools(arch: Arch) -> None:
    """Fail before any make runs when a program or header a build needs is absent."""
    require(f"{arch.cross_compile}gcc", f"{arch.name} kernel builds")
    require("gcc", "kernel host tools")
    for program in BUILD_PROGRAMS:
        require(program)
    for header in BUILD_HEADERS:
        dep = _dep(header)
        if dep is not None and not Path(header).exists():
            raise MissingTool(header, dep.package, dep.purpose)


@dataclass(frozen=True)
class Toolchain:
    """The compilers a build uses, by their own ``--version`` text."""

    cc: str  # `{cross}gcc --version` first line
    ld: str  # `{cross}ld --version` first line
    hostcc: str  # host `gcc --version` first line (host tools: kconfig, dtc, ...)

    @property
    def gcc_version(self) -> tuple[int, int]:
        """(major, minor) of the target compiler, for quirk selection."""
        return _version_of(self.cc)

    @property
    def binutils_version(self) -> tuple[int, int]:
        """(major, minor) of the target binutils, for quirk selection."""
        return _version_of(self.ld)


def _version_of(line: str) -> tuple[int, int]:
    numbers = re.findall(r"(\d+)\.(\d+)(?:\.\d+)?", line.split(")", 1)[-1]) or re.findall(
        r"(\d+)\.(\d+)", line
    )
    if not numbers:
        raise HarnessError(f"cannot read a version from {line!r}")
    major, minor = numbers[0]
    return int(major), int(minor)


@cache
def _first_line(program: str) -> str:
    result = subprocess.run(
        [program, "--version"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not result.stdout:
        raise HarnessError(f"`{program} --version` failed: {result.stderr.strip()[:200]}")
    return result.stdout.splitlines()[0].strip()


def toolchain(arch: Arch) -> Toolchain:
    """Identify the (cross) compiler, linker and host compiler for ``arch``."""
    cc = require(f"{arch.cross_compile}gcc", f"{arch.name} kernel builds")
    ld = require(f"{arch.cross_compile}ld", f"{arch.name} kernel builds")
    hostcc = require("gcc", "kernel host tools")
    return Toolchain(cc=_first_line(cc), ld=_first_line(ld), hostcc=_first_line(hostcc))
