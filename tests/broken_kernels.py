"""Deliberately broken kernels: one for each rule of the zram and balloon verdicts.

zram's pages are zsmalloc's and the balloon's are virtio-balloon's, so no
broken driver of ours can make their rules fail (tests/broken_drivers.py does
that for the sample A/B): only a broken kernel can. Each
``tests/broken-kernels/NAME.patch`` is a small diff of the debian:5.10 tree
(the base of tests/integration/kernel_repo.py's repository) that breaks one
thing in zsmalloc, zram, the balloon core or virtio-balloon, and at most one
rule group of each scenario, so one incremental build serves both. Its
header is the commit message: the subject, why the breakage makes its rules
fail, then ``Breaks:`` (the rules, as ``SCENARIO:RULE``, that must fail),
``May also break:`` and, for a breakage the kernel itself reports,
``Kernel report: SCENARIO KIND, ...``.

The commits are made on top of the repository's base without touching its
work tree (a private index, ``git apply --cached``: no fuzz), with a fixed
author and date, so the same patch always gives the same commit, and a
``git:`` build of it is an incremental rebuild of the base's build directory.
"""

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.integration.kernel_repo import KernelRepo, git

PATCH_DIR = Path(__file__).resolve().parent / "broken-kernels"
SCENARIOS = ("zram", "balloon")
# harness.check.reported's rule: the kernel's headline is the reason, so it has
# no pattern of its own; checked through the result's kernel_report instead.
KERNEL_QUIET = "kernel-quiet"

# Each rule of harness/check/zram.py's and balloon.py's verdicts by a short
# name, and the reason the judge gives when it fails.
RULES: dict[str, dict[str, str]] = {
    "zram": {
        "pages-moved": r"no zsmalloc page changed PFN",
        "first-pages-are-zsmallocs": r"found \d+/\d+ zspage first pages before/after, zsmalloc "
                                     r"counts \d+/\d+ zspages: the PFNs are not all zsmalloc's",
        "zspages-kept": r"compact_memory changed zsmalloc's zspages from \d+ to \d+",
        "mem-used-kept": r"compact_memory changed zram's mem_used_total from \d+ to \d+ bytes",
        "pgmigrate-counts-them": r"pgmigrate_success rose by \d+, less than the \d+ zsmalloc "
                                 r"pages that moved",
        "data-intact": r"\d+ chunks read back differ from what was written",
    },
    "balloon": {
        "inflate-counted": r"balloon_inflate rose by \d+, \d+ pages were asked for",
        "pages-are-the-balloons": r"found \d+/\d+ balloon pages before/after compaction in a "
                                  r"balloon of \d+",
        "pages-moved": r"no balloon page changed PFN",
        "migrate-counted": r"balloon_migrate rose by \d+, but \d+ balloon pages changed PFN",
        "pgmigrate-counts-them": r"pgmigrate_success rose by \d+, less than balloon_migrate's "
                                 r"\d+",
        "deflate-counted": r"balloon_deflate rose by \d+, balloon_inflate by \d+: pages were "
                           r"not all returned",
        "memory-usable": r"memory written after deflating did not read back intact",
    },
}
# Rules no breakage of the guest kernel can make fail on its own, and why
# (the README's developer notes say the same).
UNREACHABLE: dict[str, str] = {
    "balloon:memory-usable": "the file is written after the balloon deflated, into pages the "
                             "guest owns again; only the host discarding them later (QEMU, not "
                             "the guest kernel) could change it, and any guest bug that frees "
                             "a balloon page twice is a Bad page state report first",
}


@dataclass(frozen=True)
class BrokenKernel:
    """One broken kernel: its patch, its commit message, what it must make fail."""

    name: str
    patch: Path
    message: str  # the patch's header: subject, body, the fields below
    breaks: tuple[str, ...]  # SCENARIO:RULE
    may_also_break: tuple[str, ...]
    kernel_reports: dict[str, str]  # scenario -> the kind of report it must cause

    def rules(self, scenario: str) -> set[str]:
        """The rules of ``scenario`` this kernel must make fail (unqualified)."""
        return _of(scenario, self.breaks)

    def allowed(self, scenario: str) -> set[str]:
        """The rules of ``scenario`` that may fail: those it breaks and their consequences."""
        return _of(scenario, self.breaks + self.may_also_break)


def _of(scenario: str, names: tuple[str, ...]) -> set[str]:
    return {name.split(":", 1)[1] for name in names if name.startswith(f"{scenario}:")}


def all_rules() -> set[str]:
    """Every rule, qualified by its scenario, the kernel-report rule included."""
    return {f"{scenario}:{rule}" for scenario in SCENARIOS
            for rule in (*RULES[scenario], KERNEL_QUIET)}


def _field(header: str, name: str) -> tuple[str, ...]:
    found = re.search(rf"^{name}: (.+)$", header, re.MULTILINE)
    return tuple(word.strip() for word in found.group(1).split(",")) if found else ()


def _read(patch: Path) -> BrokenKernel:
    header = patch.read_text().split("\n--- ", 1)[0].strip()
    breaks = _field(header, "Breaks")
    may_also_break = _field(header, "May also break")
    unknown = set(breaks + may_also_break) - all_rules()
    assert breaks and not unknown, f"{patch}: Breaks: names no rule, or unknown {unknown}"
    reports = dict(entry.split(" ", 1) for entry in _field(header, "Kernel report"))
    quiet = {name.split(":")[0] for name in breaks if name.endswith(f":{KERNEL_QUIET}")}
    assert quiet == set(reports), f"{patch}: each {KERNEL_QUIET} needs a Kernel report kind"
    return BrokenKernel(name=patch.stem, patch=patch, message=header, breaks=breaks,
                        may_also_break=may_also_break, kernel_reports=reports)


def broken_kernels() -> list[BrokenKernel]:
    """Every broken kernel in tests/broken-kernels/, by name."""
    return [_read(patch) for patch in sorted(PATCH_DIR.glob("*.patch"))]


def failed_rules(scenario: str, reasons: tuple[str, ...]) -> set[str]:
    """The rules of ``scenario`` named by a NOT PROVEN result's reasons; a reason that
    is no rule's is kept as it is, so an assertion shows it."""
    return {next((rule for rule, text in RULES[scenario].items() if re.fullmatch(text, reason)),
                 reason) for reason in reasons}


def commit(repo: KernelRepo, broken: BrokenKernel) -> str:
    """The commit of ``broken`` on top of the repository's base (made, or made again:
    the same patch gives the same hash), under ``refs/heads/broken/NAME``."""
    with tempfile.TemporaryDirectory(prefix="harness-broken-kernel-") as scratch:
        index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        git(repo.path, "read-tree", repo.base, env=index)
        applied = subprocess.run(
            ["git", "-C", str(repo.path), "apply", "--cached", str(broken.patch)],
            capture_output=True, text=True, env={**os.environ, **index})
        assert applied.returncode == 0, f"{broken.patch} does not apply: {applied.stderr}"
        tree = git(repo.path, "write-tree", env=index)
    sha = git(repo.path, "commit-tree", tree, "-p", repo.base, "-m", broken.message)
    git(repo.path, "update-ref", f"refs/heads/broken/{broken.name}", sha)
    return sha
