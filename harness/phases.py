"""Wall time per phase of one scenario run: the one recorder every step times itself with.

Why it exists: the whole check costs several times the kernel's own work
(bench/results/check.json against bench/bare_cycle.py), and only a time per
phase, kept in every result, says which phase holds a run back: boot, the
driver's load, each snapshot, each probe, the compaction, the reads over the
transport, the teardown. So a run records them as it goes, into its evidence
(saved, re-read by ``harness report``), not in scattered clock calls.

Names are plain strings in run order. A phase inside a group (a round of the
sample A/B) is named ``group/step`` (GROUP_SEPARATOR), and the group is a
phase of its own too, so the top level always adds up to the run and the
report can show the steps of each group side by side.
"""

import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

GROUP_SEPARATOR = "/"
P = ParamSpec("P")
T = TypeVar("T")


class Phases:
    """Records seconds per named phase into ``seconds`` (a mapping it shares, such
    as an Evidence's), under ``prefix`` when it is a group's recorder.

    A name recorded twice gets `` #2``, `` #3``, ... so no time is overwritten.
    """

    def __init__(self, seconds: MutableMapping[str, float], prefix: str = "") -> None:
        self.seconds = seconds
        self.prefix = prefix

    def record(self, name: str, seconds: float) -> str:
        """Store ``seconds`` for ``name``, to the millisecond (finer is noise on a
        shared machine, and it keeps saved files short); the name it was stored under."""
        key = f"{self.prefix}{name}"
        if key in self.seconds:
            key = next(f"{key} #{n}" for n in range(2, 10**6)
                       if f"{key} #{n}" not in self.seconds)
        self.seconds[key] = round(seconds, 3)
        return key

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as ``name``, however it ends (a failed phase keeps its time:
        how long it ran before failing is part of the story)."""
        began = time.monotonic()
        try:
            yield
        finally:
            self.record(name, time.monotonic() - began)

    def timed(self, name: str, step: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``step(*args, **kwargs)`` timed as ``name``: one step, one line."""
        with self.phase(name):
            return step(*args, **kwargs)

    @contextmanager
    def group(self, name: str) -> Iterator["Phases"]:
        """Time the block as ``name`` and yield the recorder of its steps
        (``name/step``)."""
        with self.phase(name):
            yield Phases(self.seconds, f"{self.prefix}{name}{GROUP_SEPARATOR}")


def top_level(seconds: Mapping[str, float]) -> dict[str, float]:
    """The phases outside any group, in run order: what adds up to the run."""
    return {name: value for name, value in seconds.items() if GROUP_SEPARATOR not in name}


def grouped(seconds: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """The steps of each group, {group: {step: seconds}}, both in run order."""
    groups: dict[str, dict[str, float]] = {}
    for name, value in seconds.items():
        group, separator, step = name.partition(GROUP_SEPARATOR)
        if separator:
            groups.setdefault(group, {})[step] = value
    return groups
