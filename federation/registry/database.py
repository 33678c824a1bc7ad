"""Connections, transactions and the change journal of one registry database.

Write transactions are serialized on both databases (SQLite: ``BEGIN
IMMEDIATE``; PostgreSQL: a row lock on the journal head), so journal
sequence numbers are strictly increasing in commit order and check-then-write
logic (overlapping certifications, slot conflicts) cannot race.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from federation.dimensions.universe import DimensionUniverse
from federation.errors import CollectionError, ConfigError, SchemaVersionError
from federation.interrupts import interrupts_held
from federation.registry.journal import Change, ReleaseChecked, decode, encode
from federation.registry.journal import JournalEntry as Entry
from federation.registry.overlay_sql import READ_ONLY_MARK
from federation.registry.schema import SCHEMA_VERSION, Tables, tables_for

CHUNK = 1000  # values per IN (...) list: well under both databases' parameter limits


def chunked(items: Sequence, size: int = CHUNK) -> Iterator[Sequence]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


#: the values of an ``IN`` list given at execution (``column.in_(IN_VALUES)``): the
#: statement is compiled once, however many values and chunks it runs with
IN_VALUES = sa.bindparam("in_values", expanding=True)


def make_engine(url: str) -> sa.Engine:
    """An engine for a SQLite or PostgreSQL URL, set up for this registry."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(f"invalid database URL {url!r}") from None
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, connect_args={"timeout": 60})
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return sa.create_engine(parsed, pool_pre_ping=True)
    raise ConfigError(
        f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql")


def same_database(a: str, b: str) -> bool:
    """Whether two registry URLs name the same database (SQLite: the same file)."""
    try:
        first, second = sa.engine.make_url(a), sa.engine.make_url(b)
    except sa.exc.ArgumentError:
        return False
    if first.get_backend_name() != second.get_backend_name():
        return False
    if first.get_backend_name() == "sqlite":
        return Path(first.database or "").resolve() == Path(second.database or "").resolve()
    return (first.host, first.port or 5432, first.database, first.username,
            dict(first.query)) == (second.host, second.port or 5432, second.database,
                                   second.username, dict(second.query))


def shown_url(url: str) -> str:
    """A database URL for messages, without its password."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return repr(url)


def _configure_sqlite(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB: bulk inserts into big indexes
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get("federation_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


#: older schema versions a registry is upgraded from when opened
UPGRADABLE = ("2", "3")


class Database:
    """One registry database: schema, transactions and journal appends."""

    def __init__(self, engine: sa.Engine, universe: DimensionUniverse) -> None:
        self.engine = engine
        self.universe = universe
        self.tables: Tables = tables_for(universe)
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._local = threading.local()
        #: ``release``: a release site, written only by syncs (and its own verifications)
        self.role = "repository"
        #: layered over a release's registry (see :mod:`federation.registry.overlay`)
        self.overlay = False

    # -- creation and opening ------------------------------------------------

    @staticmethod
    def read_meta(engine: sa.Engine) -> dict[str, str]:
        """The ``meta`` table, read without knowing the universe yet."""
        meta = sa.table("meta", sa.column("key"), sa.column("value"))
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.select(meta.c.key, meta.c.value)).all()
        except sa.exc.OperationalError as exc:
            raise ConfigError(f"cannot open registry database: {_first_line(exc)}") from None
        except sa.exc.ProgrammingError:
            raise ConfigError("database holds no federation registry (no 'meta' table)") from None
        except sa.exc.DatabaseError as exc:  # e.g. a file that is not an SQLite database
            raise ConfigError(f"cannot open registry database: {_first_line(exc)}") from None
        return dict(rows)

    def upgrade(self, meta: dict[str, str]) -> None:
        """Bring a registry of an older schema this release can upgrade up to date: version
        2 gains the release tables, version 3 the site of each verification (added,
        nothing changed)."""
        found = meta.get("schema_version")
        if found not in UPGRADABLE:
            return
        t = self.tables
        with self.engine.begin() as conn:
            if found == "2":
                t.metadata.create_all(conn, tables=[
                    t.release, t.release_entry, t.release_node, t.release_check])
            else:
                conn.execute(sa.text("ALTER TABLE release_check ADD COLUMN site "
                                     "VARCHAR(64) NOT NULL DEFAULT ''"))
                conn.execute(sa.update(t.release_check).values(site=meta.get("site", "")))
            conn.execute(sa.update(t.meta).where(t.meta.c.key == "schema_version")
                         .values(value=str(SCHEMA_VERSION)))
        meta["schema_version"] = str(SCHEMA_VERSION)

    @staticmethod
    def check_version(meta: dict[str, str]) -> None:
        found = meta.get("schema_version")
        if found is None:
            raise SchemaVersionError(
                "registry records no schema version (damaged or not a federation registry); "
                f"this federation release reads schema version {SCHEMA_VERSION}")
        if found != str(SCHEMA_VERSION):
            raise SchemaVersionError(
                f"registry schema version {found} is not supported: this federation "
                f"release reads schema version {SCHEMA_VERSION}"
            )

    def create(self, site: str, owns: Sequence[str] = (), role: str = "repository") -> str:
        """Create every table and record the schema version, universe, site, the
        collection prefixes the site owns, its role and a new instance id (returned)."""
        instance = uuid.uuid4().hex
        with self.engine.begin() as conn:
            if sa.inspect(conn).has_table("meta"):
                raise ConfigError("database already holds a federation registry")
            self.tables.metadata.create_all(conn)
            conn.execute(sa.insert(self.tables.meta), [
                {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                {"key": "site", "value": site},
                {"key": "universe", "value": self.universe.to_yaml()},
                {"key": "instance", "value": instance},
                {"key": "owns", "value": json.dumps(list(owns))},
                {"key": "role", "value": role},
            ])
            conn.execute(sa.insert(self.tables.journal_head), {"id": 1, "last_seq": 0})
        return instance

    # -- transactions --------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """A write transaction; nested calls join the outer one. Ctrl-C waits for it
        to end (see :mod:`federation.interrupts`).

        Callbacks registered with :meth:`on_commit` run after a successful
        commit only (used to keep in-memory caches truthful).
        """
        current = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        self._local.callbacks, self._local.rollbacks = [], []
        with interrupts_held():  # Ctrl-C: after the commit or rollback, not inside a call
            try:
                with self.engine.connect() as conn:
                    conn = conn.execution_options(federation_write=True)
                    with conn.begin():
                        self._local.conn = conn
                        try:
                            self._lock_journal(conn)
                            yield conn
                        finally:
                            self._local.conn = None
            except BaseException as exc:
                for callback in self._local.rollbacks:
                    callback()
                if READ_ONLY_MARK in str(getattr(exc, "orig", "")):  # an overlay's release row
                    raise CollectionError(_first_line(exc)) from None
                raise
            for callback in self._local.callbacks:
                callback()

    @contextmanager
    def reading(self) -> Iterator[sa.Connection]:
        """A connection for reads: the open write transaction or pinned snapshot, if any."""
        current = getattr(self._local, "conn", None) or getattr(self._local, "pinned", None)
        if current is not None:
            yield current
            return
        with self.engine.connect() as conn:
            yield conn

    def select_in(self, stmt: sa.Select, values: Iterable[Any]) -> Iterator[sa.Row]:
        """Rows of ``stmt`` (written with ``column.in_(IN_VALUES)``) for all ``values``,
        a chunk of them per execution."""
        values = list(values)
        if not values:
            return
        with self.reading() as conn:
            for chunk in chunked(values):
                yield from conn.execute(stmt, {"in_values": list(chunk)})

    @contextmanager
    def pinned(self) -> Iterator[sa.Connection]:
        """One read snapshot for every read of this thread inside the block.

        Writers go on meanwhile; nothing they commit is seen here. A sync reads
        its source in one such snapshot, so that the journal head and the
        states it sends describe the same moment.
        """
        current = getattr(self._local, "conn", None) or getattr(self._local, "pinned", None)
        if current is not None:
            yield current
            return
        with self.engine.connect() as conn:
            if not self.is_sqlite:
                conn = conn.execution_options(isolation_level="REPEATABLE READ",
                                              postgresql_readonly=True)
            with conn.begin():
                # The first read fixes the snapshot (SQLite: a deferred BEGIN's read lock).
                conn.execute(sa.select(self.tables.journal_head.c.last_seq)).all()
                self._local.pinned = conn
                try:
                    yield conn
                finally:
                    self._local.pinned = None

    def current(self) -> sa.Connection:
        """The connection of the open write transaction (an error outside one)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            raise RuntimeError("no write transaction is open")
        return conn

    def on_commit(self, callback: Callable[[], None]) -> None:
        if getattr(self._local, "conn", None) is None:
            callback()
        else:
            self._local.callbacks.append(callback)

    def on_rollback(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` if the current transaction rolls back."""
        if getattr(self._local, "conn", None) is not None:
            self._local.rollbacks.append(callback)

    def _lock_journal(self, conn: sa.Connection) -> None:
        """PostgreSQL: serialize writers on the journal head row (SQLite: BEGIN IMMEDIATE)."""
        if not self.is_sqlite:
            head = self.tables.journal_head
            conn.execute(sa.select(head.c.last_seq).where(head.c.id == 1).with_for_update())

    # -- bulk writes ---------------------------------------------------------

    def bulk_insert(self, table: sa.Table, columns: Sequence[str],
                    rows: Sequence[Sequence[Any]], *, prepared: bool = False) -> None:
        """Insert many rows (tuples in ``columns`` order) in the current transaction.

        Bypasses per-row SQLAlchemy parameter processing: SQLite gets one
        ``executemany``, PostgreSQL a ``COPY`` for large batches. A unique or
        foreign-key violation raises the driver's ``IntegrityError``. With
        ``prepared`` the values are already in the driver's form (see
        :meth:`uuid_value`).
        """
        if not rows:
            return
        conn = self._local.conn
        cursor = conn.connection.driver_connection.cursor()
        names = ", ".join(f'"{c}"' for c in columns)
        try:
            if self.is_sqlite:
                if not prepared:
                    rows = _process(rows, [table.c[c].type.bind_processor(conn.dialect)
                                           for c in columns])
                marks = ", ".join("?" for _ in columns)
                cursor.executemany(f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})', rows)
            elif len(rows) < 64:
                marks = ", ".join("%s" for _ in columns)
                cursor.executemany(f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})', rows)
            else:
                with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
                    for row in rows:
                        copy.write_row(row)
        finally:
            cursor.close()

    def uuid_value(self, value: uuid.UUID) -> Any:
        """A UUID in the driver's form for :meth:`bulk_insert` (hex text on SQLite)."""
        return value.hex if self.is_sqlite else value

    @property
    def integrity_errors(self) -> tuple[type[Exception], ...]:
        """Exceptions meaning a constraint was violated (driver's or SQLAlchemy's)."""
        return (self.engine.dialect.dbapi.IntegrityError, sa.exc.IntegrityError)

    # -- journal -------------------------------------------------------------

    _JOURNAL_COLUMNS = ("seq", "kind", "payload", "created_at", "origin", "origin_seq")

    @contextmanager
    def importing(self, origin: str, origin_seq: int) -> Iterator[None]:
        """Journal the changes made inside as coming from ``origin``'s change ``origin_seq``."""
        previous = getattr(self._local, "origin", None)
        self._local.origin = (origin, origin_seq)
        try:
            yield
        finally:
            self._local.origin = previous

    @contextmanager
    def replicating(self) -> Iterator[None]:
        """Changes made inside apply what another site sent (a sync, an import)."""
        previous = getattr(self._local, "replicating", False)
        self._local.replicating = True
        try:
            yield
        finally:
            self._local.replicating = previous

    def append(self, changes: Sequence[Change]) -> int:
        """Append one journal entry per change inside the current transaction.

        Returns the *version* of the first: its sequence number at the site where
        it was first made (here, unless inside :meth:`importing`). A release site
        refuses local changes (all but its verifications), rolling back the write.
        """
        origin = getattr(self._local, "origin", None)
        if self.role == "release" and origin is None and changes and not getattr(
                self._local, "replicating", False) and any(
                type(c) is not ReleaseChecked for c in changes):
            raise CollectionError("this is a release site: it holds releases synced from "
                                  "their sites and refuses local writes")
        if not changes:
            return origin[1] if origin else 0
        conn = self._local.conn
        head = self.tables.journal_head
        last = conn.execute(
            sa.update(head).where(head.c.id == 1)
            .values(last_seq=head.c.last_seq + len(changes))
            .returning(head.c.last_seq)).scalar_one()
        first = last - len(changes) + 1
        now = time.time()
        site, origin_seq = origin if origin else (None, None)
        rows = [(first + i, change.kind, encode(change), now, site, origin_seq)
                for i, change in enumerate(changes)]
        self.bulk_insert(self.tables.journal, self._JOURNAL_COLUMNS, rows)
        return origin_seq if origin else first

    def append_replicated(self, changes: Sequence[tuple[Change, str, int]]) -> None:
        """Append entries for changes made elsewhere, each with its origin site and its
        version there (a bulk :meth:`importing` + :meth:`append`), in the current
        transaction."""
        if not changes:
            return
        conn = self._local.conn
        head = self.tables.journal_head
        last = conn.execute(
            sa.update(head).where(head.c.id == 1)
            .values(last_seq=head.c.last_seq + len(changes))
            .returning(head.c.last_seq)).scalar_one()
        first = last - len(changes) + 1
        now = time.time()
        rows = [(first + i, change.kind, encode(change), now, origin, version)
                for i, (change, origin, version) in enumerate(changes)]
        self.bulk_insert(self.tables.journal, self._JOURNAL_COLUMNS, rows)

    def entries(self, after: int = 0, upto: int | None = None) -> Iterator[Entry]:
        """Stream typed journal entries after a cursor (up to ``upto``), oldest first."""
        j = self.tables.journal
        stmt = sa.select(j.c.seq, j.c.kind, j.c.payload, j.c.created_at, j.c.origin,
                         j.c.origin_seq).where(j.c.seq > after).order_by(j.c.seq)
        if upto is not None:
            stmt = stmt.where(j.c.seq <= upto)
        with self.reading() as conn:
            for seq, kind, payload, created, origin, origin_seq in conn.execution_options(
                    yield_per=5000).execute(stmt):
                yield Entry(seq, created, origin, seq if origin_seq is None else origin_seq,
                            decode(kind, payload))

    def head(self) -> int:
        """The last journal sequence number, as the current transaction sees it."""
        head = self.tables.journal_head
        return self.current().execute(sa.select(head.c.last_seq)).scalar_one()

    def last_seq(self) -> int:
        head = self.tables.journal_head
        with self.reading() as conn:
            return conn.execute(sa.select(head.c.last_seq)).scalar_one()


def _process(rows: Sequence[Sequence[Any]], processors: list) -> Sequence[Sequence[Any]]:
    """Apply SQLAlchemy bind processors (e.g. UUID -> hex on SQLite) to the columns needing one."""
    active = [(i, p) for i, p in enumerate(processors) if p is not None]
    if not active:
        return rows
    result = []
    for row in rows:
        row = list(row)
        for i, processor in active:
            if row[i] is not None:
                row[i] = processor(row[i])
        result.append(row)
    return result


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
