from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.kernel.spec import PINNED_SHA256, check_version, parse_spec, tarball_version

HEX = "ab" * 32


def test_local_tree() -> None:
    spec = parse_spec("/work/kernels/linux-4.8.15")
    assert spec.kind == "tree" and spec.path == Path("/work/kernels/linux-4.8.15")


def test_git_with_ref_and_default_head() -> None:
    spec = parse_spec("git:/src/linux@v4.8.15")
    assert (spec.kind, spec.path, spec.ref) == ("git", Path("/src/linux"), "v4.8.15")
    assert parse_spec("git:/src/linux").ref == "HEAD"
    # An '@' inside the path is kept: only the last one separates the ref.
    assert parse_spec("git:/a@b/linux@main").path == Path("/a@b/linux")


def test_url_with_sha256() -> None:
    url = "https://example.invalid/v4.x/linux-4.8.17.tar.xz"
    spec = parse_spec(f"{url}#sha256={HEX.upper()}")
    assert (spec.kind, spec.url, spec.sha256, spec.path) == ("tarball", url, HEX, None)


def test_url_without_sha256_says_how_to_give_one() -> None:
    with pytest.raises(HarnessError, match="#sha256="):
        parse_spec("https://example.invalid/linux-4.8.17.tar.xz")


def test_pinned_tarball_needs_no_hash() -> None:
    spec = parse_spec("http://mirror.invalid/linux-6.1.tar.xz")
    assert spec.sha256 == PINNED_SHA256["linux-6.1.tar.xz"]


def test_local_tarball_hash_optional() -> None:
    spec = parse_spec("/tmp/linux-4.9.tar.gz")
    assert (spec.kind, spec.path, spec.sha256) == ("tarball", Path("/tmp/linux-4.9.tar.gz"), None)


@pytest.mark.parametrize("bad", ["#sha256=1234", "#md5=" + "a" * 32, "#sha256=" + "g" * 64])
def test_malformed_checksum(bad: str) -> None:
    with pytest.raises(HarnessError, match="sha256"):
        parse_spec("https://example.invalid/linux-4.8.17.tar.xz" + bad)


@pytest.mark.parametrize("query", ["5.10", "6.1", "4.19", "7.2", "latest", "trixie", "stable",
                                   "trixie-backports"])
def test_debian_is_checked_but_not_resolved(query: str) -> None:
    """Which package a query means needs the archive: parsing only checks the form."""
    spec = parse_spec(f"debian:{query}")
    assert (spec.kind, spec.debian_query) == ("debian", query)


@pytest.mark.parametrize("bad", ["debian:", "debian:6", "debian:6.1.2", "debian:Trixie",
                                 "debian:../etc", "debian:trixie-", "debian:linux-6.1"])
def test_debian_garbage_is_one_line(bad: str) -> None:
    with pytest.raises(HarnessError, match=r"^bad Debian kernel spec .*debian:X\.Y") as error:
        parse_spec(bad)
    assert "\n" not in str(error.value)


def test_debian_older_than_the_api() -> None:
    with pytest.raises(HarnessError, match="linux-source-4.7 is Linux 4.7, older than 4.8"):
        parse_spec("debian:4.7")


@pytest.mark.parametrize("old", ["linux-4.7.10.tar.xz", "https://x.invalid/linux-3.18.tar.gz"])
def test_old_kernels_refused(old: str) -> None:
    with pytest.raises(HarnessError, match="older than 4.8"):
        parse_spec(old + "#sha256=" + HEX)


def test_version_check() -> None:
    check_version((4, 8, 0), "x")
    check_version((6, 1, 0), "x")
    with pytest.raises(HarnessError, match="4.7.10"):
        check_version((4, 7, 10), "tree")


def test_tarball_version() -> None:
    assert tarball_version("linux-4.8.17.tar.xz") == (4, 8, 17)
    assert tarball_version("linux-6.1.tar.xz") == (6, 1, 0)
    assert tarball_version("kernel.tar.xz") is None


@pytest.mark.parametrize("bad", ["", "ftp://x/linux.tar.xz", "debain:6.1", "https://x.invalid/"])
def test_unknown_forms_list_the_forms(bad: str) -> None:
    with pytest.raises(HarnessError) as error:
        parse_spec(bad)
    message = str(error.value)
    assert "\n" not in message
    assert "debian:6.1" in message or "http(s)" in message
