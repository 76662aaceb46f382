"""Post-link fixups that make a freshly built .ko loadable by an old kernel.

Kernel quirks (harness.kernel.quirks) name these; the module build stage
applies them to every .ko it builds for that kernel. Rewriting the module is
preferred to patching the kernel: the user's tree and the booted kernel stay
exactly what the user gave.
"""

import struct
from collections.abc import Callable
from pathlib import Path

from harness.errors import HarnessError
from harness.paths import write_atomically

_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_EM_X86_64 = 62
_SHT_RELA = 4
_R_X86_64_PC32 = 2
_R_X86_64_PLT32 = 4
_RELA_SIZE = 24  # Elf64_Rela: r_offset, r_info, r_addend


def _elf64_le(data: bytearray, path: Path, machine: int) -> None:
    if data[:4] != b"\x7fELF":
        raise HarnessError(f"{path} is not an ELF file")
    if data[4] != _ELFCLASS64 or data[5] != _ELFDATA2LSB:
        raise HarnessError(f"{path} is not a little-endian ELF64 object")
    (e_machine,) = struct.unpack_from("<H", data, 0x12)
    if e_machine != machine:
        raise HarnessError(f"{path} is for ELF machine {e_machine}, not {machine}")


def _rela_sections(data: bytearray) -> list[tuple[int, int]]:
    """(offset, size) of every SHT_RELA section of an ELF64 little-endian file."""
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = []
    for index in range(shnum):
        base = shoff + index * shentsize
        (sh_type,) = struct.unpack_from("<I", data, base + 4)
        sh_offset, sh_size = struct.unpack_from("<QQ", data, base + 0x18)
        if sh_type == _SHT_RELA:
            sections.append((sh_offset, sh_size))
    return sections


def plt32_to_pc32(data: bytearray, path: Path) -> int:
    """Turn every R_X86_64_PLT32 relocation into R_X86_64_PC32; return how many.

    binutils >= 2.31 emits PLT32 for calls to external functions. Kernels
    before 4.16 (upstream b21ebf2fb4cd, never in 4.8.y) reject it with
    "Unknown rela relocation: 4". In a module there is no PLT: the loader
    resolves PLT32 exactly like PC32 (S + A - P), which is what 4.16 does too.
    """
    _elf64_le(data, path, _EM_X86_64)
    changed = 0
    for offset, size in _rela_sections(data):
        for entry in range(offset, offset + size - _RELA_SIZE + 1, _RELA_SIZE):
            (r_info,) = struct.unpack_from("<Q", data, entry + 8)
            if r_info & 0xFFFFFFFF == _R_X86_64_PLT32:
                struct.pack_into("<Q", data, entry + 8, (r_info & ~0xFFFFFFFF) | _R_X86_64_PC32)
                changed += 1
    return changed


FIXUPS: dict[str, Callable[[bytearray, Path], int]] = {
    "x86_64_plt32_to_pc32": plt32_to_pc32,
}


def apply_module_fixups(ko: Path, fixups: tuple[str, ...]) -> None:
    """Apply the named fixups to ``ko`` in place (atomically: a crash leaves the old file)."""
    unknown = [name for name in fixups if name not in FIXUPS]
    if unknown:
        raise HarnessError(
            f"unknown module fixup(s) {', '.join(unknown)}: known are {', '.join(FIXUPS)}"
        )
    if not fixups:
        return
    data = bytearray(ko.read_bytes())
    changed = sum(FIXUPS[name](data, ko) for name in fixups)
    if not changed:
        return
    write_atomically(ko, bytes(data), mode=ko.stat().st_mode & 0o7777)
