"""The shared cache's entries: files fetched here on read, with their last read time.

A file read through (see :mod:`federation.cache`) is a *cache entry*: the dataset's
file record turns from "held at site X" to "here", and one row of ``cache_entry``
remembers its size, the site it came from, when it arrived and when it was last
read. Only cache entries count toward the cache's size limit and only they are
evicted; files synced here with files, or written here, are never the cache's.

Read times are written at most once a minute per dataset (:meth:`CacheEntries.touch`
reads first and writes only a stale time), so reading the same file in a loop costs
one indexed read per read, not a write. The table is local to the site and not
journaled (nor are the file's new location or its eviction: a sync tells another
site where a file is held from the file record itself).

The table is additive: a repository gains it on its first read-through; older code
ignores it, and no schema version changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from federation.model import StoredFile
from federation.registry.database import Database, chunked

_metadata = sa.MetaData()
CACHE_ENTRY = sa.Table(
    "cache_entry", _metadata,
    sa.Column("dataset_id", sa.Uuid, primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("source", sa.String(64), nullable=False),  # the site it was fetched from
    sa.Column("fetched", sa.Float, nullable=False),
    sa.Column("last_read", sa.Float, nullable=False, index=True),
)
#: seconds between two writes of one dataset's read time
TOUCH_EVERY = 60.0


@dataclass(frozen=True)
class CacheEntry:
    """A file the cache fetched and holds here."""

    dataset_id: uuid.UUID
    path: str
    size: int
    source: str
    fetched: float
    last_read: float


@dataclass(frozen=True)
class CacheTotals:
    """How many files the cache holds here, their bytes, the oldest and newest reads."""

    files: int = 0
    bytes: int = 0
    oldest_read: float | None = None
    newest_read: float | None = None


class CacheEntries:
    """Reads and writes ``cache_entry`` of one registry (and, on arrival, the file record)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._exists: bool | None = None

    # -- writing ---------------------------------------------------------------------

    def attach(self, dataset_id: uuid.UUID, held: StoredFile, path: str, source: str,
               now: float) -> bool:
        """Record that the file of ``dataset_id``, held elsewhere as ``held``, is now here
        at ``path``, as a cache entry fetched from ``source``. Runs in the caller's write
        transaction (or its own); the file must be in place before it commits.

        Only a record unchanged since the caller read it (still held elsewhere, same size
        and checksum) is changed; returns whether it was.
        """
        f, trash = self.db.tables.file, self.db.tables.trash
        with self.db.transaction() as conn:
            self._create(conn)
            changed = conn.execute(sa.update(f).where(
                f.c.dataset_id == dataset_id, f.c.held_at.is_not(None),
                f.c.size == held.size, f.c.checksum == held.checksum,
            ).values(path=path, held_at=None)).rowcount
            if changed != 1:
                return False
            conn.execute(sa.delete(trash).where(trash.c.path == path))
            conn.execute(sa.delete(CACHE_ENTRY).where(CACHE_ENTRY.c.dataset_id == dataset_id))
            conn.execute(sa.insert(CACHE_ENTRY).values(
                dataset_id=dataset_id, size=held.size, source=source, fetched=now,
                last_read=now))
        return True

    def touch(self, dataset_id: uuid.UUID, now: float, every: float = TOUCH_EVERY) -> bool:
        """Note a read of ``dataset_id`` if it is a cache entry whose read time is older
        than ``every`` seconds; returns whether it is a cache entry."""
        if not self._table_exists():
            return False
        c = CACHE_ENTRY.c
        with self.db.reading() as conn:
            last = conn.execute(sa.select(c.last_read).where(c.dataset_id == dataset_id)).scalar()
        if last is None:
            return False
        if last < now - every:
            with self.db.transaction() as conn:
                conn.execute(sa.update(CACHE_ENTRY).where(
                    c.dataset_id == dataset_id, c.last_read < now).values(last_read=now))
        return True

    def forget(self, ids: Iterable[uuid.UUID]) -> None:
        """Entries whose files are no longer here (evicted, dropped, removed)."""
        ids = list(ids)
        if not ids or not self._table_exists():
            return
        with self.db.transaction() as conn:
            for chunk in chunked(ids):
                conn.execute(sa.delete(CACHE_ENTRY).where(
                    CACHE_ENTRY.c.dataset_id.in_(list(chunk))))

    def prune(self) -> int:
        """Forget entries whose files are no longer here; returns how many."""
        if not self._table_exists():
            return 0
        f = self.db.tables.file
        here = sa.select(f.c.dataset_id).where(f.c.held_at.is_(None))
        with self.db.reading() as conn:
            stale = list(conn.execute(sa.select(CACHE_ENTRY.c.dataset_id).where(
                CACHE_ENTRY.c.dataset_id.not_in(here))).scalars())
        self.forget(stale)
        return len(stale)

    # -- reading ---------------------------------------------------------------------

    def least_recent(self, limit: int | None = None) -> list[CacheEntry]:
        """Entries whose files are here, least recently read first."""
        if not self._table_exists():
            return []
        c, f = CACHE_ENTRY.c, self.db.tables.file
        stmt = (sa.select(c.dataset_id, f.c.path, c.size, c.source, c.fetched, c.last_read)
                .join(f, f.c.dataset_id == c.dataset_id).where(f.c.held_at.is_(None))
                .order_by(c.last_read, c.dataset_id).limit(limit))
        with self.db.reading() as conn:
            return [CacheEntry(*row) for row in conn.execute(stmt)]

    def totals(self) -> CacheTotals:
        """Files and bytes the cache holds here, with their oldest and newest reads."""
        if not self._table_exists():
            return CacheTotals()
        c, f = CACHE_ENTRY.c, self.db.tables.file
        stmt = (sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(c.size), 0),
                          sa.func.min(c.last_read), sa.func.max(c.last_read))
                .join(f, f.c.dataset_id == c.dataset_id).where(f.c.held_at.is_(None)))
        with self.db.reading() as conn:
            files, nbytes, oldest, newest = conn.execute(stmt).one()
        return CacheTotals(int(files), int(nbytes), oldest, newest)

    # -- the table -------------------------------------------------------------------

    def _table_exists(self) -> bool:
        if not self._exists:
            with self.db.reading() as conn:
                self._exists = sa.inspect(conn).has_table("cache_entry")
        return bool(self._exists)

    def _create(self, conn: sa.Connection) -> None:
        if self._exists:
            return
        if not sa.inspect(conn).has_table("cache_entry"):
            # Inside the caller's write transaction: writers are serialized (the journal
            # head is locked first), so two first read-throughs cannot both create it.
            _metadata.create_all(conn, tables=[CACHE_ENTRY])
        self.db.on_commit(lambda: setattr(self, "_exists", True))
