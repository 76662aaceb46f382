"""What QEMU needs per guest architecture, on top of ``harness.arch``.

Boot speed comes from what is *not* there (virtme-ng's lesson): no default
devices, no user config, no VGA, no option ROMs on the NIC, and on x86 the
tiny qboot firmware instead of SeaBIOS when it is installed (unless a device
needs the PCI INTx routing only SeaBIOS describes). Devices sit on
PCI on x86 and on virtio-mmio on arm64 (the arm64 guest config has no PCI host
driver), which is the only reason device names differ.
"""

import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.arch import Arch, get_arch


@dataclass(frozen=True)
class Machine:
    """QEMU arguments and kernel parameters for one guest architecture."""

    arch: Arch
    virtio_suffix: str  # "-pci" (x86_64) or "-device" (arm64 virtio-mmio)
    firmware: tuple[tuple[Path, str], ...]  # (file, package) pairs tried in order
    intx_only_devices: tuple[str, ...]  # QEMU devices without MSI-X: need routed INTx
    kernel_params: tuple[str, ...]  # parameters this architecture always needs
    kvm_host: str  # platform.machine() of a host whose KVM runs this guest

    def virtio(self, device: str) -> str:
        """The QEMU device name of a virtio device, e.g. virtio-net-pci."""
        return f"virtio-{device}{self.virtio_suffix}"

    def firmware_args(self, devices: Sequence[str] = ()) -> list[str]:
        """``-bios`` for the first installed firmware, or nothing for QEMU's default.

        ``devices`` are the extra ``-device`` values: one that interrupts only
        by INTx needs QEMU's default firmware (see intx_only_devices).
        """
        if any(device.split(",")[0] in self.intx_only_devices for device in devices):
            return []
        for path, _package in self.firmware:
            if path.is_file():
                return ["-bios", str(path)]
        return []

    def kvm_possible(self) -> bool:
        """True when this host's KVM could run this guest at all (same ISA)."""
        return platform.machine() == self.kvm_host


MACHINES: dict[str, Machine] = {
    "x86_64": Machine(
        arch=get_arch("x86_64"),
        virtio_suffix="-pci",
        # qboot jumps straight to the kernel; SeaBIOS (QEMU's default) spends
        # noticeably longer before it, so it is only the fallback.
        firmware=((Path("/usr/share/qemu/qboot.rom"), "qemu-system-data"),),
        # The guest kernel has no ACPI (kernel-configs/x86_64.config), so PCI
        # INTx routing comes from the firmware's MP table: qboot's has none,
        # SeaBIOS's has. Every virtio-pci device QEMU makes interrupts by MSI-X
        # except the balloon, which has no MSI-X at all (measured: with qboot it
        # never sees a balloon target; with SeaBIOS it inflates).
        intx_only_devices=("virtio-balloon-pci",),
        kernel_params=(),
        kvm_host="x86_64",
    ),
    "arm64": Machine(
        arch=get_arch("arm64"),
        virtio_suffix="-device",
        firmware=(),
        intx_only_devices=(),
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
