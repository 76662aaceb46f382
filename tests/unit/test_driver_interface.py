import pytest

from harness.check.driver import (
    DriverParams,
    parse_pages,
    parse_stats,
    parse_try_alloc,
    parse_verify,
)
from harness.guest import GuestError


def test_pages_and_stats_parse() -> None:
    assert parse_pages("0 4660\n1 4662\n\n") == {0: 4660, 1: 4662}
    assert parse_stats("migrated 12\nputback 3\n")["migrated"] == 12


def test_verify_and_try_alloc_parse_and_reject_garbage() -> None:
    assert parse_verify("checked 4096 mismatches 0\n") == (4096, 0)
    assert parse_try_alloc("order 9 requested 16 succeeded 5\n") == 5
    with pytest.raises(GuestError):
        parse_verify("Segmentation fault")
    with pytest.raises(GuestError):
        parse_try_alloc("order 9")


def test_insmod_args_spell_every_parameter() -> None:
    args = DriverParams(pages=10, movable=False, fragment=8, seed=7).as_insmod_args()
    assert args == "pages=10 movable=0 fragment=8 seed=7"
