"""Fragment parsing and merging, Kconfig scanning and the dropped-option check (no make)."""

from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.kernel.config import (
    KconfigSymbol,
    available_fragments,
    check_config,
    kconfig_symbols,
    load_fragment,
    merge_settings,
    parse_dotconfig,
    parse_fragment,
    raise_if_dropped,
    resolve_fragments,
)

# The shape of 6.1's drivers/virtio/Kconfig: VIRTIO_PCI hides behind the
# VIRTIO_MENU menuconfig that tinyconfig turns off.
VIRTIO_61 = """\
config VIRTIO
\ttristate

menuconfig VIRTIO_MENU
\tbool "Virtio drivers"
\tdefault y

if VIRTIO_MENU

config VIRTIO_PCI
\ttristate "PCI driver for virtio devices"
\tdepends on PCI
\tselect VIRTIO
\thelp
\t  depends on nothing in this help text

endif # VIRTIO_MENU
"""

MM = """\
config VM_EVENT_COUNTERS
\tdefault y
\tbool "Enable VM event counters for /proc/vmstat" if EXPERT

config COMPACTION
\tbool "Allow for memory compaction"
\tdef_bool y
\tselect MIGRATION
\tdepends on MMU

config MIGRATION
\tbool

menu "Debug"
\tdepends on DEBUG_KERNEL

config DEBUG_VM
\tbool "Debug VM"
endmenu

config FORCED
\tdef_bool y
"""

