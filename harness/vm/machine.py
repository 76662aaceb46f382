"""What QEMU needs per guest architecture, on top of ``harness.arch``.

Boot speed comes from what is *not* there (virtme-ng's lesson): no default
devices, no user config, no VGA, no option ROMs on the NIC. x86_64 keeps
QEMU's SeaBIOS although qboot reaches the kernel about 0.1 s sooner: the guest
kernel has no ACPI (kernel-configs/x86_64.config), so the firmware's MP table
and local APIC set-up are all it learns interrupts from, and qboot's route no
PCI INTx (QEMU's virtio-balloon-pci has no MSI-X and never saw a balloon
target) and deliver no timer tick before the IO-APIC is up (4.8 then hung in
"Calibrating delay loop" whenever its PIT calibration of the TSC failed under
host load: 2 boots in 12). Devices sit on PCI on x86 and on virtio-mmio on
arm64 (the arm64 guest config has no PCI host driver), which is the only
reason device names differ.
"""

import platform
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.arch import Arch, get_arch
from harness.errors import HarnessError

# The arm64 Image header (Documentation/arch/arm64/booting.rst): a 64-bit
# little-endian flags word at byte 24 whose bits 1-2 give the kernel's page
# size (0 unspecified, 1 4K, 2 16K, 3 64K), and the magic "ARM\x64" at byte 56.
_ARM64_MAGIC = b"ARM\x64"
_ARM64_PAGE_SIZES = {1: 4096, 2: 16384, 3: 65536}


def arm64_image_page_size(image: Path) -> int | None:
    """The page size an arm64 Image was built for (None: its header does not say, or
    it is no bare Image, e.g. a compressed one, which QEMU also boots)."""
    try:
        with image.open("rb") as file:
            header = file.read(64)
    except OSError as error:
        raise HarnessError(f"cannot read kernel image {image}: {error.strerror}") from None
    if len(header) < 64 or header[56:60] != _ARM64_MAGIC:
        return None
    flags = int.from_bytes(header[24:32], "little")
    return _ARM64_PAGE_SIZES.get(flags >> 1 & 3)


@dataclass(frozen=True)
class Machine:
    """QEMU arguments and kernel parameters for one guest architecture."""

    arch: Arch
    virtio_suffix: str  # "-pci" (x86_64) or "-device" (arm64 virtio-mmio)
    kernel_params: tuple[str, ...]  # parameters this architecture always needs
    kvm_host: str  # platform.machine() of a host whose KVM runs this guest
    # A QEMU CPU for kernels whose page size the arch's default CPU cannot map.
    cpu_for_page_size: Mapping[int, str] = field(default_factory=dict)

    def virtio(self, device: str) -> str:
        """The QEMU device name of a virtio device, e.g. virtio-net-pci."""
        return f"virtio-{device}{self.virtio_suffix}"

    def kvm_possible(self) -> bool:
        """True when this host's KVM could run this guest at all (same ISA)."""
        return platform.machine() == self.kvm_host

    def for_image(self, image: Path) -> "Machine":
        """This machine with a CPU that can run ``image``: the same one unless the
        image's page size needs another (read from the arm64 Image header, so a
        given ``--image`` gets it too)."""
        if not self.cpu_for_page_size:
            return self
        cpu = self.cpu_for_page_size.get(arm64_image_page_size(image) or 0)
        if cpu is None:
            return self
        args = list(self.arch.qemu_machine)
        args[args.index("-cpu") + 1] = cpu
        return replace(self, arch=replace(self.arch, qemu_machine=tuple(args)))


MACHINES: dict[str, Machine] = {
    "x86_64": Machine(
        arch=get_arch("x86_64"),
        virtio_suffix="-pci",
        kernel_params=(),
        kvm_host="x86_64",
    ),
    "arm64": Machine(
        arch=get_arch("arm64"),
        virtio_suffix="-device",
        # Debian's static glibc calls rseq in every process; arm64 4.8 logs a
        # register dump for each unknown syscall. The kernel passes this on to
        # /init's environment, which glibc reads at start-up.
        kernel_params=("GLIBC_TUNABLES=glibc.pthread.rseq=0",),
        kvm_host="aarch64",
        # QEMU's cortex-a57 has translation granules of 4 and 64 KiB only
        # (ID_AA64MMFR0_EL1.TGran16 = 0): a kernel with 16 KiB pages
        # (kernel-configs/arm64-16k.config) stops before its first console
        # line. cortex-a76 has all three.
        cpu_for_page_size={16384: "cortex-a76"},
    ),
}


def get_machine(arch: str) -> Machine:
    """The machine profile for an arch name or alias (fails with the choices)."""
    return MACHINES[get_arch(arch).name]
