"""The sample driver's control and evidence interface, seen through a Guest.

guest-modules/movable_sample.c exposes everything under
/sys/kernel/debug/movable_sample/; this class is the only place that knows
those file names and formats, so a scenario reads like the experiment it is.
"""

import re
from dataclasses import dataclass

from harness.artifacts import ModuleArtifact
from harness.guest import CommandResult, Guest, GuestError

DEBUGFS = "/sys/kernel/debug/movable_sample"
MODULE_NAME = "movable_sample"
REMOTE_MODULE_PATH = "/tmp/movable_sample.ko"

# The stats file's counters. From 6.17 on (ModuleArtifact.movable_api
# "balloon") the balloon core isolates and puts pages back without telling
# the driver, so those two are not reported there (guest-modules/README.md).
# The churn and race counters (the stress scenario's, harness/check/stress.py)
# follow; freed_isolated, isolate_refused and orphans_held are about pages the
# driver itself isolates, so from 6.17 on they are not reported either.
STATS = frozenset({"nr_pages", "movable", "isolated", "migrated", "putback", "eagain",
                   "failed", "isolated_now", "inject_eagain_every", "inject_fail_every",
                   "churned", "churn_mismatches", "lock_busy", "migrated_held", "overlaps",
                   "callback_cpus", "freed_isolated", "isolate_refused", "orphans_held"})
CORE_OWNED_STATS = {"balloon": frozenset({"isolated", "putback", "freed_isolated",
                                          "isolate_refused", "orphans_held"})}
# The pages file, a marker line, the stats file: one command reads both.
STATS_MARKER = "@@movable_sample stats@@\n"
STATE_COMMAND = f"cat {DEBUGFS}/pages && echo '{STATS_MARKER.strip()}' && cat {DEBUGFS}/stats"
RELEASED = re.compile(r"movable_sample: released (\d+) pages, (\d+) of them isolated")


def stats_keys(movable_api: str) -> frozenset[str]:
    """The counters the driver reports when built with ``movable_api``."""
    return STATS - CORE_OWNED_STATS.get(movable_api, frozenset())


@dataclass(frozen=True)
class DriverParams:
    """Module parameters: see guest-modules/README.md for what each proves."""

    pages: int = 4096
    movable: bool = True
    fragment: int = 1
    seed: int = 1

    def as_insmod_args(self) -> str:
        """The parameters as insmod takes them."""
        return (f"pages={self.pages} movable={int(self.movable)} "
                f"fragment={self.fragment} seed={self.seed}")


@dataclass(frozen=True)
class DriverState:
    """What the driver reports at one instant: page PFNs and callback counters."""

    pfns: dict[int, int]  # logical page index -> current PFN
    stats: dict[str, int]  # isolated, migrated, putback, eagain, failed, ...


def _checked(result: CommandResult, what: str) -> str:
    """Stdout of a successful command, or a GuestError naming the step."""
    if not result.ok:
        raise GuestError(f"{what} failed (exit {result.exit_status}): {result.stdout.strip()}")
    return result.stdout


def parse_pages(text: str) -> dict[int, int]:
    """Parse the ``pages`` file: one ``<index> <pfn>`` line per kept page."""
    pfns: dict[int, int] = {}
    for line in text.splitlines():
        if line.strip():
            index, pfn = line.split()
            pfns[int(index)] = int(pfn)
    return pfns


def parse_stats(text: str) -> dict[str, int]:
    """Parse the ``stats`` file: ``name value`` lines."""
    stats: dict[str, int] = {}
    for line in text.splitlines():
        if line.strip():
            name, value = line.split()
            stats[name] = int(value)
    return stats


def parse_state(text: str) -> DriverState:
    """Parse what ``STATE_COMMAND`` printed: the pages file, the marker, the stats file."""
    pages, marker, stats = text.partition(STATS_MARKER)
    if not marker:
        raise GuestError(f"no stats after the driver's pages: {text.strip()[-200:]!r}")
    return DriverState(pfns=parse_pages(pages), stats=parse_stats(stats))


def try_alloc_command(order: int, count: int) -> str:
    """The command that tries ``count`` order-``order`` allocations and prints the result."""
    return f"echo {order} {count} > {DEBUGFS}/try_alloc && cat {DEBUGFS}/try_alloc"


def parse_verify(text: str) -> tuple[int, int]:
    """Parse ``checked <n> mismatches <m>`` into (n, m)."""
    words = text.split()
    if len(words) != 4 or words[0] != "checked" or words[2] != "mismatches":
        raise GuestError(f"unexpected verify output from the driver: {text.strip()!r}")
    return int(words[1]), int(words[3])


