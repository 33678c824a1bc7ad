"""The registry's record of data releases: what each froze, and what it protects.

A release row names its Merkle root, who made it where and when, and what was
selected; its manifest's entries are stored in key order with the dataset each
describes, so that a deletion of a released dataset is refused here, whoever
asks (a user, or a sync applying a tombstone). The tree's nodes are stored by
hash, once for every release that shares them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from federation.errors import ReleaseError
from federation.merkle import Node
from federation.registry.database import IN_VALUES, Database, chunked


def release_holding(collection: str, releases: Iterable[str]) -> str | None:
    """The release among ``releases`` whose frozen collections include ``collection``
    (``NAME`` and ``NAME/...``), if any."""
    return next((r for r in releases if collection == r or collection.startswith(r + "/")),
                None)


@dataclass
class ReleaseInfo:
    """One release as the registry records it."""

    name: str
    root: str  # hex SHA-256
    site: str
    created: float
    creator: str
    doc: str
    selection: dict
    entries: int
    bytes: int
    retracted: float | None = None
    retract_reason: str | None = None
    counts: dict[str, int] = field(default_factory=dict)  # entries by dataset type
    check: ReleaseCheck | None = None  # the latest verification here


@dataclass(frozen=True)
class ReleaseCheck:
    """One verification of a release at this site: every file re-hashed against the
    manifest and the root recomputed from the stored entries."""

    release: str
    checked: float
    checker: str  # user@host
    root: str  # the root recomputed
    complete: bool
    files: int
    missing: int
    corrupt: int


@dataclass(frozen=True)
class StoredEntry:
    """One manifest entry: its position in key order, its dataset, hash and line."""

    position: int
    dataset_id: uuid.UUID
    hash: str
    line: str


class Releases:
    """Create, read and retract releases; refuse changes to what they hold."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, info: ReleaseInfo, entries: Iterable[StoredEntry],
               nodes: Sequence[Node]) -> None:
        """Record a release (its name must be new) with its entries and tree."""
        t = self.db.tables
        with self.db.transaction() as conn:
            if conn.execute(sa.select(t.release.c.name).where(
                    t.release.c.name == info.name)).first() is not None:
                raise ReleaseError(f"release {info.name!r} exists already; a release never "
                                   "changes: give the new one another name")
            conn.execute(sa.insert(t.release).values(
                name=info.name, root=info.root, site=info.site, created=info.created,
                creator=info.creator, doc=info.doc, selection=json.dumps(info.selection),
                entries=info.entries, bytes=info.bytes, counts=json.dumps(info.counts)))
            for chunk in chunked(list(entries), 5000):
                conn.execute(sa.insert(t.release_entry), [
                    {"release": info.name, "position": e.position, "dataset_id": e.dataset_id,
                     "hash": e.hash, "line": e.line} for e in chunk])
            self._store_nodes(conn, nodes)

    def _store_nodes(self, conn: sa.Connection, nodes: Sequence[Node]) -> None:
        table = self.db.tables.release_node
        rows = {node.hash.hex(): node for node in nodes}
        known: set[str] = set()
        for chunk in chunked(list(rows)):
            known.update(conn.execute(sa.select(table.c.hash).where(
                table.c.hash.in_(list(chunk)))).scalars())
        new = [{"hash": h, "level": n.level, "children": b"".join(n.children)}
               for h, n in rows.items() if h not in known]
        for chunk in chunked(new, 5000):
            conn.execute(sa.insert(table), list(chunk))

    def get(self, name: str) -> ReleaseInfo:
        t = self.db.tables
        with self.db.reading() as conn:
            row = conn.execute(sa.select(t.release).where(t.release.c.name == name)).first()
            if row is None:
                raise ReleaseError(f"no release {name!r} in this repository")
        return ReleaseInfo(row.name, row.root, row.site, row.created, row.creator, row.doc,
                           json.loads(row.selection), row.entries, row.bytes, row.retracted,
                           row.retract_reason, json.loads(row.counts), self.last_check(name))

    def names(self) -> list[str]:
        with self.db.reading() as conn:
            return list(conn.execute(sa.select(self.db.tables.release.c.name)
                                     .order_by(self.db.tables.release.c.created)).scalars())

    def entries(self, name: str) -> Iterator[StoredEntry]:
        """The manifest's entries in key order, streamed."""
        e = self.db.tables.release_entry
        stmt = sa.select(e.c.position, e.c.dataset_id, e.c.hash, e.c.line).where(
            e.c.release == name).order_by(e.c.position)
        with self.db.reading() as conn:
            for row in conn.execution_options(yield_per=10000).execute(stmt):
                yield StoredEntry(*row)

    def lines_by_hash(self, hashes: Iterable[str]) -> dict[str, str]:
        e = self.db.tables.release_entry
        stmt = sa.select(e.c.hash, e.c.line).where(e.c.hash.in_(IN_VALUES))
        return dict(self.db.select_in(stmt, dict.fromkeys(hashes)))

    def node(self, digest: bytes) -> Node:
        table = self.db.tables.release_node
        with self.db.reading() as conn:
            row = conn.execute(sa.select(table.c.level, table.c.children).where(
                table.c.hash == digest.hex())).first()
        if row is None:
            raise ReleaseError(f"release tree node {digest.hex()} is missing from this "
                               "registry (damaged)")
        children = bytes(row.children)
        return Node(row.level, tuple(children[i:i + 32] for i in range(0, len(children), 32)))

    def retract(self, name: str, reason: str) -> ReleaseInfo:
        """Mark a release retracted (its data stays, and stays protected)."""
        self.get(name)
        t = self.db.tables
        with self.db.transaction() as conn:
            conn.execute(sa.update(t.release).where(t.release.c.name == name).values(
                retracted=time.time(), retract_reason=reason))
        return self.get(name)

    def retracted(self, names: Iterable[str]) -> dict[str, str]:
        """The retracted releases among ``names``, with the reason given."""
        t = self.db.tables.release
        stmt = sa.select(t.c.name, t.c.retract_reason).where(
            t.c.name.in_(IN_VALUES), t.c.retracted.is_not(None))
        return dict(self.db.select_in(stmt, dict.fromkeys(names)))

    # -- verification --------------------------------------------------------------

    def record_check(self, check: ReleaseCheck) -> None:
        """Note a verification of a release held here."""
        with self.db.transaction() as conn:
            conn.execute(sa.insert(self.db.tables.release_check).values(
                release=check.release, checked=check.checked, checker=check.checker,
                root=check.root, complete=check.complete, files=check.files,
                missing=check.missing, corrupt=check.corrupt))

    def last_check(self, name: str) -> ReleaseCheck | None:
        """The latest verification of a release here, if any."""
        t = self.db.tables.release_check
        with self.db.reading() as conn:
            row = conn.execute(sa.select(t).where(t.c.release == name)
                               .order_by(t.c.id.desc()).limit(1)).first()
        if row is None:
            return None
        return ReleaseCheck(row.release, row.checked, row.checker, row.root, row.complete,
                            row.files, row.missing, row.corrupt)

    # -- protection ----------------------------------------------------------------

    def holding(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """The released datasets among ``ids``, each with a release holding it."""
        e = self.db.tables.release_entry
        stmt = sa.select(e.c.dataset_id, e.c.release).where(e.c.dataset_id.in_(IN_VALUES))
        return dict(self.db.select_in(stmt, dict.fromkeys(ids)))

    def check_deletable(self, ids: Sequence[uuid.UUID]) -> None:
        """Refuse to delete datasets a release holds (one line, naming the release)."""
        held = self.holding(ids)
        if held:
            dataset_id, name = next(iter(held.items()))
            more = f" and {len(held) - 1} more" if len(held) > 1 else ""
            raise ReleaseError(f"dataset {dataset_id}{more} belongs to release {name!r}: a "
                               "released dataset is never deleted (retract the release to "
                               "warn its users; its data stays)")
