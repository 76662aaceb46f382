"""Which linux-source a debian: spec means, from recorded indices (no network)."""

import json
from pathlib import Path

import pytest

from harness import debian_archive, errors
from harness.errors import HarnessError
from harness.kernel import debian
from harness.kernel.debian import Offer, Survey, choose
from tests.unit.debian_recorded import recorded_survey, use_recorded_archive

RECORDED_KERNELS = ("5.10 (bullseye), 6.1 (bookworm), 6.12 (bookworm-backports, trixie), "
                    "7.2 (forky, sid, trixie-backports), 7.3 (trixie-backports)")


@pytest.fixture(autouse=True)
def fresh_notices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees its own notices (they are printed once per process)."""
    monkeypatch.setattr(errors, "_noticed", set())


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Survey:
    return recorded_survey(monkeypatch)


def test_aliases_name_their_codenames_and_an_absent_suite_is_one_notice(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded = recorded_survey(monkeypatch)
    assert recorded.suite_names() == (
        "oldoldstable (bullseye), oldstable (bookworm), oldstable-backports (bookworm-backports), "
        "stable (trixie), stable-backports (trixie-backports), testing (forky), unstable (sid)")
    assert recorded.kernels() == RECORDED_KERNELS
    notices = capsys.readouterr().err.splitlines()
    assert len(notices) == 1
    assert notices[0].startswith("harness: notice: Debian oldoldstable-backports skipped: ")


@pytest.mark.parametrize("query,suite,package,version", [
    ("5.10", "bullseye", "linux-source-5.10", "5.10.223-1"),
    ("6.1", "bookworm", "linux-source-6.1", "6.1.176-1"),
    # trixie's 6.12.117-1 beats bookworm-backports' 6.12.95-1~bpo12+1
    ("6.12", "trixie", "linux-source-6.12", "6.12.117-1"),
    # sid's 7.2.13-1 beats forky's 7.2.12-1 and trixie-backports' 7.2.12-1~bpo13+1
    ("7.2", "sid", "linux-source-7.2", "7.2.13-1"),
    ("latest", "trixie-backports", "linux-source-7.3", "7.3.4-1~bpo13+1"),
    ("trixie", "trixie", "linux-source-6.12", "6.12.117-1"),
    ("stable", "trixie", "linux-source-6.12", "6.12.117-1"),
    ("trixie-backports", "trixie-backports", "linux-source-7.3", "7.3.4-1~bpo13+1"),
    ("stable-backports", "trixie-backports", "linux-source-7.3", "7.3.4-1~bpo13+1"),
    ("oldstable-backports", "bookworm-backports", "linux-source-6.12", "6.12.95-1~bpo12+1"),
    ("testing", "forky", "linux-source-7.2", "7.2.12-1"),
    ("unstable", "sid", "linux-source-7.2", "7.2.13-1"),
])
def test_newest_wins_across_suites(recorded: Survey, query: str, suite: str, package: str,
                                   version: str) -> None:
    assert choose(recorded, query) == Offer(suite, package, version)


def test_equal_versions_prefer_the_regular_suite_then_the_older_one() -> None:
    survey = Survey((("stable-backports", "trixie-backports"), ("testing", "forky"),
                     ("unstable", "sid")),
                    (Offer("trixie-backports", "linux-source-7.2", "7.2.13-1"),
                     Offer("forky", "linux-source-7.2", "7.2.13-1"),
                     Offer("sid", "linux-source-7.2", "7.2.13-1")))
    assert choose(survey, "7.2").suite == "forky"
    newer_backport = Survey(survey.suites, (Offer("forky", "linux-source-7.2", "7.2.12-1"),
                                            Offer("trixie-backports", "linux-source-7.2",
                                                  "7.2.13-1~bpo13+1")))
    assert choose(newer_backport, "7.2").suite == "trixie-backports"


def test_versions_are_ordered_by_dpkg() -> None:
    compare = debian_archive.compare_versions
    assert compare("7.2.13-1", "7.2.12-1") == 1
    assert compare("6.12.117-1", "6.12.95-1") == 1  # not a string comparison
    assert compare("7.3.4-1~bpo13+1", "7.3.4-1") == -1  # ~ sorts before the release
    assert compare("1:5.10-1", "6.1-1") == 1  # the epoch comes first
    assert compare("6.1.1-1", "6.1.1-1") == 0


def test_unknown_version_names_what_the_archive_has(recorded: Survey) -> None:
    with pytest.raises(HarnessError) as error:
        choose(recorded, "9.9")
    assert str(error.value) == (
        f"no linux-source-9.9 in the Debian archive; it has {RECORDED_KERNELS}")


def test_unknown_suite_lists_the_suites_found(recorded: Survey) -> None:
    with pytest.raises(HarnessError, match=r"no Debian suite 'buster' on the mirror; it has "
                                           r"oldoldstable \(bullseye\), .*unstable \(sid\)$"):
        choose(recorded, "buster")


def test_suite_without_a_kernel_source() -> None:
    survey = Survey((("stable", "trixie"), ("unstable", "sid")),
                    (Offer("sid", "linux-source-7.2", "7.2.13-1"),))
    with pytest.raises(HarnessError, match="Debian trixie has no linux-source-"):
        choose(survey, "stable")
    with pytest.raises(HarnessError, match="archive has no linux-source-"):
        choose(Survey(survey.suites, ()), "latest")


def test_the_metapackage_is_no_offer() -> None:
    fields = {"linux-source": {"Version": "6.12.117-1"},
              "linux-source-6.12": {"Version": "6.12.117-1"}}
    assert debian.offers_from("trixie", fields) == [
        Offer("trixie", "linux-source-6.12", "6.12.117-1")]


def test_unreachable_suite_is_skipped_and_the_next_one_tried(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_recorded_archive(monkeypatch)
    recorded = debian_archive.suite_codename

    def flaky(suite: str) -> str:
        if suite == "stable":
            raise HarnessError("cannot reach the Debian mirror http://mirror.invalid/debian "
                               "(no network?): Could not connect")
        return recorded(suite)

    monkeypatch.setattr(debian_archive, "suite_codename", flaky)
    found, _, complete = debian._ask_archive()
    assert "stable (trixie)" not in found.suite_names()
    assert choose(found, "latest").suite == "trixie-backports"  # stable-backports still read
    assert choose(found, "6.12").suite == "bookworm-backports"
    assert not complete  # a passing failure: not cached
    notices = capsys.readouterr().err.splitlines()
    assert [line.split(":")[2].strip() for line in notices] == [
        "Debian oldoldstable-backports skipped", "Debian stable skipped"]


def test_nothing_reachable_is_the_first_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(suite: str) -> str:
        raise HarnessError(f"cannot reach the Debian mirror (no network?): {suite}")

    monkeypatch.setattr(debian_archive, "suite_codename", down)
    with pytest.raises(HarnessError, match=r"\(no network\?\): oldoldstable$"):
        debian._ask_archive()


@pytest.fixture
def counted_surveys(monkeypatch: pytest.MonkeyPatch, isolated_cache: Path) -> list[int]:
    """survey() against the recordings, with index ids the test controls; counts the asks."""
    use_recorded_archive(monkeypatch)
    asked: list[int] = []
    ask = debian._ask_archive

    def counting() -> tuple[Survey, list[tuple[str, str | None]], bool]:
        asked.append(1)
        return ask()

    entry = debian_archive.SourceEntry(("http://mirror.invalid/debian",), ("trixie",),
                                       ("main",), "")
    monkeypatch.setattr(debian_archive, "host_source_entries", lambda: [entry])
    monkeypatch.setattr(debian, "_ask_archive", counting)
    monkeypatch.setattr(debian_archive, "stored_index_id", lambda suite, arch: "id1")
    return asked


def test_survey_is_cached_while_its_indices_are_unchanged(
    counted_surveys: list[int], monkeypatch: pytest.MonkeyPatch, isolated_cache: Path
) -> None:
    first = debian.survey()
    assert debian.survey() == first and len(counted_surveys) == 1
    monkeypatch.setattr(debian_archive, "stored_index_id",
                        lambda suite, arch: "id2" if suite == "sid" else "id1")
    assert debian.survey() == first and len(counted_surveys) == 2  # sid's index changed
    stored = isolated_cache / "apt" / "linux-source.json"
    record = json.loads(stored.read_text())
    record["made"] -= debian_archive.INDEX_MAX_AGE_SECONDS
    stored.write_text(json.dumps(record))
    debian.survey()
    assert len(counted_surveys) == 3  # as old as a stale index


def test_incomplete_survey_is_not_cached(counted_surveys: list[int],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(prefix: str, suite: str, arch: str) -> dict[str, dict[str, str]]:
        raise HarnessError(f"apt-get update for Debian {suite} amd64 failed: Hash Sum mismatch")

    monkeypatch.setattr(debian_archive, "candidates_named", unreadable)
    with pytest.raises(HarnessError, match="no linux-source-"):
        debian.resolve("latest")
    assert len(counted_surveys) == 1
    use_recorded_archive(monkeypatch)
    assert debian.resolve("latest").package == "linux-source-7.3"
    assert len(counted_surveys) == 2
