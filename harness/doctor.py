"""``harness doctor``: can this host run the harness, and if not, what to type.

Each check yields a line with a status and, when something is missing, the
exact command that fixes it. The exit status is 0 only when every required
check passes, so scripts can gate on it.
"""

import argparse
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.hostdeps import HOST_DEPS, HOST_FILES, missing
from harness.paths import cache_root

# A minimal kernel build tree plus one unpacked source is about 3 GiB; keep
# room for two kernels of two arches and their sources.
MIN_FREE_DISK_GIB = 15


@dataclass(frozen=True)
class Finding:
    """The outcome of one doctor check."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def check_host_programs() -> Iterator[Finding]:
    """One finding per program or header the stages call."""
    absent = {dep.program for dep in missing()}
    for dep in HOST_DEPS + HOST_FILES:
        ok = dep.program not in absent
        yield Finding(
            name=dep.program,
            ok=ok,
            detail=dep.purpose if ok else f"missing (needed for {dep.purpose})",
            fix="" if ok else f"apt-get install {dep.package}",
        )


def check_free_disk() -> Finding:
    """Kernel builds need several GiB under the cache directory."""
    root = cache_root()
    probe = root
    while not probe.exists():
        probe = probe.parent
    free_gib = shutil.disk_usage(probe).free / 2**30
    return Finding(
        name="free disk",
        ok=free_gib >= MIN_FREE_DISK_GIB,
        detail=f"{free_gib:.0f} GiB free under {root} (want {MIN_FREE_DISK_GIB})",
        fix="" if free_gib >= MIN_FREE_DISK_GIB else "free space or set HARNESS_CACHE_DIR",
    )


def check_kvm() -> Finding:
    """Whether KVM could be tried; whether it works is learnt by a test boot.

    /dev/kvm can exist and still not boot a kernel (nested paravirtual KVM),
    so the VM stage tries a real boot once per host boot and falls back to
    TCG with a notice. Not required: TCG works everywhere.
    """
    from harness.arch import ARCHES
    from harness.vm.accel import known_kvm_result
    from harness.vm.machine import get_machine

    present = os.access("/dev/kvm", os.R_OK | os.W_OK)
    if not present:
        return Finding(name="kvm", ok=False, required=False,
                       detail="no usable /dev/kvm: guests run under TCG (slower)")
    known = None
    for machine in (get_machine(name) for name in ARCHES):
        if machine.kvm_possible():
            known = known or known_kvm_result(machine)
    if known is None:
        detail = "/dev/kvm usable by this user; a test boot at the first VM decides KVM or TCG"
    elif known[0]:
        detail = f"KVM works: {known[1]}"
    else:
        detail = f"/dev/kvm exists but {known[1]}: guests run under TCG (slower)"
    return Finding(name="kvm", ok=known is None or known[0], detail=detail, required=False)


def check_kernel_source(spec: str) -> Finding:
    """Whether the kernel source a user asks for can be obtained (and fetch it once)."""
    from harness.kernel.source import obtain_source
    from harness.kernel.spec import parse_spec

    try:
        source = obtain_source(parse_spec(spec))
    except HarnessError as error:
        return Finding(name=f"kernel {spec}", ok=False, detail=str(error))
    origin = f" ({source.origin})" if source.origin else ""
    return Finding(name=f"kernel {spec}", ok=True, detail=f"source at {source.path}{origin}")


def check_debian_kernels() -> Finding:
    """Which kernel lines debian:X.Y can name today, read from the mirror's signed indices.

    Not required: the harness runs local trees, git refs and tarballs without it.
    """
    from harness.kernel.debian import survey

    try:
        found = survey()
    except HarnessError as error:
        return Finding(name="debian kernels", ok=False, required=False, detail=str(error))
    return Finding(name="debian kernels", ok=bool(found.offers), required=False,
                   detail=f"linux-source {found.kernels() or 'none'}")


def run_checks(kernels: list[str] | None = None) -> list[Finding]:
    """Every check, in the order they are printed."""
    return [*check_host_programs(), check_free_disk(), check_kvm(), check_debian_kernels(),
            *(check_kernel_source(spec) for spec in kernels or ())]


def print_findings(findings: list[Finding]) -> None:
    """A table a person can act on: status, name, detail, fix."""
    for finding in findings:
        status = "ok  " if finding.ok else ("FAIL" if finding.required else "warn")
        line = f"[{status}] {finding.name}: {finding.detail}"
        if finding.fix:
            line += f"  ->  {finding.fix}"
        print(line)


def command(args: argparse.Namespace) -> int:
    """Run every check; exit 1 when a required one failed."""
    findings = run_checks(args.kernel)
    print_findings(findings)
    failed = [f for f in findings if f.required and not f.ok]
    if failed:
        packages = sorted({f.fix.split()[-1] for f in failed if f.fix.startswith("apt-get")})
        if packages:
            print(f"fix all: apt-get install {' '.join(packages)}")
        return 1
    print("harness can run on this host")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``doctor`` subcommand."""
    parser = subparsers.add_parser("doctor", help="check this host and say how to fix it")
    parser.add_argument("--kernel", action="append", default=[], metavar="SPEC",
                        help="also check that this kernel source can be obtained (repeatable)")
    parser.set_defaults(func=command)
