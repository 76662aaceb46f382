"""What every benchmark records next to its numbers: the machine and its load.

The scripts in bench/ run as ``python bench/<name>.py``, so this module is
imported by its plain name from the scripts' directory.
"""

import json
import os
import platform
import resource
import subprocess
import time
from collections.abc import Collection
from pathlib import Path


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages: how busy the machine was."""
    return [round(value, 2) for value in os.getloadavg()]


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def machine_info() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu = next((line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                          text=True).stdout.splitlines()
    return {
        "hostname": platform.node(),
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory_kib / 2**20, 1),
        "host_kernel": platform.release(),
        "python": platform.python_version(),
        "qemu": qemu[0] if qemu else "unknown",
    }


def write(path: Path, results: dict[str, object]) -> None:
    """Rewrite the results after each measurement, so a long run keeps what it has."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def kept_entries(path: Path, section: str,
                 remeasured: Collection[tuple[str, str]]) -> list[dict[str, object]]:
    """``section``'s entries in the results file that this run does not measure again.

    Entries are keyed by (kernel, arch) and carry their own ``measured_at``, so
    a results file can be filled a few kernels at a time without losing the rest.
    """
    if not path.exists():
        return []
    entries: list[dict[str, object]] = json.loads(path.read_text()).get(section, [])
    return [entry for entry in entries if (entry["kernel"], entry["arch"]) not in remeasured]


def children_cpu_seconds() -> float:
    """User + system CPU seconds of every child process that ended so far (with their
    own waited-for children: QEMU under a harness process): work done, which host
    load inflates far less than wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
