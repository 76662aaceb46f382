"""LKDTM, the kernel's own crash-provoking module, built out of tree for a cached kernel.

The health watch (harness/guest/reports.py) must name every kind of report a
kernel prints, on every era and arch. LKDTM (``drivers/misc/lkdtm``) provokes
each on demand: ``echo BUG > /sys/kernel/debug/provoke-crash/DIRECT``.

Building the kernels with ``CONFIG_LKDTM`` would change their autoconf.h and
rebuild every cached kernel from scratch, so LKDTM is built instead as an
external module from the kernel's own source, against the kernel already
built: its sources are copied into a directory of their own with a Kbuild
made from the kernel's Makefile lines for it, and that directory goes through
the harness's own module build (``build_out_of_tree``: cached by content, the
kernel's module fixups applied, e.g. 4.8 x86_64's PLT32 relocations). Where
the sources live depends on the era: ``drivers/misc/lkdtm/`` with a Makefile of
its own (5.x: 5.10 and 7.2 here), ``drivers/misc/lkdtm_*.c`` with its lines in
``drivers/misc/Makefile`` in older trees (4.8), including the rule that turns
``lkdtm_rodata.o``'s text into rodata (for EXEC_RODATA).

``CRASHES`` says what each crash type must be reported as. Some only report
with a detector the cell's kernel may lack (DEBUG_LIST, UBSAN, VMAP_STACK):
``needs`` names it, read from the kernel's .config (``--kernel-config`` adds a
fragment that builds it in). Left out: HARDLOCKUP (only 4.8 x86_64 builds a
hard-lockup detector here, and it needs a perf NMI QEMU's TCG does not give),
the types that report nothing without hardware or options these guests lack
(ACCESS_USERSPACE and EXEC_USERSPACE need SMAP/SMEP or PAN, USERCOPY_* hardened
usercopy, FORTIFY_* and CFI_* their options, UNSET_SMEP SMEP and an in-tree
LKDTM), the ones that corrupt memory without a check to catch it (stack and
slab corruption, use after free without KASAN or SLUB debugging), and the
timing and PowerPC ones.
"""

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.artifacts import KernelBuild, ModuleArtifact
from harness.errors import HarnessError
from harness.kernel.config import parse_dotconfig
from harness.module import build_out_of_tree, kernel_source_tree

NAME = "lkdtm"
DIRECT = "/sys/kernel/debug/provoke-crash/DIRECT"


@dataclass(frozen=True)
class Crash:
    """One LKDTM crash type and what the health watch must make of it."""

    name: str  # as DIRECT takes it
    kind: str  # harness.guest.reports' kind
    headline: str  # a regex the headline must match, on both arches and every era
    fatal: bool = False  # the kernel panics: the guest is dead afterwards
    needs: tuple[str, ...] = ()  # config options (any one) without which nothing reports
    # Shell commands run before the crash: the detectors' timeouts made short, so
    # a hang is reported in seconds (the values in kernel-configs/base.config
    # are 20 s for a hung task and 20 s for a soft lockup).
    tune: tuple[str, ...] = ()
    default: bool = False  # in the CI subset (the rest with --lkdtm-all)


# The writes to DIRECT run in a child shell: an Oops kills the task that wrote.
_SHORT_HUNG_TASK = "echo 2 > /proc/sys/kernel/hung_task_timeout_secs"
_SHORT_SOFT_LOCKUP = "echo 1 > /proc/sys/kernel/watchdog_thresh"
_NULL = r"NULL pointer dereference"
# x86 names a fault on a kernel address by its address, arm64 by what was done.
_BAD_ACCESS = (r"^BUG: unable to handle (page fault for address|kernel paging request)"
               r"|^Unable to handle kernel (paging request|execute from non-executable memory"
               r"|write to read-only memory) at virtual address")
# Out of tree, EXEC_DATA and WRITE_RO aim at the module's own data and rodata,
# which 4.8 protects only with DEBUG_SET_MODULE_RONX (off here: on 4.8.15 both
# ran without a fault); STRICT_MODULE_RWX (4.11 on) is on in every newer guest.
_MODULE_RWX = ("STRICT_MODULE_RWX", "DEBUG_SET_MODULE_RONX")

CRASHES = (
    Crash("PANIC", "panic", r"^Kernel panic - not syncing: dumptest$", fatal=True,
          default=True),
    Crash("BUG", "BUG", r"^kernel BUG at \S*bugs\.c:\d+!$", default=True),
    Crash("WARNING", "WARNING", r"^WARNING: .*bugs\.c:\d+", default=True),
    Crash("WARNING_MESSAGE", "WARNING", r"^WARNING: .*bugs\.c:\d+"),
    Crash("EXCEPTION", "Oops", _NULL, default=True),
    Crash("ACCESS_NULL", "Oops", _NULL),
    Crash("EXEC_NULL", "Oops", _NULL),
    Crash("EXEC_DATA", "Oops", _BAD_ACCESS, needs=_MODULE_RWX),
    Crash("EXEC_KMALLOC", "Oops", _BAD_ACCESS),
    Crash("EXEC_VMALLOC", "Oops", _BAD_ACCESS),
    Crash("WRITE_RO", "Oops", _BAD_ACCESS, needs=_MODULE_RWX),
    Crash("WRITE_KERN", "Oops", _BAD_ACCESS),
    Crash("REFCOUNT_INC_OVERFLOW", "WARNING", r"^WARNING: .*refcount"),
    Crash("SOFTLOCKUP", "soft lockup", r"\bBUG: soft lockup - CPU#\d+ stuck for \d+s!",
          tune=(_SHORT_SOFT_LOCKUP,), default=True),
    Crash("HUNG_TASK", "hung task", r"^INFO: task sh:\d+ blocked for more than \d+ seconds\.$",
          tune=(_SHORT_HUNG_TASK,), default=True),
    Crash("BUG_IN_HARDIRQ", "BUG", r"^kernel BUG at \S*bugs\.c:\d+!$", fatal=True),
    Crash("CORRUPT_LIST_ADD", "list corruption", r"list_add corruption", needs=("DEBUG_LIST",)),
    Crash("CORRUPT_LIST_DEL", "list corruption", r"list_del corruption", needs=("DEBUG_LIST",)),
    Crash("OVERFLOW_SIGNED", "UBSAN", r"^UBSAN: ",
          needs=("UBSAN_SIGNED_OVERFLOW", "UBSAN_SIGNED_WRAP")),
    Crash("ARRAY_BOUNDS", "UBSAN", r"^UBSAN: array-index-out-of-bounds", needs=("UBSAN_BOUNDS",)),
    Crash("STACK_GUARD_PAGE_LEADING", "Oops", _BAD_ACCESS, needs=("VMAP_STACK",)),
)
DEFAULT = tuple(crash for crash in CRASHES if crash.default)


