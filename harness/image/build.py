"""Pack the guest initramfs for one architecture, cached by content.

The image holds Debian's static busybox and dropbear (with its libraries),
the kernel modules to load, and an ``/init`` rendered from ``images/``. The
cache key covers everything that changes the bytes: the arch, the Debian
index the packages come from, the template, this package's code and the
modules. Per-run key material is not in it (see ``harness.image.keys``).
"""

import hashlib
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness import cache
from harness.arch import Arch, get_arch
from harness.artifacts import Initramfs
from harness.debian_archive import index_id
from harness.errors import HarnessError
from harness.image.cpio import CpioWriter
from harness.image.userspace import GUEST_SUITE, collect_userspace, static_busybox
from harness.paths import shipped_dir

READY_MARKER = "harness-guest-ready"  # the console shell is starting
SSH_READY_MARKER = "harness-ssh-ready"  # dropbear listens (printed after READY_MARKER)
MARKER_ONLY_READY = "harness-marker-init"
IMAGE_NAME = "initramfs.cpio"

# Where the per-run overlay puts the secrets /init looks for.
HOST_KEY_PATH = "/etc/dropbear/host_key"
AUTHORIZED_KEYS_PATH = "/root/.ssh/authorized_keys"

# QEMU user networking's fixed addresses; the SSH port is forwarded to it.
GUEST_ADDRESS = "10.0.2.15/24"
GATEWAY = "10.0.2.2"
GUEST_SSH_PORT = 22
COMMAND_CONSOLE = "hvc0"
SSH_SCRIPT_PATH = "/etc/harness/start-ssh"

# Directories every image has, in creation order (parents first).
_DIRECTORIES = (
    ("bin", 0o755), ("sbin", 0o755), ("usr", 0o755), ("usr/bin", 0o755),
    ("usr/sbin", 0o755), ("usr/lib", 0o755), ("lib", 0o755), ("lib64", 0o755),
    ("lib/modules", 0o755),
    ("lib/modules/harness", 0o755), ("etc", 0o755), ("etc/dropbear", 0o700),
    ("etc/harness", 0o755), ("dev", 0o755), ("proc", 0o555), ("sys", 0o555), ("run", 0o755),
    ("tmp", 0o1777), ("var", 0o755), ("var/log", 0o755), ("root", 0o700),
    ("root/.ssh", 0o700),
)

_ETC_FILES = {
    # Mounted by one `mount -a` in /init; debugfs last, inside sysfs.
    "etc/fstab": (
        "proc /proc proc defaults 0 0\n"
        "sysfs /sys sysfs defaults 0 0\n"
        "devtmpfs /dev devtmpfs defaults 0 0\n"
        "debugfs /sys/kernel/debug debugfs defaults 0 0\n"
    ),
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\ntty:x:5:\n",
    "etc/shells": "/bin/sh\n",
}


def images_dir() -> Path:
    """The image templates (images/)."""
    return shipped_dir("images")


def render_template(name: str, **context: object) -> str:
    """Render ``images/<name>``; an undefined variable is an error, not an empty string."""
    # Imported here: a cached image (every boot but the first) needs no template,
    # and jinja2 is a tenth of the imports a `harness run` waits for.
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(images_dir()),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
    )
    try:
        return environment.get_template(name).render(**context)
    except jinja2.TemplateNotFound:
        raise HarnessError(f"image template {images_dir() / name} is missing") from None


def _source_digest(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:20]


def _module_names(modules: Sequence[Path]) -> list[str]:
    names = []
    for module in modules:
        if not module.is_file() or module.suffix != ".ko":
            raise HarnessError(f"kernel module {module} does not exist or is not a .ko file")
        names.append(module.name)
    if len(set(names)) != len(names):
        raise HarnessError("two modules with the same file name cannot go into one image")
    return names


def _context(arch: Arch, modules: Sequence[str]) -> dict[str, object]:
    return {
        "arch": arch.name,
        "hostname": f"harness-{arch.name}",
        "ready_marker": READY_MARKER,
        "ssh_ready_marker": SSH_READY_MARKER,
        "modules": list(modules),
        "net_device": "eth0",
        "guest_address": GUEST_ADDRESS,
        "gateway": GATEWAY,
        "ssh_port": GUEST_SSH_PORT,
        "ssh_port_hex": f"{GUEST_SSH_PORT:04X}",
        "ssh_script": SSH_SCRIPT_PATH,
        "host_key": HOST_KEY_PATH,
        "command_console": COMMAND_CONSOLE,
    }


