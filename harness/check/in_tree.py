"""What the in-tree scenarios (zram/zsmalloc, virtio-balloon) share.

The sample driver tells the harness the PFN of each of its pages; the kernel's
own users of the movable page API do not. Their pages are found instead in
``/proc/kpageflags`` (CONFIG_PROC_PAGE_MONITOR), one 64-bit flag word per PFN,
by a flag combination only they carry, in every era from 4.8 to 6.x:

- a zsmalloc zspage's first page has PG_private (KPF_PRIVATE, bit 35) and is
  neither on an LRU list (buffer heads), nor slab (SLOB marks its partly free
  pages PG_private too), nor free;
- a balloon page has bit 23: KPF_BALLOON in 4.8 (PageBalloon), renamed
  KPF_OFFLINE when balloon pages became PageOffline (4.19+), same bit.

Compaction neither allocates nor frees such pages, so the set of their PFNs
keeps its size and every PFN that held one before and none after is a page
that migrated away: ``moved``, a lower bound of the pages migrated (a page
can move twice, and zsmalloc marks one page per zspage only).

Before anything boots, ``require_config`` checks the kernel's .config for
every option a scenario needs, so a missing option is one clear line naming
the fragment to add instead of a confusing failure inside the guest.

Each scenario records what it measures in its Evidence (harness.check.scenario)
as soon as it has it, under the names ``in_tree_result`` reads, so a kernel
report that ends the scenario early still leaves a result with everything
measured before it.
"""

import gzip
import shlex
import tempfile
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from harness import procfs
from harness.artifacts import KernelBuild
from harness.check.steps import compact_memory, snapshot, undone
from harness.errors import HarnessError
from harness.guest import Guest, GuestError
from harness.kernel.config import parse_dotconfig
from harness.report.in_tree import InTreeResult, TrackedPages

if TYPE_CHECKING:  # scenario imports this module
    from _typeshed import DataclassInstance

    from harness.check.scenario import Evidence

    M = TypeVar("M", bound=DataclassInstance)

KPAGEFLAGS = "/proc/kpageflags"
KPF_LRU = 5
KPF_SLAB = 7
KPF_BUDDY = 10
KPF_BALLOON = 23  # KPF_OFFLINE since 4.19: the same bit, set on balloon pages
KPF_PRIVATE = 35
_WORD = 8  # bytes per PFN in /proc/kpageflags


@dataclass(frozen=True)
class ConfigNeed:
    """One kernel option a scenario cannot run without, and where it comes from."""

    symbol: str  # without CONFIG_
    fragment: str  # the shipped fragment in kernel-configs/ that sets it
    why: str  # what the scenario uses it for, for the error message
    renamed: tuple[str, ...] = ()  # the same option's name in other eras (any one will do)

    def met_by(self, values: Mapping[str, str]) -> bool:
        """Built in (=y) under any of its names."""
        return any(values.get(name) == "y" for name in (self.symbol, *self.renamed))

    def describe(self) -> str:
        """``CONFIG_X`` or ``CONFIG_X (or CONFIG_Y)``."""
        others = "".join(f" (or CONFIG_{name})" for name in self.renamed)
        return f"CONFIG_{self.symbol}{others}"


# Options every in-tree scenario needs; the compaction fragment is always merged.
COMPACTION_NEEDS = (
    ConfigNeed("COMPACTION", "compaction", "compact_memory"),
    ConfigNeed("MIGRATION", "compaction", "page migration"),
    ConfigNeed("VM_EVENT_COUNTERS", "compaction", "pgmigrate_* in /proc/vmstat"),
)


def missing_config(config_text: str, needs: Iterable[ConfigNeed]) -> list[ConfigNeed]:
    """The needs a .config text does not build in (=y); =m counts as missing
    because the guest image loads no modules of the kernel's own."""
    values = parse_dotconfig(config_text)
    return [need for need in needs if not need.met_by(values)]


