"""What a sync, import or receive did (or, dry, would do): counts, conflicts, failed files.

A report holds counts, not objects, so that its size does not grow with the
number of datasets synced; conflicts and failures are kept in full up to
:data:`KEEP` each (and counted beyond).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from federation.errors import ConflictError
from federation.registry.releases import ReleaseCheck
from federation.registry.states import (
    CalibSlotState,
    CollectionRemoval,
    CollectionState,
    DatasetState,
    DatasetTypeState,
    RecordState,
    State,
    TagState,
    identity,
)

KEEP = 1000


@dataclass
class Conflict:
    """A state the destination cannot take, with both sides' values."""

    kind: str
    subject: str
    reason: str
    source: Any = None
    destination: Any = None

    def __str__(self) -> str:
        text = f"{self.kind} {self.subject}: {self.reason}"
        if self.source is not None or self.destination is not None:
            text += f" (source: {self.source}; destination: {self.destination})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "reason": self.reason,
                "source": self.source, "destination": self.destination}


@dataclass
class Plan:
    """What applying a batch would do: an action per state (see
    :mod:`federation.sync.planner`), and the conflicts."""

    actions: list[tuple[State, str]] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)


@dataclass
class Report:
    """Counts by ``"<kind> <action>"``, conflicts, failed files, bytes moved, cursor."""

    counts: Counter = field(default_factory=Counter)
    conflicts: list[Conflict] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (id, path, reason)
    files: int = 0
    bytes: int = 0
    resumed_files: int = 0  # partial downloads continued rather than started over
    resumed_bytes: int = 0
    cursor: int | None = None
    more_conflicts: int = 0  # beyond the ones kept
    notes: list[str] = field(default_factory=list)  # e.g. that a selection matched no dataset
    #: the verifications a release sync ended with, at the destination
    verified: list[ReleaseCheck] = field(default_factory=list)
    #: requests made to Rucio (None: the files did not come through Rucio)
    rucio_requests: int | None = None
    _context_seen: set = field(default_factory=set, repr=False)
    _left_out: set[int] = field(default_factory=set, repr=False)

    def add(self, plan: Plan, failed: set[str] = frozenset()) -> None:
        """Count a planned batch; ``failed``: the datasets whose files failed in it.

        Datasets, memberships and deletions come once per operation; the dimension
        records, dataset types and collections they need come with every batch
        that needs them, and are counted once, by what their first mention did.
        A dataset whose file failed counts once as ``failed``, however many batches
        of the operation bring it (a retry, then the journal); a membership it
        holds back counts once as ``blocked``.
        """
        counts = self.counts
        missing = set(failed) | self.failed_ids  # earlier batches' failures hold back too
        for state, action in plan.actions:
            if type(state) in _CONTEXT:
                ident = _identity(state)
                if ident in self._context_seen:
                    continue
                self._context_seen.add(ident)
            if action not in _SETTLED and refers_to(state, missing):
                self._count_left_out(state)
            else:  # refresh and adopt change versions only: to a user, nothing changed
                shown = "skip" if action in ("refresh", "adopt") else action
                counts[f"{state.kind} {shown}"] += 1
        self.add_conflicts(plan.conflicts)

    def _count_left_out(self, state: State) -> None:
        """A state left out because a file failed: its dataset ``failed``, anything that
        needs it ``blocked``; each counted once per operation."""
        ident = hash(identity(state))
        if ident in self._left_out:
            return
        self._left_out.add(ident)
        action = "failed" if isinstance(state, DatasetState) else "blocked"
        self.counts[f"{state.kind} {action}"] += 1

    def add_conflicts(self, conflicts: Iterable[Conflict]) -> None:
        for conflict in conflicts:
            if len(self.conflicts) >= KEEP:
                self.more_conflicts += 1
            elif conflict not in self.conflicts:
                self.conflicts.append(conflict)

    @property
    def conflict_count(self) -> int:
        return len(self.conflicts) + self.more_conflicts

    @property
    def failed_ids(self) -> set[str]:
        return {dataset_id for dataset_id, _, _ in self.failed}

    def to_dict(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self.counts.items())),
                "conflicts": [c.to_dict() for c in self.conflicts],
                "more_conflicts": self.more_conflicts,
                "failed_files": [{"id": i, "path": p, "reason": r} for i, p, r in self.failed],
                "files": self.files, "bytes": self.bytes,
                "resumed": {"files": self.resumed_files, "bytes": self.resumed_bytes},
                "cursor": self.cursor, "notes": list(self.notes),
                "rucio_requests": self.rucio_requests,
                "verified": [{"release": c.release, "site": c.site, "complete": c.complete,
                              "root": c.root, "files": c.files, "missing": c.missing,
                              "corrupt": c.corrupt, "checked": c.checked}
                             for c in self.verified]}


_CONTEXT = (RecordState, DatasetTypeState, CollectionState, CollectionRemoval)
_SETTLED = ("skip", "conflict", "refused")  # counted as planned, failed file or not


def _identity(state: State) -> int | str:
    """A compact identity of a context state (a hash for a record: its content)."""
    if isinstance(state, RecordState):
        return hash((state.dimension, tuple(sorted(state.record.items(), key=str))))
    return f"{state.kind}:{state.name}"


def refers_to(state: State, ids: set[str]) -> bool:
    """Whether a state names one of the datasets ``ids``."""
    if not ids:
        return False
    if isinstance(state, DatasetState):
        return state.id in ids
    if isinstance(state, TagState):
        return state.dataset_id in ids
    if isinstance(state, CalibSlotState):
        return any(entry[0] in ids for entry in state.entries)
    return False


class SyncConflictError(ConflictError):
    """A sync found conflicts and, with --on-conflict fail, applied nothing."""

    def __init__(self, report: Report) -> None:
        self.report = report
        first = report.conflicts[0]
        more = report.conflict_count - 1
        super().__init__(f"{report.conflict_count} conflict(s), nothing applied: {first}"
                         + (f" (and {more} more; see --dry-run)" if more else ""))
