"""The federation's status as typed data: sites, flows, (source, destination) pairs,
releases, and the recent sync log. ``fed status --json``, ``fed serve``'s page and its
``/api/status`` all show these, through their ``to_dict``.

How far behind a destination is (:class:`Lag`): the source journal entries after the
destination's cursor for a selection, leaving out changes first made at the destination
itself (it skips them when they come back), and the age of the oldest of them. A
site's journal is one sequence for every selection: entries outside a flow's selection
count too, until the next sync reads past them.

A flow's *standing* is the first of these that holds (:func:`standing_of`):

- ``disabled``: the policy declares it with ``enabled: false``;
- ``unreachable``: its source or destination could not be read in time;
- ``failing``: its last run failed (``failures`` in a row);
- ``lagging``: its destination lacks source journal entries (``behind`` > 0);
- ``stale``: its last success is older than twice its interval;
- ``ok``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from federation.registry.sync_log import LogEntry

STANDINGS = ("disabled", "unreachable", "failing", "lagging", "stale", "ok")
#: a flow is stale when its last success is older than this many intervals
STALE_INTERVALS = 2


def format_age(seconds: float | None) -> str:
    """``75`` -> ``1 min``: a duration for people (empty for None)."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def ago(when: float | None, now: float) -> str:
    """``12 s ago``; empty for None."""
    return "" if when is None else f"{format_age(now - when)} ago"


@dataclass(frozen=True)
class SiteStatus:
    """One site: whether it answered in time, and where its journal stands.

    ``head`` is its last journal entry (a remote site: the last it published), and
    ``last_change`` when that entry was written (unknown for a remote site).
    """

    name: str
    reachable: bool
    transport: str
    registry: str  # sqlite, postgresql, or published (read through its outbox)
    role: str
    head: int | None = None
    last_change: float | None = None
    releases: tuple[str, ...] = ()
    error: str = ""  # why it is unreachable
    note: str = ""  # e.g. a remote site that has published nothing yet
    elapsed: float = 0.0  # seconds it took to answer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"releases": list(self.releases)}


@dataclass(frozen=True)
class Lag:
    """How far a destination is behind its source for one selection.

    ``entries`` None: unknown (a site out of reach). ``cursor`` is where the destination
    stands in the source's journal (None: never synced), ``head`` the source's last entry.
    """

    entries: int | None
    oldest: float | None = None  # when the oldest change it lacks was written
    cursor: int | None = None
    head: int | None = None
    note: str = ""

    @property
    def behind(self) -> bool:
        return bool(self.entries)

    def age(self, now: float) -> float | None:
        return None if self.oldest is None or not self.entries else max(0.0, now - self.oldest)

    def to_dict(self, now: float) -> dict[str, Any]:
        return {"entries": self.entries, "oldest": self.oldest if self.entries else None,
                "age_seconds": self.age(now), "cursor": self.cursor, "head": self.head,
                "note": self.note}


def worst(lags: list[Lag]) -> Lag:
    """The largest lag (an unknown one wins: it may be anything), with the oldest change."""
    if not lags:
        return Lag(0)
    unknown = [lag for lag in lags if lag.entries is None]
    if unknown:
        return unknown[0]
    found = max(lags, key=lambda lag: lag.entries or 0)
    oldest = [lag.oldest for lag in lags if lag.entries and lag.oldest is not None]
    note = found.note if found.entries or all(lag.note == found.note for lag in lags) else ""
    return Lag(found.entries, min(oldest) if oldest else None, found.cursor, found.head, note)


@dataclass(frozen=True)
class FlowStatus:
    """One flow into one destination (``POLICY/FLOW->DEST``), as its destination, its
    source, the federate state and the sync log tell it."""

    key: str
    policy: str
    flow: str
    source: str
    destination: str
    carries: str
    interval: float
    enabled: bool
    lag: Lag
    last_run: float | None = None
    last_result: str | None = None
    last_detail: str = ""
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    failures: int = 0
    next_due: float | None = None
    retries: int | None = None  # files waiting to be retried (None: unknown)
    conflicts: int | None = None  # in its latest logged run (None: never logged)
    conflict_message: str = ""
    unreachable: bool = False

    @property
    def lagging(self) -> bool:
        return self.lag.behind

    def stale(self, now: float) -> bool:
        return self.last_success is not None and \
            now - self.last_success > STALE_INTERVALS * self.interval

    def standing(self, now: float) -> str:
        return standing_of(self, now)

    def to_dict(self, now: float) -> dict[str, Any]:
        return {"flow": self.key, "policy": self.policy, "name": self.flow,
                "source": self.source, "destination": self.destination,
                "carries": self.carries, "interval_seconds": self.interval,
                "enabled": self.enabled, "standing": self.standing(now),
                "lagging": self.lagging, "stale": self.stale(now), "lag": self.lag.to_dict(now),
                "last_run": self.last_run, "last_result": self.last_result,
                "last_detail": self.last_detail, "last_success": self.last_success,
                "last_error": self.last_error, "last_error_at": self.last_error_at,
                "failures": self.failures, "next_due": self.next_due,
                "retries": self.retries, "conflicts": self.conflicts,
                "conflict_message": self.conflict_message}


