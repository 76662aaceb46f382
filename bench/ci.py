"""Benchmark `.ci/run` as CI runs it: a fresh clone, CI=true, no standard input.

CI's limit is 90 minutes for one whole run, and a cold run (nothing cached)
is what a new CI machine pays, so both are measured on the committed HEAD:

- ``--cold``: the harness cache (HARNESS_CACHE_DIR) and ccache's (CCACHE_DIR)
  point at empty private directories, so every kernel, module, image and
  Debian package is fetched and built again. Host packages are whatever the
  machine has: the result says which of the harness's were missing, because
  `./dev test` installs them inside the measured time.
- ``--warm``: the user's own caches, as a second CI run on the same machine
  finds them.

    python bench/ci.py --cold [--keep-cache DIR] [-- PYTEST ARGS]
    python bench/ci.py --warm [-- PYTEST ARGS]

Each entry records the wall time, the exit status, pytest's counts from the
JUnit file and the load before and after. Results go to bench/results/ci.json;
the entry of the other kind is kept.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from common import load, machine_info, now, write

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "ci.json"
LIMIT_SECONDS = 5400  # CI's limit for one run of .ci/run


def missing_host_packages() -> list[str]:
    """The harness's and the tests' Debian packages not installed now."""
    wanted = subprocess.run([sys.executable, str(REPO / "harness" / "hostdeps.py"), "--all",
                             "--test"], capture_output=True, text=True, check=True).stdout.split()
    return [name for name in wanted
            if "ok installed" not in subprocess.run(
                ["dpkg-query", "-W", "-f=${Status}", name], capture_output=True,
                text=True).stdout]


def junit_counts(path: Path) -> dict[str, int]:
    """tests, failures, errors and skipped summed over the JUnit file's suites."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    keys = ("tests", "failures", "errors", "skipped")
    return {key: sum(int(suite.get(key, 0)) for suite in suites) for key in keys}


def _default_signals() -> None:
    """In the child before exec: SIGINT and SIGQUIT back to their defaults."""
    for signum in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)


def run_ci(clone: Path, env: dict[str, str], pytest_args: list[str]) -> dict[str, object]:
    """One `bash .ci/run` in ``clone``; its log stays in the clone's runs/."""
    (clone / "runs").mkdir(exist_ok=True)
    log = clone / "runs" / "ci.log"
    load_before = load()
    started = time.monotonic()
    with log.open("w") as out:
        # CI starts .ci/run with default signal dispositions; a bench started in the
        # background (`cmd &`) ignores SIGINT and SIGQUIT, which exec would pass on.
        status = subprocess.run(["bash", ".ci/run", *pytest_args], cwd=clone, env=env,
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=_default_signals).returncode
    seconds = time.monotonic() - started
    junit = clone / "runs" / "junit.xml"
    return {
        "seconds": round(seconds, 1),
        "minutes": round(seconds / 60, 1),
        "share_of_ci_limit": round(seconds / LIMIT_SECONDS, 3),
        "exit_status": status,
        "pytest": junit_counts(junit) if junit.exists() else None,
        "load_before": load_before,
        "load_after": load(),
        "log": str(log),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--cold", action="store_true", help="empty harness cache and ccache")
    kind.add_argument("--warm", action="store_true", help="the user's caches as they are")
    parser.add_argument("--keep-cache", metavar="DIR", type=Path,
                        help="with --cold: put the private caches here and keep them")
    parser.add_argument("pytest_args", nargs="*", help="passed to .ci/run (after --)")
    args = parser.parse_args()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="harness-ci-bench-") as scratch:
        clone = Path(scratch) / "clone"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        env = {**os.environ, "CI": "true"}
        missing = missing_host_packages()
        if args.cold:
            caches = args.keep_cache or Path(scratch)
            env["HARNESS_CACHE_DIR"] = str(caches / "harness-cache")
            env["CCACHE_DIR"] = str(caches / "ccache")
        entry = {"measured_at": now(), "commit": head,
                 "host_packages_missing_at_start": missing,
                 **run_ci(clone, env, args.pytest_args)}
        log_copy = REPO / "runs" / f"ci-{'cold' if args.cold else 'warm'}.log"
        log_copy.parent.mkdir(exist_ok=True)
        log_copy.write_bytes((clone / "runs" / "ci.log").read_bytes())
        entry["log"] = str(log_copy)
    runs: dict[str, object] = (json.loads(RESULTS.read_text()).get("runs", {})
                               if RESULTS.exists() else {})
    runs["cold" if args.cold else "warm"] = entry
    write(RESULTS, {"date": now(), "machine": machine_info(),
                    "method": "bash .ci/run in a fresh clone of HEAD with CI=true and no "
                              "stdin; cold: empty private HARNESS_CACHE_DIR and CCACHE_DIR",
                    "runs": runs})
    print(f"{'cold' if args.cold else 'warm'} .ci/run: {entry['minutes']} min, "
          f"exit {entry['exit_status']}, pytest {entry['pytest']}")
    return 0 if entry["exit_status"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
