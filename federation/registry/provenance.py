"""Provenance: which datasets each output dataset was made from.

One row per (output, input) pair. The output is a dataset of this registry
(its rows go when it is removed); the input is named by its UUID only, so the
record survives the removal of an input. Provenance is local to a site: it is
written when a batch job's outputs are collected (``fed collect``) and is not
journaled, so syncs do not carry it.

The table is additive: a repository created before it existed gains it on
its first write here, and reads of such a repository find no provenance. No
schema version change is needed, and older code ignores the table.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from federation.registry.database import IN_VALUES, Database


class Provenance:
    """Reads and writes the ``provenance`` table of one registry."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.table = db.tables.provenance
        self._exists = False

    def add(self, links: Iterable[tuple[uuid.UUID, uuid.UUID]]) -> int:
        """Record ``(output_id, input_id)`` pairs; ones already recorded are skipped.

        Returns how many were new. Runs in the current write transaction (or its own).
        """
        links = sorted(set(links))
        if not links:
            return 0
        with self.db.transaction() as conn:
            self.table.create(conn, checkfirst=True)
            self._exists = True
            known = self._known({output for output, _ in links})
            new = [pair for pair in links if pair not in known]
            if new:
                conn.execute(sa.insert(self.table),
                             [{"output_id": o, "input_id": i} for o, i in new])
        return len(new)

    def inputs_of(self, output_id: uuid.UUID) -> list[uuid.UUID]:
        """The datasets ``output_id`` was made from, in UUID order."""
        t = self.table
        return self._ids(sa.select(t.c.input_id).where(t.c.output_id == output_id)
                         .order_by(t.c.input_id))

    def outputs_of(self, input_id: uuid.UUID) -> list[uuid.UUID]:
        """The datasets made from ``input_id``, in UUID order."""
        t = self.table
        return self._ids(sa.select(t.c.output_id).where(t.c.input_id == input_id)
                         .order_by(t.c.output_id))

    def inputs_of_many(self, output_ids: Sequence[uuid.UUID]
                       ) -> dict[uuid.UUID, list[uuid.UUID]]:
        """``output_id -> its inputs`` for those of ``output_ids`` with any recorded."""
        found: dict[uuid.UUID, list[uuid.UUID]] = {}
        if not output_ids or not self._table_exists():
            return found
        t = self.table
        stmt = (sa.select(t.c.output_id, t.c.input_id).where(t.c.output_id.in_(IN_VALUES))
                .order_by(t.c.output_id, t.c.input_id))
        for output_id, input_id in self.db.select_in(stmt, output_ids):
            found.setdefault(output_id, []).append(input_id)
        return found

    def _ids(self, stmt: sa.Select) -> list[uuid.UUID]:
        if not self._table_exists():
            return []
        with self.db.reading() as conn:
            return list(conn.execute(stmt).scalars())

    def _known(self, outputs: set[uuid.UUID]) -> set[tuple[uuid.UUID, uuid.UUID]]:
        t = self.table
        stmt = sa.select(t.c.output_id, t.c.input_id).where(t.c.output_id.in_(IN_VALUES))
        return {tuple(row) for row in self.db.select_in(stmt, list(outputs))}

    def _table_exists(self) -> bool:
        """Whether this registry has the table yet (one created before it may not)."""
        if not self._exists:
            with self.db.reading() as conn:
                self._exists = sa.inspect(conn).has_table(self.table.name)
        return self._exists
