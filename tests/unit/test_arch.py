import pytest

from harness.arch import get_arch
from harness.errors import HarnessError


@pytest.mark.parametrize("alias,name", [("x86_64", "x86_64"), ("amd64", "x86_64"),
                                        ("aarch64", "arm64"), ("ARM64", "arm64")])
def test_aliases_resolve(alias: str, name: str) -> None:
    assert get_arch(alias).name == name


def test_unknown_arch_is_one_line_with_choices() -> None:
    with pytest.raises(HarnessError) as err:
        get_arch("riscv64")
    assert "\n" not in str(err.value)
    assert "x86_64" in str(err.value) and "arm64" in str(err.value)


def test_arm64_is_cross_compiled_and_x86_is_not() -> None:
    assert get_arch("arm64").cross_compile == "aarch64-linux-gnu-"
    assert get_arch("x86_64").cross_compile == ""
