"""Which Debian ``linux-source-X.Y`` a ``debian:`` kernel spec means, read from the archive.

A table of versions and suites ages with every Debian release, so the archive
is asked instead. Debian's suite aliases (oldoldstable ... unstable, and the
stable ones' ``-backports``) never age: each alias's signed Release file names
the codename it stands for today, and each codename's signed package index
lists its ``linux-source-*`` packages. That survey is cached like the indices
(INDEX_MAX_AGE_SECONDS) and only while the indices it was read from are
unchanged, so a warm resolution reads one small file and hashes a few Release
files. A survey made offline from old indices is kept as long, so an offline
host pays for the failed refreshes once a day, not on every run.

The choice itself (``choose``) is pure: newest kernel line, then newest
package version by dpkg's ordering, a backport losing a tie.
"""

import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from harness import debian_archive
from harness.errors import HarnessError, notice
from harness.kernel.spec import debian_kernel_version
from harness.paths import cache_root

# Debian's fixed suite aliases, oldest first; the order breaks ties between suites.
# testing and unstable have no -backports; oldoldstable's may be gone from the mirror.
ALIASES = (
    "oldoldstable", "oldoldstable-backports", "oldstable", "oldstable-backports",
    "stable", "stable-backports", "testing", "unstable",
)
PREFIX = "linux-source-"
_PACKAGE = re.compile(r"linux-source-(\d+)\.(\d+)")
SURVEY_FORMAT = 1


@dataclass(frozen=True)
class Offer:
    """One linux-source package version a suite of the archive has."""

    suite: str  # codename: bullseye, trixie-backports, sid
    package: str  # linux-source-6.12
    version: str  # 6.12.94-1

    @property
    def kernel(self) -> tuple[int, int]:
        """The kernel line, (6, 12) for linux-source-6.12."""
        match = _PACKAGE.fullmatch(self.package)
        assert match is not None
        return int(match[1]), int(match[2])

    @property
    def backports(self) -> bool:
        return self.suite.endswith("-backports")

    def describe(self) -> str:
        return f"{self.package} {self.version} from Debian {self.suite}"


@dataclass(frozen=True)
class Survey:
    """What the archive offers: the aliases found (in ALIASES order) and every offer."""

    suites: tuple[tuple[str, str], ...]  # (alias, codename)
    offers: tuple[Offer, ...]

    def codename(self, name: str) -> str | None:
        """The codename ``name`` (an alias or a codename) stands for, if the archive has it."""
        for alias, codename in self.suites:
            if name in (alias, codename):
                return codename
        return None

    def kernels(self) -> str:
        """``5.10 (bullseye), 6.1 (bookworm), ...``: every kernel line and its suites."""
        lines: dict[tuple[int, int], list[str]] = {}
        for offer in self.offers:
            lines.setdefault(offer.kernel, []).append(offer.suite)
        return ", ".join(f"{major}.{minor} ({', '.join(sorted(set(suites)))})"
                         for (major, minor), suites in sorted(lines.items()))

    def suite_names(self) -> str:
        """``oldoldstable (bullseye), ...``: every suite alias found and its codename."""
        return ", ".join(f"{alias} ({codename})" for alias, codename in self.suites)


Compare = Callable[[str, str], int]


def choose(survey: Survey, query: str,
           compare: Compare = debian_archive.compare_versions) -> Offer:
    """The offer ``debian:QUERY`` means: QUERY is X.Y, ``latest`` or a suite name.

    Within the offers that match, the newest kernel line wins, then the
    newest package version; on equal versions a backport loses (the regular
    suite is the one Debian supports), then the older suite wins.
    """
    pool = _matching(survey, query)
    newest = max(offer.kernel for offer in pool)
    best, *rest = [offer for offer in pool if offer.kernel == newest]
    for offer in rest:
        order = compare(offer.version, best.version)
        if order > 0 or (order == 0 and best.backports and not offer.backports):
            best = offer
    return best