def config_error(scenario: str, config: str, missing: list[ConfigNeed]) -> HarnessError:
    """One line: which options are not set where, and which --config adds them."""
    names = ", ".join(need.describe() for need in missing)
    verb = "is" if len(missing) == 1 else "are"
    fragments = " ".join(f"--config {name}"
                         for name in dict.fromkeys(need.fragment for need in missing))
    whys = "; ".join(dict.fromkeys(need.why for need in missing))
    return HarnessError(f"{names} {verb} not set in {config}: the {scenario} scenario needs "
                        f"it ({whys}); build the kernel with {fragments}")


def require_config(kernel: KernelBuild, scenario: str, needs: Iterable[ConfigNeed]) -> None:
    """Raise HarnessError naming every need ``kernel``'s .config lacks (no VM involved)."""
    try:
        text = kernel.config.read_text()
    except OSError as error:
        raise HarnessError(f"cannot read {kernel.config}: {error}; rebuild the kernel") from None
    missing = missing_config(text, needs)
    if missing:
        raise config_error(scenario, str(kernel.config), missing)


def measured(cls: "type[M]", facts: Mapping[str, Any]) -> "M":
    """A scenario's record of complete evidence (ZramEvidence, BalloonEvidence), its
    fields read from the facts of the same names (``tracked`` as TrackedPages)."""
    values = {item.name: facts[item.name] for item in fields(cls)}
    values["tracked"] = TrackedPages(**values["tracked"])
    return cls(**values)


def in_tree_result(evidence: "Evidence", proven: bool = False, reasons: tuple[str, ...] = (),
                   data_checked: int | None = None,
                   data_mismatches: int | None = None) -> InTreeResult:
    """The record of an in-tree scenario's evidence: the facts every in-tree scenario
    keeps under the same names (``tracked``, ``buddy_before``, ``pgmigrate_success_delta``,
    ...), None or empty where it was cut short before measuring them."""
    facts = evidence.facts
    tracked = facts.get("tracked")
    return InTreeResult(
        scenario=evidence.scenario, arch=evidence.arch, kernel=evidence.kernel,
        release=evidence.release, page_size=evidence.page_size, proven=proven,
        reasons=reasons, tracked=TrackedPages(**tracked) if tracked is not None else None,
        pgmigrate_success_delta=facts.get("pgmigrate_success_delta"),
        buddy_before=tuple(facts.get("buddy_before", ())),
        buddy_after=tuple(facts.get("buddy_after", ())),
        data_checked=data_checked, data_mismatches=data_mismatches,
        data_unit=facts.get("data_unit", ""), figures=facts.get("figures", {}),
        vmstat_delta=facts.get("vmstat_delta", {}), seconds=evidence.seconds,
        notes=tuple(evidence.notes))


@dataclass(frozen=True)
class PageKind:
    """Pages recognised by their kpageflags: all ``required`` bits, no ``excluded`` bit."""

    name: str
    required: tuple[int, ...]
    excluded: tuple[int, ...] = (KPF_LRU, KPF_SLAB, KPF_BUDDY)

    def matches(self, flags: int) -> bool:
        """True when one PFN's flag word marks a page of this kind."""
        return (all(flags >> bit & 1 for bit in self.required)
                and not any(flags >> bit & 1 for bit in self.excluded))


ZSPAGE_FIRST_PAGE = PageKind("zsmalloc zspage first pages", required=(KPF_PRIVATE,))
BALLOON_PAGE = PageKind("balloon pages", required=(KPF_BALLOON,))


def pfns_of(kind: PageKind, data: bytes, first_pfn: int) -> frozenset[int]:
    """PFNs of ``kind`` in a slice of /proc/kpageflags starting at ``first_pfn``."""
    if len(data) % _WORD:
        raise HarnessError(f"{KPAGEFLAGS} slice of {len(data)} bytes is not whole 8-byte "
                           "words: the read was cut short; run the scenario again")
    words = array("Q")
    words.frombytes(data)  # kpageflags is native-endian; host and guest are little-endian
    return frozenset(first_pfn + index for index, flags in enumerate(words)
                     if kind.matches(flags))


