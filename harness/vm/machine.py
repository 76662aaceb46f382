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
from dataclasses import dataclass

from harness.arch import Arch, get_arch


@dataclass(frozen=True)
class Machine:
    """QEMU arguments and kernel parameters for one guest architecture."""

    arch: Arch
    virtio_suffix: str  # "-pci" (x86_64) or "-device" (arm64 virtio-mmio)
    kernel_params: tuple[str, ...]  # parameters this architecture always needs
    kvm_host: str  # platform.machine() of a host whose KVM runs this guest

    def virtio(self, device: str) -> str:
        """The QEMU device name of a virtio device, e.g. virtio-net-pci."""
        return f"virtio-{device}{self.virtio_suffix}"

    def kvm_possible(self) -> bool:
        """True when this host's KVM could run this guest at all (same ISA)."""
        return platform.machine() == self.kvm_host


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
    ),
}


def get_machine(arch: str) -> Machine:
    """The machine profile for an arch name or alias (fails with the choices)."""
    return MACHINES[get_arch(arch).name]
