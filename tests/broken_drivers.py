"""Deliberately broken forks of the sample driver: one per verdict rule.

A check that says PROVEN on a broken driver is the worst defect the harness
can have, so every rule of harness/check/evidence.py (and the kernel-report
rule of harness/check/reported.py) has a variant here that makes it fail.

Each ``tests/broken-drivers/NAME.patch`` is a small unified diff against
guest-modules/movable_sample.c that breaks one thing. Its header says which
rules of the A/B it must make fail (``Breaks:``), which may fail with them as a
consequence (``May also break:``), which rules of the stress scenario it must
make fail (``Stress:``, ``Stress before 6.17:`` for those only a driver that
isolates its own pages can break, ``Stress may also break:``;
tests/integration/test_stress.py) and, for a variant
the kernel itself reports, the kind of report (``Kernel report:``). A variant
with no ``Breaks:`` line is not put through the A/B (its bug is in code the
A/B does not run, churn), one with no ``Stress:`` line not through the stress.
The shipped driver carries no breakage: a variant is the shipped source with
its patch applied, in a directory of its own, built like the driver
(``build_module(source_dir=...)``). The patches touch only code every API era
compiles (ms_copy, ms_init, verify, churn, ms_unlock_slot), so they apply to and build for the
a_ops, movable_operations and balloon eras alike.
"""

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.check.stress import DRIVER_ISOLATES
from harness.module import module_source_dir

PATCH_DIR = Path(__file__).resolve().parent / "broken-drivers"

# Each rule by a short name, and the reason harness/check/evidence.py gives
# when it fails (the round it failed in first: "movable=0: " or "movable=1: ";
# the verify rules are the same code for both rounds).
RULES: dict[str, str] = {
    "verify-checked-all": r"movable=[01]: verify checked \d+ of \d+ pages",
    "verify-no-mismatch": r"movable=[01]: \d+ pages lost their contents",
    "pages-moved": r"movable=1: no driver page changed PFN",
    "migratepage-succeeded": r"movable=1: the driver's migratepage callback never succeeded",
    "moves-within-migrations": r"movable=1: \d+ pages changed PFN but the driver migrated "
                               r"only \d+",
    "pgmigrate-counts-them": r"movable=1: pgmigrate_success rose by \d+, less than the "
                             r"driver's \d+ migrations",
    "control-unmoved": r"movable=0: \d+ non-movable pages changed PFN",
    "control-no-callbacks": r"movable=0: callbacks ran for pages never registered movable",
    "high-order-gain": r"order-\d+ allocations after compaction: \d+ with movable pages vs "
                       r"\d+ without \(no gain\)",
}
# The stress scenario's rules (harness/check/stress.py), by short name, and
# the reason it gives when one fails. A variant names those it must break on a
# ``Stress:`` line; ``kernel-quiet`` is shared with the A/B.
STRESS_RULES: dict[str, str] = {
    "load": r"the stress load did not run in full: .+",
    "verify": r"\d+ of \d+ page checks found wrong contents",
    "accounting": r"the driver's accounting broke in \d+ of \d+ samples: isolated \d+ != "
                  r"migrated \+ putback \+ freed_isolated \+ isolated_now = \d+",
    "settled": r"\d+ pages were still isolated after the load",
    "released": r"the VM still held \d+ pages the driver freed while isolated",
    "no-leak": r"free memory -?\d+ KiB below its baseline after unloading \(tolerance \d+ "
               r"KiB\): pages leaked",
    "races": r"no race was hit \(.+\): the stress proved nothing about concurrency",
    "not-held": r"\d+ pages were migrated while the driver held them locked",
}
# harness.check.reported's rule: no reason pattern of its own (the kernel's
# headline is the reason), checked through RunResult.kernel_report instead.
KERNEL_QUIET = "kernel-quiet"


