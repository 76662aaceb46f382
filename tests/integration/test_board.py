"""A board is any running machine with the kernel and an SSH server: `harness run
--target ssh://` proves migration there the same way it does in a QEMU guest.

The "board" here is a QEMU guest started separately, as a lab starts its
machines; the check runs in a new ``harness run`` process that only knows its
ssh:// address, its key and ``~/.ssh/known_hosts``, and in which the harness's
QEMU code (``harness.vm``, but for the ``harness boot`` command's argument
parser) cannot even be imported.
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.artifacts import KernelBuild
from harness.paths import cache_root
from harness.pytest_plugin import cell_fragments
from harness.vm.boot import boot_guest

# Runs the harness CLI with the modules under ``harness.vm`` unimportable
# (every CLI registers its subcommands, so the package and ``harness boot``'s
# parser are let through): the board path must not need, or start, QEMU.
WITHOUT_QEMU_CODE = """
import sys

class RefuseQemuCode:
    def find_spec(self, name, path=None, target=None):
        if name.startswith("harness.vm.") and name != "harness.vm.cli":
            raise ImportError(f"{name} imported on the ssh:// board path")
        return None

sys.meta_path.insert(0, RefuseQemuCode())
from harness.cli import main
sys.exit(main())
"""


@dataclass(frozen=True)
class Board:
    """What a user knows about a board: its address, a key, and a home with known_hosts."""

    url: str
    key: Path
    home: Path


@pytest.fixture(scope="module")
def board(kernel_build: KernelBuild, tmp_path_factory: pytest.TempPathFactory,
          runs_dir: Path) -> Iterator[Board]:
    """A QEMU guest of the cell's kernel with an SSH server, started apart from the check."""
    with boot_guest(kernel_build, transport="ssh") as machine:
        assert machine.keys is not None and machine.vm.ssh_port is not None
        home = tmp_path_factory.mktemp("home")
        (home / ".ssh").mkdir(mode=0o700)
        (home / ".ssh" / "known_hosts").write_text(
            f"[127.0.0.1]:{machine.vm.ssh_port} {machine.keys.host_public_key}\n")
        yield Board(f"ssh://root@127.0.0.1:{machine.vm.ssh_port}", machine.keys.client_key,
                    home)


def harness_on_board(board: Board, *args: str) -> subprocess.CompletedProcess[str]:
    """``harness ARGS`` in a new process as the board's user, QEMU code out of reach."""
    env = {**os.environ, "HOME": str(board.home), "HARNESS_CACHE_DIR": str(cache_root())}
    return subprocess.run([sys.executable, "-c", WITHOUT_QEMU_CODE, *args], env=env,
                          capture_output=True, text=True, timeout=900)


def test_harness_run_proves_migration_on_a_board(board: Board, kernel_build: KernelBuild,
                                                 pytestconfig: pytest.Config) -> None:
    """The A/B over ssh://: PROVEN, with the board's own evidence."""
    configs = [word for name in cell_fragments(pytestconfig) for word in ("--config", name)]
    done = harness_on_board(board, "run", "--target", board.url, "--ssh-key", str(board.key),
                            "--kernel", kernel_build.spec, "--arch", kernel_build.arch,
                            *configs, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = json.loads(done.stdout)
    print(f"board {board.url}: {result['reasons'][0]}; high-order allocations after "
          f"compaction {result['high_order_success']}")
    assert result["proven"] and result["release"] == kernel_build.release
    assert result["migrated_pages"] > 0 and result["verify_mismatches"] == 0
    assert result["sides"]["movable=0"]["migrated_pages"] == 0

