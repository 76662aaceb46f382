"""``harness run``: the main job. Build, boot, load the driver, compact, prove;
``harness report RUN_DIR``: the same verdicts and reports again from a run's saved evidence.

With no arguments it runs both arches on the default kernel (the one closest
to 4.8 that a fresh Debian machine can obtain), prints one table per
arch x kernel, writes the JSON result and the picture into the run directory,
and exits 1 when migration was not proven anywhere it was asked for.

``--scenario`` picks what is checked: ``sample`` (the sample driver's A/B, the
default), ``zram``, ``balloon`` (the kernel's own users of the API), ``stress``
(the sample driver's isolation contract on every vCPU at once), repeatable,
or ``all``. Every cell's kernel gets all in-tree scenarios' config fragments
(zram, balloon) before the user's ``--config`` ones, whatever is asked for: one
kernel per cell serves every scenario, it is the kernel the pytest plugin
builds for that cell (so either warms the other's cache), and from 6.17 on the
sample driver itself needs the balloon core. A user fragment can still turn an
option off (the scenario then refuses with the option's name before booting).

Each scenario's evidence is saved in the run directory (``evidence/``, one JSON
file per scenario and cell, numbered in run order) the moment it is collected;
``harness report`` judges those files again with the scenarios' own ``judge``
and writes result.json and the picture anew, so a run killed halfway still
has a report of what it finished.

``--driver-source DIR`` checks a fork of the sample driver (same debugfs
interface) instead of the shipped one: a driver author's own, or one of the
test suite's deliberately broken variants, which must exit 1.
"""

import argparse
import contextlib
import importlib
import json
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.arch import ARCHES, get_arch
from harness.check import runner
from harness.check.sample import SAMPLE, SampleAB, ScenarioSettings
from harness.check.stress import SCENARIO as STRESS
from harness.check.stress import StressScenario
from harness.check.target import TargetOptions, validate_target
from harness.defaults import CPUS, MEMORY_MIB, TARGET, TRANSPORT, TRANSPORTS
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.report.model import ScenarioResult

DEFAULT_KERNEL = "debian:5.10"  # 5.10 has the same driver API as 4.8 and is on the mirror
FALLBACK_KERNEL = "debian:6.1"
SCENARIO_CHOICES = (*runner.SCENARIOS, "all")
# The phase table is a flag: each cell's table already ends with one line of its
# top-level phases, and every phase is in result.json; a table of ~30 step times per
# cell would double what a user reads for a verdict.
TIMINGS_HELP = ("print a table of every timed phase (boot, each step of each round, "
                "teardown) under each result's table")


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
    """Run every scenario asked for on every arch x kernel; exit 1 unless all proven."""
    # Heavy imports (matplotlib, paramiko) only when the command runs.
    from harness.check.scenario import Scenario, evidence_folder, next_evidence_path
    from harness.kernel.build import build_kernel
    from harness.module import check_source_dir
    from harness.paths import new_run_dir

    _import_in_background("harness.report.chart")
    arches = [get_arch(name).name for name in (args.arch or list(ARCHES))]
    driver_source = check_source_dir(args.driver_source) if args.driver_source else None
    target = TargetOptions(target=validate_target(args.target), transport=args.transport,
                           memory_mib=args.memory, cpus=args.cpus,
                           ssh_key=Path(args.ssh_key) if args.ssh_key else None)
    names = selected_scenarios(args.scenario)
    fragments = runner.cell_fragments(args.config)
    kernels = args.kernel or [default_kernel()]
    run_dir = new_run_dir("run")
    results: list[ScenarioResult] = []
    try:
        for kernel_spec in kernels:
            for arch in arches:
                kernel = build_kernel(kernel_spec, arch, fragments, force=args.force)
                # Fresh scenarios per cell (the sample's module is this kernel's);
                # --fragment is the sample A/B's setting, --driver-source the driver
                # of the scenarios that run it (the A/B and the stress).
                scenarios: dict[str, Scenario] = {name: cls()
                                                  for name, cls in runner.SCENARIOS.items()}
                scenarios[SAMPLE] = SampleAB(ScenarioSettings(fragment=args.fragment),
                                              driver_source=driver_source)
                scenarios[STRESS] = StressScenario(driver_source=driver_source)
                for name in names:
                    cell = f"{arch}-{_slug(kernel_spec)}-{name}"
                    results.append(runner.check(
                        scenarios[name], kernel, target, run_dir=run_dir / cell,
                        evidence_path=next_evidence_path(run_dir, cell),
                        force=args.force))
    except (HarnessError, KeyboardInterrupt) as failure:
        if results:
            failure.add_note(f"the evidence of the {len(results)} scenario run(s) finished "
                             f"is in {evidence_folder(run_dir)}: `harness report {run_dir}` "
                             "judges and renders it")
        raise
    return render(results, run_dir, args.json, args.timings)


