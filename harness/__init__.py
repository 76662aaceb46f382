"""harness: proves that non-LRU movable driver pages really migrate under compaction.

Stages (one module each, data flows one way):
kernel spec -> source -> config -> build -> KernelBuild
guest-modules/ -> module build;  images/ -> initramfs
QEMU (or an SSH board) -> Guest -> check -> Result -> report
"""

__version__ = "0.1.0"
