"""Source acquisition: local trees, git refs, and tarball downloads from a local server."""

import hashlib
import http.server
import io
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.kernel import download
from harness.kernel.source import obtain_source, tree_fingerprint
from harness.kernel.spec import parse_spec


def make_tree(root: Path, version: tuple[int, int, int] = (4, 9, 1)) -> Path:
    """The smallest directory the harness accepts as a kernel tree."""
    (root / "arch" / "x86").mkdir(parents=True)
    (root / "Makefile").write_text(
        f"VERSION = {version[0]}\nPATCHLEVEL = {version[1]}\nSUBLEVEL = {version[2]}\n"
        "EXTRAVERSION =\n"
    )
    (root / "Kconfig").write_text("mainmenu \"Linux\"\n")
    (root / "arch" / "x86" / "Kconfig").write_text("config X86\n\tdef_bool y\n")
    return root


def make_tarball(path: Path, version: tuple[int, int, int] = (4, 9, 1)) -> str:
    """A linux-X.Y.Z.tar.xz with one top directory; returns its sha256."""
    tree = make_tree(path.parent / "tree-src" / f"linux-{'.'.join(map(str, version))}", version)
    with tarfile.open(path, "w:xz") as archive:
        archive.add(tree, arcname=tree.name)
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Server:
    def __init__(self, directory: Path) -> None:
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
                super().__init__(*args, directory=str(directory), **kwargs)

            def log_message(self, format: str, *args: object) -> None:
                requests.append(self.path)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    served = tmp_path / "served"
    served.mkdir()
    instance = _Server(served)
    yield instance
    instance.httpd.shutdown()
    instance.httpd.server_close()


def cache_entries(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.glob("*/*")) if cache.exists() else []


def test_download_good_checksum_is_cached_once(
    isolated_cache: Path, server: _Server, tmp_path: Path
) -> None:
    sha = make_tarball(tmp_path / "served" / "linux-4.9.1.tar.xz")
    spec = parse_spec(f"{server.url}/linux-4.9.1.tar.xz#sha256={sha}")
    source = obtain_source(spec)
    assert source.version == (4, 9, 1)
    assert (source.path / "Makefile").is_file() and source.path.name == "linux"
    assert source.identity == f"tarball:{sha}"
    assert str(source.path).startswith(str(isolated_cache))
    assert len(server.requests) == 1
    again = obtain_source(spec)
    assert again == source and len(server.requests) == 1  # no second download


def test_download_bad_checksum_leaves_nothing(
    isolated_cache: Path, server: _Server, tmp_path: Path
) -> None:
    make_tarball(tmp_path / "served" / "linux-4.9.1.tar.xz")
    spec = parse_spec(f"{server.url}/linux-4.9.1.tar.xz#sha256={'0' * 64}")
    with pytest.raises(HarnessError, match="sha256 mismatch") as error:
        obtain_source(spec)
    assert "\n" not in str(error.value)
    assert cache_entries(isolated_cache) == []
    assert not list(isolated_cache.glob("*/.*.partial"))


def test_download_missing_file(isolated_cache: Path, server: _Server) -> None:
    spec = parse_spec(f"{server.url}/linux-4.9.2.tar.xz#sha256={'0' * 64}")
    with pytest.raises(HarnessError, match="HTTP 404"):
        obtain_source(spec)
    assert cache_entries(isolated_cache) == []


def test_download_unreachable(isolated_cache: Path) -> None:
    with pytest.raises(HarnessError, match="download of .* failed"):
        download.download("http://127.0.0.1:9/linux-4.9.tar.xz", "0" * 64, timeout=5)
    assert cache_entries(isolated_cache) == []


def test_local_tarball_and_given_hash(isolated_cache: Path, tmp_path: Path) -> None:
    tarball = tmp_path / "linux-5.4.tar.xz"
    sha = make_tarball(tarball, (5, 4, 0))
    assert obtain_source(parse_spec(str(tarball))).identity == f"tarball:{sha}"
    with pytest.raises(HarnessError, match="sha256 mismatch"):
        obtain_source(parse_spec(f"{tarball}#sha256={'1' * 64}"))


def test_old_kernel_in_tarball_refused_and_not_cached(isolated_cache: Path, tmp_path: Path) -> None:
    tarball = tmp_path / "kernel.tar.gz"  # no version in the name: found after unpacking
    make_tarball(tarball, (4, 7, 0))
    with pytest.raises(HarnessError, match="older than 4.8"):
        obtain_source(parse_spec(str(tarball)))
    assert cache_entries(isolated_cache) == []


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    with tarfile.open(path, "w:gz") as archive:
        archive.addfile(member, io.BytesIO(data) if data else None)


@pytest.mark.parametrize("kind", ["dotdot", "symlink-out", "device"])
def test_unpack_refuses_escaping_members(tmp_path: Path, kind: str) -> None:
    tarball = tmp_path / "evil.tar.gz"
    if kind == "symlink-out":
        member = tarfile.TarInfo("linux/escape")
        member.type, member.linkname = tarfile.SYMTYPE, "../../../etc"
        _tar_with(tarball, member)
    elif kind == "device":
        member = tarfile.TarInfo("linux/sda")
        member.type, member.devmajor, member.devminor = tarfile.BLKTYPE, 8, 0
        _tar_with(tarball, member)
    else:
        member = tarfile.TarInfo("../evil")
        member.size = 4
        _tar_with(tarball, member, b"evil")
    with pytest.raises(HarnessError, match="refusing to unpack"):
        download.extract_tar(tarball, tmp_path / "dest")
    assert not (tmp_path / "evil").exists()