def pfn_span(zoneinfo: procfs.ZoneInfo) -> tuple[int, int]:
    """(first PFN, number of PFNs) covering every populated zone."""
    zones = [zone for zone in zoneinfo.zones.values()
             if zone.populated and zone.start_pfn is not None]
    if not zones:
        raise HarnessError("/proc/zoneinfo shows no populated zone with a start_pfn: "
                           "cannot tell which PFNs to read from /proc/kpageflags")
    first = min(zone.start_pfn for zone in zones if zone.start_pfn is not None)
    end = max(zone.start_pfn + zone.spanned for zone in zones if zone.start_pfn is not None)
    return first, end - first


def read_kpageflags(guest: Guest, first_pfn: int, count: int) -> bytes:
    """The flag words of ``count`` PFNs from ``first_pfn`` on, copied off the guest.

    dd cuts the slice (the whole file would include the PFN hole below arm64's
    RAM) and gzip shrinks it about twentyfold (most words repeat), because a
    console transport moves every byte as base64 text.
    """
    remote = "/tmp/harness-kpageflags.gz"
    copy = (f"dd if={KPAGEFLAGS} bs=65536 skip={first_pfn * _WORD} count={count * _WORD} "
            f"iflag=skip_bytes,count_bytes 2>/dev/null | gzip -1 > {remote}")
    result = guest.run(copy, timeout=120)
    if not result.ok:
        raise GuestError(f"cannot read {KPAGEFLAGS} (exit {result.exit_status}): "
                         f"{result.stdout.strip()}; the kernel needs CONFIG_PROC_PAGE_MONITOR")
    with tempfile.TemporaryDirectory(prefix="harness-kpf-") as scratch:
        local = Path(scratch) / "kpageflags.gz"
        with undone(guest, lambda: guest.run(f"rm -f {shlex.quote(remote)}"),
                    f"removing {remote}"):
            guest.get(remote, local)
        try:
            data = gzip.decompress(local.read_bytes())
        except (OSError, EOFError) as error:
            raise GuestError(f"{KPAGEFLAGS} arrived damaged: {error}") from None
    if len(data) != count * _WORD:
        raise GuestError(f"read {len(data)} bytes of {KPAGEFLAGS}, expected {count * _WORD}")
    return data


def find_pages(guest: Guest, kind: PageKind, span: tuple[int, int]) -> frozenset[int]:
    """The PFNs of ``kind`` on the guest right now."""
    return pfns_of(kind, read_kpageflags(guest, *span), span[0])


def pfn_moves(kind: PageKind, before: frozenset[int], after: frozenset[int]) -> TrackedPages:
    """Compare two PFN sets of one kind of page."""
    return TrackedPages(kind=kind.name, before=len(before), after=len(after),
                        moved=len(before - after), arrived=len(after - before))


def counters(vmstat: procfs.Vmstat, names: Iterable[str]) -> Mapping[str, int]:
    """The named vmstat counters that this kernel has (absent ones are left out)."""
    return {name: vmstat[name] for name in names if name in vmstat}


def compact_and_track(guest: Guest, evidence: "Evidence", kind: PageKind,
                      names: Iterable[str]) -> None:
    """The measurement every in-tree scenario makes around one ``compact_memory``:
    buddyinfo, the PFNs of its ``kind`` of page and the vmstat counters ``names`` (those
    this kernel has) before and after, each into ``evidence`` as soon as it is read."""
    facts = evidence.facts
    evidence.doing("its measurements before compaction")
    before = snapshot(guest)
    facts["buddy_before"] = list(before.buddyinfo.per_order())
    span = pfn_span(before.zoneinfo)
    pages_before = find_pages(guest, kind, span)
    with evidence.phase("compact_memory"):
        compact_memory(guest)
    evidence.doing("its measurements after compaction")
    facts["tracked"] = asdict(pfn_moves(kind, pages_before, find_pages(guest, kind, span)))
    after = snapshot(guest)
    facts["buddy_after"] = list(after.buddyinfo.per_order())
    facts["vmstat_delta"] = procfs.vmstat_delta(before.vmstat, after.vmstat,
                                                counters(before.vmstat, names))
    facts["pgmigrate_success_delta"] = facts["vmstat_delta"].get("pgmigrate_success", 0)
