"""Architecture profiles: everything that differs between x86_64 and arm64.

One frozen record per architecture, so that the build, image and VM stages
look facts up instead of branching on the architecture name.
"""

from dataclasses import dataclass

from harness.errors import HarnessError


@dataclass(frozen=True)
class Arch:
    """Build and boot facts for one guest architecture."""

    name: str
    kernel_arch: str  # ARCH= for make; x86_64 (not x86) gives a 64-bit tinyconfig
    cross_compile: str  # CROSS_COMPILE= prefix, empty for the host
    image_path: str  # kernel image relative to the build directory
    debian_arch: str  # architecture name in the Debian archive
    qemu_binary: str
    qemu_package: str  # Debian package that ships qemu_binary
    qemu_machine: tuple[str, ...]  # machine and CPU arguments every boot uses
    serial_console: str  # kernel console= device for the first UART
    compiler_package: str  # Debian package of the C compiler for this target


ARCHES: dict[str, Arch] = {
    "x86_64": Arch(
        name="x86_64",
        kernel_arch="x86_64",
        cross_compile="",
        image_path="arch/x86/boot/bzImage",
        debian_arch="amd64",
        qemu_binary="qemu-system-x86_64",
        qemu_package="qemu-system-x86",
        qemu_machine=("-machine", "q35"),
        serial_console="ttyS0",
        compiler_package="gcc",
    ),
    "arm64": Arch(
        name="arm64",
        kernel_arch="arm64",
        cross_compile="aarch64-linux-gnu-",
        image_path="arch/arm64/boot/Image",
        debian_arch="arm64",
        qemu_binary="qemu-system-aarch64",
        qemu_package="qemu-system-arm",
        qemu_machine=("-machine", "virt,gic-version=2", "-cpu", "cortex-a57"),
        serial_console="ttyAMA0",
        compiler_package="gcc-aarch64-linux-gnu",
    ),
}

_ALIASES = {"amd64": "x86_64", "x86-64": "x86_64", "aarch64": "arm64"}


def get_arch(name: str) -> Arch:
    """Look up an architecture by name or common alias; fail with the choices."""
    key = _ALIASES.get(name.lower(), name.lower())
    try:
        return ARCHES[key]
    except KeyError:
        raise HarnessError(
            f"unknown arch {name!r}: choose one of {', '.join(ARCHES)}"
        ) from None
