"""LKDTM's out-of-tree Kbuild is made from each era's own Makefile text (tests/lkdtm.py)."""

from pathlib import Path

from harness.artifacts import KernelBuild
from tests.lkdtm import CRASHES, DEFAULT, Crash, kbuild, lkdtm_source, missing_detector, offered

# drivers/misc/Makefile of 4.8 (an excerpt: LKDTM's lines among others').
MISC_4_8 = """obj-$(CONFIG_IBM_ASM)		+= ibmasm/
obj-$(CONFIG_LKDTM)		+= lkdtm.o
obj-$(CONFIG_PANEL)             += panel.o

lkdtm-$(CONFIG_LKDTM)		+= lkdtm_core.o
lkdtm-$(CONFIG_LKDTM)		+= lkdtm_rodata_objcopy.o

OBJCOPYFLAGS :=
OBJCOPYFLAGS_lkdtm_rodata_objcopy.o := \\
			--set-section-flags .text=alloc,readonly \\
			--rename-section .text=.rodata
targets += lkdtm_rodata.o lkdtm_rodata_objcopy.o
$(obj)/lkdtm_rodata_objcopy.o: $(obj)/lkdtm_rodata.o FORCE
	$(call if_changed,objcopy)
obj-$(CONFIG_ECHO)		+= echo/
"""
# drivers/misc/lkdtm/Makefile of 7.2 (an excerpt).
LKDTM_7_2 = """obj-$(CONFIG_LKDTM)		+= lkdtm.o

lkdtm-$(CONFIG_LKDTM)		+= core.o
lkdtm-$(CONFIG_PPC_BOOK3S_64)	+= powerpc.o
KASAN_SANITIZE_stackleak.o	:= n
"""


def test_the_4_8_kbuild_keeps_lkdtm_s_lines_with_the_rodata_rule_and_nothing_else() -> None:
    text = kbuild(MISC_4_8, only_lkdtm=True)
    assert text.splitlines() == [
        "obj-m\t\t+= lkdtm.o",
        "lkdtm-y\t\t+= lkdtm_core.o",
        "lkdtm-y\t\t+= lkdtm_rodata_objcopy.o",
        "OBJCOPYFLAGS :=",
        "OBJCOPYFLAGS_lkdtm_rodata_objcopy.o := \\",
        "\t\t\t--set-section-flags .text=alloc,readonly \\",
        "\t\t\t--rename-section .text=.rodata",
        "targets += lkdtm_rodata.o lkdtm_rodata_objcopy.o",
        "$(obj)/lkdtm_rodata_objcopy.o: $(obj)/lkdtm_rodata.o FORCE",
        "\t$(call if_changed,objcopy)",
    ]


def test_a_dedicated_makefile_is_kept_whole_and_built_as_a_module() -> None:
    text = kbuild(LKDTM_7_2, only_lkdtm=False)
    assert "obj-m\t\t+= lkdtm.o" in text and "lkdtm-y\t\t+= core.o" in text
    assert "lkdtm-$(CONFIG_PPC_BOOK3S_64)" in text and "KASAN_SANITIZE_stackleak.o" in text
    assert "CONFIG_LKDTM" not in text


def _kernel(tmp_path: Path, config: str = "") -> KernelBuild:
    (tmp_path / "build").mkdir(exist_ok=True)
    (tmp_path / "build" / ".config").write_text(config)
    return KernelBuild(arch="x86_64", spec="/tree", release="5.10.223", version=(5, 10, 223),
                       image=tmp_path / "bzImage", build_dir=tmp_path / "tree",
                       config=tmp_path / "build" / ".config", system_map=tmp_path / "System.map",
                       make_args=("ARCH=x86_64",), module_fixups=(), cached=True, seconds=0.0)


def test_sources_are_copied_with_a_stand_in_for_the_in_tree_only_export(tmp_path: Path) -> None:
    """native_write_cr4() is exported to an in-tree LKDTM only: out of tree a stand-in
    takes its calls, so modpost finds no undefined symbol."""
    lkdtm = tmp_path / "tree" / "drivers" / "misc" / "lkdtm"
    lkdtm.mkdir(parents=True)
    (lkdtm / "Makefile").write_text(LKDTM_7_2)
    (lkdtm / "core.c").write_text("CRASHTYPE(PANIC), CRASHTYPE(BUG)\n")
    (lkdtm / "bugs.c").write_text("native_write_cr4(cr4); CRASHTYPE(UNSET_SMEP)\n")
    source = lkdtm_source(_kernel(tmp_path), tmp_path / "copy")
    assert sorted(path.name for path in source.iterdir()) == [
        "Kbuild", "bugs.c", "core.c", "lkdtm_no_write_cr4.c"]
    assert "-Dnative_write_cr4=lkdtm_no_write_cr4" in (source / "Kbuild").read_text()
    assert offered(source) == {"PANIC", "BUG", "UNSET_SMEP"}


def test_the_4_8_layout_is_found_in_drivers_misc(tmp_path: Path) -> None:
    misc = tmp_path / "tree" / "drivers" / "misc"
    misc.mkdir(parents=True)
    (misc / "Makefile").write_text(MISC_4_8)
    (misc / "lkdtm_core.c").write_text("CRASHTYPE(PANIC)\n")
    (misc / "lkdtm.h").write_text("")
    (misc / "panel.c").write_text("")
    source = lkdtm_source(_kernel(tmp_path), tmp_path / "copy")
    assert sorted(path.name for path in source.iterdir()) == ["Kbuild", "lkdtm.h",
                                                               "lkdtm_core.c"]


def test_a_crash_needing_a_detector_names_it_when_the_config_lacks_it(tmp_path: Path) -> None:
    kernel = _kernel(tmp_path, "# CONFIG_DEBUG_LIST is not set\n")
    corrupt = Crash("CORRUPT_LIST_ADD", "list corruption", "list_add", needs=("DEBUG_LIST",))
    assert "without CONFIG_DEBUG_LIST" in (missing_detector(corrupt, kernel) or "")
    assert missing_detector(corrupt, _kernel(tmp_path, "CONFIG_DEBUG_LIST=y\n")) is None


def test_the_ci_subset_needs_no_detector_beyond_the_base_config() -> None:
    assert DEFAULT and all(not crash.needs for crash in DEFAULT)
    assert len({crash.name for crash in CRASHES}) == len(CRASHES)
