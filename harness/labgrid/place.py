"""Acquire a labgrid place, reach its board through labgrid's SSHDriver, release it.

The place is taken through the coordinator exactly as ``labgrid-client -p
PLACE acquire`` takes it (same user and host names, LG_USERNAME and
LG_HOSTNAME included), and given back on every way out of the block: a
failed check, a lost board, ^C. A place someone else holds is refused in one
line that says who holds it; a place the user acquired themselves (or was
allowed onto with ``labgrid-client allow``) is used and left acquired, as
labgrid's own tools leave it.

The board is reached the way ``labgrid-client ssh`` reaches it: a Target
with the place as a RemotePlace (its resources as the coordinator lists them,
with the exporter's proxy details) and an SSHDriver bound to the place's
NetworkService. A board that does not answer fails within labgrid's SSH
connect timeout (LG_SSH_CONNECT_TIMEOUT, 30 s by default) with ssh's reason.
"""

import atexit
import logging
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from labgrid import Target
from labgrid.driver import SSHDriver
from labgrid.driver.exception import ExecutionError
from labgrid.exceptions import NoResourceFoundError
from labgrid.remote.client import ClientSession, start_session
from labgrid.remote.client import Error as ClientError
from labgrid.remote.generated import labgrid_coordinator_pb2 as messages
from labgrid.resource.remote import RemotePlace, RemotePlaceManager
from labgrid.util.ssh import get_ssh_connect_timeout

from harness.errors import HarnessError, notice
from harness.guest import GuestError
from harness.kernel.toolchain import require
from harness.labgrid import PlaceAddress
from harness.labgrid.guest import LabgridGuest


def said(error: ClientError) -> str:
    """What a labgrid client error says, without its "Error: " prefix."""
    return " ".join(str(arg) for arg in error.args)


def must_acquire(place: str, acquired_by: str | None, allowed: Collection[str],
                 me: str) -> bool:
    """True when the place is free (we acquire it, and so release it); False when
    it is already ours (acquired by ``me``, or ``me`` allowed onto it). A place
    someone else holds is refused, naming them and labgrid's way to share it."""
    if not acquired_by:
        return True
    if acquired_by == me or me in allowed:
        return False
    raise HarnessError(f"labgrid place {place} is acquired by {acquired_by}: wait until it is "
                       f"released, or ask them to run `labgrid-client -p {place} allow {me}`")


def unreachable(place: str, where: str, seconds: float, error: BaseException) -> HarnessError:
    """The one line for a board that does not answer SSH: ssh's own last words."""
    cause = error if isinstance(error, ExecutionError) else error.__cause__
    lines = [line.decode(errors="replace").strip() if isinstance(line, bytes) else str(line)
             for line in (getattr(cause, "stdout", None) or [])]
    reason = next((line for line in reversed(lines) if line), str(error))
    return HarnessError(f"labgrid place {place}: its board at {where} did not answer SSH "
                        f"within {seconds:g} s ({reason}): is it powered and booted?")


class _Heard(logging.Handler):
    """Keeps the messages logged while it is attached."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class _Coordinator:
    """One client session with the coordinator, run on labgrid's event loop."""

    def __init__(self, address: PlaceAddress) -> None:
        self.address = address
        # labgrid logs why the coordinator is unreachable on the root logger (which,
        # unconfigured, would print it as a second line): kept for our one line.
        heard = _Heard()
        logging.getLogger().addHandler(heard)
        try:
            self.session: ClientSession = start_session(address.coordinator)
        except (ClientError, OSError) as error:
            reason = (heard.messages[-1] if heard.messages
                      else said(error) if isinstance(error, ClientError) else str(error))
            raise HarnessError(f"cannot reach the labgrid coordinator at {address.coordinator} "
                               f"({reason}): is labgrid-coordinator running there? (set "
                               "LG_COORDINATOR, or use labgrid://HOST:PORT/PLACE)") from None
        finally:
            logging.getLogger().removeHandler(heard)

    @property
    def me(self) -> str:
        """Who acquires, as the coordinator records it: host/user."""
        return f"{self.session.gethostname()}/{self.session.getuser()}"

    def place(self) -> Any:
        """The place the address names (labgrid's name, alias or unique-part matching)."""
        try:
            return self.session.get_place(self.address.place)
        except ClientError as error:
            raise HarnessError(f"labgrid place {self.address.place} on "
                               f"{self.address.coordinator}: {said(error)}") from None

    def call(self, what: str, request: Callable[[], Any]) -> None:
        """Send one request and wait until the coordinator has applied it."""
        loop = self.session.loop
        try:
            loop.run_until_complete(request())
            loop.run_until_complete(self.session.sync_with_coordinator())
        except grpc.aio.AioRpcError as error:
            raise HarnessError(f"the labgrid coordinator refused to {what}: "
                               f"{error.details()}") from None

    def close(self) -> None:
        loop = self.session.loop
        loop.run_until_complete(self.session.stop())
        loop.run_until_complete(self.session.close())


