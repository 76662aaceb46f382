"""Toolchain quirks: what old kernels need to build and run with today's compilers.

Data, not code paths: each Quirk says which kernels (a version range), which
arch and which toolchain it applies to, and what it changes, preferring make
variables (the tree stays untouched), then config settings, then post-link
module fixups. Every quirk found so far is fixed upstream at a known version,
so the range ends there and newer kernels build with nothing extra.
"""

from collections.abc import Iterable
from dataclasses import dataclass

Version = tuple[int, int, int]


@dataclass(frozen=True)
class Quirk:
    """One workaround, the kernels and toolchains it applies to, and what it does."""

    name: str
    reason: str
    arches: tuple[str, ...]
    since: Version  # first affected kernel (inclusive)
    until: Version  # first kernel with the upstream fix (exclusive)
    min_gcc: tuple[int, int] = (0, 0)  # target/host gcc at which the problem starts
    min_binutils: tuple[int, int] = (0, 0)
    make_vars: tuple[tuple[str, str], ...] = ()  # also needed by out-of-tree module builds
    config: tuple[str, ...] = ()  # fragment lines merged after the user's fragments
    module_fixups: tuple[str, ...] = ()  # harness.kernel.module_fixups names

    def applies(self, version: Version, arch: str, gcc: tuple[int, int],
                binutils: tuple[int, int]) -> bool:
        """Whether this quirk is needed for that kernel, arch and toolchain."""
        return (
            arch in self.arches
            and self.since <= version < self.until
            and gcc >= self.min_gcc
            and binutils >= self.min_binutils
        )


QUIRKS: tuple[Quirk, ...] = (
    Quirk(
        name="dtc-yylloc-fcommon",
        reason="gcc >= 10 defaults to -fno-common and dtc's lexer and parser both define "
               "yylloc (multiple definition at link); upstream e33a814e772c (v5.7) removed "
               "the duplicate. HOSTCC carries the flag because a command-line HOSTCFLAGS "
               "would replace the tree's own host flags.",
        arches=("arm64",),  # the x86_64 tinyconfig builds no device tree compiler
        since=(4, 8, 0),
        until=(5, 7, 0),
        min_gcc=(10, 0),
        make_vars=(("HOSTCC", "gcc -fcommon"),),
    ),
    Quirk(
        name="x86_64-plt32-relocations",
        reason="binutils >= 2.31 emits R_X86_64_PLT32 for calls; before v4.16 (upstream "
               "b21ebf2fb4cd, never in 4.8.y) the module loader rejects it (`Unknown rela "
               "relocation: 4`) and arch/x86/tools/relocs, run for KASLR, fails on vmlinux. "
               "Modules get PLT32 rewritten to the equivalent PC32; KASLR stays off.",
        arches=("x86_64",),
        since=(4, 8, 0),
        until=(4, 16, 0),
        min_binutils=(2, 31),
        config=("# CONFIG_RANDOMIZE_BASE is not set",),
        module_fixups=("x86_64_plt32_to_pc32",),
    ),
    Quirk(
        name="x86_64-old-objtool",
        reason="objtool's build (tools/build) writes `\\#` into its .cmd files, which GNU make "
               ">= 4.3 (Debian 12) reads literally: `.fixdep.o.cmd:1: *** missing separator`; "
               "upstream switched to `$(pound)` in v5.0. Stack validation stays off.",
        arches=("x86_64",),  # objtool is x86-only in this era
        since=(4, 8, 0),
        until=(5, 0, 0),
        config=("# CONFIG_STACK_VALIDATION is not set",),
    ),
    Quirk(
        name="x86_64-orc-needs-objtool",
        reason="from 4.14 the default ORC unwinder selects stack validation, i.e. objtool, "
               "which cannot be built before v5.0 (see x86_64-old-objtool); the guess unwinder "
               "needs no objtool.",
        arches=("x86_64",),
        since=(4, 14, 0),
        until=(5, 0, 0),
        config=("# CONFIG_UNWINDER_ORC is not set", "CONFIG_UNWINDER_GUESS=y"),
    ),
)


def select_quirks(version: Version, arch: str, gcc: tuple[int, int],
                  binutils: tuple[int, int], table: Iterable[Quirk] = QUIRKS
                  ) -> tuple[Quirk, ...]:
    """The quirks a build of ``version`` for ``arch`` with that toolchain needs, in order."""
    return tuple(quirk for quirk in table if quirk.applies(version, arch, gcc, binutils))


def make_vars(quirks: Iterable[Quirk]) -> tuple[str, ...]:
    """``NAME=value`` arguments for make; two quirks setting one variable is a table bug."""
    merged: dict[str, str] = {}
    for quirk in quirks:
        for name, value in quirk.make_vars:
            if name in merged and merged[name] != value:
                raise ValueError(f"quirks disagree on {name}: {merged[name]!r} vs {value!r}")
            merged[name] = value
    return tuple(f"{name}={value}" for name, value in merged.items())


def config_lines(quirks: Iterable[Quirk]) -> str:
    """The quirks' config settings as one fragment text."""
    lines = [f"# quirk {quirk.name}\n" + "".join(f"{line}\n" for line in quirk.config)
             for quirk in quirks if quirk.config]
    return "".join(lines)


def module_fixups(quirks: Iterable[Quirk]) -> tuple[str, ...]:
    """Names of the post-link fixups every module built for this kernel needs."""
    names: list[str] = []
    for quirk in quirks:
        names += [name for name in quirk.module_fixups if name not in names]
    return tuple(names)
