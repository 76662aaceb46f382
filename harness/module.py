"""Build the sample driver (guest-modules/) out of tree against a KernelBuild.

The module source is copied into a cache work directory and built there with
the kernel's own make arguments, so the checkout never holds build products
and two kernels never share objects. The result is cached by the module
source and the kernel build's identity; a failed build leaves no entry, only
its log.

``source_dir`` builds a fork of the driver instead (``harness run
--driver-source``, the test suite's deliberately broken variants): the same
build, the same debugfs interface expected, cached by that source's content.
``build_out_of_tree`` is the same build for any other module source with a
Kbuild (the test suite's LKDTM, copied from the kernel's own tree), so every
module the harness loads is built, cached and fixed up one way.

Which movable-page API the module uses is decided by
guest-modules/probe-api.sh reading the kernel's headers. The same script runs
here first, so a kernel the module cannot support (older than 4.8, or 6.17
and later where modules can no longer register movable pages) is refused
with one line before any make runs.
"""

import hashlib
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness import cache
from harness.artifacts import KernelBuild, ModuleArtifact
from harness.errors import HarnessError
from harness.kernel.module_fixups import apply_module_fixups
from harness.paths import cache_root, shipped_dir

MODULE_NAME = "movable_sample"
CACHE_KIND = "modules"
PROBE_SCRIPT = "probe-api.sh"
# A module build takes seconds; this only catches a hung make.
MAKE_TIMEOUT_SECONDS = 900
# Build products that must never be hashed or copied from a checkout.
_IGNORED = shutil.ignore_patterns(
    "*.o", "*.ko", "*.mod", "*.mod.c", ".*.cmd", "modules.order", "Module.symvers",
    ".tmp_versions", "*.log",
)

# probe-api.sh's API word -> the name ModuleArtifact.movable_api carries.
SUPPORTED_APIS = {
    "MS_API_AOPS": "aops",  # 4.8 .. 5.19: address_space_operations
    "MS_API_MOVABLE_OPS": "movable_ops",  # 6.0 .. 6.16: struct movable_operations
    "MS_API_BALLOON": "balloon",  # 6.17 on: the balloon core, the driver's migratepage
}


@dataclass(frozen=True)
class ApiProbe:
    """What probe-api.sh found in a kernel's headers."""

    api: str  # MS_API_AOPS | MS_API_MOVABLE_OPS | MS_API_BALLOON | MS_API_REMOVED | MS_API_NONE
    flags: tuple[str, ...]  # the other macros (MS_HAVE_*)


def module_source_dir() -> Path:
    """The sample driver's source (guest-modules/)."""
    return shipped_dir("guest-modules")


# What a fork of guest-modules/ must hold for build_module to build it.
SOURCE_FILES = ("Kbuild", PROBE_SCRIPT, f"{MODULE_NAME}.c")


def check_source_dir(source_dir: Path) -> Path:
    """``source_dir`` if it holds a buildable fork of the sample driver, else a
    HarnessError naming what is missing (one line, before any kernel is built)."""
    if not source_dir.is_dir():
        raise HarnessError(f"driver source {source_dir} is not a directory")
    absent = [name for name in SOURCE_FILES if not (source_dir / name).is_file()]
    if absent:
        raise HarnessError(f"driver source {source_dir} has no {', '.join(absent)}: it must "
                           f"be a fork of guest-modules/ ({', '.join(SOURCE_FILES)})")
    return source_dir


def kernel_source_tree(kernel: KernelBuild) -> Path:
    """The tree whose include/linux holds the kernel's headers.

    An O= build directory links its source tree as ``source``; an in-tree
    build is its own source tree.
    """
    linked = kernel.build_dir / "source"
    return linked.resolve() if linked.is_dir() else kernel.build_dir


def probe_api(srctree: Path, source_dir: Path | None = None) -> ApiProbe:
    """Run guest-modules/probe-api.sh on ``srctree`` (the module's own Kbuild does too)."""
    script = (source_dir or module_source_dir()) / PROBE_SCRIPT
    if not script.is_file():
        raise HarnessError(f"{script} is missing: the installation is incomplete")
    done = subprocess.run(["sh", str(script), str(srctree)], capture_output=True, text=True,
                          check=False)
    words = done.stdout.split()
    if done.returncode != 0 or not words or not words[0].startswith("MS_API_"):
        raise HarnessError(f"{PROBE_SCRIPT} failed on {srctree}: "
                           f"{(done.stderr or done.stdout).strip()[:200]}")
    return ApiProbe(api=words[0], flags=tuple(words[1:]))


def check_supported(kernel: KernelBuild, source_dir: Path | None = None) -> str:
    """The movable API the module will use for ``kernel``, or a HarnessError saying why not."""
    srctree = kernel_source_tree(kernel)
    if not (srctree / "include" / "linux").is_dir():
        raise HarnessError(
            f"kernel build {kernel.build_dir} has no headers ({srctree}/include/linux is "
            "missing): build the kernel again with `harness build`"
        )
    probe = probe_api(srctree, source_dir)
    if probe.api == "MS_API_REMOVED":
        raise HarnessError(
            f"kernel {kernel.release} ({kernel.spec}) has neither __SetPageMovable() (removed "
            "in Linux 6.17) nor a balloon API for modules, so the sample driver cannot run "
            "there: use the in-tree zram or virtio-balloon scenarios for this kernel"
        )
    if probe.api not in SUPPORTED_APIS:
        raise HarnessError(
            f"kernel {kernel.release} ({kernel.spec}) has no non-LRU movable page API in "
            f"{srctree}/include/linux: the sample driver needs Linux 4.8 or later"
        )
    return SUPPORTED_APIS[probe.api]


