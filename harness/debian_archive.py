"""Binary packages of any Debian suite and architecture, without touching the host's apt.

The guest images need Debian's arm64 busybox on an amd64 host and the kernel
stage needs bullseye's linux-source on a bookworm host. Adding a foreign
architecture or a suite to the host's apt would change what the host upgrades,
so each (suite, architecture) gets a private apt root in the cache: its own
index, state and sources entry. The entry reuses the mirror the host already
uses (so the harness works behind the same mirror or proxy and never names a
hostname) and pins the Debian archive keyring, so apt itself verifies the
signed Release file and each package's checksum. Downloaded ``.deb`` files are
cache entries keyed by suite, arch, package and exact version. A root made with
no architecture holds only a suite's signed Release file: what a suite alias
such as ``stable`` stands for today, at the cost of one small download.
"""

import fcntl
import functools
import hashlib
import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness import cache
from harness.errors import HarnessError, MissingTool
from harness.paths import cache_root

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
HOST_SOURCES_LIST = Path("/etc/apt/sources.list")
HOST_SOURCES_DIR = Path("/etc/apt/sources.list.d")

# A private index older than this is refreshed before a lookup; a failed
# refresh falls back to the old index so cached packages still resolve offline.
INDEX_MAX_AGE_SECONDS = 24 * 3600

ARCHES = ("amd64", "arm64", "all")

# apt's own retry count for each download (with back-off); a flaky mirror is
# common, an unreachable one should still fail within seconds.
APT_RETRIES = 3

_NETWORK_HINTS = (
    "Could not resolve",
    "Temporary failure resolving",
    "Failed to fetch",
    "Could not connect",
    "Connection failed",
    "Network is unreachable",
    "No route to host",
)


class AbsentSuite(HarnessError):
    """The mirror has no such suite (a Release file that is not there, not a network failure)."""


@dataclass(frozen=True)
class SourceEntry:
    """One ``deb`` line or deb822 stanza of an apt sources file."""

    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str


def parse_one_line_sources(text: str) -> list[SourceEntry]:
    """Entries of a classic ``sources.list``: ``deb [options] URI SUITE COMPONENT...``."""
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        options: dict[str, str] = {}
        match = re.match(r"^(\S+)\s+\[([^\]]*)\]\s+(.*)$", line)
        if match:
            kind, option_text, rest = match.groups()
            for item in option_text.split():
                key, _, value = item.partition("=")
                options[key.lower()] = value
        else:
            kind, _, rest = line.partition(" ")
        words = rest.split()
        if kind != "deb" or len(words) < 2:
            continue
        entries.append(SourceEntry(
            uris=(words[0],),
            suites=(words[1],),
            components=tuple(words[2:]),
            signed_by=options.get("signed-by", ""),
        ))
    return entries


def parse_deb822_sources(text: str) -> list[SourceEntry]:
    """Entries of a deb822 ``.sources`` file; stanzas with ``Enabled: no`` are skipped."""
    entries = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        current = ""
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1] in (" ", "\t") and current:
                fields[current] += " " + raw.strip()
                continue
            key, sep, value = raw.partition(":")
            if not sep:
                continue
            current = key.strip().lower()
            fields[current] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() in ("no", "false", "0"):
            continue
        entries.append(SourceEntry(
            uris=tuple(fields.get("uris", "").split()),
            suites=tuple(fields.get("suites", "").split()),
            components=tuple(fields.get("components", "").split()),
            signed_by=fields.get("signed-by", ""),
        ))
    return entries


def debian_mirror(entries: Iterable[SourceEntry]) -> str:
    """The URI of the main Debian archive among the host's source entries.

    The main archive is the entry that carries a plain release suite (no
    ``-security``/``-updates`` suffix) with the ``main`` component and is not
    signed by a third-party keyring; the security archive lives elsewhere and
    carries no ``linux-source`` or ``busybox-static`` of its own.
    """
    for entry in entries:
        third_party = entry.signed_by and "debian-archive" not in entry.signed_by
        plain_suite = any("-" not in suite and "/" not in suite for suite in entry.suites)
        if third_party or not plain_suite or "main" not in entry.components:
            continue
        for uri in entry.uris:
            if "://" in uri:
                return uri.rstrip("/")
    raise HarnessError(
        "no Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/: "
        "add a `deb URI bookworm main` entry for a Debian mirror"
    )


