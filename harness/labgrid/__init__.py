"""Boards in a labgrid lab: ``labgrid://PLACE`` as a harness target.

A lab that runs labgrid already knows its boards as *places* on a
*coordinator*: an exporter next to the boards publishes their resources (a
``NetworkService`` for SSH, a serial port, power), a place groups one board's
resources, and whoever acquires the place has the board to themselves until
they release it. ``labgrid-client -p PLACE ...`` is how people reach a board,
with the coordinator taken from ``LG_COORDINATOR`` (default 127.0.0.1:20408).

The target is spelled the way labgrid's own command line names a board:
``labgrid://PLACE``, the coordinator from ``LG_COORDINATOR``; or, to name it
in one string as ``ssh://`` does (a CI job's settings, a result's target
field), ``labgrid://HOST:PORT/PLACE``. labgrid's other convention,
``--lg-env FILE`` (its pytest plugin), was not taken: an environment file
describes drivers and strategies for labgrid's own tests and expects the place
acquired beforehand by hand, while the harness needs only a place to acquire,
reach over SSH, and release; and a single ``--target`` value works the same for
``harness run`` and for the pytest plugin, next to ``qemu`` and ``ssh://``.

labgrid is an optional extra (``pip install 'harness[labgrid]'``): only this
target imports it, through :func:`open_board`.
"""

import importlib.util
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.labgrid.guest import LabgridGuest

SCHEME = "labgrid"
DEFAULT_COORDINATOR = "127.0.0.1:20408"  # labgrid-client's and labgrid-exporter's default
INSTALL_HINT = "pip install 'harness[labgrid]' (labgrid >= 24, with its gRPC coordinator)"


@dataclass(frozen=True)
class PlaceAddress:
    """Which place on which coordinator: parsed from ``labgrid://[HOST:PORT/]PLACE``."""

    place: str
    coordinator: str

    @classmethod
    def parse(cls, url: str, environ: Mapping[str, str] = os.environ) -> "PlaceAddress":
        """``labgrid://PLACE`` (coordinator from LG_COORDINATOR) or
        ``labgrid://HOST:PORT/PLACE``; anything else is refused with the two forms."""
        usage = (f"{url!r} is not a labgrid place: use labgrid://PLACE (coordinator from "
                 "LG_COORDINATOR) or labgrid://HOST:PORT/PLACE")
        parts = urlsplit(url)
        if parts.scheme != SCHEME or not parts.netloc or parts.query or parts.fragment:
            raise HarnessError(usage)
        if not parts.path:
            return cls(place=parts.netloc,
                       coordinator=environ.get("LG_COORDINATOR") or DEFAULT_COORDINATOR)
        place = parts.path[1:]
        if not place or "/" in place:
            raise HarnessError(usage)
        return cls(place=place, coordinator=parts.netloc)

    def __str__(self) -> str:
        return f"labgrid://{self.coordinator}/{self.place}"


def open_board(address: PlaceAddress,
               key: Path | None = None) -> AbstractContextManager["LabgridGuest"]:
    """Acquire ``address``'s place, reach its board with labgrid's SSHDriver, and
    release the place when the block exits (harness.labgrid.place.board_on_place)."""
    if importlib.util.find_spec("labgrid") is None:
        raise HarnessError(f"a labgrid:// target needs labgrid: {INSTALL_HINT}")
    from harness.labgrid.place import board_on_place

    return board_on_place(address, key)