def init_script(arch: Arch, modules: Sequence[str] = ()) -> str:
    """The rendered ``/init`` for ``arch``."""
    return render_template("init.sh.j2", **_context(arch, modules))


def ssh_script(arch: Arch) -> str:
    """The rendered script /init starts in the background for networking and SSH."""
    return render_template("start-ssh.sh.j2", **_context(arch, ()))


def build_initramfs(arch: str, modules: Sequence[Path] = (), force: bool = False) -> Initramfs:
    """The guest initramfs for ``arch`` with ``modules`` loaded at boot (cached)."""
    profile = get_arch(arch)
    names = _module_names(modules)
    code = sorted(Path(__file__).parent.glob("*.py")) + [
        images_dir() / "init.sh.j2", images_dir() / "start-ssh.sh.j2"]
    key = cache.cache_key({
        "arch": profile.name,
        "suite": GUEST_SUITE,
        "index": index_id(GUEST_SUITE, profile.debian_arch),
        "code": _source_digest(code),
        "modules": [hashlib.sha256(m.read_bytes()).hexdigest() for m in modules],
    })
    entry = None if force else cache.lookup("initramfs", key)
    if entry is None:
        with cache.produce("initramfs", key, force=force) as work:
            _pack(profile, modules, names, work / IMAGE_NAME)
        entry = cache.entry_path("initramfs", key)
    return Initramfs(path=entry / IMAGE_NAME, arch=profile.name, ready_marker=READY_MARKER)


def build_marker_initramfs(arch: str) -> Initramfs:
    """An initramfs whose /init only prints a marker and powers off (cached).

    Busybox alone, no network, no SSH: the floor a boot can reach, and a
    quick test that an accelerator really runs a kernel up to userspace.
    """
    profile = get_arch(arch)
    code = [Path(__file__), Path(__file__).parent / "cpio.py", images_dir() / "marker-init.sh.j2"]
    key = cache.cache_key({
        "arch": profile.name,
        "suite": GUEST_SUITE,
        "index": index_id(GUEST_SUITE, profile.debian_arch),
        "code": _source_digest(code),
    })
    entry = cache.lookup("initramfs-marker", key)
    if entry is None:
        with (cache.produce("initramfs-marker", key) as work,
              (work / IMAGE_NAME).open("wb") as stream):
            archive = CpioWriter(stream)
            for directory in ("bin", "dev"):
                archive.add_dir(directory)
            archive.add_chardev("dev/console", 5, 1, 0o600)
            archive.add_file("bin/busybox", static_busybox(profile.debian_arch), 0o755)
            script = render_template("marker-init.sh.j2", ready_marker=MARKER_ONLY_READY)
            archive.add_file("init", script.encode(), 0o755)
            archive.close()
        entry = cache.entry_path("initramfs-marker", key)
    return Initramfs(path=entry / IMAGE_NAME, arch=profile.name, ready_marker=MARKER_ONLY_READY)


def _pack(arch: Arch, modules: Sequence[Path], names: list[str], out: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix="harness-image-"))
    try:
        userspace = collect_userspace(arch, staging)
        with out.open("wb") as stream:
            archive = CpioWriter(stream)
            for directory, mode in _DIRECTORIES:
                archive.add_dir(directory, mode)
            archive.add_chardev("dev/console", 5, 1, 0o600)
            archive.add_file("init", init_script(arch, names).encode(), 0o755)
            archive.add_file(SSH_SCRIPT_PATH, ssh_script(arch).encode(), 0o755)
            for name, text in _ETC_FILES.items():
                archive.add_file(name, text.encode())
            for name, path in sorted(userspace.files.items()):
                archive.add_file(name, path.read_bytes(), 0o755)
            for applet in userspace.applets:
                archive.add_symlink(f"bin/{applet}", "busybox")
            for module, name in zip(modules, names, strict=True):
                archive.add_file(f"lib/modules/harness/{name}", module.read_bytes())
            archive.close()
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def combine(base: Initramfs, overlays: Sequence[Path], out: Path) -> Initramfs:
    """One initrd file: ``base`` followed by ``overlays`` (the kernel unpacks them in turn).

    QEMU takes a single initrd; the kernel accepts concatenated cpio
    archives, later entries replacing earlier ones.
    """
    with out.open("wb") as stream:
        for part in (base.path, *overlays):
            with part.open("rb") as source:
                shutil.copyfileobj(source, stream)
    return Initramfs(path=out, arch=base.arch, ready_marker=base.ready_marker)