def host_source_entries(
    sources_list: Path = HOST_SOURCES_LIST, sources_dir: Path = HOST_SOURCES_DIR
) -> list[SourceEntry]:
    """Every enabled ``deb`` entry the host's apt reads, in apt's file order."""
    entries: list[SourceEntry] = []
    if sources_list.is_file():
        entries += parse_one_line_sources(sources_list.read_text())
    if sources_dir.is_dir():
        for path in sorted(sources_dir.iterdir()):
            if path.suffix == ".list":
                entries += parse_one_line_sources(path.read_text())
            elif path.suffix == ".sources":
                entries += parse_deb822_sources(path.read_text())
    return entries


def _require(program: str, package: str, purpose: str) -> None:
    if shutil.which(program) is None:
        raise MissingTool(program, package, purpose)


@functools.cache
def _host_arch() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


class _AptRoot:
    """A private apt configuration for one suite and architecture under the cache.

    ``arch`` None: the suite's signed Release file only, no package index.
    """

    def __init__(self, suite: str, arch: str | None, mirror: str) -> None:
        self.suite = suite
        self.arch = arch
        self.mirror = mirror
        self.root = cache_root() / "apt" / f"{suite}-{arch or 'release'}"

    def prepare(self) -> None:
        """Create the directories apt expects and write the one sources entry."""
        for sub in ("state/lists/partial", "cache/archives/partial", "etc/sources.list.d",
                    "etc/preferences.d"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "state" / "status").touch()
        # "Targets: none" makes apt-get update fetch and verify InRelease alone.
        targets = f"Architectures: {self.arch}\nTargets: Packages\n" if self.arch \
            else "Targets: none\n"
        sources = (
            "Types: deb\n"
            f"URIs: {self.mirror}\n"
            f"Suites: {self.suite}\n"
            "Components: main\n"
            f"{targets}"
            f"Signed-By: {KEYRING}\n"
        )
        path = self.root / "etc" / "sources.list.d" / "debian.sources"
        if not path.is_file() or path.read_text() != sources:
            path.write_text(sources)
            self._lists_stamp().unlink(missing_ok=True)

    def options(self) -> list[str]:
        """``-o`` arguments that point apt at this root only."""
        user = pwd.getpwuid(os.geteuid()).pw_name
        settings = {
            "Dir::State": str(self.root / "state"),
            "Dir::State::status": str(self.root / "state" / "status"),
            "Dir::Cache": str(self.root / "cache"),
            # Some hosts (Docker images) turn the binary cache off; without it
            # every lookup re-parses the whole index (seconds instead of ms).
            "Dir::Cache::pkgcache": "pkgcache.bin",
            "Dir::Cache::srcpkgcache": "srcpkgcache.bin",
            "Dir::Etc::SourceList": str(self.root / "etc" / "sources.list"),
            "Dir::Etc::SourceParts": str(self.root / "etc" / "sources.list.d"),
            "Dir::Etc::Preferences": str(self.root / "etc" / "preferences"),
            "Dir::Etc::PreferencesParts": str(self.root / "etc" / "preferences.d"),
            "APT::Architecture": self.arch or _host_arch(),
            "APT::Architectures": self.arch or _host_arch(),
            "Acquire::Languages": "none",
            "Acquire::PDiffs": "false",
            "Acquire::Retries": str(APT_RETRIES),
            # The cache lives in the user's home; apt's _apt sandbox user cannot read it.
            "APT::Sandbox::User": user,
        }
        return [arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]

    def _lists_stamp(self) -> Path:
        return self.root / "state" / "updated"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise every apt call on this root across processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "harness.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def apt(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [args[0], *self.options(), *args[1:]],
            capture_output=True, text=True, cwd=cwd,
            env={**os.environ, "LC_ALL": "C"},
        )

    def refresh(self, force: bool = False) -> bool:
        """Download and verify the suite's signed index unless a fresh one exists.

        Returns True when this call downloaded the index.
        """
        stamp = self._lists_stamp()
        fresh = stamp.is_file() and time.time() - stamp.stat().st_mtime < INDEX_MAX_AGE_SECONDS
        if fresh and not force:
            return False
        done = self.apt("apt-get", "update", "-q")
        problem = _first_error(done.stdout + done.stderr)
        if done.returncode == 0 and not problem:
            stamp.touch()
            return True
        if stamp.is_file():
            print(f"harness: notice: could not refresh the Debian {self.suite} "
                  f"{self.arch or 'Release'} index ({problem or 'apt-get update failed'}); "
                  "using the old one")
            return False
        if problem and any(hint in problem for hint in _NETWORK_HINTS):
            raise HarnessError(
                f"cannot reach the Debian mirror {self.mirror} (no network?): {problem}"
            )
        error = AbsentSuite if "does not have a Release file" in problem else HarnessError
        raise error(
            f"apt-get update for Debian {self.suite} {self.arch or 'Release'} failed: "
            f"{problem or done.stderr.strip()[-200:]}"
        )

    def candidates(self, packages: Sequence[str]) -> dict[str, dict[str, str]]:
        """Index fields of the version apt would download, per package found.

        One apt-cache call for all packages: each call costs a fraction of a
        second, which adds up when an image needs a dozen packages.
        """
        shown = self.apt("apt-cache", "show", "--no-all-versions", *packages)
        return parse_packages(shown.stdout)

    def names(self, prefix: str) -> list[str]:
        """Every package name in the index that starts with ``prefix``."""
        return sorted(self.apt("apt-cache", "pkgnames", prefix).stdout.split())

    def _releases(self) -> list[Path]:
        return sorted((self.root / "state" / "lists").glob("*Release"))

    def index_id(self) -> str:
        """A hash of the signed Release file(s): equal ids mean equal package versions."""
        digest = hashlib.sha256()
        for release in self._releases():
            digest.update(release.read_bytes())
        return digest.hexdigest()[:20]

    def release_fields(self) -> dict[str, str]:
        """The fields of the Release file apt verified (Suite, Codename, ...)."""
        releases = self._releases()
        return release_fields(releases[0].read_text(errors="replace")) if releases else {}