# Recorded from a 6.1 olddefconfig where the fragment asked for VIRTIO_PCI
# and VM_EVENT_COUNTERS but tinyconfig's VIRTIO_MENU=n and a missing line won.
FINAL_61 = """\
CONFIG_MMU=y
CONFIG_PCI=y
CONFIG_COMPACTION=y
CONFIG_MIGRATION=y
# CONFIG_VIRTIO_MENU is not set
# CONFIG_VM_EVENT_COUNTERS is not set
CONFIG_FORCED=y
CONFIG_EXPERT=y
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "linux"
    (root / "drivers" / "virtio").mkdir(parents=True)
    (root / "mm").mkdir()
    (root / "arch" / "x86").mkdir(parents=True)
    (root / "arch" / "arm").mkdir(parents=True)
    (root / "scripts" / "kconfig" / "tests").mkdir(parents=True)
    (root / "drivers" / "virtio" / "Kconfig").write_text(VIRTIO_61)
    (root / "mm" / "Kconfig").write_text(MM)
    (root / "arch" / "x86" / "Kconfig").write_text("config X86_ONLY\n\tdef_bool y\n")
    (root / "arch" / "arm" / "Kconfig").write_text("config ARM_ONLY\n\tdef_bool y\n")
    (root / "scripts" / "kconfig" / "tests" / "Kconfig").write_text("config TESTSYM\n\tbool\n")
    (root / "Kconfig").write_text('mainmenu "Linux"\nsource "mm/Kconfig"\n')
    return root


def test_parse_fragment_values_and_unset() -> None:
    text = '# comment\n\nCONFIG_A=y\nCONFIG_B=m\nCONFIG_C="x y"\nCONFIG_D=0x10\n' \
           "# CONFIG_E is not set\n"
    assert parse_fragment(text, "f") == {"A": "y", "B": "m", "C": '"x y"', "D": "0x10", "E": "n"}


def test_parse_fragment_rejects_garbage() -> None:
    with pytest.raises(HarnessError, match="f line 2: 'COMPACTION=y'"):
        parse_fragment("CONFIG_A=y\nCOMPACTION=y\n", "f")


def test_merge_later_fragment_wins() -> None:
    merged = merge_settings([{"A": "y", "B": "y"}, {"B": "n", "C": "m"}])
    assert merged == {"A": "y", "B": "n", "C": "m"}


def test_resolve_always_base_compaction_arch_then_extras(tmp_path: Path) -> None:
    mine = tmp_path / "mine.config"
    mine.write_text("CONFIG_ZRAM=m\n")
    fragments = resolve_fragments("arm64", ["zram", str(mine), "base"])
    assert [f.name for f in fragments] == ["base", "compaction", "arm64", "zram", str(mine)]
    assert fragments[-1].settings == {"ZRAM": "m"}


def test_unknown_fragment_lists_the_shipped_ones() -> None:
    with pytest.raises(HarnessError, match="unknown config fragment 'zsram'.*balloon.*zram"):
        load_fragment("zsram")


def test_shipped_fragments_parse_and_ask_for_the_essentials() -> None:
    names = available_fragments()
    assert {"base", "compaction", "x86_64", "arm64", "zram", "balloon", "debug"} <= set(names)
    for name in names:
        load_fragment(name)
    for arch in ("x86_64", "arm64"):
        merged = merge_settings(f.settings for f in resolve_fragments(arch))
        for symbol in ("COMPACTION", "MIGRATION", "MODULES", "VM_EVENT_COUNTERS"):
            assert merged[symbol] == "y"


def test_kconfig_scan_tracks_nesting_and_skips_other_arches(tree: Path) -> None:
    symbols = kconfig_symbols(tree, "x86")
    assert symbols["VIRTIO_PCI"].depends == ("VIRTIO_MENU", "PCI")
    assert symbols["VIRTIO_PCI"].has_prompt
    assert symbols["DEBUG_VM"].depends == ("DEBUG_KERNEL",)
    assert symbols["VM_EVENT_COUNTERS"].has_prompt
    assert not symbols["MIGRATION"].has_prompt
    assert "X86_ONLY" in symbols
    assert "ARM_ONLY" not in symbols and "TESTSYM" not in symbols


def test_dropped_options_are_named_with_the_reason(tree: Path) -> None:
    requested = {"COMPACTION": "y", "MIGRATION": "y", "VIRTIO_PCI": "y",
                 "VM_EVENT_COUNTERS": "y", "FORCED": "n", "VIRTIO_MENU": "y",
                 "NOT_IN_THIS_TREE": "y"}
    check = check_config(requested, parse_dotconfig(FINAL_61), lambda: kconfig_symbols(tree, "x86"))
    assert check.unknown == ("NOT_IN_THIS_TREE",)
    dropped = {item.symbol: item for item in check.dropped}
    assert set(dropped) == {"VIRTIO_PCI", "VM_EVENT_COUNTERS", "FORCED", "VIRTIO_MENU"}
    assert dropped["VIRTIO_PCI"].reason == "unmet dependency: VIRTIO_MENU"
    assert dropped["FORCED"].reason.startswith("forced on")
    with pytest.raises(HarnessError) as error:
        raise_if_dropped(check, Path("/b/.config"))
    message = str(error.value)
    assert "\n" not in message
    assert "CONFIG_VIRTIO_PCI wanted y, got not set (unmet dependency: VIRTIO_MENU)" in message
    assert "CONFIG_VM_EVENT_COUNTERS wanted y, got not set" in message
    assert "/b/.config" in message


def unread() -> dict[str, KconfigSymbol]:
    """A Kconfig scan that must not happen: every request held, nothing to explain."""
    raise AssertionError("the tree's Kconfig files were read although every request held")


def test_everything_kept_passes_without_reading_the_tree() -> None:
    final = parse_dotconfig(FINAL_61 + "CONFIG_VIRTIO_MENU=y\nCONFIG_VIRTIO_PCI=m\n")
    requested = {"COMPACTION": "y", "VIRTIO_PCI": "m", "DEBUG_VM": "n"}
    check = check_config(requested, final, unread)
    assert check.dropped == () and check.unknown == ()
    raise_if_dropped(check, Path("/b/.config"))


def test_unset_request_satisfied_by_an_invisible_symbol() -> None:
    # DEBUG_VM does not appear in .config at all when its menu is hidden: that is "n";
    # so does a symbol this tree does not define at all.
    check = check_config({"DEBUG_VM": "n", "NOT_IN_THIS_TREE": "n"},
                         parse_dotconfig(FINAL_61), unread)
    assert check.dropped == () and check.unknown == ()
