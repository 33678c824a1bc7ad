"""The SQL of an overlay registry: its own tables, and views that union them with a
release's, with triggers routing writes to its own rows (see :mod:`overlay`).

For every *layered* table ``t`` of the registry schema an overlay holds a real table
``own_t`` (same columns, keys and indexes, no foreign keys: a row of its own may point
at a release row) and a view ``t``::

    SELECT <columns> FROM <release>.t  UNION ALL  SELECT <columns> FROM own_t

so that the registry's code, which reads and writes ``t``, works unchanged. ``INSTEAD
OF`` triggers on the view insert into ``own_t`` (refusing a key the release already
holds, as a unique constraint would), and update or delete ``own_t`` rows -- a release
row is refused with :data:`READ_ONLY_MARK` in the message. Deleting an ``own_`` row
cascades as the schema's ``ON DELETE CASCADE`` foreign keys would.

The release's ``file`` rows show their relative paths under the release's datastore
root (absolute paths, which the datastore reads in place and never deletes).

Tables of the repository's own life (its meta, journal, tombstones, trash, cursors,
sync log) are not layered: the overlay has its own under their usual names.

SQLite: views and triggers are TEMP objects made on each connection (a view of the main
database may not name an attached one); PostgreSQL: they live in the overlay's schema.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

#: tables an overlay has of its own only (never layered over the release's)
OWN_ONLY = frozenset({"meta", "journal_head", "journal", "dataset_tombstone",
                      "collection_tombstone", "trash", "sync_cursor", "sync_retry",
                      "sync_log"})

#: first value of an overlay's integer ids: far above any release's (checked at creation;
#: fits PostgreSQL's INTEGER columns)
ID_BASE = 2**30

#: in the error of a write that would change a release row
READ_ONLY_MARK = "read-only release"

#: unique keys not checked against the release: its file paths are under another root
_UNCHECKED_KEYS = {("file", ("path",))}


def own_name(table: str) -> str:
    return f"own_{table}"


def layered(metadata: sa.MetaData) -> list[sa.Table]:
    """The registry tables an overlay layers, in dependency order."""
    return [t for t in metadata.sorted_tables if t.name not in OWN_ONLY]


def own_metadata(metadata: sa.MetaData) -> sa.MetaData:
    """The overlay's real tables: the own-only ones under their names, and ``own_t`` for
    every layered ``t``; no foreign keys (they may point at release rows)."""
    md = sa.MetaData()
    for table in metadata.sorted_tables:
        name = table.name if table.name in OWN_ONLY else own_name(table.name)
        prefix = "" if table.name in OWN_ONLY else "own_"
        columns = [sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable,
                             autoincrement=c.autoincrement, server_default=c.server_default)
                   for c in table.columns]
        extras: list = [sa.UniqueConstraint(*[c.name for c in u.columns],
                                            name=prefix + u.name if u.name else None)
                        for u in table.constraints if isinstance(u, sa.UniqueConstraint)]
        copy = sa.Table(name, md, *columns, *extras,
                        sqlite_autoincrement=table.dialect_options["sqlite"]["autoincrement"])
        for index in table.indexes:
            sa.Index(prefix + (index.name or f"ix_{table.name}_{index.columns[0].name}"),
                     *[copy.c[c.name] for c in index.columns], unique=index.unique)
    return md


def unique_keys(table: sa.Table) -> list[tuple[str, ...]]:
    """Column sets a row must not share with a release row: primary and unique keys."""
    keys = [tuple(c.name for c in table.primary_key.columns)] if table.primary_key else []
    keys += [tuple(c.name for c in u.columns) for u in table.constraints
             if isinstance(u, sa.UniqueConstraint)]
    keys += [tuple(c.name for c in i.columns) for i in table.indexes if i.unique]
    return [k for k in dict.fromkeys(keys) if k and (table.name, k) not in _UNCHECKED_KEYS]


def row_key(table: sa.Table) -> tuple[str, ...]:
    """The columns naming one row: its primary key (all columns if it has none)."""
    return tuple(c.name for c in table.primary_key.columns) or tuple(table.columns.keys())


def autoincrement_column(table: sa.Table) -> str | None:
    """The integer surrogate key the database numbers, if the table has one."""
    pk = list(table.primary_key.columns)
    if len(pk) == 1 and isinstance(pk[0].type, sa.Integer) and pk[0].autoincrement in (
            True, "auto") and not pk[0].foreign_keys:
        return pk[0].name
    return None


def cascades(metadata: sa.MetaData) -> list[tuple[str, str, str, str]]:
    """(parent, parent column, child, child column) of each ``ON DELETE CASCADE`` key
    between layered tables."""
    found = []
    for table in layered(metadata):
        for fk in table.foreign_keys:
            if fk.ondelete and fk.ondelete.upper() == "CASCADE" \
                    and fk.column.table.name not in OWN_ONLY:
                found.append((fk.column.table.name, fk.column.name, table.name,
                              fk.parent.name))
    return found


def q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Layering:
    """How to write the views and triggers of one overlay.

    ``release``/``own``: the qualifiers of the release's tables and the overlay's own
    (``release.``/``""`` on SQLite, ``"schema".`` on PostgreSQL); ``release_tables``:
    the tables the release has (one it lacks, being older, is the overlay's alone);
    ``release_root``: the release's datastore root.
    """

    release: str
    own: str
    release_tables: frozenset[str]
    release_root: str

    def view(self, table: sa.Table, *, temp: bool) -> str:
        columns = ", ".join(q(c) for c in table.columns.keys())
        own = f"SELECT {columns} FROM {self.own}{q(own_name(table.name))}"
        body = own
        if table.name in self.release_tables:
            shown = ", ".join(self._release_column(table.name, c) for c in table.columns.keys())
            body = f"SELECT {shown} FROM {self.release}{q(table.name)} UNION ALL {own}"
        where = "" if temp else self.own
        return f"CREATE {'TEMP ' if temp else ''}VIEW {where}{q(table.name)} AS {body}"

    def _release_column(self, table: str, column: str) -> str:
        if (table, column) != ("file", "path"):
            return q(column)
        root = literal(self.release_root.rstrip("/") + "/")
        # CAST: the same type (SQLite: affinity) as the own rows' column, so that SQLite
        # may still flatten the view into a join
        return (f"CAST(CASE WHEN substr(path, 1, 1) = '/' THEN path ELSE {root} || path END "
                "AS TEXT) AS path")

    def _in_release(self, table: sa.Table, columns: tuple[str, ...], row: str) -> str:
        match = " AND ".join(f"{q(c)} = {row}.{q(c)}" for c in columns)
        return f"EXISTS (SELECT 1 FROM {self.release}{q(table.name)} WHERE {match})"

    def _assignments(self, table: sa.Table) -> str:
        return ", ".join(f"{q(c)} = NEW.{q(c)}" for c in table.columns.keys())

    def _own_row(self, table: sa.Table) -> str:
        return " AND ".join(f"{q(c)} = OLD.{q(c)}" for c in row_key(table))

    def _values(self, table: sa.Table) -> str:
        values = []
        for column in table.columns:
            value = f"NEW.{q(column.name)}"
            default = column.server_default
            if isinstance(default, sa.DefaultClause) and isinstance(default.arg, str):
                value = f"COALESCE({value}, {literal(default.arg)})"
            values.append(value)
        return ", ".join(values)

    def _read_only(self, table: sa.Table) -> str:
        return literal(f"{READ_ONLY_MARK}: this {table.name} row belongs to the release this "
                       "overlay is layered over; write into your own collections instead")

    # -- SQLite: TEMP triggers, made on each connection ---------------------------------

    def sqlite_triggers(self, table: sa.Table) -> list[str]:
        name, own = table.name, q(own_name(table.name))
        columns = ", ".join(q(c) for c in table.columns.keys())
        checks = ""
        if name in self.release_tables:
            checks = "".join(
                f"SELECT RAISE(ABORT, {literal(f'UNIQUE constraint failed: {name} (release)')})"
                f" WHERE {self._in_release(table, key, 'NEW')}; "
                for key in unique_keys(table))
        guard = ""
        if name in self.release_tables:
            guard = (f"SELECT RAISE(ABORT, {self._read_only(table)}) "
                     f"WHERE {self._in_release(table, row_key(table), 'OLD')}; ")
        return [
            f"CREATE TEMP TRIGGER {q(name + '_insert')} INSTEAD OF INSERT ON {q(name)} BEGIN "
            f"{checks}INSERT INTO {own} ({columns}) VALUES ({self._values(table)}); END",
            f"CREATE TEMP TRIGGER {q(name + '_update')} INSTEAD OF UPDATE ON {q(name)} BEGIN "
            f"{guard}UPDATE {own} SET {self._assignments(table)} WHERE {self._own_row(table)};"
            " END",
            f"CREATE TEMP TRIGGER {q(name + '_delete')} INSTEAD OF DELETE ON {q(name)} BEGIN "
            f"{guard}DELETE FROM {own} WHERE {self._own_row(table)}; END",
        ]

    @staticmethod
    def sqlite_cascade(parent: str, parent_column: str, child: str, child_column: str) -> str:
        """A permanent trigger of the overlay's file: its own rows' cascades."""
        return (f"CREATE TRIGGER {q(f'own_cascade_{parent}_{child}_{child_column}')} "
                f"AFTER DELETE ON {q(own_name(parent))} BEGIN DELETE FROM "
                f"{q(own_name(child))} WHERE {q(child_column)} = OLD.{q(parent_column)}; END")

    # -- PostgreSQL: functions and triggers in the overlay's schema ----------------------

    def postgres_triggers(self, table: sa.Table) -> list[str]:
        name, own = table.name, f"{self.own}{q(own_name(table.name))}"
        columns = ", ".join(q(c) for c in table.columns.keys())
        checks = guard = ""
        if name in self.release_tables:
            checks = "".join(
                f"IF {self._in_release(table, key, 'NEW')} THEN RAISE EXCEPTION "
                f"{literal(f'duplicate key value violates unique constraint on {name}: the release holds it')}"  # noqa: E501
                " USING ERRCODE = 'unique_violation'; END IF; "
                for key in unique_keys(table))
            guard = (f"IF {self._in_release(table, row_key(table), 'OLD')} THEN RAISE "
                     f"EXCEPTION {self._read_only(table)} USING ERRCODE = "
                     "'integrity_constraint_violation'; END IF; ")
        bodies = {
            "insert": f"{checks}INSERT INTO {own} ({columns}) VALUES ({self._values(table)}); "
                      "RETURN NEW;",
            "update": f"{guard}UPDATE {own} SET {self._assignments(table)} "
                      f"WHERE {self._own_row(table)}; RETURN NEW;",
            "delete": f"{guard}DELETE FROM {own} WHERE {self._own_row(table)}; RETURN OLD;",
        }
        statements = []
        for op, body in bodies.items():
            function = f"{self.own}{q(f'fed_{name}_{op}')}"
            statements.append(f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql "
                              f"AS $fed$ BEGIN {body} END $fed$")
            statements.append(f"CREATE TRIGGER {q(f'{name}_{op}')} INSTEAD OF {op.upper()} "
                              f"ON {self.own}{q(name)} FOR EACH ROW EXECUTE FUNCTION "
                              f"{function}()")
        return statements

    def postgres_cascade(self, parent: str, parent_column: str, child: str,
                         child_column: str) -> list[str]:
        function = f"{self.own}{q(f'fed_cascade_{parent}_{child}_{child_column}')}"
        return [
            f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $fed$ BEGIN "
            f"DELETE FROM {self.own}{q(own_name(child))} WHERE {q(child_column)} = "
            f"OLD.{q(parent_column)}; RETURN OLD; END $fed$",
            f"CREATE TRIGGER {q(f'cascade_{child}_{child_column}')} AFTER DELETE ON "
            f"{self.own}{q(own_name(parent))} FOR EACH ROW EXECUTE FUNCTION {function}()",
        ]

    def postgres_default(self, table: sa.Table, column: str, sequence: str) -> str:
        """The view numbers a new row from the own table's sequence, so that ``INSERT ...
        RETURNING id`` through it sees the id."""
        return (f"ALTER VIEW {self.own}{q(table.name)} ALTER COLUMN {q(column)} SET DEFAULT "
                f"nextval({literal(sequence)}::regclass)")
