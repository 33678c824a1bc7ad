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
from federation.registry.journal import ReleaseChecked, ReleaseCreated, ReleaseRetracted
from federation.registry.states import ReleaseCheckState, ReleaseEntries, ReleaseState


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

    @property
    def state(self) -> ReleaseState:
        """What a sync sends of this release (its manifest's lines travel apart)."""
        return ReleaseState(self.name, self.root, self.site, self.created, self.creator,
                            self.doc, self.selection, self.entries, self.bytes, self.counts,
                            self.retracted, self.retract_reason)

    @classmethod
    def from_state(cls, state: ReleaseState) -> ReleaseInfo:
        return cls(state.name, state.root, state.site, state.created, state.creator,
                   state.doc, state.selection, state.entries, state.bytes,
                   state.retracted, state.retract_reason, dict(state.counts))


@dataclass(frozen=True)
class ReleaseCheck:
    """One verification of a release at ``site``: every file re-hashed against the
    manifest and the root recomputed from the stored entries."""

    release: str
    checked: float
    checker: str  # user@host
    root: str  # the root recomputed
    complete: bool
    files: int
    missing: int
    corrupt: int
    site: str = ""  # empty: this registry's site

    @property
    def state(self) -> ReleaseCheckState:
        return ReleaseCheckState(self.release, self.site, self.checked, self.checker,
                                 self.root, self.complete, self.files, self.missing,
                                 self.corrupt)

    @classmethod
    def from_state(cls, state: ReleaseCheckState) -> ReleaseCheck:
        return cls(state.release, state.checked, state.checker, state.root, state.complete,
                   state.files, state.missing, state.corrupt, state.site)


@dataclass(frozen=True)
class StoredEntry:
    """One manifest entry: its position in key order, its dataset, hash and line."""

    position: int
    dataset_id: uuid.UUID
    hash: str
    line: str


