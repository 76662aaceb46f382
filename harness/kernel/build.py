"""Build a kernel out of tree, once per input: the build stage's one entry point.

``build_kernel()`` resolves the source, the fragments and the quirks, derives
a cache key from everything that changes the result, and either returns the
finished cache entry (no make at all) or configures and builds into a fresh
cache work directory that becomes the entry only when the build succeeded.
The O= tree stays inside the entry so ``make -C build_dir M=...`` builds
modules against it; its generated Makefile locates itself (``$(lastword
$(MAKEFILE_LIST))`` on 4.8, ``$(CURDIR)`` later), so the rename from the work
directory to the entry does not break it. From 6.x on kbuild writes the
output directory into that Makefile as an absolute path; the build replaces
it with the same self-locating expression (``_self_locating_output``).
"""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from harness import cache
from harness.arch import Arch, get_arch
from harness.artifacts import KernelBuild
from harness.errors import HarnessError, Terminated
from harness.kernel import quirks as quirk_table
from harness.kernel.config import (
    Fragment,
    configure,
    merge_settings,
    parse_fragment,
    resolve_fragments,
)
from harness.kernel.source import KernelSource, obtain_source
from harness.kernel.spec import parse_spec
from harness.kernel.toolchain import Toolchain, require_build_tools, toolchain
from harness.paths import cache_root, runs_root

if TYPE_CHECKING:
    from rich.console import Console

