"""Overlay registries: a personal registry layered in SQL over a release's, copying nothing.

The seeds' "MyDB" registry: the release's tables are used as they are, and the
overlay's tables of the same names are views that union the release's rows with the
overlay's own (see :mod:`overlay_sql`). Queries, lookups and chain searches see both;
writes land in the overlay's own tables only; a write to a release row is refused.

- SQLite: the overlay is its own database file; the release's registry file is
  ATTACHed read-only (``mode=ro``) as ``fed_release`` on every connection, and the views
  and triggers are made there as TEMP objects.
- PostgreSQL: the overlay is a schema in the release's database (views cannot reach
  another database), its views and trigger functions persistent in that schema.

The overlay's integer ids start at :data:`ID_BASE`, far above the release's, so rows of
both never share one. Its meta table records what it is layered over
(:class:`ReleaseSource`, key ``overlay``).
"""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from federation.dimensions.universe import DimensionUniverse
from federation.errors import ConfigError
from federation.registry.database import Database, make_engine, shown_url
from federation.registry.overlay_sql import (
    ID_BASE,
    Layering,
    autoincrement_column,
    cascades,
    layered,
    literal,
    own_metadata,
    own_name,
    q,
)
from federation.registry.schema import SCHEMA_VERSION, Tables, tables_for

#: the meta key recording an overlay's :class:`ReleaseSource`
OVERLAY_KEY = "overlay"

#: the name the release's registry file is attached under (SQLite)
ATTACHED = "fed_release"


@dataclass(frozen=True)
class ReleaseSource:
    """The read-only registry an overlay is layered over, and its datastore root.

    ``named``: what the user named (a site, or a release held there: ``release``).
    """

    url: str
    root: str
    site: str
    instance: str
    named: str
    release: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReleaseSource:
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"registry's overlay record is damaged: {exc}") from None


@dataclass(frozen=True)
class ReleaseRegistry:
    """What an overlay needs to know of the release's registry, read from its meta table."""

    site: str
    instance: str
    universe: DimensionUniverse


def read_release(url: str) -> ReleaseRegistry:
    """The release registry at ``url``: its site, instance and universe (current schema
    version only: an overlay's views name its columns)."""
    engine = make_engine(url)
    try:
        meta = Database.read_meta(engine)
    finally:
        engine.dispose()
    if meta.get("schema_version") != str(SCHEMA_VERSION):
        raise ConfigError(
            f"release registry {shown_url(url)} has schema version "
            f"{meta.get('schema_version')}, not {SCHEMA_VERSION}: open it once with this "
            "release of federation (it upgrades) before layering an overlay over it")
    if OVERLAY_KEY in meta:
        raise ConfigError("an overlay cannot be layered over another overlay")
    return ReleaseRegistry(meta["site"], meta["instance"],
                           DimensionUniverse.from_yaml(meta["universe"]))


# -- creation --------------------------------------------------------------------------


def create_overlay(url: str, source: ReleaseSource, *, site: str, owns: Sequence[str],
                   universe: DimensionUniverse) -> str:
    """Create the overlay's tables, views and triggers at ``url`` (an SQLite file, or an
    empty schema of the release's PostgreSQL database); returns its instance id."""
    engine = make_engine(url)
    tables = tables_for(universe)
    instance = uuid.uuid4().hex
    meta = {"schema_version": str(SCHEMA_VERSION), "site": site,
            "universe": universe.to_yaml(), "instance": instance,
            "owns": json.dumps(list(owns)), "role": "repository",
            OVERLAY_KEY: source.to_json()}

    def record(conn: sa.Connection) -> None:  # in the same transaction as the tables
        conn.execute(sa.insert(tables.meta), [{"key": k, "value": v} for k, v in meta.items()])
        conn.execute(sa.insert(tables.journal_head), {"id": 1, "last_seq": 0})

    try:
        if engine.dialect.name == "sqlite":
            _create_sqlite(engine, tables, source, record)
        else:
            _create_postgres(engine, tables, source, url, record)
    finally:
        engine.dispose()
    return instance


