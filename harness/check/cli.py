"""``harness run``: the main job. Build, boot, load the driver, compact, prove.

With no arguments it runs both arches on the default kernel (the one closest
to 4.8 that a fresh Debian machine can obtain), prints one table per
arch x kernel, writes the JSON result and the picture into the run directory,
and exits 1 when migration was not proven anywhere it was asked for.

``--scenario`` picks what is checked: ``sample`` (the sample driver's A/B, the
default), ``zram``, ``balloon`` (the kernel's own users of the API), repeatable,
or ``all``. Every cell's kernel gets all in-tree scenarios' config fragments
(zram, balloon) before the user's ``--config`` ones, whatever is asked for: one
kernel per cell serves every scenario, it is the kernel the pytest plugin
builds for that cell (so either warms the other's cache), and from 6.17 on the
sample driver itself needs the balloon core. A user fragment can still turn an
option off (the scenario then refuses with the option's name before booting).

``--driver-source DIR`` checks a fork of the sample driver (same debugfs
interface) instead of the shipped one: a driver author's own, or one of the
test suite's deliberately broken variants, which must exit 1.
"""

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from harness.arch import ARCHES, get_arch
from harness.check.sample import ScenarioSettings
from harness.check.target import TargetOptions, validate_target
from harness.defaults import CPUS, MEMORY_MIB, TARGET, TRANSPORT, TRANSPORTS
from harness.errors import HarnessError

DEFAULT_KERNEL = "debian:5.10"  # 5.10 has the same driver API as 4.8 and is on the mirror
FALLBACK_KERNEL = "debian:6.1"
# Spelled out here so --help works without importing the scenarios (and QMP);
# tests/unit/test_zram_balloon_shared.py checks it against harness.check.runner.SCENARIOS.
SCENARIO_CHOICES = ("sample", "zram", "balloon", "all")


def default_kernel() -> str:
    """debian:5.10 when its source can be obtained, else 6.1, saying so."""
    from harness.kernel.source import obtain_source
    from harness.kernel.spec import parse_spec

    try:
        obtain_source(parse_spec(DEFAULT_KERNEL))
    except HarnessError as error:
        print(f"harness: notice: cannot obtain {DEFAULT_KERNEL} ({error}); "
              f"using {FALLBACK_KERNEL}", file=sys.stderr)
        return FALLBACK_KERNEL
    return DEFAULT_KERNEL


def command(args: argparse.Namespace) -> int:
    """Run the A/B for every arch x kernel asked for; exit 1 unless all proven."""
    # Heavy imports (matplotlib, paramiko) only when the command runs.
    from harness.check.runner import (
        SAMPLE,
        cell_fragments,
        check_ab,
        check_in_tree,
        prepare,
    )
    from harness.kernel.build import build_kernel
    from harness.module import check_source_dir
    from harness.paths import new_run_dir
    from harness.report.chart import write_chart
    from harness.report.in_tree import InTreeResult, in_tree_to_dict
    from harness.report.json_report import result_to_dict, write_json
    from harness.report.model import RunResult
    from harness.report.table import print_tables

    arches = [get_arch(name).name for name in (args.arch or list(ARCHES))]
    driver_source = check_source_dir(args.driver_source) if args.driver_source else None
    target = TargetOptions(target=validate_target(args.target), transport=args.transport,
                           memory_mib=args.memory, cpus=args.cpus,
                           ssh_key=Path(args.ssh_key) if args.ssh_key else None)
    scenarios = selected_scenarios(args.scenario)
    fragments = cell_fragments(args.config)
    kernels = args.kernel or [default_kernel()]
    settings = ScenarioSettings(fragment=args.fragment)
    run_dir = new_run_dir("run")
    results: list[RunResult] = []
    in_tree: list[InTreeResult] = []
    for kernel_spec in kernels:
        for arch in arches:
            cell_dir = run_dir / f"{arch}-{_slug(kernel_spec)}"
            if SAMPLE in scenarios:
                prepared = prepare(arch, kernel_spec, fragments, args.force, driver_source)
                kernel = prepared.kernel
                result = check_ab(prepared, target, settings, run_dir=cell_dir)
                if driver_source:  # the result must not pass for the shipped driver's
                    result = replace(result, notes=(*result.notes,
                                                    f"sample driver built from {driver_source}"))
                results.append(result)
            else:
                kernel = build_kernel(kernel_spec, arch, fragments, force=args.force)
            for name in scenarios:
                if name != SAMPLE:
                    in_tree.append(check_in_tree(kernel, name, target,
                                                 run_dir=cell_dir.with_name(
                                                     f"{cell_dir.name}-{name}")))
    json_path = write_json(results, run_dir / "result.json", in_tree=in_tree)
    chart_path = write_chart(results, run_dir / "buddyinfo.png", in_tree=in_tree)
    if args.json:
        print(json.dumps([result_to_dict(result) for result in results]
                         + [in_tree_to_dict(result) for result in in_tree], indent=2))
    else:
        print_tables(results, in_tree=in_tree)
        print(f"result: {json_path}\npicture: {chart_path}")
    proven = all(result.proven for result in results) and all(r.proven for r in in_tree)
    return 0 if proven else 1


