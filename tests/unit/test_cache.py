from pathlib import Path

import pytest

from harness import cache


def test_key_is_stable_and_order_independent() -> None:
    assert cache.cache_key({"a": 1, "b": "x"}) == cache.cache_key({"b": "x", "a": 1})
    assert cache.cache_key({"a": 1}) != cache.cache_key({"a": 2})


def test_entry_appears_only_after_success(isolated_cache: Path) -> None:
    with cache.produce("things", "k1") as work:
        (work / "out").write_text("done")
        assert cache.lookup("things", "k1") is None
    entry = cache.lookup("things", "k1")
    assert entry is not None and (entry / "out").read_text() == "done"


def test_failure_leaves_nothing_behind(isolated_cache: Path) -> None:
    with pytest.raises(RuntimeError), cache.produce("things", "k2") as work:
        (work / "half").write_text("half-written")
        raise RuntimeError("build failed")
    assert cache.lookup("things", "k2") is None
    assert list((isolated_cache / "things").iterdir()) == []


def test_force_replaces_existing_entry(isolated_cache: Path) -> None:
    with cache.produce("things", "k3") as work:
        (work / "v").write_text("1")
    with cache.produce("things", "k3", force=True) as work:
        (work / "v").write_text("2")
    entry = cache.lookup("things", "k3")
    assert entry is not None and (entry / "v").read_text() == "2"