def standing_of(flow: FlowStatus, now: float) -> str:
    """The first of :data:`STANDINGS` that holds for ``flow`` (see the module's doc)."""
    if not flow.enabled:
        return "disabled"
    if flow.unreachable:
        return "unreachable"
    if flow.failures:
        return "failing"
    if flow.lagging:
        return "lagging"
    if flow.stale(now):
        return "stale"
    return "ok"


@dataclass(frozen=True)
class PairStatus:
    """A destination and one of its sources: the worst lag of the flows between them (of
    the selections synced by hand, when no flow joins them), and the last sync.
    ``selections``: how many selections the destination has synced from the source."""

    source: str
    destination: str
    flows: tuple[str, ...]
    selections: int  # cursors the destination keeps for this source
    lag: Lag
    last_sync: float | None = None
    last_result: str | None = None
    retries: int | None = None

    @property
    def lagging(self) -> bool:
        return self.lag.behind

    def to_dict(self, now: float) -> dict[str, Any]:
        return {"source": self.source, "destination": self.destination,
                "flows": list(self.flows), "selections": self.selections,
                "lagging": self.lagging, "lag": self.lag.to_dict(now),
                "last_sync": self.last_sync, "last_result": self.last_result,
                "retries": self.retries}


@dataclass(frozen=True)
class ReleaseCell:
    """Where one site stands with a release: verified, incomplete, unverified, absent or
    unreachable (see ``fed release status``)."""

    site: str
    state: str
    root: str | None = None
    checked: float | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReleaseStatus:
    """One release across the sites: a row of the completeness matrix."""

    name: str
    home: str | None
    root: str | None
    retracted: bool
    cells: tuple[ReleaseCell, ...]

    @property
    def verified_at(self) -> list[str]:
        return [cell.site for cell in self.cells if cell.state == "verified"]

    def cell(self, site: str) -> ReleaseCell:
        return next((c for c in self.cells if c.site == site), ReleaseCell(site, "absent"))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "home": self.home, "root": self.root,
                "retracted": self.retracted, "verified_at": self.verified_at,
                "sites": {cell.site: cell.to_dict() for cell in self.cells}}


@dataclass(frozen=True)
class LoggedRun:
    """One sync log entry, with the site whose log holds it."""

    site: str
    entry: LogEntry

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site} | self.entry.to_dict()


@dataclass
class FederationStatus:
    """Everything ``fed status`` reports, gathered at ``generated`` in ``elapsed`` s."""

    generated: float
    timeout: float
    sites_dir: str
    policies_dir: str
    state_file: str
    sites: list[SiteStatus] = field(default_factory=list)
    flows: list[FlowStatus] = field(default_factory=list)
    pairs: list[PairStatus] = field(default_factory=list)
    releases: list[ReleaseStatus] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    log: list[LoggedRun] = field(default_factory=list)  # newest first; not in to_dict
    elapsed: float = 0.0

    @property
    def site_names(self) -> list[str]:
        return [site.name for site in self.sites]

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        now = self.generated if now is None else now
        return {"generated": self.generated, "elapsed_seconds": round(self.elapsed, 3),
                "timeout_seconds": self.timeout, "sites_dir": self.sites_dir,
                "policies_dir": self.policies_dir, "state_file": self.state_file,
                "sites": [s.to_dict() for s in self.sites],
                "flows": [f.to_dict(now) for f in self.flows],
                "pairs": [p.to_dict(now) for p in self.pairs],
                "releases": [r.to_dict() for r in self.releases],
                "problems": list(self.problems)}

    def log_dict(self) -> list[dict[str, Any]]:
        return [run.to_dict() for run in self.log]
