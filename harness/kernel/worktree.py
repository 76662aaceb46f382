"""One persistent checkout per git repository, so neighbouring commits build incrementally.

Unpacking every ``git:REPO@REF`` into its own tree and building it in its
own directory costs a cold build per commit: the paths differ, so neither
kbuild nor ccache can reuse anything. Instead each repository gets one
private clone (``git clone --shared``: the user's work tree, index, HEAD and
bisect state are never touched) at a fixed path, and ``git checkout`` moves
it from commit to commit. git rewrites only the files that differ, so their
mtimes move and kbuild, building in a fixed O= directory next to the clone
(harness.kernel.build), recompiles what they affect and nothing else.

A checkout can hold one commit at a time, so the first use in a process
takes the repository's lock and keeps it until the process exits: the build,
the module built against it and the check that boots it all see the commit
they asked for; another process using the same repository waits.
"""

import subprocess
from pathlib import Path
from typing import TextIO

from harness import cache
from harness.errors import HarnessError
from harness.kernel.toolchain import require

WORKTREES = "kernel-worktrees"
TREE = "linux"  # the checkout's directory inside a repository's worktree entry

# Locks this process holds, by worktree entry: kept open until exit on purpose.
_held: dict[Path, TextIO] = {}


def resolve_commit(repo: Path, ref: str, what: str) -> str:
    """The full hash ``ref`` names in ``repo``, or a HarnessError saying which part is wrong."""
    git = require("git")
    probe = subprocess.run([git, "-C", str(repo), "rev-parse", "--git-dir"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise HarnessError(f"{repo} is not a git repository (from {what})")
    resolved = subprocess.run(
        [git, "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        capture_output=True, text=True,
    )
    if resolved.returncode != 0:
        raise HarnessError(
            f"git ref {ref!r} not found in {repo}: give a branch, tag or commit that exists")
    return resolved.stdout.strip()


def entry_for(repo: Path) -> Path:
    """The worktree entry of ``repo``: its checkout and the O= build directories."""
    return cache.entry_path(WORKTREES, cache.cache_key({"repository": str(repo.resolve())}))


def check_out(repo: Path, commit: str) -> Path:
    """The repository's private checkout, moved to ``commit``; the lock is held from now on."""
    entry = entry_for(repo)
    _lock(entry, str(repo))
    tree = entry / TREE
    git = require("git")
    if not (tree / ".git").is_dir():
        _run([git, "clone", "--quiet", "--shared", "--no-checkout", str(repo.resolve()),
              str(tree)], f"cloning {repo}")
    # --shared reads the user's object store, so commits made there since the
    # clone are visible without a fetch. clean: nothing is ever built in here.
    _run([git, "-C", str(tree), "checkout", "--quiet", "--force", "--detach", commit],
         f"checking out {commit[:12]}")
    _run([git, "-C", str(tree), "clean", "-q", "-ffdx"], "cleaning the checkout")
    return tree


def _lock(entry: Path, label: str) -> None:
    """Take ``entry``'s lock for the rest of the process (once; a second call is a no-op)."""
    if entry in _held:
        return
    entry.mkdir(parents=True, exist_ok=True)
    lock = (entry.parent / f".{entry.name}.lock").open("a")
    cache.take_lock(lock, f"waiting for another process using the checkout of {label}")
    _held[entry] = lock


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise HarnessError(f"{what} failed: {done.stderr.strip()[:300]}")