def _import_in_background(module: str) -> None:
    """Import ``module`` on a thread of its own while the run goes on.

    The picture's module brings matplotlib, ~0.8 s of imports a run needs only
    at its end; imported while the guest boots (the harness then mostly waits),
    it costs a single-cell run nothing. An import that fails here fails again,
    with its message, where the module is used.
    """
    def load() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module(module)

    threading.Thread(target=load, name=f"import {module}", daemon=True).start()


def render(results: Sequence["ScenarioResult"], run_dir: Path, as_json: bool,
           timings: bool = False) -> int:
    """Write result.json and buddyinfo.png into ``run_dir``, print the tables (with
    ``timings`` each result's phase table too) or the JSON objects; 0 when every
    result is proven, else 1."""
    from harness.report.chart import write_chart
    from harness.report.json_report import write_json
    from harness.report.table import print_tables

    json_path = write_json(results, run_dir / "result.json")
    chart_path = write_chart(results, run_dir / "buddyinfo.png")
    if as_json:
        print(json.dumps([result.to_dict() for result in results], indent=2))
    else:
        print_tables(results, timings=timings)
        print(f"result: {json_path}\npicture: {chart_path}")
    return 0 if all(result.proven for result in results) else 1


def report_command(args: argparse.Namespace) -> int:
    """Judge a run directory's saved evidence again and render it, with no machine."""
    from harness.check.scenario import EVIDENCE, evidence_folder, load_evidence, verdict

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise HarnessError(f"{run_dir} is not a directory")
    paths = sorted(evidence_folder(run_dir).glob("*.json"))
    if not paths:
        raise HarnessError(f"{run_dir} has no saved evidence ({EVIDENCE}/*.json): "
                           "not a harness run directory, or no scenario finished collecting")
    results = []
    for path in paths:
        evidence = load_evidence(path)
        try:
            results.append(verdict(runner.scenario_named(evidence.scenario), evidence))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise HarnessError(f"{path} has malformed {evidence.scenario} evidence: "
                               f"{error!r}") from None
    return render(results, run_dir, args.json, args.timings)


def selected_scenarios(chosen: list[str] | None) -> tuple[str, ...]:
    """The --scenario values in order, each once; ``all`` means every scenario."""
    names = chosen or [SAMPLE]
    if "all" in names:
        return tuple(runner.SCENARIOS)
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
                        help=f"{TARGET} (default), ssh://user@host[:port] for a running board, "
                             "or labgrid://PLACE for a board of a labgrid lab (coordinator from "
                             "LG_COORDINATOR, or labgrid://HOST:PORT/PLACE)")
    parser.add_argument("--transport", choices=TRANSPORTS, default=TRANSPORT,
                        help=f"how to talk to a QEMU guest (default: {TRANSPORT})")
    parser.add_argument("--ssh-key", metavar="FILE",
                        help="private key for an ssh:// or labgrid:// target")
    parser.add_argument("--memory", type=int, default=MEMORY_MIB, metavar="MIB",
                        help=f"guest memory (default: {MEMORY_MIB})")
    parser.add_argument("--cpus", type=int, default=CPUS, metavar="N",
                        help=f"vCPUs of a QEMU guest (default: {CPUS})")
    parser.add_argument("--fragment", type=int, default=ScenarioSettings.fragment,
                        metavar="K", help="driver keeps 1 page in K (default: 8)")
    parser.add_argument("--driver-source", type=Path, metavar="DIR",
                        help="a fork of the sample driver for the A/B and the stress to "
                             "check, with the same debugfs interface (default: the shipped "
                             "guest-modules/)")
    parser.add_argument("--force", action="store_true", help="rebuild kernel and module")
    parser.add_argument("--json", action="store_true", help="print the result objects as JSON")
    parser.add_argument("--timings", action="store_true", help=TIMINGS_HELP)
    parser.set_defaults(func=command)
    report = subparsers.add_parser(
        "report", help="judge a run directory's saved evidence again and redraw its "
                       "table, result.json and picture (no machine needed)")
    report.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of harness run")
    report.add_argument("--json", action="store_true", help="print the result objects as JSON")
    report.add_argument("--timings", action="store_true", help=TIMINGS_HELP)
    report.set_defaults(func=report_command)