@dataclass(frozen=True)
class Variant:
    """One broken driver: its patch and what it must make fail."""

    name: str
    patch: Path
    breaks: tuple[str, ...]  # the A/B's rules (none: the A/B does not run it)
    may_also_break: tuple[str, ...]
    kernel_report: str | None  # the kind of report it must cause, if any
    stress: tuple[str, ...] = ()  # the stress scenario's rules (none: it does not run it)
    # ... and those it breaks only where the driver isolates its pages itself (4.8 ...
    # 6.16): from 6.17 the balloon core does, and never hands churn an isolated page
    stress_driver_isolates: tuple[str, ...] = ()
    stress_may_also_break: tuple[str, ...] = ()  # as a consequence, not on demand

    def stress_expected(self, movable_api: str) -> set[str]:
        """The stress rules it must break on a driver built with ``movable_api``."""
        own = self.stress_driver_isolates if movable_api in DRIVER_ISOLATES else ()
        return {*self.stress, *own}

    @property
    def test_id(self) -> str:
        """The rules it breaks (and the report it causes), as pytest ids name its tests."""
        rules = "+".join(self.breaks)
        return f"{rules}-{self.kernel_report}" if self.kernel_report else rules


def _header_field(header: str, name: str) -> tuple[str, ...]:
    found = re.search(rf"^{name}: (.+)$", header, re.MULTILINE)
    return tuple(word.strip() for word in found.group(1).split(",")) if found else ()


def _read_variant(patch: Path) -> Variant:
    header = patch.read_text().split("\n--- ", 1)[0]
    breaks = _header_field(header, "Breaks")
    may_also_break = _header_field(header, "May also break")
    stress = _header_field(header, "Stress")
    before_balloon = _header_field(header, "Stress before 6.17")
    stress_may_also = _header_field(header, "Stress may also break")
    unknown = (set(breaks + may_also_break) - {*RULES, KERNEL_QUIET}) | (
        set(stress + before_balloon + stress_may_also) - {*STRESS_RULES, KERNEL_QUIET})
    assert (breaks or stress or before_balloon) and not unknown, (
        f"{patch}: Breaks:/Stress: name no rule, or unknown {unknown}")
    kinds = _header_field(header, "Kernel report")
    assert (KERNEL_QUIET in breaks + stress) == bool(kinds), (
        f"{patch}: {KERNEL_QUIET} needs a kind")
    return Variant(name=patch.stem, patch=patch, breaks=breaks, may_also_break=may_also_break,
                   kernel_report=kinds[0] if kinds else None, stress=stress,
                   stress_driver_isolates=before_balloon,
                   stress_may_also_break=stress_may_also)


def variants() -> list[Variant]:
    """Every variant in tests/broken-drivers/, by name."""
    return [_read_variant(patch) for patch in sorted(PATCH_DIR.glob("*.patch"))]


def variant(name: str) -> Variant:
    """The variant called ``name``."""
    return _read_variant(PATCH_DIR / f"{name}.patch")


def driver_copy(parent: Path, name: str) -> Path:
    """A copy of the shipped guest-modules/ as ``parent/name``, for a fork to start from."""
    return Path(shutil.copytree(module_source_dir(), parent / name))


def variant_source(broken: Variant, parent: Path) -> Path:
    """A copy of guest-modules/ in ``parent`` with ``broken``'s patch applied.

    No fuzz: a patch whose context no longer matches the driver fails here,
    loudly, instead of breaking something else.
    """
    source = driver_copy(parent, broken.name)
    done = subprocess.run(["patch", "--batch", "--fuzz=0", "--no-backup-if-mismatch", "-p1",
                           "-d", str(source), "-i", str(broken.patch)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"{broken.patch} does not apply: {done.stdout}{done.stderr}"
    return source


def failed_rules(reasons: tuple[str, ...], rules: dict[str, str] = RULES) -> set[str]:
    """The rules (of the A/B, or ``STRESS_RULES``) named by a NOT PROVEN result's
    reasons; a reason that is no rule's is kept as it is, so an assertion shows it."""
    return {next((rule for rule, text in rules.items() if re.fullmatch(text, reason)), reason)
            for reason in reasons}
