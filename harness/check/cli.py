"""``harness run``: the main job. Build, boot, load the driver, compact, prove.

With no arguments it runs both arches on the default kernel (the one closest
to 4.8 that a fresh Debian machine can obtain), prints one table per
arch x kernel, writes the JSON result and the picture into the run directory,
and exits 1 when migration was not proven anywhere it was asked for.
"""

import argparse
import json
import sys
from pathlib import Path

from harness.arch import ARCHES, get_arch
from harness.check.sample import ScenarioSettings
from harness.check.target import TargetOptions, validate_target
from harness.errors import HarnessError

DEFAULT_KERNEL = "debian:5.10"  # 5.10 has the same driver API as 4.8 and is on the mirror
FALLBACK_KERNEL = "debian:6.1"


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
    from harness.check.runner import check_ab, prepare
    from harness.report.chart import write_chart
    from harness.report.json_report import result_to_dict, write_json
    from harness.report.table import print_tables
    from harness.vm.qemu import new_run_dir

    arches = [get_arch(name).name for name in (args.arch or list(ARCHES))]
    target = TargetOptions(target=validate_target(args.target), transport=args.transport,
                           memory_mib=args.memory,
                           ssh_key=Path(args.ssh_key) if args.ssh_key else None)
    kernels = args.kernel or [default_kernel()]
    settings = ScenarioSettings(fragment=args.fragment)
    run_dir = new_run_dir("run")
    results = []
    for kernel_spec in kernels:
        for arch in arches:
            prepared = prepare(arch, kernel_spec, tuple(args.config), args.force)
            results.append(check_ab(prepared, target, settings,
                                    run_dir=run_dir / f"{arch}-{_slug(kernel_spec)}"))
    json_path = write_json(results, run_dir / "result.json")
    chart_path = write_chart(results, run_dir / "buddyinfo.png")
    if args.json:
        print(json.dumps([result_to_dict(result) for result in results], indent=2))
    else:
        print_tables(results)
        print(f"result: {json_path}\npicture: {chart_path}")
    return 0 if all(result.proven for result in results) else 1


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
    parser.add_argument("--config", action="append", default=[], metavar="FRAGMENT",
                        help="extra kernel config fragment (name in kernel-configs/ or path)")
    parser.add_argument("--target", default="qemu",
                        help="qemu (default) or ssh://user@host[:port] for a running board")
    parser.add_argument("--transport", choices=("console", "ssh"), default="console",
                        help="how to talk to a QEMU guest (default: console)")
    parser.add_argument("--ssh-key", metavar="FILE", help="private key for an ssh:// target")
    parser.add_argument("--memory", type=int, default=256, metavar="MIB",
                        help="guest memory (default: 256)")
    parser.add_argument("--fragment", type=int, default=ScenarioSettings.fragment,
                        metavar="K", help="driver keeps 1 page in K (default: 8)")
    parser.add_argument("--force", action="store_true", help="rebuild kernel and module")
    parser.add_argument("--json", action="store_true", help="print the result objects as JSON")
    parser.set_defaults(func=command)
