"""What an audit reads from a registry: file records in pages, every recorded path, and
when earlier audits ran. Reads only; nothing here writes.

File records are read in pages ordered by path (keyset pagination: ``path > last``),
each page a short query of its own, so an audit that takes hours holds no read
transaction open and can resume after the last path it finished.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Iterable, Iterator
from typing import NamedTuple

import sqlalchemy as sa

from federation.registry.database import IN_VALUES, Database

PAGE = 10_000  # file records per query


class FileRecord(NamedTuple):
    """A dataset's file as this registry records it (``held_at``: the site holding it, None
    when it is in this datastore) and when the dataset arrived here."""

    dataset_id: uuid.UUID
    path: str
    size: int
    checksum: str
    held_at: str | None
    arrived: float


class AuditReads:
    """Reads of one registry for ``fed audit`` and ``fed repair``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        t = db.tables
        f, d = t.file, t.dataset
        self._columns = (f.c.dataset_id, f.c.path, f.c.size, f.c.checksum, f.c.held_at,
                         d.c.ingest_date)
        self._base = sa.select(*self._columns).join(d, d.c.id == f.c.dataset_id)

    def _filtered(self, stmt: sa.Select, *, here: bool | None, since: float | None
                  ) -> sa.Select:
        f, d = self.db.tables.file, self.db.tables.dataset
        if here is True:
            stmt = stmt.where(f.c.held_at.is_(None))
        elif here is False:
            stmt = stmt.where(f.c.held_at.is_not(None))
        if since is not None:
            stmt = stmt.where(d.c.ingest_date > since)
        return stmt

    def totals(self, *, here: bool | None = True, since: float | None = None,
               after: str | None = None, ids: Collection[uuid.UUID] | None = None
               ) -> tuple[int, int]:
        """(files, bytes) of the records :meth:`pages` would give (of the datasets ``ids``
        only, if given)."""
        f, d = self.db.tables.file, self.db.tables.dataset
        stmt = self._filtered(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(
            f.c.size), 0)).select_from(f.join(d, d.c.id == f.c.dataset_id)),
            here=here, since=since)
        if after is not None:
            stmt = stmt.where(f.c.path > after)
        if ids is None:
            with self.db.reading() as conn:
                count, total = conn.execute(stmt).one()
            return int(count), int(total)
        rows = list(self.db.select_in(stmt.where(f.c.dataset_id.in_(IN_VALUES)), ids))
        return sum(int(r[0]) for r in rows), sum(int(r[1]) for r in rows)

    def pages(self, *, here: bool | None = True, since: float | None = None,
              after: str | None = None, page: int = PAGE) -> Iterator[list[FileRecord]]:
        """File records ordered by path, a page at a time: those in this datastore (``here``
        True), held at other sites (False) or all (None); of datasets that arrived after
        ``since``; with paths after ``after`` (to resume)."""
        f = self.db.tables.file
        stmt = self._filtered(self._base, here=here, since=since).order_by(f.c.path)
        last = after
        while True:
            query = stmt if last is None else stmt.where(f.c.path > last)
            with self.db.reading() as conn:
                rows = conn.execute(query.limit(page)).all()
            if not rows:
                return
            yield [FileRecord(*row) for row in rows]
            if len(rows) < page:
                return
            last = rows[-1][1]

    def current(self, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, FileRecord]:
        """The file records of these datasets as they stand now (absent: no record)."""
        f = self.db.tables.file
        stmt = self._base.where(f.c.dataset_id.in_(IN_VALUES))
        return {row[0]: FileRecord(*row) for row in self.db.select_in(stmt, dict.fromkeys(ids))}

    def recorded_paths(self) -> Iterator[str]:
        """Every datastore-relative path a file record names (held here or elsewhere) or the
        trash lists (a removed file waiting to be deleted), streamed."""
        t = self.db.tables
        with self.db.reading() as conn:
            for table in (t.file, t.trash):
                for path in conn.execution_options(yield_per=20_000).execute(
                        sa.select(table.c.path)).scalars():
                    if not path.startswith("/"):
                        yield path

    def referenced(self, paths: Iterable[str]) -> set[str]:
        """Which of ``paths`` a file record or the trash names now."""
        t = self.db.tables
        found: set[str] = set()
        for table in (t.file, t.trash):
            stmt = sa.select(table.c.path).where(table.c.path.in_(IN_VALUES))
            found.update(row[0] for row in self.db.select_in(stmt, dict.fromkeys(paths)))
        return found

    def audits(self, site: str, operation: str = "audit") -> Iterator[tuple[float, dict]]:
        """(start, selection) of this site's completed audits (ended ``ok`` or ``failed``),
        newest first."""
        log = self.db.tables.sync_log
        stmt = sa.select(log.c.started, log.c.selection).where(
            log.c.operation == operation, log.c.destination == site,
            log.c.result.in_(["ok", "failed"])).order_by(log.c.id.desc())
        with self.db.reading() as conn:
            rows = conn.execute(stmt).all()
        for started, selection in rows:
            yield started, json.loads(selection)
