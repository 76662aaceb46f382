"""The Debian archive as recorded in tests/data/debian, in place of the mirror."""

from pathlib import Path

import pytest

from harness import debian_archive
from harness.kernel import debian

DATA = Path(__file__).resolve().parent.parent / "data" / "debian"


def recorded_codename(suite: str) -> str:
    """``suite_codename`` from the recorded InRelease; an unrecorded suite is absent (404)."""
    path = DATA / f"{suite}.InRelease"
    if not path.is_file():
        raise debian_archive.AbsentSuite(
            f"apt-get update for Debian {suite} Release failed: The repository "
            f"'http://mirror.invalid/debian {suite} Release' does not have a Release file."
        )
    return debian_archive.release_fields(path.read_text())["Codename"]


def recorded_candidates(prefix: str, suite: str, arch: str) -> dict[str, dict[str, str]]:
    """``candidates_named`` from the recorded Packages stanzas of ``suite``."""
    found = debian_archive.parse_packages((DATA / f"{suite}.Packages").read_text())
    return {name: fields for name, fields in found.items() if name.startswith(prefix)}


def use_recorded_archive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every survey read the recordings instead of the mirror."""
    monkeypatch.setattr(debian_archive, "suite_codename", recorded_codename)
    monkeypatch.setattr(debian_archive, "candidates_named", recorded_candidates)


def recorded_survey(monkeypatch: pytest.MonkeyPatch) -> debian.Survey:
    """The survey the recorded archive gives (its notices go to stderr)."""
    use_recorded_archive(monkeypatch)
    found, _, _ = debian._ask_archive()
    return found
