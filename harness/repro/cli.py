"""``harness repro``: boot, fragment, make one high-order allocation as a driver does,
show what the kernel said, and leave the user in the guest's shell.

With ``--batch`` (or without a terminal) it exits instead: 0 when the
allocation behaved as the driver's pages predict (harness.repro.outcome), 1
when it did not or the kernel reported trouble, 2 on a harness error, as
``harness run``. Either way the facts and the verdict go to ``repro.json`` in
the run directory, next to the VM's console log.
"""

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from harness.arch import ARCHES
from harness.check.driver import DEBUGFS, REMOTE_MODULE_PATH
from harness.defaults import CPUS, MEMORY_MIB
from harness.errors import HarnessError
from harness.procfs import EXTFRAG_INDEX, UNUSABLE_INDEX
from harness.report.model import size_label
from harness.repro.experiment import ReproSettings
from harness.repro.outcome import Outcome, judge

RESULT_FILE = "repro.json"
SCHEMA = "harness.repro"
SCHEMA_VERSION = 1
# The lines of the allocator's report worth a terminal: the headline, the free
# blocks per order and zone ("DMA32: 3*4kB (UM) 0*8kB ... = 1234kB", with "Node 0 "
# before it on a NUMA kernel).
_BUDDY_DUMP = re.compile(r"\b\w+: \d+\*\d+kB .*= ?\d+kB\s*$")
_COUNTERS = ("compact_stall", "compact_fail", "compact_success", "compact_isolated",
             "pgmigrate_success")


def command(args: argparse.Namespace) -> int:
    """Build what is missing, boot, reproduce; 0 as expected, 1 not, 2 harness error."""
    from harness.check import runner
    from harness.kernel.build import build_kernel
    from harness.module import build_module
    from harness.paths import new_run_dir

    try:
        settings = ReproSettings(movable=bool(args.movable), order=args.order)
    except ValueError as error:
        raise HarnessError(f"--order {args.order}: {error}") from None
    kernel = build_kernel(args.kernel, args.arch, runner.cell_fragments(args.config))
    module = build_module(kernel)
    run_dir = new_run_dir("repro")
    facts: dict[str, Any] = {"arch": args.arch, "kernel": args.kernel,
                             "release": kernel.release, "memory_mib": args.memory,
                             "cpus": args.cpus, "movable": settings.movable,
                             "kernel_report": None}
    interactive = not args.batch and sys.stdin.isatty() and sys.stdout.isatty()
    outcome = _reproduce(kernel, module, settings, args, run_dir, facts, interactive)
    return outcome.exit_status


def _reproduce(kernel: Any, module: Any, settings: ReproSettings, args: argparse.Namespace,
               run_dir: Path, facts: dict[str, Any], interactive: bool) -> Outcome:
    """Boot, collect, report; a kernel report once the guest is up is the outcome."""
    from harness.check.target import TargetOptions, open_target
    from harness.guest import KernelProblem
    from harness.guest.health import ConsoleLogSource
    from harness.repro.experiment import collect
    from harness.vm.boot import VmGuest
    from harness.vm.cli import interactive_shell

    booted, outcome = False, None
    try:
        with open_target(kernel, TargetOptions(memory_mib=args.memory, cpus=args.cpus),
                         run_dir=run_dir) as guest:
            booted = True
            assert isinstance(guest, VmGuest)
            facts["console_log"] = str(guest.vm.console_log)
            try:
                collect(guest, module, settings, ConsoleLogSource(guest.vm.console_log).read_new,
                        facts)
            except KernelProblem as problem:
                _reported(facts, problem)
                raise
            outcome = _finish(facts, run_dir)
            if interactive:
                print(guide(facts))
                interactive_shell(guest)
    except KernelProblem as problem:
        if not booted:
            raise
        if facts["kernel_report"] is None:
            _reported(facts, problem)
        outcome = _finish(facts, run_dir)
    assert outcome is not None
    return outcome


