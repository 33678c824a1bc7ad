"""What the federation's status reads from one registry (read-only): how much of this
journal lies after a cursor, the files each pull must retry, and each operation's latest
run in the sync log.

Status never writes: every method here reads in its own short transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from federation.registry.database import Database
from federation.registry.sync_log import LogEntry, SyncLog

#: the sync log operations that bring changes into their destination
INCOMING = ("sync", "import", "receive", "federate", "push")


@dataclass(frozen=True)
class JournalTail:
    """The journal entries after a cursor: how many, and when the first was written."""

    entries: int
    oldest: float | None  # epoch seconds; None when there is none


@dataclass(frozen=True)
class LatestRun:
    """The latest logged run of one operation between two sites with one selection, and
    when a run of it last ended well."""

    entry: LogEntry
    last_ok: float | None


class StatusReads:
    """Read-only queries for ``fed status`` on one registry database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.t = db.tables

    def tail(self, after: int, exclude_origin: str | None = None) -> JournalTail:
        """The entries after ``after``, leaving out changes first made at
        ``exclude_origin`` (a destination's own changes, which it skips when they come
        back)."""
        j = self.t.journal
        stmt = sa.select(sa.func.count(), sa.func.min(j.c.created_at)).where(j.c.seq > after)
        if exclude_origin is not None:
            stmt = stmt.where(sa.or_(j.c.origin.is_(None), j.c.origin != exclude_origin))
        with self.db.reading() as conn:
            count, oldest = conn.execute(stmt).one()
        return JournalTail(int(count or 0), oldest)

    def written_at(self, seq: int) -> float | None:
        """When journal entry ``seq`` was written (None: no such entry)."""
        j = self.t.journal
        with self.db.reading() as conn:
            return conn.execute(sa.select(j.c.created_at).where(j.c.seq == seq)).scalar()

    def retry_counts(self) -> dict[tuple[str, str], int]:
        """Files waiting to be retried, by (source site, selection key)."""
        r = self.t.sync_retry
        stmt = sa.select(r.c.peer, r.c.selection_key, sa.func.count()).group_by(
            r.c.peer, r.c.selection_key)
        with self.db.reading() as conn:
            return {(peer, key): int(n) for peer, key, n in conn.execute(stmt)}

    def latest_runs(self) -> list[LatestRun]:
        """For every (operation, source, destination, selection) the log holds among the
        operations that bring changes in: its latest finished run, and when one last ended
        ``ok``."""
        t = self.t.sync_log
        groups = (t.c.operation, t.c.source, t.c.destination, t.c.selection)
        finished = t.c.result != "running"
        ok_end = sa.case((t.c.result == "ok", sa.func.coalesce(t.c.ended, t.c.started)))
        latest = sa.select(sa.func.max(t.c.id).label("id"), sa.func.max(ok_end).label("ok")) \
            .where(t.c.operation.in_(INCOMING), finished).group_by(*groups).subquery()
        stmt = sa.select(t, latest.c.ok).join(latest, t.c.id == latest.c.id).order_by(t.c.id)
        with self.db.reading() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [LatestRun(SyncLog._entry(row), row["ok"]) for row in rows]
