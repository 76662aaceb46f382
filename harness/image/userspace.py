"""The guest's programs, taken from Debian's binary packages for the guest arch.

busybox-static gives every tool in one static binary. dropbear is dynamic, and
so is OpenSSH's sftp-server, its SFTP subsystem (at the path Debian's dropbear
runs it from): scp and labgrid's SSHDriver copy files over SFTP, as on any
board with OpenSSH. Their shared libraries and the dynamic loader come along: they are found by
walking the ELF ``NEEDED`` entries (readelf understands any architecture) and
fetching the packages named in ``Depends`` until every library is present.
Only the files actually needed go into the image, flat under ``/lib``, which
the loader always searches, so no ld.so.cache is needed.
"""

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.arch import Arch
from harness.debian_archive import fetch_debs, unpack_deb
from harness.errors import HarnessError, MissingTool

GUEST_SUITE = "bookworm"

# (archive path, path inside the package, Debian package): the programs the image runs.
STATIC_PACKAGE = "busybox-static"
PROGRAMS = (
    ("bin/busybox", "bin/busybox", STATIC_PACKAGE),
    ("usr/sbin/dropbear", "usr/sbin/dropbear", "dropbear-bin"),
    ("usr/lib/sftp-server", "usr/lib/openssh/sftp-server", "openssh-sftp-server"),
)
ROOT_PACKAGES = tuple(package for _, _, package in PROGRAMS)
# Every program but busybox links dynamically: its loader and libraries come along.
DYNAMIC_PROGRAMS = tuple(path for path, _, package in PROGRAMS if package != STATIC_PACKAGE)

_LIBRARY_DIRS = ("lib/{triplet}", "usr/lib/{triplet}", "lib", "usr/lib")


def static_busybox(debian_arch: str) -> bytes:
    """Debian's static busybox for ``debian_arch``: all a marker or bare-cycle image
    needs (the harness's own image adds SSH and its libraries, collect_userspace)."""
    deb = fetch_debs([STATIC_PACKAGE], GUEST_SUITE, debian_arch)[STATIC_PACKAGE]
    with tempfile.TemporaryDirectory(prefix="harness-busybox-") as scratch:
        unpack_deb(deb, Path(scratch))
        return (Path(scratch) / "bin/busybox").read_bytes()


@dataclass
class Userspace:
    """Files for the image: archive path -> file on the host (already unpacked)."""

    files: dict[str, Path] = field(default_factory=dict)
    packages: list[str] = field(default_factory=list)
    applets: list[str] = field(default_factory=list)  # busybox links to make in /bin