def test_unpack_keeps_absolute_members_inside(tmp_path: Path) -> None:
    target = tmp_path / "abs-evil"
    member = tarfile.TarInfo(str(target))
    member.size = 4
    _tar_with(tmp_path / "abs.tar.gz", member, b"evil")
    download.extract_tar(tmp_path / "abs.tar.gz", tmp_path / "dest")
    assert not target.exists()
    assert (tmp_path / "dest" / str(target).lstrip("/")).read_bytes() == b"evil"


def test_local_tree_in_place(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "linux")
    source = obtain_source(parse_spec(str(tree)))
    assert source.path == tree and source.version == (4, 9, 1)
    assert source.identity.startswith(f"tree:{tree}:")


def test_local_tree_fingerprint_follows_edits(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "linux")
    before = tree_fingerprint(tree)
    assert tree_fingerprint(tree) == before
    (tree / "new.c").write_text("int x;\n")
    assert tree_fingerprint(tree) != before


def test_dirty_tree_says_mrproper(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "linux")
    (tree / ".config").write_text("CONFIG_X=y\n")
    with pytest.raises(HarnessError, match="make -C .* mrproper"):
        obtain_source(parse_spec(str(tree)))


@pytest.mark.parametrize("case", ["missing", "not-a-kernel", "too-old"])
def test_bad_trees(tmp_path: Path, case: str) -> None:
    path = tmp_path / "linux"
    if case == "not-a-kernel":
        path.mkdir()
        (path / "Makefile").write_text("all:\n")
    elif case == "too-old":
        make_tree(path, (4, 4, 0))
    message = {"missing": "does not exist", "not-a-kernel": "not a kernel tree",
               "too-old": "older than 4.8"}[case]
    with pytest.raises(HarnessError, match=message):
        obtain_source(parse_spec(str(path)))


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
        env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
             "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    ).stdout.strip()


def test_git_ref_is_archived_without_touching_the_work_tree(
    isolated_cache: Path, tmp_path: Path
) -> None:
    repo = make_tree(tmp_path / "repo", (4, 8, 15))
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "v4.8.15")
    old = _git(repo, "rev-parse", "HEAD")
    (repo / "Makefile").write_text("VERSION = 4\nPATCHLEVEL = 9\nSUBLEVEL = 0\n")
    _git(repo, "commit", "-qam", "v4.9")
    (repo / "untracked.c").write_text("work in progress\n")
    status_before = _git(repo, "status", "--porcelain")

    source = obtain_source(parse_spec(f"git:{repo}@{old[:10]}"))
    assert source.version == (4, 8, 15) and source.identity == f"git:{old}"
    assert not (source.path / "untracked.c").exists()
    assert _git(repo, "status", "--porcelain") == status_before
    assert obtain_source(parse_spec(f"git:{repo}@main")).version == (4, 9, 0)

    with pytest.raises(HarnessError, match="git ref 'nope' not found"):
        obtain_source(parse_spec(f"git:{repo}@nope"))
    with pytest.raises(HarnessError, match="not a git repository"):
        obtain_source(parse_spec(f"git:{tmp_path}@main"))


def make_linux_source_deb(directory: Path, package: str, version: str,
                          kernel: tuple[int, int, int]) -> Path:
    """A .deb laid out like Debian's linux-source-X.Y: the tree as one tarball in usr/src."""
    root = directory / "deb-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: t <t@t>\nDescription: test\n")
    (root / "usr" / "src").mkdir(parents=True)
    tree = make_tree(directory / "tree-src" / package, kernel)
    with tarfile.open(root / "usr" / "src" / f"{package}.tar.xz", "w:xz") as archive:
        archive.add(tree, arcname=tree.name)
    deb = directory / f"{package}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "-b", str(root), str(deb)], check=True, capture_output=True)
    return deb


def test_debian_spec_unpacks_the_version_the_archive_survey_chose(
    isolated_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness import debian_archive
    from harness.kernel import debian

    deb = make_linux_source_deb(tmp_path, "linux-source-7.2", "7.2.13-1", (7, 2, 13))
    fetched: list[tuple[str, str, str, str | None]] = []

    def fetch(package: str, suite: str, arch: str, version: str | None = None) -> Path:
        fetched.append((package, suite, arch, version))
        return deb

    monkeypatch.setattr(debian, "resolve",
                        lambda query: debian.Offer("sid", "linux-source-7.2", "7.2.13-1"))
    monkeypatch.setattr(debian_archive, "fetch_deb", fetch)
    source = obtain_source(parse_spec("debian:latest"))
    assert fetched == [("linux-source-7.2", "sid", "all", "7.2.13-1")]
    assert source.version == (7, 2, 13) and source.path.name == "linux"
    assert source.identity == "debian:linux-source-7.2_7.2.13-1_all.deb"
    assert source.origin == "linux-source-7.2 7.2.13-1 from Debian sid"
    assert obtain_source(parse_spec("debian:7.2")).path == source.path  # one unpacked copy
