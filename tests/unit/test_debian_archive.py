"""The host's apt sources are parsed into the Debian mirror the private apt root reuses."""

from pathlib import Path

import pytest

from harness import debian_archive
from harness.debian_archive import (
    SourceEntry,
    debian_mirror,
    host_source_entries,
    parse_deb822_sources,
    parse_one_line_sources,
)
from harness.errors import HarnessError
from tests.unit.debian_recorded import DATA

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main
"""

THIRD_PARTY = """\
Types: deb
URIs: https://vendor.example/node_20.x
Suites: nodistro
Components: main
Signed-By: /usr/share/keyrings/nodesource.gpg
"""


def test_deb822_stanzas_and_comments() -> None:
    entries = parse_deb822_sources(DEB822)
    assert [e.uris for e in entries] == [
        ("http://mirror.example/debian",), ("http://mirror.example/debian-security",)
    ]
    assert entries[0].suites == ("bookworm", "bookworm-updates")
    assert entries[0].signed_by.endswith("debian-archive-keyring.gpg")


def test_deb822_disabled_stanza_is_skipped() -> None:
    text = "Types: deb\nURIs: http://a/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n"
    assert parse_deb822_sources(text) == []


def test_deb822_folded_field() -> None:
    text = ("Types: deb\nURIs: http://a/debian\n http://b/debian\n"
            "Suites: bookworm\nComponents: main\n")
    assert parse_deb822_sources(text)[0].uris == ("http://a/debian", "http://b/debian")


def test_one_line_format_with_options() -> None:
    text = (
        "# comment\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        "http://mirror.example/debian/ bookworm main contrib # trailing\n"
    )
    entries = parse_one_line_sources(text)
    assert entries == [SourceEntry(
        uris=("http://mirror.example/debian/",), suites=("bookworm",),
        components=("main", "contrib"),
        signed_by="/usr/share/keyrings/debian-archive-keyring.gpg",
    )]
    assert debian_mirror(entries) == "http://mirror.example/debian"


def test_mirror_skips_security_and_third_party() -> None:
    entries = parse_deb822_sources(THIRD_PARTY) + parse_deb822_sources(DEB822)[::-1]
    assert debian_mirror(entries) == "http://mirror.example/debian"


def test_no_debian_mirror_is_a_one_line_error() -> None:
    with pytest.raises(HarnessError, match="no Debian mirror found"):
        debian_mirror(parse_deb822_sources(THIRD_PARTY))


def test_host_entries_read_list_and_sources_files(tmp_path: Path) -> None:
    sources_list = tmp_path / "sources.list"
    sources_list.write_text("")
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "debian.sources").write_text(DEB822)
    (parts / "vendor.list").write_text("deb https://vendor.example/apt stable main\n")
    (parts / "old.list.disabled").write_text("deb http://ignored.example/debian bookworm main\n")
    uris = [e.uris[0] for e in host_source_entries(sources_list, parts)]
    assert uris == ["http://mirror.example/debian", "http://mirror.example/debian-security",
                    "https://vendor.example/apt"]


@pytest.mark.parametrize("package,suite,arch,message", [
    ("busybox-static", "bookworm", "sparc", "unknown Debian architecture"),
    ("Bad Name", "bookworm", "amd64", "not a Debian package name"),
    ("busybox-static", "../etc", "amd64", "not a Debian suite name"),
])
def test_bad_arguments(package: str, suite: str, arch: str, message: str,
                       isolated_cache: Path) -> None:
    with pytest.raises(HarnessError, match=message):
        debian_archive.fetch_deb(package, suite, arch)


def test_unreachable_mirror_says_no_network(isolated_cache: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A mirror nobody listens on: apt fails to connect and the error names the network."""
    unreachable = SourceEntry(("http://127.0.0.1:9/debian",), ("bookworm",), ("main",), "")
    monkeypatch.setattr(debian_archive, "host_source_entries", lambda: [unreachable])
    monkeypatch.setattr(debian_archive, "APT_RETRIES", 0)
    with pytest.raises(HarnessError, match=r"cannot reach the Debian mirror .* \(no network\?\)"):
        debian_archive.fetch_deb("busybox-static", "bookworm", "amd64")
    assert not (isolated_cache / "debs").exists()


def test_release_fields_of_a_signed_release() -> None:
    fields = debian_archive.release_fields((DATA / "stable-backports.InRelease").read_text())
    assert (fields["Suite"], fields["Codename"]) == ("stable-backports", "trixie-backports")
    assert fields["No-Support-for-Architecture-all"] == "Packages"
    assert "Hash" not in fields and "SHA256" in fields  # armour header skipped, lists kept short
    assert debian_archive.release_fields("Suite: sid\nCodename: sid\n")["Codename"] == "sid"


def test_packages_stanzas_first_version_of_each() -> None:
    text = (DATA / "trixie-backports.Packages").read_text()
    found = debian_archive.parse_packages(text + "\nPackage: linux-source-7.3\nVersion: 0\n")
    assert {name: fields["Version"] for name, fields in found.items()} == {
        "linux-source-7.2": "7.2.12-1~bpo13+1", "linux-source-7.3": "7.3.4-1~bpo13+1"}
    assert found["linux-source-7.3"]["Architecture"] == "all"


def test_release_only_root_fetches_no_package_index(isolated_cache: Path) -> None:
    """The root that answers "what is stable today" asks apt for InRelease alone."""
    root = debian_archive._AptRoot("stable", None, "http://mirror.invalid/debian")
    root.prepare()
    sources = (root.root / "etc" / "sources.list.d" / "debian.sources").read_text()
    assert root.root.name == "stable-release"
    assert "Targets: none" in sources and "Architectures" not in sources


def test_unpack_missing_deb(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="does not exist"):
        debian_archive.unpack_deb(tmp_path / "nope.deb", tmp_path / "out")