def _readelf(path: Path, option: str) -> str:
    if shutil.which("readelf") is None:
        raise MissingTool("readelf", "binutils", "finding the libraries dropbear needs")
    done = subprocess.run(["readelf", option, "-W", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise HarnessError(f"readelf cannot read {path}: {done.stderr.strip()}")
    return done.stdout


def elf_needed(path: Path) -> list[str]:
    """The sonames an ELF file links against (its DT_NEEDED entries)."""
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", _readelf(path, "-d"))


def elf_interpreter(path: Path) -> str | None:
    """The dynamic loader an executable asks for, or None for a static one."""
    match = re.search(r"Requesting program interpreter: ([^\]]+)\]", _readelf(path, "-l"))
    return match.group(1) if match else None


def busybox_applets(binary: Path) -> list[str]:
    """The applet names compiled into a busybox binary, read from the binary itself.

    busybox keeps its applet names as one sorted, NUL-separated string table
    starting with "[" and "[["; reading it works for any architecture, where
    running ``busybox --list`` would need the guest's CPU.
    """
    data = binary.read_bytes()
    start = data.find(b"\0[\0[[\0")
    names: list[str] = []
    if start >= 0:
        for raw in data[start + 1:].split(b"\0"):
            if not raw:
                break
            names.append(raw.decode("ascii", errors="replace"))
    if "sh" not in names or names != sorted(names) or len(set(names)) != len(names):
        raise HarnessError(f"cannot read the applet list of {binary}: not a busybox binary?")
    return names


def _depends(deb: Path) -> list[str]:
    """Package names in Pre-Depends and Depends (first alternative, no versions)."""
    done = subprocess.run(["dpkg-deb", "-f", str(deb), "Pre-Depends", "Depends"],
                          capture_output=True, text=True, check=True)
    names = []
    for line in done.stdout.splitlines():
        _, _, value = line.partition(":")
        for clause in value.split(","):
            name = clause.split("|")[0].split("(")[0].strip().split(":")[0]
            if name:
                names.append(name)
    return names


def _find_library(soname: str, trees: list[Path], triplet: str) -> Path | None:
    for tree in trees:
        for pattern in _LIBRARY_DIRS:
            candidate = tree / pattern.format(triplet=triplet) / soname
            if candidate.exists():
                return candidate.resolve()
    return None


def collect_userspace(arch: Arch, staging: Path, suite: str = GUEST_SUITE) -> Userspace:
    """Fetch and unpack what the guest runs; return the files to pack.

    ``staging`` is an empty scratch directory that must outlive the returned
    paths (the caller packs them and deletes it).
    """
    userspace = Userspace()
    trees: dict[str, Path] = {}
    debs: dict[str, Path] = {}

    def unpack(packages: list[str]) -> None:
        for package, deb in fetch_debs(packages, suite, arch.debian_arch).items():
            tree = staging / package
            unpack_deb(deb, tree)
            trees[package] = tree
            debs[package] = deb
            userspace.packages.append(deb.name)

    unpack(list(ROOT_PACKAGES))
    for archive_path, package_path, package in PROGRAMS:
        program = trees[package] / package_path
        if not program.is_file():
            raise HarnessError(f"Debian {package} for {arch.debian_arch} has no /{package_path}")
        userspace.files[archive_path] = program
    userspace.applets = [applet for applet in busybox_applets(userspace.files["bin/busybox"])
                         if f"bin/{applet}" not in userspace.files and applet != "busybox"]

    triplet = _multiarch_triplet(arch)
    interpreters: set[str] = set()
    wanted: set[str] = set()
    for path in DYNAMIC_PROGRAMS:
        interpreter = elf_interpreter(userspace.files[path])
        if interpreter is None:
            raise HarnessError(f"Debian's /{path} is static: the image expects a dynamic one")
        interpreters.add(interpreter)
        wanted |= set(elf_needed(userspace.files[path]))
    if len(interpreters) != 1:
        raise HarnessError(f"the guest's programs ask for different loaders: "
                           f"{sorted(interpreters)}")
    (interpreter,) = interpreters
    interpreter_name = Path(interpreter).name
    wanted.add(interpreter_name)
    resolved: dict[str, Path] = {}
    while unresolved := wanted - resolved.keys():
        for soname in sorted(unresolved):
            library = _find_library(soname, list(trees.values()), triplet)
            if library is not None:
                resolved[soname] = library
                wanted |= set(elf_needed(library))
        if not wanted - resolved.keys():
            break
        more = sorted({dep for deb in debs.values() for dep in _depends(deb)} - trees.keys())
        if not more:
            raise HarnessError(
                f"the guest's programs for {arch.debian_arch} need "
                f"{', '.join(sorted(unresolved))}, which no package they depend on ships"
            )
        unpack(more)

    for soname, library in resolved.items():
        if soname != interpreter_name:
            userspace.files[f"lib/{soname}"] = library
    userspace.files[interpreter.lstrip("/")] = resolved[interpreter_name]
    return userspace


def _multiarch_triplet(arch: Arch) -> str:
    """Debian's multiarch directory name, e.g. aarch64-linux-gnu, for library lookup."""
    triplets = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}
    try:
        return triplets[arch.debian_arch]
    except KeyError:
        raise HarnessError(f"no multiarch triplet known for {arch.debian_arch}") from None
