"""``harness boot``: boot a kernel for manual reproduction, interactively or for one command."""

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from harness.arch import ARCHES
from harness.defaults import CPUS, MEMORY_MIB
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.vm.boot import VmGuest


def _kernel(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The KernelBuild for --kernel (built when missing), or the bare --image path."""
    if args.image is not None:
        return Path(args.image)
    from harness.kernel.build import build_kernel  # heavy: only when the command runs

    return build_kernel(args.kernel, args.arch, args.config)


def command(args: argparse.Namespace) -> int:
    """Boot, then attach a terminal or run the command after ``--``."""
    from harness.vm.boot import boot_guest

    words = args.command[1:] if args.command[:1] == ["--"] else args.command
    if (args.kernel is None) == (args.image is None):
        raise HarnessError("give exactly one of --kernel SPEC or --image PATH")
    transport = "ssh" if args.ssh else "console"
    modules = [Path(module) for module in args.module]
    with boot_guest(_kernel(args), arch=args.arch, transport=transport, modules=modules,
                    memory_mib=args.memory, cpus=args.cpus, accelerator=args.accel) as guest:
        vm = guest.vm
        print(f"harness: {args.arch} guest up in {guest.ready_seconds:.2f} s ({vm.accelerator}); "
              f"run directory {vm.run_dir}", file=sys.stderr)
        if words:
            result = guest.run(shlex.join(words) if len(words) > 1 else words[0],
                               timeout=args.timeout)
            sys.stdout.write(result.stdout)
            sys.stdout.flush()
            return result.exit_status
        interactive_shell(guest)
    return 0


def interactive_shell(guest: "VmGuest") -> None:
    """Give the terminal the guest's shell until Ctrl-], then check the kernel log
    (``harness boot`` and ``harness repro`` leave the user there)."""
    from harness.guest.terminal import attach

    print(f"harness: kernel messages go to {guest.vm.console_log}; Ctrl-] leaves "
          "(the VM is then shut down)", file=sys.stderr)
    if guest.transport == "ssh":
        from harness.guest.ssh import SshGuest

        assert isinstance(guest.guest, SshGuest)
        attach(guest.guest.open_shell())
    else:
        guest.guest.close()  # the interactive shell needs the raw console, not the loop
        from harness.guest.console import PipeStream

        console = PipeStream(guest.vm.command_pipe)
        try:
            console.sendall(b"stty sane; exec sh -i\n")
            attach(console)
        finally:
            console.close()
    guest.watch.check()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``boot`` subcommand."""
    parser = subparsers.add_parser(
        "boot", help="boot a kernel in QEMU: a shell, or one command with -- CMD",
        description="Build what is missing, boot it in QEMU and attach an interactive console "
                    "(or SSH with --ssh). With `-- CMD` run one command and exit with its "
                    "status. Kernel messages are kept in the run directory's console.log.",
    )
    parser.add_argument("--arch", required=True, choices=sorted(ARCHES))
    parser.add_argument("--kernel", metavar="SPEC",
                        help="kernel spec, built if missing (see `harness build --help`)")
    parser.add_argument("--image", metavar="PATH",
                        help="boot this already built kernel image instead of --kernel")
    parser.add_argument("--config", action="append", default=[], metavar="FRAGMENT",
                        help="extra config fragment for --kernel (repeatable)")
    parser.add_argument("--module", action="append", default=[], metavar="KO",
                        help="kernel module to put in the image and load at boot (repeatable)")
    parser.add_argument("--ssh", action="store_true", help="use SSH instead of the console")
    parser.add_argument("--memory", type=int, default=MEMORY_MIB, metavar="MIB",
                        help=f"guest RAM in MiB (default {MEMORY_MIB})")
    parser.add_argument("--cpus", type=int, default=CPUS, metavar="N",
                        help=f"vCPUs (default: {CPUS})")
    parser.add_argument("--accel", choices=("kvm", "tcg"),
                        help="force an accelerator (default: KVM when it really works)")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                        help="limit for the command after -- (default 600)")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD",
                        help="run CMD in the guest and exit with its status")
    parser.set_defaults(func=command)
