"""The PLT32 -> PC32 rewrite on a real object file compiled by the host gcc."""

import re
import subprocess
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.kernel.module_fixups import apply_module_fixups

pytestmark = [pytest.mark.needs_program("gcc"), pytest.mark.needs_program("readelf")]

# Calls to external functions: binutils >= 2.31 emits R_X86_64_PLT32 for them,
# exactly like a kernel module calling printk. The data reference stays PC32.
SOURCE = """
extern int printk(const char *fmt, ...);
extern void helper(int);
extern int counter;
int init(void) { helper(counter); return printk("hello %d\\n", 1); }
"""


def relocation_types(obj: Path) -> list[str]:
    output = subprocess.run(["readelf", "-rW", str(obj)], capture_output=True, text=True,
                            check=True).stdout
    return re.findall(r"\b(R_X86_64_\w+)", output)


@pytest.fixture
def module(tmp_path: Path) -> Path:
    source = tmp_path / "mod.c"
    source.write_text(SOURCE)
    obj = tmp_path / "mod.ko"
    subprocess.run(["gcc", "-c", "-O2", "-fno-pic", "-mcmodel=kernel", "-o", str(obj),
                    str(source)], check=True)
    return obj


def test_plt32_becomes_pc32(module: Path) -> None:
    before = relocation_types(module)
    if "R_X86_64_PLT32" not in before:
        pytest.skip("this binutils emits no PLT32 (older than 2.31)")
    mode = module.stat().st_mode
    apply_module_fixups(module, ("x86_64_plt32_to_pc32",))
    after = relocation_types(module)
    assert "R_X86_64_PLT32" not in after
    assert after.count("R_X86_64_PC32") == before.count("R_X86_64_PC32") + before.count(
        "R_X86_64_PLT32")
    assert len(after) == len(before)
    assert module.stat().st_mode == mode
    # Idempotent: a second pass finds nothing to change and leaves the bytes alone.
    content = module.read_bytes()
    apply_module_fixups(module, ("x86_64_plt32_to_pc32",))
    assert module.read_bytes() == content


def test_no_fixups_is_a_no_op(module: Path) -> None:
    content = module.read_bytes()
    apply_module_fixups(module, ())
    assert module.read_bytes() == content


def test_unknown_fixup_and_non_elf(module: Path, tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="unknown module fixup"):
        apply_module_fixups(module, ("nope",))
    text = tmp_path / "not.ko"
    text.write_text("hello")
    with pytest.raises(HarnessError, match="not an ELF file"):
        apply_module_fixups(text, ("x86_64_plt32_to_pc32",))