def parse_packages(text: str) -> dict[str, dict[str, str]]:
    """Top-level fields of each package's first stanza in Packages (or apt-cache show) text."""
    found: dict[str, dict[str, str]] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(": ")
            if sep and not line.startswith(" ") and key not in fields:
                fields[key] = value.strip()
        if "Package" in fields and "Version" in fields:
            found.setdefault(fields["Package"], fields)
    return found


def release_fields(text: str) -> dict[str, str]:
    """Top-level fields of a Release or InRelease file, up to its file lists.

    The OpenPGP armour's own ``Hash:`` header comes before the first blank
    line of an InRelease file and is skipped with it.
    """
    if text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        text = text.split("\n\n", 1)[-1]
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("-----"):
            break
        key, sep, value = line.partition(":")
        if sep and not line[:1].isspace():
            fields.setdefault(key, value.strip())
    return fields


def _first_error(output: str) -> str:
    """apt's first ``E:`` line, or ``W:`` line about the network, without the prefix.

    apt-get update exits 0 when a mirror is unreachable and only warns, so the
    warnings are what tell a network failure apart from success.
    """
    for line in output.splitlines():
        if line.startswith("E: ") or (
            line.startswith("W: ") and any(hint in line for hint in _NETWORK_HINTS)
        ):
            return " ".join(line[3:].split())
    return ""


def _root(suite: str, arch: str | None) -> _AptRoot:
    """The private apt root for ``suite``/``arch`` (None: Release only), after validating both."""
    if arch is not None and arch not in ARCHES:
        raise HarnessError(f"unknown Debian architecture {arch!r}: choose one of "
                           f"{', '.join(ARCHES)}")
    if not re.fullmatch(r"[a-z0-9-]+", suite):
        raise HarnessError(f"{suite!r} is not a Debian suite name (e.g. bookworm, bullseye)")
    index_arch = _host_arch() if arch == "all" else arch
    return _AptRoot(suite, index_arch, debian_mirror(host_source_entries()))


def _checked_root(suite: str, arch: str | None) -> _AptRoot:
    """``_root`` once the host tools apt needs are known to be there."""
    root = _root(suite, arch)
    _require("apt-get", "apt", "fetching Debian packages by name")
    _require("gpgv", "gpgv", "verifying the Debian archive's signatures")
    if not KEYRING.is_file():
        raise MissingTool(str(KEYRING), "debian-archive-keyring",
                          "verifying the Debian archive's signatures")
    return root


@contextmanager
def _refreshed(suite: str, arch: str | None) -> Iterator[_AptRoot]:
    """The root for ``suite``/``arch``, locked, with an index no older than the maximum age."""
    root = _checked_root(suite, arch)
    with root.locked():
        root.prepare()
        root.refresh()
        yield root


def index_id(suite: str, arch: str) -> str:
    """Identify the package versions ``fetch_debs`` would return now.

    Refreshes a stale index first. Callers that derive a cache key from a set
    of packages use this instead of resolving every package on each call.
    """
    with _refreshed(suite, arch) as root:
        return root.index_id()


def stored_index_id(suite: str, arch: str | None) -> str:
    """``index_id`` of the index as it is on disk now, without refreshing it.

    For caches derived from an index: such a cache is valid while this
    returns the id it was made with, and checking costs no apt call.
    """
    return _root(suite, arch).index_id()