BUILDS = "kernel-build"
# Bump when the recipe below changes what a build produces, to miss old entries.
RECIPE = 1
BASE_CONFIG = "tinyconfig"
# Fixed build identity: with timestamp, user and host pinned, the same inputs
# give the same image (measured on 4.8.15 and 6.1 builds here).
REPRODUCIBLE_ENV = {
    "KBUILD_BUILD_TIMESTAMP": "1970-01-01 00:00:00 UTC",
    "KBUILD_BUILD_USER": "harness",
    "KBUILD_BUILD_HOST": "harness",
}
# Variables a user's shell may carry that would redirect or break the build.
_SCRUBBED_ENV = ("ARCH", "CROSS_COMPILE", "CC", "HOSTCC", "O", "KBUILD_OUTPUT", "KCONFIG_CONFIG",
                 "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "LOCALVERSION")
# A minimal build tree plus objects is ~0.5-1.5 GiB; refuse early below this.
MIN_FREE_GIB = 3.0
_STEP = re.compile(r"^\s{2}([A-Z][A-Z0-9_]*(?:\s\[M\])?)\s+(\S+)")
_ERROR_LINE = re.compile(
    r"(error:|Error \d|\*\*\*|undefined reference|multiple definition|No space left|"
    r"fatal error|not found|cannot )", re.I)
_TERMINATE_GRACE_SECONDS = 10
# A work directory whose log has been idle this long belongs to a dead build.
ABANDONED_HOURS = 6


@dataclass(frozen=True)
class BuildPlan:
    """Everything that determines one build, decided before any make runs."""

    spec: str
    arch: Arch
    source: KernelSource
    tools: Toolchain
    fragments: tuple[Fragment, ...]
    quirks: tuple[quirk_table.Quirk, ...]
    make_args: tuple[str, ...]  # ARCH, CROSS_COMPILE and quirk variables
    requested: dict[str, str]  # merged settings, quirks included

    def key_parts(self) -> dict[str, object]:
        """The cache key's inputs: change any and the build is redone."""
        return {
            "recipe": RECIPE,
            "source": self.source.identity,
            "arch": self.arch.name,
            "base": BASE_CONFIG,
            "config": sorted(self.requested.items()),
            "toolchain": [self.tools.cc, self.tools.ld, self.tools.hostcc],
            "quirks": [quirk.name for quirk in self.quirks],
            "make_args": list(self.make_args),
        }

    def key(self) -> str:
        return cache.cache_key(self.key_parts())

    def in_place_key(self) -> str:
        """What an in-place build directory is for: everything but the source and config,
        which kbuild tracks itself from one build to the next."""
        parts = self.key_parts()
        return cache.cache_key({name: parts[name]
                                for name in ("recipe", "arch", "base", "toolchain", "make_args")})


def plan_build(spec: str, arch: str, fragments: Sequence[str] = ()) -> BuildPlan:
    """Resolve spec, source, toolchain, quirks and fragments (no make)."""
    profile = get_arch(arch)
    parsed = parse_spec(spec)
    tools = toolchain(profile)
    source = obtain_source(parsed)
    quirks = quirk_table.select_quirks(source.version, profile.name, tools.gcc_version,
                                       tools.binutils_version)
    resolved = resolve_fragments(profile.name, fragments)
    quirk_settings = parse_fragment(quirk_table.config_lines(quirks), "quirks")
    _refuse_quirk_conflicts(resolved, quirks, source.version)
    make_args: tuple[str, ...] = (f"ARCH={profile.kernel_arch}",)
    if profile.cross_compile:
        make_args += (f"CROSS_COMPILE={profile.cross_compile}",)
    make_args += quirk_table.make_vars(quirks)
    return BuildPlan(
        spec=spec, arch=profile, source=source, tools=tools, fragments=tuple(resolved),
        quirks=quirks, make_args=make_args,
        requested=merge_settings([*(f.settings for f in resolved), quirk_settings]),
    )


def _refuse_quirk_conflicts(fragments: Sequence[Fragment],
                            quirks: Sequence[quirk_table.Quirk],
                            version: tuple[int, int, int]) -> None:
    """A fragment asking for what a toolchain quirk must turn off is an error, not a surprise."""
    for quirk in quirks:
        needed = parse_fragment(quirk_table.config_lines([quirk]), quirk.name)
        for fragment in fragments:
            for symbol, value in needed.items():
                wanted = fragment.settings.get(symbol)
                if wanted is not None and wanted != value:
                    shown = ".".join(map(str, version))
                    raise HarnessError(
                        f"{fragment.name} asks for CONFIG_{symbol}={wanted}, but Linux {shown} "
                        f"cannot have it with this toolchain (quirk {quirk.name}: "
                        f"{quirk.reason.split(';')[0]}); remove it from the fragment"
                    )


def build_kernel(
    spec: str, arch: str, fragments: Sequence[str] = (), force: bool = False
) -> KernelBuild:
    """A kernel image and module build tree for ``spec`` on ``arch``, from cache or built.

    A cache hit runs no make. ``force`` rebuilds and replaces the entry.
    """
    started = time.monotonic()
    plan = plan_build(spec, arch, fragments)
    key = plan.key()
    if plan.source.worktree is not None:
        return _build_in_place(plan, key, force, started)
    entry = cache.lookup(BUILDS, key)
    if entry is not None and not force:
        found = _load(entry, plan, cached=True, started=started)
        if found is not None:
            return found
    require_build_tools(plan.arch)
    with _building(key, plan.spec):
        # Another process may have built it while this one waited for the lock.
        entry = cache.lookup(BUILDS, key)
        if entry is not None and not force:
            found = _load(entry, plan, cached=True, started=started)
            if found is not None:
                return found
        _check_free_disk()
        _remove_abandoned_work()
        with cache.produce(BUILDS, key, force=entry is not None) as work:
            _build(plan, work, key)
    built = _load(cache.entry_path(BUILDS, key), plan, cached=False, started=started)
    if built is None:  # the entry we just renamed into place must be complete
        raise HarnessError(f"kernel build entry {cache.entry_path(BUILDS, key)} is incomplete")
    return built


def _build_in_place(plan: BuildPlan, key: str, force: bool, started: float) -> KernelBuild:
    """Build a checkout's commit in its worktree's fixed build directory (kbuild's own
    incremental build), or find it already built there.

    The directory's build.json names the key of the build it holds; it goes
    before make starts, so a failed build is never taken for the last good
    one. A build killed outright can leave a truncated object newer than its
    source, which kbuild would keep: the ``unfinished`` marker lives from
    before make until make returns, and a directory found with it starts
    empty. ``force`` also starts empty: a cold build.
    """
    assert plan.source.worktree is not None
    entry = plan.source.worktree / f"build-{plan.in_place_key()}"
    if not force and _holds(entry, key):
        found = _load(entry, plan, cached=True, started=started)
        if found is not None:
            return found
    require_build_tools(plan.arch)
    _check_free_disk()
    unfinished = entry / "unfinished"
    if force or unfinished.exists():
        shutil.rmtree(entry, ignore_errors=True)
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "build.json").unlink(missing_ok=True)
    unfinished.touch()
    try:
        _build(plan, entry, key)
    except HarnessError:  # make ran to its end: the objects it left are whole
        unfinished.unlink()
        raise
    unfinished.unlink()
    built = _load(entry, plan, cached=False, started=started)
    if built is None:
        raise HarnessError(f"kernel build {entry} is incomplete")
    return built