def offered(source: Path) -> frozenset[str]:
    """The crash types an LKDTM source directory offers (its ``CRASHTYPE(NAME)`` table)."""
    return frozenset(name for path in source.glob("*.c")
                     for name in re.findall(r"\bCRASHTYPE\((\w+)\)", path.read_text()))


def missing_detector(crash: Crash, kernel: KernelBuild) -> str | None:
    """Why ``kernel`` cannot report ``crash`` (a detector not built in), or None."""
    if not crash.needs:
        return None
    config = parse_dotconfig(kernel.config.read_text())
    if any(config.get(symbol) == "y" for symbol in crash.needs):
        return None
    return (f"{kernel.release} ({kernel.arch}) is built without "
            f"{' or '.join('CONFIG_' + symbol for symbol in crash.needs)}, so its "
            f"{crash.name} is never reported")


def _logical_lines(makefile: str) -> list[str]:
    """Make's logical lines: each with its backslash continuations and, for a rule,
    its tab-indented recipe, so filtering keeps a rule and its recipe together."""
    lines: list[str] = []
    for line in makefile.splitlines(keepends=True):
        if lines and (lines[-1].endswith("\\\n") or line.startswith("\t")):
            lines[-1] += line
        else:
            lines.append(line)
    return lines


def kbuild(makefile: str, only_lkdtm: bool) -> str:
    """A Kbuild that builds lkdtm.ko as an external module from the kernel's own
    Makefile text for it: the whole of ``drivers/misc/lkdtm/Makefile``, or (when
    ``only_lkdtm``) the lines of ``drivers/misc/Makefile`` that are LKDTM's plus
    the OBJCOPYFLAGS reset its rodata rule relies on (arm64's objcopy flags
    would otherwise turn lkdtm_rodata.o into a raw binary)."""
    kept = [line for line in _logical_lines(makefile)
            if not only_lkdtm or NAME in line or line.startswith("OBJCOPYFLAGS :=")]
    text = "".join(line if line.endswith("\n") else line + "\n" for line in kept)
    return (text.replace("obj-$(CONFIG_LKDTM)", "obj-m")
            .replace(f"{NAME}-$(CONFIG_LKDTM)", f"{NAME}-y"))


# x86's native_write_cr4() is exported only to an in-tree LKDTM module
# (arch/x86/kernel/cpu/common.c: #if IS_MODULE(CONFIG_LKDTM)), for UNSET_SMEP
# alone; out of tree that call goes to this stand-in, which writes nothing.
# UNSET_SMEP is not in CRASHES.
_SHIM = "lkdtm_no_write_cr4"
_SHIM_SOURCE = f"""// SPDX-License-Identifier: GPL-2.0
#include <linux/printk.h>

void {_SHIM}(unsigned long val);

void {_SHIM}(unsigned long val)
{{
\tpr_err("lkdtm: built out of tree, without native_write_cr4(): CR4 left alone\\n");
}}
"""


def lkdtm_source(kernel: KernelBuild, into: Path) -> Path:
    """Copy ``kernel``'s LKDTM sources into ``into`` with a Kbuild; return ``into``."""
    srctree = kernel_source_tree(kernel)
    directory = srctree / "drivers" / "misc" / NAME
    into.mkdir(parents=True)
    if (directory / "Makefile").is_file():
        for path in directory.glob("*.[ch]"):
            shutil.copy2(path, into / path.name)
        rules = kbuild((directory / "Makefile").read_text(), only_lkdtm=False)
    else:
        misc = srctree / "drivers" / "misc"
        sources = sorted(misc.glob(f"{NAME}*.[ch]"))
        if not sources:
            raise HarnessError(f"{srctree} has no LKDTM ({directory}/ or {misc}/{NAME}_*.c)")
        for path in sources:
            shutil.copy2(path, into / path.name)
        rules = kbuild((misc / "Makefile").read_text(), only_lkdtm=True)
    if any("native_write_cr4" in path.read_text() for path in into.glob("*.c")):
        (into / f"{_SHIM}.c").write_text(_SHIM_SOURCE)
        rules += f"ccflags-y += -Dnative_write_cr4={_SHIM}\n{NAME}-y += {_SHIM}.o\n"
    (into / "Kbuild").write_text(rules)
    return into


def build_lkdtm(kernel: KernelBuild, scratch: Path) -> ModuleArtifact:
    """lkdtm.ko for ``kernel``, from its own tree, through the harness's module build."""
    return build_out_of_tree(kernel, lkdtm_source(kernel, scratch / NAME), NAME)
