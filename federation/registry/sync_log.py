"""The sync log: every sync, import, receive, publish and push a repository took part in.

An operation is recorded when it starts (``running``) and completed when it
ends, in transactions of their own, so that a failed operation is logged too
and one killed outright shows as ``interrupted`` once the next one starts.
The log is this repository's own: it is never journaled or replicated.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from federation.registry.database import Database

RESULTS = ("running", "ok", "conflict", "failed", "error", "interrupted")


@dataclass
class LogEntry:
    """One operation: who ran it, when, between which sites, what it did, how it ended."""

    operation: str  # sync, import, receive, publish, push
    source: str
    destination: str
    selection: dict[str, Any] = field(default_factory=dict)
    user: str = ""
    started: float = 0.0
    ended: float | None = None
    cursor_from: int | None = None
    cursor_to: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    files: int = 0
    bytes: int = 0
    conflicts: int = 0
    failures: int = 0
    result: str = "running"
    message: str = ""
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "operation": self.operation, "user": self.user,
                "started": self.started, "ended": self.ended, "source": self.source,
                "destination": self.destination, "selection": self.selection,
                "cursor": {"from": self.cursor_from, "to": self.cursor_to},
                "counts": self.counts, "files": self.files, "bytes": self.bytes,
                "conflicts": self.conflicts, "failures": self.failures,
                "result": self.result, "message": self.message}


def who() -> str:
    """user@host of this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class SyncLog:
    """Appends and reads the log of one repository."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.table = db.tables.sync_log

    def start(self, entry: LogEntry) -> LogEntry:
        """Record an operation as running; fills its id, user and start time."""
        entry.user = entry.user or who()
        entry.started = entry.started or time.time()
        entry.result = "running"
        with self.db.transaction() as conn:
            entry.id = conn.execute(sa.insert(self.table).values(**self._row(entry))
                                    .returning(self.table.c.id)).scalar_one()
        return entry

    def finish(self, entry: LogEntry) -> None:
        """Record how a started operation ended."""
        entry.ended = entry.ended or time.time()
        with self.db.transaction() as conn:
            conn.execute(sa.update(self.table).where(self.table.c.id == entry.id)
                         .values(**self._row(entry)))

    def interrupted(self, destination: str) -> int:
        """Mark operations into ``destination`` still 'running' as interrupted (call it under
        the destination's sync lock, when none can really be running); returns how many."""
        with self.db.transaction() as conn:
            return conn.execute(sa.update(self.table).where(
                self.table.c.destination == destination, self.table.c.result == "running")
                .values(result="interrupted")).rowcount

    def entries(self, *, since: float | None = None, site: str | None = None,
                limit: int | None = None) -> list[LogEntry]:
        """Logged operations, oldest first: those started since a time, touching a site."""
        t = self.table
        stmt = sa.select(t).order_by(t.c.id)
        if since is not None:
            stmt = stmt.where(t.c.started >= since)
        if site is not None:
            stmt = stmt.where(sa.or_(t.c.source == site, t.c.destination == site))
        if limit is not None:
            stmt = sa.select(stmt.order_by(t.c.id.desc()).limit(limit).subquery())
        with self.db.reading() as conn:
            rows = conn.execute(stmt).mappings().all()
        found = [self._entry(row) for row in rows]
        return sorted(found, key=lambda e: e.id or 0)

    @staticmethod
    def _row(entry: LogEntry) -> dict[str, Any]:
        return {"operation": entry.operation, "user_host": entry.user,
                "started": entry.started, "ended": entry.ended, "source": entry.source,
                "destination": entry.destination,
                "selection": json.dumps(entry.selection, sort_keys=True),
                "cursor_from": entry.cursor_from, "cursor_to": entry.cursor_to,
                "counts": json.dumps(entry.counts, sort_keys=True), "files": entry.files,
                "bytes": entry.bytes, "conflicts": entry.conflicts,
                "failures": entry.failures, "result": entry.result,
                "message": entry.message[:2000]}

    @staticmethod
    def _entry(row: Any) -> LogEntry:
        return LogEntry(row["operation"], row["source"], row["destination"],
                        json.loads(row["selection"]), row["user_host"], row["started"],
                        row["ended"], row["cursor_from"], row["cursor_to"],
                        json.loads(row["counts"]), row["files"], row["bytes"],
                        row["conflicts"], row["failures"], row["result"], row["message"],
                        row["id"])