def suite_codename(suite: str) -> str:
    """The codename a suite alias stands for today (stable: trixie), from its signed Release."""
    with _refreshed(suite, None) as root:
        codename = root.release_fields().get("Codename", "")
    if not re.fullmatch(r"[a-z0-9-]+", codename):
        raise HarnessError(f"the Debian {suite} Release file names no codename")
    return codename


def candidates_named(prefix: str, suite: str, arch: str) -> dict[str, dict[str, str]]:
    """The index fields of every package of ``suite`` whose name starts with ``prefix``."""
    with _refreshed(suite, arch) as root:
        names = root.names(prefix)
        return root.candidates(names) if names else {}


def compare_versions(left: str, right: str) -> int:
    """-1, 0 or 1 as dpkg orders two Debian versions (epochs, ``~``, revisions)."""
    if left == right:
        return 0
    _require("dpkg", "dpkg", "comparing Debian package versions")
    for operator, order in (("lt", -1), ("gt", 1)):
        if subprocess.run(["dpkg", "--compare-versions", left, operator, right]).returncode == 0:
            return order
    return 0


def _check_package_name(package: str) -> None:
    if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", package):
        raise HarnessError(f"{package!r} is not a Debian package name")


def fetch_deb(package: str, suite: str, arch: str, version: str | None = None) -> Path:
    """Download (or find in the cache) ``package`` from Debian ``suite`` for ``arch``.

    ``arch`` is a Debian architecture (amd64, arm64) or ``all`` for
    architecture-independent packages such as linux-source-*. ``version``
    pins the version a caller already chose from the index (no lookup runs);
    by default apt's candidate is taken. Returns the path of the verified
    ``.deb`` inside its cache entry.
    """
    if version is None:
        return fetch_debs([package], suite, arch)[package]
    _check_package_name(package)
    with _refreshed(suite, arch) as root:
        return _cached_deb(root, package, version, suite, arch)


def fetch_debs(packages: Sequence[str], suite: str, arch: str) -> dict[str, Path]:
    """``fetch_deb`` for several packages of one suite and arch, with one index lookup."""
    for package in packages:
        _check_package_name(package)
    root = _checked_root(suite, arch)
    with root.locked():
        root.prepare()
        refreshed = root.refresh()
        found = root.candidates(packages)
        if len(found) < len(set(packages)) and not refreshed and root.refresh(force=True):
            found = root.candidates(packages)
        missing = [package for package in packages if package not in found]
        if missing:
            raise HarnessError(
                f"package {', '.join(missing)} not found in Debian {suite} for {arch} "
                f"(mirror {root.mirror}); check the name with `apt-cache search`"
            )
        return {package: _cached_deb(root, package, found[package]["Version"], suite, arch)
                for package in packages}


def _cached_deb(root: _AptRoot, package: str, version: str, suite: str, arch: str) -> Path:
    """The cache entry's ``.deb`` for one exact version, downloading it on a miss."""
    key = cache.cache_key({"suite": suite, "arch": arch, "package": package,
                           "version": version})
    entry = cache.lookup("debs", key)
    if entry is None:
        with cache.produce("debs", key) as work:
            _download(root, package, version, work)
        entry = cache.entry_path("debs", key)
    debs = sorted(entry.glob("*.deb"))
    if len(debs) != 1:
        raise HarnessError(f"cache entry {entry} is damaged: delete it and retry")
    return debs[0]


def _download(root: _AptRoot, package: str, version: str, work: Path) -> None:
    """``apt-get download`` one exact version into ``work``; apt checks the hash."""
    done = root.apt("apt-get", "download", "-q", f"{package}={version}", cwd=work)
    if done.returncode != 0 or not list(work.glob("*.deb")):
        problem = _first_error(done.stdout + done.stderr) or done.stderr.strip()[-200:]
        if any(hint in problem for hint in _NETWORK_HINTS):
            raise HarnessError(
                f"cannot download {package} {version} from {root.mirror} (no network?): "
                f"{problem}"
            )
        raise HarnessError(f"apt-get download {package}={version} failed: {problem}")


def unpack_deb(deb: Path, dest: Path) -> None:
    """Extract the files of ``deb`` (not its maintainer scripts) below ``dest``."""
    _require("dpkg-deb", "dpkg", "unpacking Debian packages")
    if not deb.is_file():
        raise HarnessError(f"{deb} does not exist: fetch it with fetch_deb() first")
    dest.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise HarnessError(f"cannot unpack {deb.name}: {done.stderr.strip().splitlines()[-1]}")