class Releases:
    """Create, read and retract releases; refuse changes to what they hold.

    Creations, retractions and verifications are journaled, so that they travel to
    the sites a release is synced to (and on from there).
    """

    def __init__(self, db: Database, site: str) -> None:
        self.db = db
        self.site = site

    def create(self, info: ReleaseInfo, entries: Iterable[StoredEntry],
               nodes: Sequence[Node]) -> None:
        """Record a release (its name must be new) with its entries and tree; its
        collections must be written before, in the same transaction (a sync reading the
        journal sends the release after them)."""
        t = self.db.tables
        with self.db.transaction() as conn:
            if conn.execute(sa.select(t.release.c.name).where(
                    t.release.c.name == info.name)).first() is not None:
                raise ReleaseError(f"release {info.name!r} exists already; a release never "
                                   "changes: give the new one another name")
            conn.execute(sa.insert(t.release).values(
                name=info.name, root=info.root, site=info.site, created=info.created,
                creator=info.creator, doc=info.doc, selection=json.dumps(info.selection),
                entries=info.entries, bytes=info.bytes, counts=json.dumps(info.counts),
                retracted=info.retracted, retract_reason=info.retract_reason))
            for chunk in chunked(list(entries), 5000):
                conn.execute(sa.insert(t.release_entry), [
                    {"release": info.name, "position": e.position, "dataset_id": e.dataset_id,
                     "hash": e.hash, "line": e.line} for e in chunk])
            self._store_nodes(conn, nodes)
            self.db.append([ReleaseCreated(info.name)])

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
        found = self.find(name)
        if found is None:
            raise ReleaseError(f"no release {name!r} in this repository")
        return found

    def find(self, name: str) -> ReleaseInfo | None:
        """A release, or None if this registry has none of that name."""
        t = self.db.tables
        with self.db.reading() as conn:
            row = conn.execute(sa.select(t.release).where(t.release.c.name == name)).first()
        if row is None:
            return None
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

    def retract(self, name: str, reason: str, when: float | None = None) -> ReleaseInfo:
        """Mark a release retracted (its data stays, and stays protected); a release
        retracted already keeps its first retraction."""
        info = self.get(name)
        if info.retracted is not None:
            return info
        t = self.db.tables
        with self.db.transaction() as conn:
            conn.execute(sa.update(t.release).where(t.release.c.name == name).values(
                retracted=time.time() if when is None else when, retract_reason=reason))
            self.db.append([ReleaseRetracted(name)])
        return self.get(name)

    # -- as a sync source ----------------------------------------------------------

    def entry_chunks(self, name: str, size: int = 4000) -> Iterator[ReleaseEntries]:
        """The manifest's lines in key order, ``size`` at a time."""
        lines: list[str] = []
        start = 0
        for entry in self.entries(name):
            lines.append(entry.line)
            if len(lines) == size:
                yield ReleaseEntries(name, start, lines)
                start, lines = start + size, []
        if lines:
            yield ReleaseEntries(name, start, lines)

    def checks(self, name: str, keys: Iterable[tuple[str, float]] | None = None
               ) -> list[ReleaseCheck]:
        """The verifications of a release recorded here (by any site), oldest first; or
        those among ``keys`` (site, time)."""
        t = self.db.tables.release_check
        stmt = sa.select(t).where(t.c.release == name).order_by(t.c.checked, t.c.id)
        if keys is not None:
            wanted = list(keys)
            if not wanted:
                return []
            stmt = stmt.where(sa.or_(*[sa.and_(t.c.site == site, t.c.checked == checked)
                                       for site, checked in wanted]))
        with self.db.reading() as conn:
            return [self._check(row) for row in conn.execute(stmt)]

    def retracted(self, names: Iterable[str]) -> dict[str, str]:
        """The retracted releases among ``names``, with the reason given."""
        t = self.db.tables.release
        stmt = sa.select(t.c.name, t.c.retract_reason).where(
            t.c.name.in_(IN_VALUES), t.c.retracted.is_not(None))
        return dict(self.db.select_in(stmt, dict.fromkeys(names)))

    # -- verification --------------------------------------------------------------

    def record_check(self, check: ReleaseCheck) -> None:
        """Note a verification of a release (made here, unless ``check.site`` names
        another site); one already recorded is not recorded twice."""
        site = check.site or self.site
        t = self.db.tables.release_check
        with self.db.transaction() as conn:
            if conn.execute(sa.select(t.c.id).where(
                    t.c.release == check.release, t.c.site == site,
                    t.c.checked == check.checked)).first() is not None:
                return
            conn.execute(sa.insert(t).values(
                release=check.release, site=site, checked=check.checked,
                checker=check.checker, root=check.root, complete=check.complete,
                files=check.files, missing=check.missing, corrupt=check.corrupt))
            self.db.append([ReleaseChecked(check.release, site, check.checked)])

    def add_checks(self, checks: Sequence[ReleaseCheck]) -> None:
        """Record other sites' verifications a sync brings (the planner left out those
        recorded already), in one statement, each journaled as its site's."""
        checks = list({(c.release, c.site, c.checked): c for c in checks}.values())
        t = self.db.tables.release_check
        with self.db.transaction() as conn:
            conn.execute(sa.insert(t), [
                {"release": c.release, "site": c.site, "checked": c.checked,
                 "checker": c.checker, "root": c.root, "complete": c.complete,
                 "files": c.files, "missing": c.missing, "corrupt": c.corrupt}
                for c in checks])
            for site in dict.fromkeys(c.site for c in checks):
                with self.db.importing(site, 0):
                    self.db.append([ReleaseChecked(c.release, c.site, c.checked)
                                    for c in checks if c.site == site])

    def last_check(self, name: str, site: str | None = None) -> ReleaseCheck | None:
        """The latest verification of a release by ``site`` (default: this site) that
        this registry records, if any."""
        t = self.db.tables.release_check
        with self.db.reading() as conn:
            row = conn.execute(sa.select(t).where(t.c.release == name,
                                                  t.c.site == (site or self.site))
                               .order_by(t.c.checked.desc(), t.c.id.desc()).limit(1)).first()
        return None if row is None else self._check(row)

    @staticmethod
    def _check(row: sa.Row) -> ReleaseCheck:
        return ReleaseCheck(row.release, row.checked, row.checker, row.root, row.complete,
                            row.files, row.missing, row.corrupt, row.site)

    def files_not_here(self, name: str) -> int:
        """How many of a release's datasets have no file here (none, or held elsewhere)."""
        e, f = self.db.tables.release_entry, self.db.tables.file
        stmt = sa.select(sa.func.count()).select_from(
            e.outerjoin(f, f.c.dataset_id == e.c.dataset_id)).where(
            e.c.release == name, sa.or_(f.c.dataset_id.is_(None), f.c.held_at.is_not(None)))
        with self.db.reading() as conn:
            return conn.execute(stmt).scalar_one()

    def containing(self, ids: Sequence[uuid.UUID]) -> set[str]:
        """Every release holding one of ``ids``."""
        e = self.db.tables.release_entry
        stmt = sa.select(e.c.release).where(e.c.dataset_id.in_(IN_VALUES)).distinct()
        return {row[0] for row in self.db.select_in(stmt, dict.fromkeys(ids))}

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