def _holds(entry: Path, key: str) -> bool:
    """Whether the in-place build directory ``entry`` holds a finished build of ``key``."""
    try:
        return bool(json.loads((entry / "build.json").read_text()).get("key") == key)
    except (OSError, ValueError):
        return False


def _load(entry: Path, plan: BuildPlan, cached: bool, started: float) -> KernelBuild | None:
    """The KernelBuild an entry describes, or None when it is damaged or its source is gone."""
    try:
        meta = json.loads((entry / "build.json").read_text())
    except (OSError, ValueError):
        return None
    build_dir = entry / "build"
    build = KernelBuild(
        arch=plan.arch.name,
        spec=plan.spec,
        release=meta["release"],
        version=tuple(meta["version"]),  # type: ignore[arg-type]
        image=build_dir / plan.arch.image_path,
        build_dir=build_dir,
        config=build_dir / ".config",
        system_map=build_dir / "System.map",
        make_args=tuple(meta["make_args"]),
        module_fixups=tuple(meta["module_fixups"]),
        cached=cached,
        seconds=round(time.monotonic() - started, 3),
        origin=plan.source.origin,
        source=plan.source.identity,
    )
    needed = (build.image, build.config, build.system_map, build_dir / "Module.symvers",
              plan.source.path / "Makefile")
    return build if all(path.exists() for path in needed) else None


@contextmanager
def _building(key: str, spec: str) -> Iterator[None]:
    """Hold the per-key build lock, so two processes never build the same kernel at once.

    The second one waits, then finds the first one's entry.
    """
    lock_path = cache_root() / BUILDS / f".{key}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        cache.take_lock(lock, f"waiting for another process building {spec} ({key})")
        yield


def _remove_abandoned_work() -> None:
    """Delete work directories of builds killed outright (SIGKILL, power loss).

    Only those whose log has not moved for ABANDONED_HOURS: another process
    may be building a different kernel into its own work directory right now.
    """
    cutoff = time.time() - ABANDONED_HOURS * 3600
    for work in (cache_root() / BUILDS).glob(".*.partial"):
        log = work / "build.log"
        try:
            last = (log if log.exists() else work).stat().st_mtime
        except FileNotFoundError:
            continue
        if last < cutoff:
            shutil.rmtree(work, ignore_errors=True)


def _check_free_disk() -> None:
    probe = cache_root()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 2**30
    if free < MIN_FREE_GIB:
        raise HarnessError(
            f"only {free:.1f} GiB free under {cache_root()}: a kernel build needs about "
            f"{MIN_FREE_GIB:.0f} GiB; free space or point HARNESS_CACHE_DIR elsewhere"
        )


def _disk_full(where: Path) -> HarnessError:
    return HarnessError(
        f"disk full while building into {where}: free space or point HARNESS_CACHE_DIR "
        "at a bigger disk (nothing was cached)"
    )


