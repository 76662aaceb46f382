"""Benchmark neighbouring commits: a one-file change in mm/ against a cold build of the tree.

On the repository of tests/integration/kernel_repo.py (the debian:5.10 tree
committed, then one-file commits in mm/), in one run and with ccache off
throughout, so every figure is kbuild's own work:

1. cold: ``harness build --force`` of the base commit (the in-place build
   directory starts empty);
2. incremental: ``harness build`` of the next commit (a comment added to
   mm/compaction.c) on top of it;
3. verdict: ``harness run`` of the commit after that (one more file in mm/):
   incremental build, the sample driver built against it, boot, check.

The kernels get the same fragments ``harness run`` gives every cell, so the
in-place build directory is the one ``harness run`` and ``harness bisect`` use.

    python bench/incremental_build.py [--arch x86_64]

Results go to bench/results/incremental-build.json with the machine and the load.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import load, machine_info, now, write

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.check.runner import cell_fragments  # noqa: E402
from harness.paths import cache_root  # noqa: E402
from tests.integration.kernel_repo import EDITS, make_kernel_repo  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "incremental-build.json"
HARNESS = [sys.executable, "-m", "harness.cli"]
ENV = {**os.environ, "CCACHE_DISABLE": "1"}


def timed(*args: str) -> tuple[float, str]:
    """Run a harness command in a new process; (wall seconds, its stdout)."""
    started = time.monotonic()
    done = subprocess.run([*HARNESS, *args], capture_output=True, text=True, env=ENV)
    wall = round(time.monotonic() - started, 1)
    if done.returncode != 0:
        sys.exit(f"harness {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return wall, done.stdout


def build(spec: str, arch: str, *extra: str) -> dict[str, object]:
    """``harness build --json`` of ``spec``: wall time, make's own time, the load around it."""
    before = load()
    configs = [arg for name in cell_fragments() for arg in ("--config", name)]
    wall, out = timed("build", "--arch", arch, "--kernel", spec, *configs, "--json", *extra)
    result = json.loads(out)
    meta = json.loads((Path(result["build_dir"]).parent / "build.json").read_text())
    return {"spec": spec, "seconds": wall, "build_seconds": meta["build_seconds"],
            "cached": result["cached"], "load_before": before, "load_after": load()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="x86_64")
    args = parser.parse_args()
    repo = make_kernel_repo(cache_root() / "test-repos" / "bisect-5.10")
    first, second = (repo.commits[edit.subject] for edit in EDITS[:2])
    results: dict[str, object] = {"date": now(), "machine": machine_info(),
                                  "repository": "tests/integration/kernel_repo.py",
                                  "arch": args.arch, "ccache": False}
    results["cold"] = build(f"git:{repo.path}@{repo.base}", args.arch, "--force")
    write(RESULTS, results)
    results["incremental"] = {**build(f"git:{repo.path}@{first}", args.arch),
                              "change": EDITS[0].path}
    write(RESULTS, results)
    before = load()
    wall, out = timed("run", "--arch", args.arch, "--kernel", f"git:{repo.path}@{second}",
                      "--json")
    results["verdict"] = {"spec": f"git:{repo.path}@{second}", "change": EDITS[1].path,
                          "seconds": wall, "verdict": json.loads(out)[0]["verdict"],
                          "load_before": before, "load_after": load()}
    write(RESULTS, results)
    print(json.dumps({key: results[key] for key in ("cold", "incremental", "verdict")},
                     indent=2))


if __name__ == "__main__":
    main()
