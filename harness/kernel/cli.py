"""``harness build``: build (or fetch from the cache) one kernel for one arch."""

import argparse
import json

from harness.arch import ARCHES
from harness.kernel.config import available_fragments
from harness.kernel.spec import FORMS


def command(args: argparse.Namespace) -> int:
    """Build and print where the results are (one JSON object with --json)."""
    from harness.kernel.build import build_kernel  # heavy: only when the command runs

    build = build_kernel(args.kernel, args.arch, args.config, force=args.force)
    if args.json:
        print(json.dumps({
            "kernel_image": str(build.image),
            "build_dir": str(build.build_dir),
            "config": str(build.config),
            "system_map": str(build.system_map),
            "release": build.release,
            "version": ".".join(map(str, build.version)),
            "arch": build.arch,
            "spec": build.spec,
            "origin": build.origin,
            "make_args": list(build.make_args),
            "module_fixups": list(build.module_fixups),
            "cached": build.cached,
            "seconds": build.seconds,
        }))
    else:
        state = "cached" if build.cached else "built"
        print(f"{state} {build.release} ({build.arch}) in {build.seconds:.1f} s")
        print(f"  image:     {build.image}")
        print(f"  build dir: {build.build_dir}  (make -C it M=... {' '.join(build.make_args)})")
        print(f"  config:    {build.config}")
        if build.origin:
            print(f"  source:    {build.origin}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``build`` subcommand."""
    parser = subparsers.add_parser(
        "build", help="build a kernel (x86_64 or arm64) with compaction, cached",
        description="Build a minimal kernel (tinyconfig + fragments) out of tree, or return "
                    "the cached build of the same inputs.",
    )
    parser.add_argument("--arch", required=True, choices=sorted(ARCHES))
    parser.add_argument("--kernel", required=True, metavar="SPEC", help=f"{FORMS}")
    extras = [name for name in available_fragments() if name not in ("base", "compaction", *ARCHES)]
    parser.add_argument(
        "--config", action="append", default=[], metavar="FRAGMENT",
        help=f"extra config fragment, repeatable: a file path or one of {', '.join(extras)} "
             "(base, compaction and the arch fragment are always merged)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=command)