def _build(plan: BuildPlan, work: Path, key: str) -> None:
    """Configure, check and build into ``work`` (empty, or an in-place build directory);
    keep the log there (or in runs/ on failure)."""
    build_dir = work / "build"
    build_dir.mkdir(exist_ok=True)
    log_path = work / "build.log"
    quirk_fragment = work / "quirks.config"
    quirk_fragment.write_text(quirk_table.config_lines(plan.quirks))
    fragments = [*plan.fragments, Fragment("quirks", quirk_fragment,
                                           parse_fragment(quirk_fragment.read_text(), "quirks"))]
    cc = f"{plan.arch.cross_compile}gcc"
    compiler = (f"CC=ccache {cc}",) if shutil.which("ccache") else ()
    jobs = len(os.sched_getaffinity(0))
    started = time.monotonic()
    # Imported here: only a real build prints, and a cache hit should start fast.
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True, highlight=False)
    version = ".".join(map(str, plan.source.version))
    origin = f", {plan.source.origin}" if plan.source.origin else ""
    label = f"{plan.spec} ({version}{origin}) for {plan.arch.name}"
    console.print(f"building {label}: {len(plan.quirks)} quirk(s), -j{jobs}, log {log_path}")
    try:
        with log_path.open("w", buffering=1) as log:  # line-buffered: tail -f works
            log.write(f"# harness kernel build\n# key parts: {json.dumps(plan.key_parts())}\n")
            for quirk in plan.quirks:
                log.write(f"# quirk {quirk.name}: {quirk.reason}\n")
            log.flush()

            def make(targets: Sequence[str], status: str | None = None) -> None:
                _run_make(plan, build_dir, [*compiler, *targets], log, console, status)

            check = configure(plan.source.path, build_dir, srcarch(plan.arch), make,
                              fragments, log, base=BASE_CONFIG)
            if check.unknown:
                ignored = ", ".join(check.unknown)
                console.print(f"note: not defined by this tree, ignored: {ignored}")
            make([f"-j{jobs}"], status=f"building {label}")
        release = (build_dir / "include" / "config" / "kernel.release").read_text().strip()
    except BaseException as error:
        kept = _keep_failed_log(log_path, plan)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            raise _disk_full(work) from None
        if isinstance(error, HarnessError) and kept:
            raise HarnessError(f"{error} (full log: {kept})") from None
        raise
    _self_locating_output(build_dir / "Makefile")
    seconds = round(time.monotonic() - started, 1)
    for index, fragment in enumerate(fragments):
        (work / "fragments").mkdir(exist_ok=True)
        shutil.copyfile(fragment.path, work / "fragments" / f"{index:02d}-{fragment.path.name}")
    meta = {
        "key": key,
        "spec": plan.spec,
        "arch": plan.arch.name,
        "release": release,
        "version": list(plan.source.version),
        "source": str(plan.source.path),
        "source_identity": plan.source.identity,
        "source_origin": plan.source.origin,
        "make_args": list(plan.make_args),
        "module_fixups": list(quirk_table.module_fixups(plan.quirks)),
        "quirks": [quirk.name for quirk in plan.quirks],
        "unknown_symbols": list(check.unknown),
        "toolchain": {"cc": plan.tools.cc, "ld": plan.tools.ld, "hostcc": plan.tools.hostcc},
        "ccache": bool(compiler),
        "jobs": jobs,
        "build_seconds": seconds,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "image_bytes": (build_dir / plan.arch.image_path).stat().st_size,
    }
    (work / "build.json").write_text(json.dumps(meta, indent=2) + "\n")
    console.print(f"built {label}: release {release} in {seconds:.0f} s")


# 7.x's generated O= Makefile: `export KBUILD_OUTPUT = /abs/work/dir/build`.
# ``:=``: evaluated where it stands, while MAKEFILE_LIST ends in this Makefile
# (``=`` would be evaluated later, inside the kernel's own Makefile).
_ABSOLUTE_OUTPUT = re.compile(r"^export KBUILD_OUTPUT = /.*$", re.MULTILINE)
_SELF_LOCATING_OUTPUT = (
    "export KBUILD_OUTPUT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))")


def _self_locating_output(makefile: Path) -> None:
    """Let the O= tree's Makefile find itself wherever the entry lives.

    The work directory is renamed into the cache entry after the build, so an
    absolute KBUILD_OUTPUT would point at a directory that no longer exists
    (``make -C build M=...`` then stops: "specified kernel directory ... does
    not exist"). Older kernels' Makefiles are left as they are.
    """
    text = makefile.read_text()
    fixed = _ABSOLUTE_OUTPUT.sub(lambda _: _SELF_LOCATING_OUTPUT, text)
    if fixed != text:
        makefile.write_text(fixed)


def srcarch(arch: Arch) -> str:
    """The arch/ directory name (x86 for x86_64)."""
    return {"x86_64": "x86"}.get(arch.kernel_arch, arch.kernel_arch)