@contextmanager
def acquired(coordinator: _Coordinator) -> Iterator[Any]:
    """The place, acquired for the block (or already ours) and released after it."""
    place = coordinator.place()
    if not must_acquire(place.name, place.acquired, place.allowed, coordinator.me):
        notice(f"labgrid place {place.name} is already acquired by {place.acquired}: "
               "using it, and leaving it acquired")
        yield place
        return
    try:
        coordinator.session.check_matches(place)
    except ClientError as error:
        raise HarnessError(f"labgrid place {place.name}: {said(error)}: is its exporter "
                           "running?") from None
    stub = coordinator.session.stub
    me = coordinator.me

    def release() -> None:
        # Only from us (fromuser): a no-op when the acquire never got through, or
        # someone else won the place in between, so it is safe on every way out.
        coordinator.call(f"release place {place.name}", lambda: stub.ReleasePlace(
            messages.ReleasePlaceRequest(placename=place.name, fromuser=me)))

    try:
        coordinator.call(f"acquire place {place.name}", lambda: stub.AcquirePlace(
            messages.AcquirePlaceRequest(placename=place.name)))
        yield coordinator.place()
    except BaseException as failure:  # ^C included, even halfway through the acquire
        try:
            release()
        except HarnessError as error:  # the failure stays the news; this is a note on it
            failure.add_note(str(error))
        raise
    release()


@contextmanager
def _target(coordinator: _Coordinator, name: str) -> Iterator[Target]:
    """A labgrid Target holding the place's resources, as labgrid-client builds one.

    The RemotePlace manager is one per process: it is pointed at this session
    for the block, and forgets the block's resources after it.
    """
    manager = RemotePlaceManager.get()
    manager.session, manager.loop = coordinator.session, coordinator.session.loop
    target = Target(name)
    try:
        RemotePlace(target, name=name)
        yield target
    finally:
        try:
            target.cleanup()
        finally:
            atexit.unregister(target._atexit_cleanup)
            manager.resources = [r for r in manager.resources if r.target is not target]
            manager.unmanaged_resources = [r for r in manager.unmanaged_resources
                                           if r.target is not target]
            manager.session = None


@contextmanager
def _connected(target: Target, place: str,
               key: Path | None) -> Iterator[tuple[SSHDriver, str, Callable[[], str]]]:
    """An active SSHDriver on the place's NetworkService, where it points, and how to
    connect it again; deactivated (its control connection closed) when the block exits."""
    require("ssh")
    require("scp")
    try:
        ssh = SSHDriver(target, name=None, keyfile=str(key) if key else "",
                        stderr_merge=True)
    except NoResourceFoundError:
        raise HarnessError(f"labgrid place {place} has no NetworkService: the harness "
                           "reaches a board over SSH, so export the board's address as one "
                           "(README: boards in a labgrid lab)") from None
    service = ssh.networkservice
    where = f"{service.username}@{service.address}:{service.port}"
    # Its failed attempts are in our error; without a handler of its own each
    # retry would print through the root logger.
    ssh.logger.addHandler(logging.NullHandler())
    ssh.logger.propagate = False
    # SSHDriver makes a control directory under tempfile's directory for each
    # attempt to connect, and removes only the one that connected: all of
    # them go into a directory of ours instead, removed after the driver.
    scratch = tempfile.mkdtemp(prefix="harness-labgrid-")

    def activate() -> None:
        previous, tempfile.tempdir = tempfile.tempdir, scratch
        try:
            target.activate(ssh)
        except Exception as error:  # labgrid raises a bare Exception on its timeout
            raise unreachable(place, where, get_ssh_connect_timeout(), error) from None
        finally:
            tempfile.tempdir = previous

    def reopen() -> str:
        """Deactivate and activate the driver; what the lost connection's ssh said
        last (labgrid logs its keepalive's output when it stops it)."""
        heard = _Heard()
        ssh.logger.addHandler(heard)
        try:
            target.deactivate(ssh)
        finally:
            ssh.logger.removeHandler(heard)
        said_last = [message.split(": ", 1)[-1] for message in heard.messages
                     if message.startswith("Keepalive ")]
        last_words = f"ssh: {said_last[-1]}" if said_last else "ssh said nothing"
        try:
            activate()
        except HarnessError as error:
            raise GuestError(f"the connection to {place} was lost ({last_words}); {error}") \
                from None
        return last_words

    try:
        activate()
        try:
            yield ssh, where, reopen
        finally:
            target.deactivate(ssh)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def board_on_place(address: PlaceAddress, key: Path | None = None) -> Iterator[LabgridGuest]:
    """A Guest on the board of ``address``'s place, acquired for the block; ``key``
    is the SSH private key (default: the agent and ~/.ssh, as for ``ssh``)."""
    coordinator = _Coordinator(address)
    try:
        with (acquired(coordinator) as place, _target(coordinator, place.name) as target,
              _connected(target, place.name, key) as (ssh, where, reopen)):
            yield LabgridGuest(ssh, ssh, f"labgrid place {place.name} ({where})",
                               close=lambda: target.deactivate(ssh), reopen=reopen)
    finally:
        coordinator.close()