def _matching(survey: Survey, query: str) -> list[Offer]:
    """The offers a query selects, or a one-line error naming what the archive has."""
    if not survey.offers:
        raise HarnessError(f"the Debian archive has no {PREFIX}* package in "
                           f"{survey.suite_names() or 'any suite'}")
    if query == "latest":
        return list(survey.offers)
    version = debian_kernel_version(query)
    if version is not None:
        pool = [offer for offer in survey.offers if offer.kernel == version]
        if not pool:
            raise HarnessError(f"no {PREFIX}{query} in the Debian archive; "
                               f"it has {survey.kernels()}")
        return pool
    codename = survey.codename(query)
    if codename is None:
        raise HarnessError(f"no Debian suite {query!r} on the mirror; it has "
                           f"{survey.suite_names()}")
    pool = [offer for offer in survey.offers if offer.suite == codename]
    if not pool:
        raise HarnessError(f"Debian {codename} has no {PREFIX}* package; the archive has "
                           f"{survey.kernels()}")
    return pool


def offers_from(suite: str, fields: dict[str, dict[str, str]]) -> list[Offer]:
    """The linux-source-X.Y offers among one suite's index fields (the metapackage is not one)."""
    return [Offer(suite, name, found["Version"]) for name, found in sorted(fields.items())
            if _PACKAGE.fullmatch(name)]


def resolve(query: str) -> Offer:
    """The offer ``debian:QUERY`` means today, from the cached or a new survey."""
    return choose(survey(), query)


def survey() -> Survey:
    """What the archive offers: the cached survey while it is valid, else asked anew."""
    path = cache_root() / "apt" / "linux-source.json"
    mirror = debian_archive.debian_mirror(debian_archive.host_source_entries())
    cached = _load(path, mirror)
    if cached is not None:
        return cached
    found, indices, complete = _ask_archive()
    if complete:
        _store(path, mirror, found, indices)
    return found


def _ask_archive() -> tuple[Survey, list[tuple[str, str | None]], bool]:
    """A new survey, the (suite, arch) of every index it read, and whether it is complete.

    A suite the mirror does not have (oldoldstable-backports once it moved to
    the archive of old releases) or cannot serve now is one notice, and the
    survey goes on; nothing found at all is the first suite's error. Only a
    survey that missed nothing but absent suites is complete: a passing
    network failure must not hide a suite for a day.
    """
    suites: list[tuple[str, str]] = []
    problems: list[tuple[str, HarnessError]] = []
    for alias in ALIASES:
        try:
            suites.append((alias, debian_archive.suite_codename(alias)))
        except HarnessError as error:
            problems.append((alias, error))
    if not suites:
        raise problems[0][1]
    offers: list[Offer] = []
    codenames = list(dict.fromkeys(codename for _, codename in suites))
    for codename in codenames:
        try:
            offers += offers_from(codename,
                                  debian_archive.candidates_named(PREFIX, codename, "all"))
        except HarnessError as error:
            problems.append((codename, error))
    for suite, problem in problems:
        notice(f"Debian {suite} skipped: {problem}")
    indices: list[tuple[str, str | None]] = [(alias, None) for alias, _ in suites]
    indices += [(codename, "all") for codename in codenames]
    complete = all(isinstance(problem, debian_archive.AbsentSuite) for _, problem in problems)
    return Survey(tuple(suites), tuple(offers)), indices, complete


def _store(path: Path, mirror: str, found: Survey,
           indices: Iterable[tuple[str, str | None]]) -> None:
    """Write the survey with the ids of the indices it came from, atomically."""
    record = {
        "format": SURVEY_FORMAT,
        "mirror": mirror,
        "made": time.time(),
        "indices": [[suite, arch, debian_archive.stored_index_id(suite, arch)]
                    for suite, arch in indices],
        "suites": [list(pair) for pair in found.suites],
        "offers": [[offer.suite, offer.package, offer.version] for offer in found.offers],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(record, indent=1) + "\n")
    partial.replace(path)


def _load(path: Path, mirror: str) -> Survey | None:
    """The stored survey if it is young, from this mirror, and its indices are unchanged."""
    try:
        record = json.loads(path.read_text())
        young = 0 <= time.time() - record["made"] < debian_archive.INDEX_MAX_AGE_SECONDS
        if not young or record["format"] != SURVEY_FORMAT or record["mirror"] != mirror:
            return None
        for suite, arch, index in record["indices"]:
            if debian_archive.stored_index_id(suite, arch) != index:
                return None
        return Survey(tuple((alias, codename) for alias, codename in record["suites"]),
                      tuple(Offer(*offer) for offer in record["offers"]))
    except (OSError, ValueError, KeyError, TypeError, HarnessError):
        return None
