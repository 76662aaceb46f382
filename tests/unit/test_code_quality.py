"""The code stays as clean as it was landed: ruff's rules and mypy's types.

Both tools come with the dev extra the set-up installs; they run on the whole
checkout (ruff) and the package (mypy, configured in pyproject.toml).
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: the linters read its config


def test_ruff_finds_nothing() -> None:
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_finds_nothing_in_the_package() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_finds_nothing_in_the_benchmarks() -> None:
    """bench/ is not part of the package but imports it and its own siblings (run as
    ``python bench/NAME.py``): an import a refactor broke shows here, not after an
    hour of benchmarking."""
    bench = ROOT / "bench"
    done = subprocess.run([sys.executable, "-m", "mypy", "--explicit-package-bases",
                           *sorted(str(path) for path in bench.glob("*.py"))], cwd=ROOT,
                          capture_output=True, text=True,
                          env={**os.environ, "MYPYPATH": str(bench)})
    assert done.returncode == 0, done.stdout + done.stderr