def _create_sqlite(engine: sa.Engine, tables: Tables, source: ReleaseSource,
                   record: Callable[[sa.Connection], None]) -> None:
    release_path = _sqlite_file(source.url)
    if release_path is None:
        raise ConfigError(f"the release's registry is at {shown_url(source.url)}: an SQLite "
                          "overlay is layered over an SQLite release only")
    own = own_metadata(tables.metadata)
    with engine.begin() as conn:
        if sa.inspect(conn).has_table("meta"):
            raise ConfigError("database already holds a federation registry")
        own.create_all(conn, checkfirst=False)
        for table in layered(tables.metadata):
            if autoincrement_column(table) and table.dialect_options["sqlite"]["autoincrement"]:
                conn.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:n, :s)"),
                             {"n": own_name(table.name), "s": ID_BASE})
        for parent, pcol, child, ccol in cascades(tables.metadata):
            conn.exec_driver_sql(Layering.sqlite_cascade(parent, pcol, child, ccol))
        _check_ids(tables, release_path)
        record(conn)


def _check_ids(tables: Tables, release_path: Path) -> None:
    """Refuse a release whose ids reach the overlay's range (never, in practice)."""
    conn = sqlite3.connect(_read_only_uri(release_path), uri=True)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table in layered(tables.metadata):
            column = autoincrement_column(table)
            if column is None or table.name not in names:
                continue
            top = conn.execute(f"SELECT max({q(column)}) FROM {q(table.name)}").fetchone()[0]
            if top is not None and top >= ID_BASE:
                raise ConfigError(f"release table {table.name} has ids up to {top}, into the "
                                  f"overlay's range (from {ID_BASE}): cannot layer over it")
    finally:
        conn.close()


def _read_only_uri(path: Path) -> str:
    return f"file:{quote(str(path.resolve()))}?mode=ro"


def _create_postgres(engine: sa.Engine, tables: Tables, source: ReleaseSource, url: str,
                     record: Callable[[sa.Connection], None]) -> None:
    """Every table, view, function and trigger in one round trip (DDL is slow per call)."""
    schema = search_path_schema(url)
    release_engine = make_engine(source.url)
    try:
        with release_engine.connect() as conn:
            release_schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
            release_tables = frozenset(sa.inspect(conn).get_table_names())
            numbered = {t.name: c for t in layered(tables.metadata)
                        if (c := autoincrement_column(t)) and t.name in release_tables}
            tops = conn.execute(sa.text("SELECT " + ", ".join(
                f"(SELECT max({q(c)}) FROM {q(t)})" for t, c in numbered.items()))).one()
    finally:
        release_engine.dispose()
    for name, top in zip(numbered, tops, strict=True):
        if top is not None and top >= ID_BASE:
            raise ConfigError(f"release table {name} has ids up to {top}, into the overlay's "
                              f"range (from {ID_BASE}): cannot layer over it")
    layering = Layering(f"{q(release_schema)}.", f"{q(schema)}.", release_tables, source.root)
    dialect = engine.dialect
    statements = [f"CREATE SCHEMA IF NOT EXISTS {q(schema)}",
                  f"SET LOCAL search_path = {q(schema)}"]
    for table in own_metadata(tables.metadata).sorted_tables:
        statements.append(str(CreateTable(table).compile(dialect=dialect)))
        statements += [str(CreateIndex(i).compile(dialect=dialect)) for i in table.indexes]
    for table in layered(tables.metadata):
        statements.append(layering.view(table, temp=False))
        statements += layering.postgres_triggers(table)
        column = autoincrement_column(table)
        if column is not None:
            sequence = f"{q(schema)}.{q(f'{own_name(table.name)}_{column}_seq')}"
            statements.append(f"SELECT setval({literal(sequence)}, {ID_BASE})")
            statements.append(layering.postgres_default(table, column, sequence))
    for parent, pcol, child, ccol in cascades(tables.metadata):
        statements += layering.postgres_cascade(parent, pcol, child, ccol)
    with engine.begin() as conn:
        if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f"{q(schema)}.meta"}).scalar():
            raise ConfigError("database already holds a federation registry")
        conn.exec_driver_sql(";\n".join(statements))  # search_path: the overlay's schema
        record(conn)


