"""The typed policy model: a policy file declares flows; a flow runs as one sync per
destination (an :class:`Edge`); each run of an edge is a :class:`FlowRun`.

Everything here is plain data, readable without the sync core: ``fed policy``,
``fed federate`` and whatever shows the federation's state use the same types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.sync.selection import Selection

DELETIONS = ("propagate", "keep")
ON_CONFLICT = ("fail", "skip")
ALL_SITES = "all"
DEFAULT_INTERVAL = 3600.0
#: what a flow run came to: ran (ok, failed), or did not run this pass
RESULTS = ("ok", "failed", "not due", "disabled", "stopped")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw]?)$")


def parse_interval(value: Any) -> float:
    """An interval: seconds (a number) or a duration such as ``30s``, ``10m``, ``1h``,
    ``1d``, ``1w``; at least one second. ValueError says why not."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        found = _DURATION.match(str(value).strip()) if isinstance(value, str) else None
        if found is None:
            raise ValueError(f"{value!r} is not a duration (30s, 10m, 1h, 1d, or seconds)")
        seconds = float(found.group(1)) * _UNITS[found.group(2) or "s"]
    if seconds < 1:
        raise ValueError(f"{value!r} is shorter than one second")
    return seconds


def format_interval(seconds: float) -> str:
    """``600`` -> ``10m``: the largest unit that divides it, else seconds."""
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Flow:
    """One declared flow: what goes from one site to others, how, and how often.

    ``destinations`` is None for ``to: all`` (every site that can take the flow but the
    source; see :func:`federation.policy.checks.edges_of`).
    """

    policy: str
    name: str
    source: str
    destinations: tuple[str, ...] | None
    collections: tuple[str, ...] = ("*",)
    dataset_types: tuple[str, ...] = ("*",)
    where: str | None = None
    bind: tuple[tuple[str, Any], ...] = ()
    release: str | None = None
    files: bool = True
    on_conflict: str = "fail"
    deletions: str = "propagate"
    min_copies: int = 1
    interval: float = DEFAULT_INTERVAL
    enabled: bool = True
    description: str = ""

    @property
    def key(self) -> str:
        """``POLICY/FLOW``: unique in a policies directory."""
        return f"{self.policy}/{self.name}"

    @property
    def to_all(self) -> bool:
        return self.destinations is None

    @property
    def is_release(self) -> bool:
        return self.release is not None

    def selection(self) -> Selection:
        """What each sync of this flow carries (the cursor belongs to it)."""
        if self.release is not None:
            return Selection.make(release=self.release, files=self.files)
        return Selection.make(self.collections, self.dataset_types, self.where,
                              dict(self.bind), self.files)

    def collection_patterns(self) -> tuple[str, ...]:
        """The collection globs this flow writes at its destinations (a release: its
        collection and those below it)."""
        if self.release is not None:
            return (self.release, f"{self.release}/*")
        return self.collections

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"policy": self.policy, "name": self.name,
                                "from": self.source,
                                "to": ALL_SITES if self.to_all else list(self.destinations or ())}
        if self.release is not None:
            data["release"] = self.release
        else:
            data |= {"collections": list(self.collections),
                     "dataset_types": list(self.dataset_types), "where": self.where,
                     "bind": dict(self.bind)}
        return data | {"files": self.files, "on_conflict": self.on_conflict,
                       "deletions": self.deletions, "min_copies": self.min_copies,
                       "interval": format_interval(self.interval),
                       "interval_seconds": self.interval, "enabled": self.enabled,
                       "description": self.description}


@dataclass(frozen=True)
class Policy:
    """One policy file: its flows, in the order written."""

    name: str
    path: Path
    flows: tuple[Flow, ...]
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "file": str(self.path), "description": self.description,
                "flows": [f.to_dict() for f in self.flows]}


@dataclass(frozen=True)
class Edge:
    """One flow from its source into one destination: the unit that runs (one sync)."""

    flow: Flow
    destination: str

    @property
    def source(self) -> str:
        return self.flow.source

    @property
    def key(self) -> str:
        """``POLICY/FLOW->DEST``: names the edge in the state file and in summaries."""
        return f"{self.flow.key}->{self.destination}"

    def describe(self) -> str:
        return f"{self.flow.key} {self.source} -> {self.destination}"


@dataclass(frozen=True)
class FlowRun:
    """What one edge came to in one pass: ``result`` is one of :data:`RESULTS`.

    ``detail`` is one line: what was applied, why it failed, or why it did not run.
    """

    edge: Edge
    result: str
    detail: str = ""
    started: float | None = None
    ended: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    files: int = 0
    bytes: int = 0
    cursor: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def ran(self) -> bool:
        return self.result in ("ok", "failed")

    def to_dict(self) -> dict[str, Any]:
        return {"flow": self.edge.key, "policy": self.edge.flow.policy,
                "name": self.edge.flow.name, "source": self.edge.source,
                "destination": self.edge.destination, "result": self.result,
                "detail": self.detail, "started": self.started, "ended": self.ended,
                "counts": self.counts, "files": self.files, "bytes": self.bytes,
                "cursor": self.cursor, "notes": list(self.notes)}
