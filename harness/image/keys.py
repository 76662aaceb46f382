"""Key material made fresh for every run, packed as a small cpio overlay.

The guest's SSH host key and the client key that may log in as root change
with every boot, so a leaked key is worthless and no image ever contains one.
They travel in a second archive appended to the cached initramfs. The host
key is generated here on the host (dropbear's own key format, by the host's
``dropbearkey``), so its public half is known before the guest boots and the
SSH transport can refuse any other key.
"""

import io
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from harness.errors import HarnessError, MissingTool
from harness.image.build import AUTHORIZED_KEYS_PATH, HOST_KEY_PATH
from harness.image.cpio import CpioWriter


@dataclass(frozen=True)
class RunKeys:
    """One run's keys: the overlay archive and what the host side needs to connect."""

    overlay: Path  # cpio to append after the initramfs
    client_key: Path  # OpenSSH private key the SSH transport logs in with
    host_public_key: str  # "ssh-ed25519 AAAA..." the guest must present


def make_run_keys(directory: Path) -> RunKeys:
    """Generate a host key and a client key in ``directory`` and pack the overlay."""
    if shutil.which("dropbearkey") is None:
        raise MissingTool("dropbearkey", "dropbear-bin", "making the guest's SSH host key")
    directory.mkdir(parents=True, exist_ok=True)
    host_key = directory / "ssh_host_key.dropbear"
    host_key.unlink(missing_ok=True)
    made = subprocess.run(["dropbearkey", "-t", "ed25519", "-f", str(host_key)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        raise HarnessError(f"dropbearkey failed: {made.stderr.strip()}")
    host_public_key = _public_line(made.stdout)

    client = Ed25519PrivateKey.generate()
    client_key = directory / "ssh_client_key"
    client_key.touch(mode=0o600)
    client_key.write_bytes(client.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ))
    client_public = client.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH,
    ).decode()
    (directory / "ssh_client_key.pub").write_text(client_public + " harness\n")
    (directory / "ssh_host_key.pub").write_text(host_public_key + "\n")

    overlay = directory / "keys.cpio"
    buffer = io.BytesIO()
    archive = CpioWriter(buffer)
    for name, mode in (("etc", 0o755), ("etc/dropbear", 0o700), ("root", 0o700),
                       ("root/.ssh", 0o700)):
        archive.add_dir(name, mode)
    archive.add_file(HOST_KEY_PATH, host_key.read_bytes(), 0o600)
    archive.add_file(AUTHORIZED_KEYS_PATH, (client_public + " harness\n").encode(), 0o600)
    archive.close()
    overlay.write_bytes(buffer.getvalue())
    return RunKeys(overlay=overlay, client_key=client_key, host_public_key=host_public_key)


def _public_line(dropbearkey_output: str) -> str:
    """The ``ssh-ed25519 AAAA...`` line of dropbearkey's output, without the comment."""
    for line in dropbearkey_output.splitlines():
        if line.startswith("ssh-"):
            return " ".join(line.split()[:2])
    raise HarnessError("dropbearkey printed no public key")