def _make_env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in _SCRUBBED_ENV}
    env.update(REPRODUCIBLE_ENV, LC_ALL="C")
    return env


def _run_make(plan: BuildPlan, build_dir: Path, extra: Sequence[str], log: TextIO,
              console: "Console", status: str | None) -> None:
    """Run make in its own process group, streaming output into ``log``.

    With ``status`` a progress line shows the elapsed time and the last
    target. On failure the error lines are printed and a HarnessError raised;
    on any interruption the whole make process group is stopped before the
    exception propagates, so nothing keeps writing into a directory that the
    cache is about to delete.
    """
    command = ["make", "-C", str(plan.source.path), f"O={build_dir}", *plan.make_args, *extra]
    log.write(f"\n$ {' '.join(command)}\n")
    log.flush()
    tail: list[str] = []
    # make runs in its own session so a terminal ^C reaches only the harness,
    # which then stops make's whole process group (_stop) before the cache
    # deletes the work directory. A signal that arrives while Popen is still
    # starting the child is only recorded, then raised once `process` exists:
    # otherwise make would be started, unknown, and keep writing.
    pending: list[int] = []
    process: subprocess.Popen[str] | None = None
    with _progress(console, status) as update, _signals(pending) as arm:
        try:
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_make_env(),
                start_new_session=True, text=True, errors="replace",
            )
            arm()
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                tail.append(line)
                del tail[:-400]
                step = _STEP.match(line)
                if step:
                    update(f"{step[1]} {step[2]}")
            process.wait()
        except BaseException:
            if process is not None:
                _stop(process)
            raise
    log.flush()
    if process.returncode != 0:
        errors = [line.rstrip() for line in tail if _ERROR_LINE.search(line)][-15:]
        if any("No space left on device" in line for line in tail):
            raise _disk_full(build_dir)
        from rich.markup import escape

        for line in errors or [line.rstrip() for line in tail[-15:]]:
            # escape: make's own lines carry brackets ("make[2]: *** [mm/x.o]").
            console.print(f"  [red]{escape(line)}[/red]", markup=True, highlight=False)
        target = " ".join(arg for arg in extra if not arg.startswith(("CC=", "-j"))) or "build"
        # The first compiler error names the cause on the message's one line (a bisect
        # step's evidence); make's own "***" lines only repeat that something failed.
        cause = next((f": {line.strip()}" for line in errors if "error:" in line), "")
        raise HarnessError(f"make {target} failed for {plan.spec} ({plan.arch.name}){cause}")


def _stop(process: subprocess.Popen[str]) -> None:
    """Terminate make and all its children, then reap it."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=_TERMINATE_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


@contextmanager
def _signals(pending: list[int]) -> Iterator[Callable[[], None]]:
    """SIGINT/SIGTERM are recorded in ``pending`` until ``arm()``, then raise
    KeyboardInterrupt (Terminated for SIGTERM).

    ``arm()`` also raises at once for a signal recorded before it. Outside the
    main thread Python cannot install handlers; ^C then behaves as usual.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def interrupt(signum: int, frame: object) -> None:
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    def arm() -> None:
        for signum in saved:
            signal.signal(signum, interrupt)
        if pending:
            interrupt(pending[0], None)

    saved = {signum: signal.signal(signum, lambda sig, frame: pending.append(sig))
             for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield arm
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@contextmanager
def _progress(console: "Console", status: str | None) -> Iterator[Callable[[str], None]]:
    """A transient one-line progress display; a no-op callback without ``status``."""
    if status is None:
        yield lambda text: None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
               TextColumn("[dim]{task.fields[step]}"))
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(status, total=None, step="")
        yield lambda text: progress.update(task, step=text[-60:])


def _keep_failed_log(log_path: Path, plan: BuildPlan) -> Path | None:
    """Copy a failed build's log out of the work directory the cache will delete."""
    if not log_path.exists():
        return None
    directory = runs_root() / "kernel-builds"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        kept = directory / (f"{time.strftime('%Y%m%d-%H%M%S')}-{plan.arch.name}-"
                            f"{'.'.join(map(str, plan.source.version))}-failed.log")
        shutil.copyfile(log_path, kept)
    except OSError:
        return None
    return kept