def selected_scenarios(chosen: list[str] | None) -> tuple[str, ...]:
    """The --scenario values in order, each once; ``all`` means every scenario."""
    from harness.check.runner import SAMPLE, SCENARIOS

    names = chosen or [SAMPLE]
    if "all" in names:
        return SCENARIOS
    return tuple(dict.fromkeys(names))


def _slug(spec: str) -> str:
    """A file-name-safe form of a kernel spec for per-VM run directories."""
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in spec).strip("_")[-60:]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` subcommand."""
    parser = subparsers.add_parser(
        "run", help="the main job: build, boot, load the driver, compact, print the verdict")
    parser.add_argument("--arch", action="append", choices=list(ARCHES),
                        help="guest architecture (repeatable; default: all)")
    parser.add_argument("--kernel", action="append", metavar="SPEC",
                        help=f"kernel spec (repeatable; default: {DEFAULT_KERNEL}, "
                             f"else {FALLBACK_KERNEL})")
    parser.add_argument("--scenario", action="append", choices=SCENARIO_CHOICES,
                        help="what to check: sample (the sample driver's A/B, default), "
                             "zram, balloon, or all (repeatable)")
    parser.add_argument("--config", action="append", default=[], metavar="FRAGMENT",
                        help="extra kernel config fragment (name in kernel-configs/ or path)")
    parser.add_argument("--target", default=TARGET,
                        help=f"{TARGET} (default) or ssh://user@host[:port] for a running board")
    parser.add_argument("--transport", choices=TRANSPORTS, default=TRANSPORT,
                        help=f"how to talk to a QEMU guest (default: {TRANSPORT})")
    parser.add_argument("--ssh-key", metavar="FILE", help="private key for an ssh:// target")
    parser.add_argument("--memory", type=int, default=MEMORY_MIB, metavar="MIB",
                        help=f"guest memory (default: {MEMORY_MIB})")
    parser.add_argument("--cpus", type=int, default=CPUS, metavar="N",
                        help=f"vCPUs of a QEMU guest (default: {CPUS})")
    parser.add_argument("--fragment", type=int, default=ScenarioSettings.fragment,
                        metavar="K", help="driver keeps 1 page in K (default: 8)")
    parser.add_argument("--driver-source", type=Path, metavar="DIR",
                        help="a fork of the sample driver to check, with the same debugfs "
                             "interface (default: the shipped guest-modules/)")
    parser.add_argument("--force", action="store_true", help="rebuild kernel and module")
    parser.add_argument("--json", action="store_true", help="print the result objects as JSON")
    parser.set_defaults(func=command)