def _reported(facts: dict[str, Any], problem: Any) -> None:
    facts["kernel_report"] = {"kind": problem.kind, "headline": problem.headline,
                              "excerpt": problem.excerpt, "step": problem.step}


def _finish(facts: dict[str, Any], run_dir: Path) -> Outcome:
    """Judge, write repro.json, print the summary."""
    from harness.paths import write_atomically

    outcome = judge(facts) if facts["kernel_report"] or "driver_counters" in facts else Outcome(
        False, ("the repro stopped before the allocation was measured",))
    document = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION,
                "expected": outcome.expected, "reasons": list(outcome.reasons), **facts}
    path = write_atomically(run_dir / RESULT_FILE, json.dumps(document, indent=2) + "\n",
                            mode=0o644)
    print(summary(facts, outcome))
    print(f"result: {path}")
    return outcome


def summary(facts: dict[str, Any], outcome: Outcome) -> str:
    """What happened, for a person: the setting, the allocation, the allocator's own
    report (its headline and free blocks), the counters and indices around it."""
    lines = [f"harness repro · {facts['arch']} · {facts['kernel']} ({facts['release']}"
             + (f", {size_label(facts['page_size'])} pages" if "page_size" in facts else "")
             + f") · {facts['memory_mib']} MiB, {facts['cpus']} vCPUs · "
               f"movable={int(facts['movable'])}"]
    if "driver" in facts:
        driver = facts["driver"]
        lines.append(f"driver: insmod {driver['insmod']}: {driver['pages_loaded']} pages kept; "
                     f"fill: {driver['pages_after_fill'] - driver['pages_loaded']} more")
    if "allocation_succeeded" in facts:
        order = facts["order"]
        result = "succeeded" if facts["allocation_succeeded"] else "FAILED"
        block = (f" ({size_label(facts['page_size'] << order)})" if "page_size" in facts else "")
        lines.append(f"one order-{order}{block} allocation, GFP_KERNEL | __GFP_COMP "
                     f"(reclaim and compaction allowed): {result} in "
                     f"{facts['seconds']['alloc']:.1f} s")
        lines += _report_lines(facts)
        lines += _counter_lines(facts)
    if facts.get("kernel_report"):
        report = facts["kernel_report"]
        lines.append(f"the kernel reported {report['kind']}: {report['headline']}")
        lines += ["  " + line for line in report["excerpt"].splitlines()[:40]]
    verdict = "as expected" if outcome.expected else "NOT as expected"
    lines += [f"{verdict}: {reason}" for reason in outcome.reasons]
    return "\n".join(lines)


def _report_lines(facts: dict[str, Any]) -> list[str]:
    reports = facts["failure_reports"]
    if not reports:
        return ["the allocator printed no allocation failure report"]
    lines = []
    for report in reports:
        excerpt = report["excerpt"].splitlines()
        shown = [excerpt[0], *(line for line in excerpt if _BUDDY_DUMP.search(line))]
        lines.append(f"the allocator's report ({len(excerpt)} lines in console.log and "
                     f"{RESULT_FILE}{'' if report['complete'] else ', cut short'}):")
        lines += ["  " + line for line in shown]
    return lines


def _index_line(name: str, indices: dict[str, Any], order: int) -> str:
    before, after = (indices[when][name] if indices[when] else None
                     for when in ("before", "after"))
    if before is None or after is None:
        return f"{name}: not available (needs CONFIG_DEBUG_FS and CONFIG_COMPACTION)"
    zones = [f"{zone.split('/')[-1]} {before[zone][order]:.3f} → {after[zone][order]:.3f}"
             for zone in before if zone in after]
    return f"{name} at order {order}: " + ", ".join(zones)


