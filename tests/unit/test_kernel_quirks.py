import pytest

from harness.kernel.config import parse_fragment
from harness.kernel.quirks import (
    QUIRKS,
    Quirk,
    config_lines,
    make_vars,
    module_fixups,
    select_quirks,
)

GCC12, BINUTILS240 = (12, 2), (2, 40)


def names(version: tuple[int, int, int], arch: str, gcc: tuple[int, int] = GCC12,
          binutils: tuple[int, int] = BINUTILS240) -> list[str]:
    return [quirk.name for quirk in select_quirks(version, arch, gcc, binutils)]


def test_48_arm64_needs_fcommon_hostcc() -> None:
    quirks = select_quirks((4, 8, 15), "arm64", GCC12, BINUTILS240)
    assert [q.name for q in quirks] == ["dtc-yylloc-fcommon"]
    assert make_vars(quirks) == ("HOSTCC=gcc -fcommon",)
    assert module_fixups(quirks) == ()


def test_48_x86_64_needs_plt32_fixup_and_no_kaslr() -> None:
    quirks = select_quirks((4, 8, 15), "x86_64", GCC12, BINUTILS240)
    assert make_vars(quirks) == ()
    assert module_fixups(quirks) == ("x86_64_plt32_to_pc32",)
    settings = parse_fragment(config_lines(quirks), "quirks")
    assert settings == {"RANDOMIZE_BASE": "n", "STACK_VALIDATION": "n"}


@pytest.mark.parametrize(
    ("version", "arch", "expected"),
    [
        ((5, 6, 19), "arm64", ["dtc-yylloc-fcommon"]),
        ((5, 7, 0), "arm64", []),  # upstream fix
        ((4, 13, 16), "x86_64", ["x86_64-plt32-relocations", "x86_64-old-objtool"]),
        ((4, 15, 18), "x86_64", ["x86_64-plt32-relocations", "x86_64-old-objtool",
                                 "x86_64-orc-needs-objtool"]),
        ((4, 16, 0), "x86_64", ["x86_64-old-objtool", "x86_64-orc-needs-objtool"]),
        ((4, 19, 300), "x86_64", ["x86_64-old-objtool", "x86_64-orc-needs-objtool"]),
        ((5, 0, 0), "x86_64", []),
        ((5, 10, 223), "x86_64", []),
        ((5, 10, 223), "arm64", []),
        ((6, 1, 176), "x86_64", []),
        ((6, 1, 176), "arm64", []),
    ],
)
def test_version_ranges(version: tuple[int, int, int], arch: str, expected: list[str]) -> None:
    assert names(version, arch) == expected


def test_toolchain_conditions() -> None:
    assert names((4, 8, 15), "arm64", gcc=(9, 4)) == []  # -fcommon was still the default
    # binutils 2.30 emits no PLT32 yet; objtool's build still breaks on today's make.
    assert names((4, 8, 15), "x86_64", binutils=(2, 30)) == ["x86_64-old-objtool"]


def test_quirk_table_is_consistent() -> None:
    seen = set()
    for quirk in QUIRKS:
        assert quirk.name not in seen
        seen.add(quirk.name)
        assert quirk.since < quirk.until and quirk.reason and quirk.arches
        assert quirk.make_vars or quirk.config or quirk.module_fixups
        parse_fragment(config_lines([quirk]), quirk.name)


def test_conflicting_make_vars_are_a_table_bug() -> None:
    one = Quirk("a", "r", ("arm64",), (4, 8, 0), (5, 0, 0), make_vars=(("HOSTCC", "gcc -x"),))
    two = Quirk("b", "r", ("arm64",), (4, 8, 0), (5, 0, 0), make_vars=(("HOSTCC", "gcc -y"),))
    with pytest.raises(ValueError, match="HOSTCC"):
        make_vars([one, two])