def source_digest(source_dir: Path) -> str:
    """Hash of every source file of the module (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in source_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(source_dir)
        if _IGNORED(str(relative.parent), [relative.name]):
            continue
        digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"


def kernel_identity(kernel: KernelBuild) -> dict[str, object]:
    """Everything about the kernel build that changes the module binary.

    The build directory is named too: the module is linked against that tree,
    and a content-keyed build stage gives a different tree a different path;
    an in-place build (a git checkout) keeps its path from commit to commit,
    so the source's identity is named as well.
    """
    return {
        "arch": kernel.arch,
        "release": kernel.release,
        "build_dir": str(kernel.build_dir),
        "source": kernel.source,
        "config": _file_digest(kernel.config),
        "symvers": _file_digest(kernel.build_dir / "Module.symvers"),
        "make_args": list(kernel.make_args),
        "fixups": list(kernel.module_fixups),
    }


def log_path(key: str) -> Path:
    """Where the make output of build ``key`` is kept, also after a failure."""
    return cache_root() / "module-logs" / f"{key}.log"


def _error_lines(log: str, limit: int = 3) -> str:
    """The compiler's and make's error lines, joined for a one-line message."""
    picked = [line.strip() for line in log.splitlines()
              if re.search(r"(error|Error \d+|\*\*\*)", line)]
    return " | ".join(picked[:limit]) or "no error line in the output"


def _artifact(entry: Path, name: str) -> ModuleArtifact:
    meta = json.loads((entry / "artifact.json").read_text())
    return ModuleArtifact(path=entry / f"{name}.ko", name=name,
                          kernel_release=meta["kernel_release"], movable_api=meta["movable_api"])


def _make(kernel: KernelBuild, module_dir: Path, log: Path, name: str) -> None:
    command = ["make", "-C", str(kernel.build_dir), f"M={module_dir}", *kernel.make_args,
               "modules"]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        try:
            done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=MAKE_TIMEOUT_SECONDS, check=False)
        except FileNotFoundError:
            raise HarnessError("make not found: install it with `apt-get install make` "
                               "or run `harness doctor`") from None
        except subprocess.TimeoutExpired:
            raise HarnessError(f"building {name} took over {MAKE_TIMEOUT_SECONDS} s; "
                               f"log: {log}") from None
    if done.returncode != 0:
        raise HarnessError(f"building {name} for {kernel.release} ({kernel.arch}) "
                           f"failed: {_error_lines(log.read_text(errors='replace'))}; "
                           f"log: {log}")


def build_module(kernel: KernelBuild, force: bool = False,
                 source_dir: Path | None = None) -> ModuleArtifact:
    """Build (or find in the cache) the sample driver for ``kernel``, from
    ``source_dir`` (a fork of guest-modules/) or the shipped source.

    Refuses an unsupported kernel before building.
    """
    source_dir = check_source_dir(source_dir) if source_dir else module_source_dir()
    movable_api = check_supported(kernel, source_dir)
    return build_out_of_tree(kernel, source_dir, MODULE_NAME, force=force,
                             movable_api=movable_api)


def build_out_of_tree(kernel: KernelBuild, source_dir: Path, name: str, force: bool = False,
                      movable_api: str = "") -> ModuleArtifact:
    """Build (or find in the cache) module ``name`` from ``source_dir`` (a Kbuild
    and its sources) for ``kernel``, cached by the source's content and the kernel.

    Applies the kernel's module fixups (e.g. PLT32 relocations for x86_64
    before 4.16) to the .ko. ``movable_api`` is what the artifact records
    (the sample driver's API; empty for any other module).
    """
    key = cache.cache_key({"module": name, "source": source_digest(source_dir),
                           "kernel": kernel_identity(kernel)})
    entry = cache.lookup(CACHE_KIND, key)
    if entry is not None and not force:
        return _artifact(entry, name)
    log = log_path(key)
    started = time.monotonic()
    with cache.produce(CACHE_KIND, key, force=force) as work:
        build = work / "build"
        shutil.copytree(source_dir, build, ignore=_IGNORED)
        _make(kernel, build, log, name)
        built = build / f"{name}.ko"
        if not built.is_file():
            raise HarnessError(f"make succeeded but produced no {built.name}; log: {log}")
        ko = work / built.name
        shutil.move(built, ko)
        apply_module_fixups(ko, kernel.module_fixups)
        shutil.copy2(log, work / "build.log")
        (work / "artifact.json").write_text(json.dumps({
            "kernel_release": kernel.release,
            "movable_api": movable_api,
            "seconds": round(time.monotonic() - started, 2),
        }, indent=2) + "\n")
        shutil.rmtree(build)
    return _artifact(cache.entry_path(CACHE_KIND, key), name)