def _counter_lines(facts: dict[str, Any]) -> list[str]:
    order = facts["order"]
    free = facts["free_blocks_at_least_order"]
    lines = [f"free blocks ≥ order {order}: {free['before']} → {free['after']}"]
    vmstat = facts["vmstat_delta"]
    lines.append("Δ " + ", ".join(f"{name} {vmstat[name]:+d}" for name in _COUNTERS
                                  if name in vmstat)
                 + ", driver migratepage " + f"{facts['driver_counters'].get('migrated', 0):+d}")
    lines += [_index_line(name, facts["indices"], order)
              for name in ("unusable_index", "extfrag_index")]
    blocks = facts["pageblocks_by_type"]
    lines.append("pageblocks by migrate type: " + ", ".join(
        f"{mtype} {count}" + (f" → {blocks['after'][mtype]}"
                              if blocks["after"].get(mtype) != count else "")
        for mtype, count in blocks["before"].items() if count or blocks["after"].get(mtype)))
    return lines


def guide(facts: dict[str, Any]) -> str:
    """The commands worth trying in the guest's shell, with the repro's own numbers."""
    order = facts.get("order", 9)
    driver = facts.get("driver", {})
    insmod = driver.get("insmod", "pages=N movable=1 fragment=8 seed=1")
    other = re.sub(r"movable=(\d)", lambda m: f"movable={1 - int(m[1])}", insmod)
    return "\n".join([
        "",
        f"The guest's shell follows, with the driver loaded ({DEBUGFS}). Try:",
        f"  echo {order} > {DEBUGFS}/alloc_order; cat {DEBUGFS}/alloc_order",
        "      the same allocation again; its report: dmesg | tail -80 (the allocator prints",
        "      at most one report per 10 s on 5.10 and 7.2, ten per 5 s on 4.8)",
        f"  echo {order} 64 > {DEBUGFS}/try_alloc; cat {DEBUGFS}/try_alloc",
        f"      how many order-{order} blocks are free now, without reclaim or compaction",
        "  echo 1 > /proc/sys/vm/compact_memory      compact every zone now",
        f"  echo 8 > {DEBUGFS}/fill      fragment again what compaction freed",
        f"  cat {UNUSABLE_INDEX} {EXTFRAG_INDEX}",
        "  cat /proc/buddyinfo /proc/pagetypeinfo",
        f"  cat {DEBUGFS}/stats",
        f"  rmmod movable_sample; insmod {REMOTE_MODULE_PATH} {other}",
        "      the other side of the A/B",
        "",
    ])


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``repro`` subcommand."""
    parser = subparsers.add_parser(
        "repro", help="reproduce a high-order allocation failure by hand",
        description="Build what is missing, boot, fragment memory with the sample driver's "
                    "pages and make one order-N allocation as a driver does (GFP_KERNEL). "
                    "With --movable 0 the kernel prints its own 'page allocation failure' "
                    "report; with --movable 1 compaction moves the driver's pages and the "
                    "allocation succeeds. Then the guest's shell, or with --batch an exit "
                    "status (0 as expected, 1 not, 2 harness error) and repro.json.")
    parser.add_argument("--arch", required=True, choices=sorted(ARCHES))
    parser.add_argument("--kernel", required=True, metavar="SPEC",
                        help="kernel spec, built if missing (see `harness build --help`)")
    parser.add_argument("--movable", type=int, choices=(0, 1), default=0,
                        help="0: the driver's pages cannot move (the failure, default); "
                             "1: they can (compaction makes room)")
    parser.add_argument("--order", type=int, metavar="N",
                        help="order of the allocation, above 3 (default: a pageblock, the "
                             "unit the driver's pages pin: 10 on these kernels' 4 KiB pages)")
    parser.add_argument("--config", action="append", default=[], metavar="FRAGMENT",
                        help="extra kernel config fragment (repeatable)")
    parser.add_argument("--memory", type=int, default=MEMORY_MIB, metavar="MIB",
                        help=f"guest RAM in MiB (default {MEMORY_MIB})")
    parser.add_argument("--cpus", type=int, default=CPUS, metavar="N",
                        help=f"vCPUs (default: {CPUS})")
    parser.add_argument("--batch", action="store_true",
                        help="no shell: exit with the status and write repro.json")
    parser.set_defaults(func=command)