def search_path_schema(url: str) -> str:
    """The schema a PostgreSQL URL's ``options=-csearch_path=NAME`` names."""
    options = sa.engine.make_url(url).query.get("options", "")
    options = " ".join(options) if isinstance(options, tuple) else options
    found = re.search(r"search_path\s*=\s*([^,\s]+)", options)
    if not found:
        raise ConfigError(f"{shown_url(url)} names no schema: an overlay on PostgreSQL is a "
                          "schema of the release's database; add ?options=-csearch_path=NAME")
    return found.group(1).strip('"')


def _sqlite_file(url: str) -> Path | None:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


# -- opening -----------------------------------------------------------------------------


def open_overlay(engine: sa.Engine, meta: dict[str, str], universe: DimensionUniverse
                 ) -> ReleaseSource:
    """Make an opened overlay's engine see the release: on SQLite, attach its registry
    and make the views on every connection. A release that cannot be reached, or that
    was rebuilt since the overlay was layered over it, is a one-line error."""
    source = ReleaseSource.from_json(meta[OVERLAY_KEY])
    if engine.dialect.name == "sqlite":
        path = _sqlite_file(source.url)
        if path is None or not path.is_file():
            raise ConfigError(_unreachable(source, f"no database file {path}"))
        _install_sqlite(engine, path, source.root, layered(tables_for(universe).metadata))
        statement = f"SELECT value FROM {ATTACHED}.meta WHERE key = 'instance'"
    else:
        statement = "SELECT value FROM " + _release_schema(engine) + ".meta WHERE key = " \
            "'instance'"
        _plan_whole_results(engine)
    try:
        with engine.connect() as conn:
            instance = conn.execute(sa.text(statement)).scalar()
    except sa.exc.DBAPIError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise ConfigError(_unreachable(source, reason[0] if reason else type(exc).__name__)
                          ) from None
    if instance != source.instance:
        raise ConfigError(
            f"the release registry of site {source.site} at {shown_url(source.url)} is not "
            f"the one this overlay was layered over (instance {instance}, not "
            f"{source.instance}): it was rebuilt; create the overlay again")
    return source


def _plan_whole_results(engine: sa.Engine) -> None:
    """PostgreSQL: plan streamed queries (server-side cursors) for all their rows, as the
    registry reads them all: planned for their first tenth (the default), joins of the
    union views get fast-start plans that can be a hundred times slower in the end."""

    @sa.event.listens_for(engine, "connect")
    def _whole(dbapi_connection, _record):
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET cursor_tuple_fraction = 1.0")
        dbapi_connection.commit()  # a SET rolled back with its transaction would be lost

    engine.dispose()


def _unreachable(source: ReleaseSource, reason: str) -> str:
    return (f"cannot reach the release registry this overlay is layered over (site "
            f"{source.site}, {shown_url(source.url)}): {reason}")


def _release_schema(engine: sa.Engine) -> str:
    """The schema (quoted) the overlay's views read the release from, as they name it."""
    with engine.connect() as conn:
        definition = conn.execute(sa.text(
            "SELECT definition FROM pg_views WHERE schemaname = current_schema() "
            "AND viewname = 'dataset'")).scalar()
    found = re.search(r'FROM\s+("(?:[^"]|"")+"|\w+)\.dataset', definition or "")
    if not found:
        raise ConfigError("overlay schema lacks its views (damaged): create the overlay again")
    return found.group(1)


def _install_sqlite(engine: sa.Engine, release_path: Path, root: str,
                    tables: list[sa.Table]) -> None:
    """On every new connection: attach the release read-only, make the TEMP views and
    triggers. Connections already pooled are closed, so none lacks them."""
    uri = _read_only_uri(release_path)
    statements: list[str] = []  # written on the first connection, for the next ones too

    @sa.event.listens_for(engine, "connect")
    def _layer(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"ATTACH DATABASE ? AS {ATTACHED}", (uri,))
            cursor.execute(f"PRAGMA {ATTACHED}.cache_size=-65536")  # as the main database's
            if not statements:
                names = {row[0] for row in cursor.execute(
                    f"SELECT name FROM {ATTACHED}.sqlite_master WHERE type = 'table'")}
                layering = Layering(f"{ATTACHED}.", "", frozenset(names), root)
                for table in tables:
                    statements.append(layering.view(table, temp=True))
                    statements.extend(layering.sqlite_triggers(table))
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()

    engine.dispose()
