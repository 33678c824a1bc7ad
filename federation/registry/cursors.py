"""One cursor store: how far this repository has gone with each peer, per selection.

A cursor is kept for every direction a repository exchanges journals in:

- ``pull``: this repository has applied ``peer``'s journal up to ``last_seq``
  (a sync or bundle import from that site, or a mirror's import of its outbox);
- ``push``: this repository has sent its journal up to ``last_seq`` to ``peer``'s
  inbox;
- ``publish``: this repository has published its journal up to ``last_seq`` in
  the outbox whose id is ``peer``.

Cursors are written in the transaction that applies (or records) the work they
cover, so a crash can never leave one ahead of what was done.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from federation.registry.database import Database, chunked

KINDS = ("pull", "push", "publish")


@dataclass(frozen=True)
class Cursor:
    kind: str
    peer: str
    selection_key: str
    last_seq: int
    selection: Mapping[str, Any]  # the selection, as its owner described it
    covered: frozenset[str] | None = None  # collections the selection covered last time
    instance: str | None = None  # the peer repository's instance id
    updated_at: float = 0.0


class CursorStore:
    """Cursors and the files each pull must retry."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.t = db.tables

    def get(self, kind: str, peer: str, selection_key: str) -> Cursor | None:
        c = self.t.sync_cursor
        with self.db.reading() as conn:
            row = conn.execute(sa.select(c).where(
                c.c.kind == kind, c.c.peer == peer, c.c.selection_key == selection_key)).first()
        return None if row is None else _cursor(row)

    def all(self, kind: str | None = None) -> list[Cursor]:
        c = self.t.sync_cursor
        stmt = sa.select(c).order_by(c.c.kind, c.c.peer, c.c.selection_key)
        if kind is not None:
            stmt = stmt.where(c.c.kind == kind)
        with self.db.reading() as conn:
            return [_cursor(row) for row in conn.execute(stmt)]

    def save(self, cursor: Cursor) -> None:
        """Write a cursor, in the current transaction if one is open."""
        if cursor.kind not in KINDS:
            raise ValueError(f"unknown cursor kind {cursor.kind!r}")
        c = self.t.sync_cursor
        with self.db.transaction() as conn:
            conn.execute(sa.delete(c).where(
                c.c.kind == cursor.kind, c.c.peer == cursor.peer,
                c.c.selection_key == cursor.selection_key))
            covered = None if cursor.covered is None else sorted(cursor.covered)
            conn.execute(sa.insert(c).values(
                kind=cursor.kind, peer=cursor.peer, selection_key=cursor.selection_key,
                last_seq=cursor.last_seq, instance=cursor.instance,
                selection=json.dumps(dict(cursor.selection), sort_keys=True),
                covered=None if covered is None else json.dumps(covered),
                updated_at=time.time()))

    def forget(self, kind: str, peer: str, selection_key: str | None = None) -> None:
        """Drop cursors (e.g. to re-plan a selection from a snapshot)."""
        c = self.t.sync_cursor
        cond = [c.c.kind == kind, c.c.peer == peer]
        if selection_key is not None:
            cond.append(c.c.selection_key == selection_key)
        with self.db.transaction() as conn:
            conn.execute(sa.delete(c).where(*cond))

    # -- retries -------------------------------------------------------------------

    def retries(self, peer: str, selection_key: str) -> list[uuid.UUID]:
        """Datasets whose files failed to arrive from ``peer``: the next pull retries them."""
        r = self.t.sync_retry
        with self.db.reading() as conn:
            return list(conn.execute(sa.select(r.c.dataset_id).where(
                r.c.peer == peer, r.c.selection_key == selection_key)).scalars())

    def record_retries(self, peer: str, selection_key: str,
                       failed: Mapping[uuid.UUID, str]) -> None:
        if not failed:
            return
        self.clear_retries(peer, selection_key, list(failed))
        with self.db.transaction() as conn:
            conn.execute(sa.insert(self.t.sync_retry), [
                {"peer": peer, "selection_key": selection_key, "dataset_id": i, "reason": why}
                for i, why in failed.items()])

    def clear_retries(self, peer: str, selection_key: str, ids: Iterable[uuid.UUID]) -> None:
        r = self.t.sync_retry
        with self.db.transaction() as conn:
            for chunk in chunked(list(ids)):
                conn.execute(sa.delete(r).where(
                    r.c.peer == peer, r.c.selection_key == selection_key,
                    r.c.dataset_id.in_(list(chunk))))


def _cursor(row: Any) -> Cursor:
    covered = None if row.covered is None else frozenset(json.loads(row.covered))
    return Cursor(row.kind, row.peer, row.selection_key, row.last_seq,
                  json.loads(row.selection), covered, row.instance, row.updated_at)
