"""What planning or applying a batch found: actions, conflicts, counts, failed files."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from federation.errors import ConflictError
from federation.sync.states import CalibSlotState, DatasetState, State, TagState, identity


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
    """What applying a batch would do: an action per state, and the conflicts."""

    actions: list[tuple[State, str]] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)



@dataclass
class Report:
    """What a sync or import did (or, dry, would do)."""

    counts: Counter = field(default_factory=Counter)
    conflicts: list[Conflict] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (id, path, reason)
    files: int = 0
    bytes: int = 0
    resumed_files: int = 0  # partial downloads continued rather than started over
    resumed_bytes: int = 0
    cursor: int | None = None
    _seen: set = field(default_factory=set, repr=False)

    def add(self, plan: Plan, failed: set[str] = frozenset()) -> None:
        """Count each object once, however many batches mention it.

        States left out because a file they need failed count as "failed".
        """
        for state, action in plan.actions:
            if refers_to(state, failed):
                self.counts[f"{state.kind} failed"] += 1
                continue
            ident = identity(state)
            if ident not in self._seen:
                self._seen.add(ident)
                self.counts[f"{state.kind} {action}"] += 1
        for conflict in plan.conflicts:
            if conflict not in self.conflicts:
                self.conflicts.append(conflict)

    def to_dict(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self.counts.items())),
                "conflicts": [c.to_dict() for c in self.conflicts],
                "failed_files": [{"id": i, "path": p, "reason": r} for i, p, r in self.failed],
                "files": self.files, "bytes": self.bytes,
                "resumed": {"files": self.resumed_files, "bytes": self.resumed_bytes},
                "cursor": self.cursor}


def refers_to(state: State, ids: set[str]) -> bool:
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
        more = len(report.conflicts) - 1
        super().__init__(f"{len(report.conflicts)} conflict(s), nothing applied: {first}"
                         + (f" (and {more} more; see --dry-run)" if more else ""))
