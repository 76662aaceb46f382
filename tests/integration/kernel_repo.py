"""A kernel git repository with a known regression, for bisect tests and the build bench.

The base commit is the debian:5.10 tree the harness already caches
(harness.kernel.source); on top come small commits of our own in mm/: one
does not build (fixed by the next), one makes isolate_movable_page() refuse
every page, so no non-LRU movable page can migrate from there on. Author,
committer and dates are fixed, so the same tree gives the same hashes, and a
repository already made at the same place is reused as it is.
"""

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.kernel.source import obtain_source
from harness.kernel.spec import parse_spec

BASE_SPEC = "debian:5.10"
_ENV = {"GIT_AUTHOR_NAME": "harness", "GIT_AUTHOR_EMAIL": "harness@example.org",
        "GIT_COMMITTER_NAME": "harness", "GIT_COMMITTER_EMAIL": "harness@example.org",
        "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
        "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}
BREAKING = "mm/migrate: isolate_movable_page() refuses every page"
UNBUILDABLE = "mm/compaction: a stray brace (does not build)"


@dataclass(frozen=True)
class Edit:
    """One commit: replace the first ``old`` in ``path`` by ``new``."""

    subject: str
    path: str
    old: str
    new: str


def _comment(subject: str, path: str, anchor: str) -> Edit:
    """A commit that adds a comment line after ``anchor``: one file recompiles, nothing changes."""
    return Edit(subject, path, anchor, f"{anchor}\n/* {subject} */")


EDITS = (
    _comment("mm/compaction: note on the free scanner", "mm/compaction.c",
             "#include <linux/page_owner.h>"),
    _comment("mm/page_alloc: note on pcp lists", "mm/page_alloc.c", "#include <linux/swap.h>"),
    _comment("mm/migrate: note on movable pages", "mm/migrate.c", "#include <linux/migrate.h>"),
    Edit(UNBUILDABLE, "mm/compaction.c", "#include <linux/page_owner.h>",
         "#include <linux/page_owner.h>\n}"),
    Edit("mm/compaction: remove the stray brace", "mm/compaction.c",
         "#include <linux/page_owner.h>\n}", "#include <linux/page_owner.h>"),
    Edit(BREAKING, "mm/migrate.c",
         "int isolate_movable_page(struct page *page, isolate_mode_t mode)\n{\n"
         "\tstruct address_space *mapping;\n",
         "int isolate_movable_page(struct page *page, isolate_mode_t mode)\n{\n"
         "\tstruct address_space *mapping;\n\n\treturn -EBUSY;\n"),
    _comment("mm/vmscan: note on reclaim", "mm/vmscan.c", "#include <linux/swap.h>"),
    _comment("mm/page_alloc: note on watermarks", "mm/page_alloc.c", "#include <linux/mm.h>"),
    _comment("mm/compaction: note on the migrate scanner", "mm/compaction.c",
             "#include <linux/sysctl.h>"),
)


@dataclass(frozen=True)
class KernelRepo:
    """The repository and the hashes a test needs."""

    path: Path
    base: str  # the unmodified tree: good
    head: str  # the last commit: bad
    commits: dict[str, str]  # subject -> hash, for the commits on top of base


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run git in ``repo`` with a fixed identity and date (and ``env``); its stdout."""
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env={**os.environ, **_ENV, **(env or {})}).stdout.strip()


def make_kernel_repo(path: Path) -> KernelRepo:
    """The repository at ``path``: made from the cached debian:5.10 tree, or reused."""
    head = subprocess.run(["git", "-C", str(path), "log", "-1", "--format=%s"],
                          capture_output=True, text=True)
    if head.returncode != 0 or head.stdout.strip() != EDITS[-1].subject:
        _create(path)
    log = git(path, "log", "--format=%H %s").splitlines()
    hashes = {subject: sha for sha, subject in (line.split(" ", 1) for line in log)}
    return KernelRepo(path=path, base=log[-1].split(" ", 1)[0], head=log[0].split(" ", 1)[0],
                      commits={edit.subject: hashes[edit.subject] for edit in EDITS})


def _create(path: Path) -> None:
    source = obtain_source(parse_spec(BASE_SPEC)).path
    subprocess.run(["rm", "-rf", str(path)], check=True)
    path.mkdir(parents=True)
    subprocess.run(["cp", "-a", f"{source}/.", str(path)], check=True)
    git(path, "init", "-q", "-b", "main")
    # Loose objects stored uncompressed: a 1 GB tree is added in a fraction of the time.
    # --force: Debian's .gitignore ignores the whole top level of its source package.
    git(path, "-c", "core.looseCompression=0", "add", "-A", "--force")
    git(path, "commit", "-q", "-m", f"{BASE_SPEC} source")
    for edit in EDITS:
        file = path / edit.path
        text = file.read_text()
        if edit.old not in text:
            raise AssertionError(f"{edit.path} has no {edit.old!r}")
        file.write_text(text.replace(edit.old, edit.new, 1))
        git(path, "commit", "-q", "-am", edit.subject)

