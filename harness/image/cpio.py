"""A writer for the newc cpio format the kernel unpacks as its initramfs.

Written in Python rather than driving ``cpio`` because the archive must hold
a device node (``/dev/console``: devtmpfs is not mounted yet when ``/init``
starts, and without the node ``/init`` has no stdout), which ``cpio -o`` can
only copy from a real node that an unprivileged user cannot create; and
because a byte-for-byte reproducible archive (fixed owners, times and inode
numbers) is what makes the image cache content-keyed.
"""

import stat
from pathlib import PurePosixPath
from typing import BinaryIO

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


class CpioWriter:
    """Appends entries to a newc archive; ``close()`` writes the trailer.

    Parent directories are not created implicitly: the caller adds them
    first, in order, as the kernel's unpacker requires.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 1
        self._names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        name = str(PurePosixPath("/", name).relative_to("/")) if name != _TRAILER else name
        if name in self._names:
            raise ValueError(f"duplicate cpio entry {name}")
        self._names.add(name)
        encoded = name.encode() + b"\0"
        fields = (
            self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
            len(encoded), 0,
        )
        self._ino += 1
        header = _MAGIC + b"".join(b"%08X" % value for value in fields)
        self._out.write(header + encoded)
        self._pad(len(header) + len(encoded))
        self._out.write(data)
        self._pad(len(data))

    def _pad(self, length: int) -> None:
        self._out.write(b"\0" * (-length % 4))

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        """A directory."""
        self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """A regular file with ``data`` as contents."""
        self._entry(name, stat.S_IFREG | mode, data)

    def add_symlink(self, name: str, target: str) -> None:
        """A symbolic link to ``target``."""
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def add_chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        """A character device node."""
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def close(self) -> None:
        """Write the trailer that ends the archive (the stream itself stays open)."""
        self._entry(_TRAILER, 0)
