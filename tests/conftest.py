"""Shared test settings: every test gets a private cache and runs directory."""

from pathlib import Path

import pytest

pytest_plugins = ("pytester",)


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the harness cache at a temporary directory for one test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(cache))
    return cache