def parse_try_alloc(text: str) -> int:
    """Parse ``order <o> requested <c> succeeded <s>`` into s."""
    words = text.split()
    if len(words) != 6 or words[4] != "succeeded":
        raise GuestError(f"unexpected try_alloc output from the driver: {text.strip()!r}")
    return int(words[5])


class SampleDriver:
    """Load, drive and read the sample driver on a guest."""

    def __init__(self, guest: Guest, module_path: str = REMOTE_MODULE_PATH) -> None:
        self.guest = guest
        self.module_path = module_path

    @classmethod
    def install(cls, guest: Guest, module: ModuleArtifact) -> "SampleDriver":
        """Copy the built module onto the guest; loading is a separate step."""
        guest.put(module.path, REMOTE_MODULE_PATH)
        return cls(guest, REMOTE_MODULE_PATH)

    def load(self, params: DriverParams, timeout: float = 120.0) -> None:
        """insmod with ``params``; allocating many pages takes a while under TCG."""
        _checked(self.guest.run(f"insmod {self.module_path} {params.as_insmod_args()}",
                                timeout=timeout), "insmod movable_sample")

    def unload(self) -> None:
        """rmmod; the driver frees every page it still owns."""
        _checked(self.guest.run(f"rmmod {MODULE_NAME}"), "rmmod movable_sample")

    def release(self) -> None:
        """Cleanup: rmmod if the driver is loaded, once no insmod runs any more. A ^C
        during a load over SSH ends the harness's ssh, not the board's insmod, which
        goes on to load the driver: waiting for it leaves the board as found."""
        _checked(self.guest.run(f"while pidof insmod >/dev/null; do sleep 1; done; "
                                f"! test -d /sys/module/{MODULE_NAME} || rmmod {MODULE_NAME}"),
                 "rmmod movable_sample")

    def last_release(self) -> tuple[int, int]:
        """What the driver's last unload logged: (pages released, of them isolated by
        the VM; from 6.17 the most the VM held isolated at once while it ran)."""
        log = _checked(self.guest.run("dmesg | grep 'movable_sample: released' | tail -n 1"),
                       "read the driver's unload line")
        match = RELEASED.search(log)
        if not match:
            raise GuestError(f"no 'released N pages' line from {MODULE_NAME} in dmesg: "
                             f"{log.strip()!r}")
        return int(match.group(1)), int(match.group(2))

    def stats(self) -> dict[str, int]:
        """The callback, churn and race counters: one consistent snapshot."""
        return parse_stats(_checked(self.guest.run(f"cat {DEBUGFS}/stats"),
                                    "read driver stats"))

    def state(self) -> DriverState:
        """Current PFN of every page and the callback counters, in one round trip."""
        return parse_state(_checked(self.guest.run(STATE_COMMAND),
                                    "read driver pages and stats"))

    def verify(self) -> tuple[int, int]:
        """Check every page's pattern in the guest: (pages checked, mismatches)."""
        return parse_verify(_checked(self.guest.run(f"cat {DEBUGFS}/verify", timeout=120),
                                     "driver verify"))

    def try_alloc(self, order: int, count: int) -> int:
        """How many of ``count`` order-``order`` allocations succeed right now."""
        return parse_try_alloc(_checked(self.guest.run(try_alloc_command(order, count),
                                                       timeout=120), "driver try_alloc"))

    def fill(self, block_pages: int) -> None:
        """Fragment the free memory loading left whole: the driver keeps one page of
        every free block of ``block_pages`` pages left and frees the others (its
        ``fill`` file; the pages kept join its own, movable or not)."""
        _checked(self.guest.run(f"echo {block_pages} > {DEBUGFS}/fill", timeout=300),
                 "driver fill")

    def alloc_order(self, order: int, timeout: float = 300.0) -> bool:
        """One order-``order`` allocation as a driver makes it (GFP_KERNEL: reclaim and
        compaction allowed, the allocator's failure report on): whether it succeeded."""
        out = _checked(self.guest.run(
            f"echo {order} > {DEBUGFS}/alloc_order && cat {DEBUGFS}/alloc_order",
            timeout=timeout), "driver alloc_order")
        return parse_try_alloc(out) == 1

    def inject_faults(self, eagain_every: int, fail_every: int) -> None:
        """Make every Nth migration return -EAGAIN and every Mth fail hard (0 = off)."""
        _checked(self.guest.run(
            f"echo {eagain_every} > {DEBUGFS}/inject_eagain_every && "
            f"echo {fail_every} > {DEBUGFS}/inject_fail_every"), "driver fault injection")
