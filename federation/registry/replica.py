"""The registry as a replica: what it holds of other sites' objects, and applying states.

A sync plans with the lookups here (bulk, one query per chunk of a batch) and
applies a batch's states with the ``apply_*`` methods inside one transaction.
Each change is journaled under its owner's version, so that it travels on to
the sites that sync from this one.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from federation.errors import ReleaseError
from federation.merkle import build, entry_hash
from federation.model import CollectionType, DatasetRef, StoredFile
from federation.registry.database import IN_VALUES, chunked
from federation.registry.journal import (
    CalibSlotsReplaced,
    CollectionRemoved,
    DatasetsRemoved,
)
from federation.registry.registry import Registry
from federation.registry.releases import ReleaseCheck, ReleaseInfo, StoredEntry
from federation.registry.states import (
    CalibSlotState,
    CollectionRemoval,
    CollectionState,
    DatasetRemoval,
    DatasetState,
    ReleaseCheckState,
    ReleaseEntries,
    ReleaseState,
    State,
    TagState,
)


@dataclass(frozen=True, slots=True)
class HeldDataset:
    """What this registry holds under a dataset UUID."""

    dataset_type: str
    run: str
    key: str
    checksum: str | None
    held_at: str | None  # None: the file is here
    version: int


class Replica:
    """Lookups for planning and the writes that apply states, on one registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.db = registry.db
        self.t = registry.db.tables

    # -- lookups -----------------------------------------------------------------

    def held(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, HeldDataset]:
        t = self.t
        types, colls = self.registry.dataset_types, self.registry.collections
        stmt = (sa.select(t.dataset.c.id, t.dataset.c.dataset_type_id, t.dataset.c.run_id,
                          t.dataset.c.data_id_key, t.file.c.checksum, t.file.c.held_at,
                          t.dataset.c.version)
                .outerjoin(t.file, t.file.c.dataset_id == t.dataset.c.id)
                .where(t.dataset.c.id.in_(IN_VALUES)))
        return {r[0]: HeldDataset(types.by_id(r[1]).name, colls.name_of(r[2]), r[3], r[4],
                                  r[5], r[6])
                for r in self.db.select_in(stmt, ids)}

    def existing(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these datasets are in this registry."""
        d = self.t.dataset
        stmt = sa.select(d.c.id).where(d.c.id.in_(IN_VALUES))
        return {r[0] for r in self.db.select_in(stmt, dict.fromkeys(ids))}

    def dataset_tombstones(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """Versions of the deletions recorded here for datasets among ``ids``."""
        tomb = self.t.dataset_tombstone
        stmt = sa.select(tomb.c.dataset_id, tomb.c.version).where(
            tomb.c.dataset_id.in_(IN_VALUES))
        return dict(self.db.select_in(stmt, dict.fromkeys(ids)))

    def slot_holders(self, run: str, dataset_type: str, keys: Iterable[str]
                     ) -> dict[str, uuid.UUID]:
        """The datasets in a run's (type, data ID) slots, by data ID key."""
        colls, types = self.registry.collections, self.registry.dataset_types
        if not colls.exists(run) or types.find(dataset_type) is None:
            return {}
        run_id, _ = colls.lookup(run)
        type_id = types.id_of(dataset_type)
        d = self.t.dataset
        found: dict[str, uuid.UUID] = {}
        with self.db.reading() as conn:
            for chunk in chunked(sorted(set(keys))):
                for dataset_id, key in conn.execute(sa.select(d.c.id, d.c.data_id_key).where(
                        d.c.run_id == run_id, d.c.dataset_type_id == type_id,
                        d.c.data_id_key.in_(list(chunk)))):
                    found[key] = dataset_id
        return found

    def tag_versions(self, collection: str, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """The version of each dataset's membership (present or removed) of a TAGGED
        collection; absent when it never was a member."""
        if not self.registry.collections.exists(collection):
            return {}
        cid, _ = self.registry.collections.lookup(collection)
        t = self.t
        found: dict[uuid.UUID, int] = {}
        with self.db.reading() as conn:
            for table in (t.tag, t.tag_removed):
                for chunk in chunked(list(dict.fromkeys(ids))):
                    for dataset_id, version in conn.execute(sa.select(
                            table.c.dataset_id, table.c.version).where(
                            table.c.collection_id == cid, table.c.dataset_id.in_(list(chunk)))):
                        found[dataset_id] = max(found.get(dataset_id, 0), version)
        return found

    def calib_versions(self, collection: str, dataset_type: str, keys: Iterable[str]
                       ) -> dict[str, int]:
        """The version of each (type, data ID) slot of a CALIBRATION collection."""
        colls, types = self.registry.collections, self.registry.dataset_types
        if not colls.exists(collection) or types.find(dataset_type) is None:
            return {}
        cid, _ = colls.lookup(collection)
        tid = types.id_of(dataset_type)
        cs = self.t.calib_slot
        found: dict[str, int] = {}
        with self.db.reading() as conn:
            for chunk in chunked(sorted(set(keys))):
                found.update(conn.execute(sa.select(cs.c.data_id_key, cs.c.version).where(
                    cs.c.collection_id == cid, cs.c.dataset_type_id == tid,
                    cs.c.data_id_key.in_(list(chunk)))).all())
        return found

    def tagged(self, collection: str, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these datasets a TAGGED collection holds."""
        if not self.registry.collections.exists(collection):
            return set()
        cid, _ = self.registry.collections.lookup(collection)
        tg = self.t.tag
        stmt = sa.select(tg.c.dataset_id).where(tg.c.collection_id == cid,
                                                tg.c.dataset_id.in_(IN_VALUES))
        return {r[0] for r in self.db.select_in(stmt, ids)}

    def calib_entries(self, collection: str, dataset_type: str, key: str
                      ) -> list[tuple[str, int, int]]:
        """The validity ranges of one (type, data ID) slot of a CALIBRATION collection."""
        colls, types = self.registry.collections, self.registry.dataset_types
        if not colls.exists(collection) or types.find(dataset_type) is None:
            return []
        cid, _ = colls.lookup(collection)
        c = self.t.calib
        with self.db.reading() as conn:
            rows = conn.execute(sa.select(c.c.dataset_id, c.c.timespan_begin, c.c.timespan_end)
                                .where(c.c.collection_id == cid,
                                       c.c.dataset_type_id == types.id_of(dataset_type),
                                       c.c.data_id_key == key)
                                .order_by(c.c.timespan_begin)).all()
        return [(str(r[0]), r[1], r[2]) for r in rows]

    def collection_versions(self, name: str) -> tuple[str, str, int, int, int] | None:
        """(type, owner, created, doc, chain versions) of a collection here, or None."""
        c = self.t.collection
        with self.db.reading() as conn:
            row = conn.execute(sa.select(c.c.type, c.c.owner_site, c.c.created_version,
                                         c.c.doc_version, c.c.chain_version)
                               .where(c.c.name == name)).first()
        return None if row is None else tuple(row)

    def collection_tombstone(self, name: str) -> int | None:
        """The version of this collection's removal, if it was removed."""
        tomb = self.t.collection_tombstone
        with self.db.reading() as conn:
            return conn.execute(sa.select(tomb.c.version).where(tomb.c.name == name)).scalar()

    def paths_in_use(self, paths: Iterable[str]) -> set[str]:
        """Which of ``paths`` hold a dataset's file in this datastore."""
        f = self.t.file
        used: set[str] = set()
        with self.db.reading() as conn:
            for chunk in chunked(sorted(set(paths))):
                used.update(conn.execute(sa.select(f.c.path).where(
                    f.c.path.in_(list(chunk)), f.c.held_at.is_(None))).scalars())
        return used

    # -- applying (inside the caller's transaction) ------------------------------

    def apply_collection(self, state: CollectionState) -> None:
        """Create the collection, or bring its doc and chain up to the state's versions."""
        colls = self.registry.collections
        if not colls.exists(state.name):
            doc = state.doc if state.doc_version <= state.created_version else ""
            with self.db.importing(state.owner, state.created_version):
                colls.register(state.name, CollectionType(state.type), doc, owner=state.owner)
        _, doc_version, chain_version = colls.versions(state.name)
        if state.doc_version > doc_version:
            with self.db.importing(state.owner, state.doc_version):
                colls.set_doc(state.name, state.doc, check_owner=False)
        if state.children is not None and state.chain_version > chain_version:
            with self.db.importing(state.owner, state.chain_version):
                colls.set_chain(state.name, state.children, check_owner=False)

    def insert_datasets(self, states: Sequence[DatasetState], paths: Mapping[str, str],
                        held_at: str) -> None:
        """New datasets, one bulk insert per (run, holding site).

        A dataset whose id is in ``paths`` has its file here at that path; the
        others are recorded as held at their state's site, else at ``held_at``.
        """
        registry = self.registry
        for name in {n for s in states for n in registry.get_dataset_type(
                s.dataset_type).dimensions.names}:
            registry.dimensions.preload(name)
        groups: dict[tuple[str, str | None], tuple[list, list, list]] = {}
        for state in states:
            dtype = registry.get_dataset_type(state.dataset_type)
            full, key = registry.expand_data_id(dtype, state.data_id)
            stored, held = None, None
            if state.file is not None:
                if state.id in paths:
                    path = paths[state.id]
                else:
                    path, held = state.file.path, state.held_at or held_at
                stored = StoredFile(path, state.file.formatter, state.file.size,
                                    state.file.checksum)
            entries, keys, versions = groups.setdefault((state.run, held), ([], [], []))
            entries.append((DatasetRef(state.uuid, dtype, full, state.run), stored))
            keys.append(key)
            versions.append(state.version)
        for (run, held), (entries, keys, versions) in groups.items():
            with self.db.importing(self.registry.collections.owner(run), 0):
                registry.datasets.insert(run, entries, keys=keys, check_owner=False,
                                         held_at=held, versions=versions)

    def remove_for_recreation(self, states: Sequence[DatasetState]) -> None:
        """Drop what is held of datasets their owner deleted and created again since (the
        states hold the new creations, inserted next); their files go to the trash.

        An archive (``keep``) keeps deleted datasets, but one UUID holds one dataset:
        the owner's new creation replaces the kept one there too.
        """
        ids = [s.uuid for s in states]
        self.registry.datasets.delete_rows(ids, 0, tombstone=False)

    def adopt(self, states: Sequence[State]) -> None:
        """Take the versions of states equal to what is here (a rebuilt source numbers
        its changes afresh: later changes are compared with these)."""
        t, conn = self.t, self.db.current()
        colls, types = self.registry.collections, self.registry.dataset_types
        for state in states:
            if isinstance(state, CollectionState):
                chain = state.chain_version if state.children is not None else 0
                conn.execute(sa.update(t.collection).where(t.collection.c.name == state.name)
                             .values(created_version=state.created_version,
                                     doc_version=state.doc_version, chain_version=chain))
            elif isinstance(state, TagState):
                cid, _ = colls.lookup(state.collection)
                table = t.tag if state.present else t.tag_removed
                conn.execute(sa.update(table).where(
                    table.c.collection_id == cid,
                    table.c.dataset_id == uuid.UUID(state.dataset_id))
                    .values(version=state.version))
            elif isinstance(state, CalibSlotState):
                cid, _ = colls.lookup(state.collection)
                self.registry.datasets.set_slot_versions(
                    cid, [(types.id_of(state.dataset_type), state.data_id_key)], state.version)
            elif isinstance(state, DatasetRemoval):
                self._record_tombstones([state], {uuid.UUID(state.id)})
            elif isinstance(state, CollectionRemoval):
                tomb = t.collection_tombstone
                conn.execute(sa.delete(tomb).where(tomb.c.name == state.name))
                conn.execute(sa.insert(tomb).values(name=state.name, owner_site=state.owner,
                                                    version=state.version))

    def set_versions(self, versions: Mapping[uuid.UUID, int]) -> None:
        """Record newer creation versions of datasets held here (same content)."""
        d = self.t.dataset
        conn = self.db.current()
        for dataset_id, version in versions.items():
            conn.execute(sa.update(d).where(d.c.id == dataset_id).values(version=version))

    def attach_files(self, paths: Mapping[str, str]) -> None:
        """Datasets held elsewhere whose files are now here, at these paths."""
        f = self.t.file
        conn = self.db.current()
        for dataset_id, path in paths.items():
            conn.execute(sa.update(f).where(f.c.dataset_id == uuid.UUID(dataset_id))
                         .values(path=path, held_at=None))

    def apply_tags(self, states: Sequence[TagState]) -> None:
        """Memberships newer than what is here, grouped by (collection, version, present)."""
        groups: dict[tuple[str, int, bool], list[uuid.UUID]] = {}
        for state in states:
            groups.setdefault((state.collection, state.version, state.present), []).append(
                uuid.UUID(state.dataset_id))
        datasets = self.registry.datasets
        for (collection, version, present), ids in groups.items():
            current = self.tag_versions(collection, ids)
            ids = [i for i in ids if current.get(i, 0) < version]
            if not ids:
                continue
            owner = self.registry.collections.owner(collection)
            refs = list(datasets.get_many(ids).values())
            with self.db.importing(owner, version):
                if present:
                    datasets.associate(collection, refs, check_owner=False)
                else:
                    datasets.disassociate(collection, refs, check_owner=False)
                    self._remember_untagged(collection, ids, version)

    def _remember_untagged(self, collection: str, ids: Sequence[uuid.UUID], version: int
                           ) -> None:
        """Removed memberships of datasets never tagged here: kept, so that an older
        membership arriving later by another path does not bring them back."""
        cid, _ = self.registry.collections.lookup(collection)
        gone = self.t.tag_removed
        conn = self.db.current()
        for chunk in chunked(list(ids)):
            conn.execute(sa.delete(gone).where(gone.c.collection_id == cid,
                                               gone.c.dataset_id.in_(list(chunk))))
        conn.execute(sa.insert(gone), [{"collection_id": cid, "dataset_id": i,
                                        "version": version} for i in ids])

    def apply_calib_slots(self, states: Sequence[CalibSlotState]) -> None:
        """Replace the validity ranges of slots whose state is newer than what is here."""
        t = self.t
        conn = self.db.current()
        colls, types = self.registry.collections, self.registry.dataset_types
        for state in states:
            current = self.calib_versions(state.collection, state.dataset_type,
                                          [state.data_id_key])
            if current.get(state.data_id_key, 0) >= state.version:
                continue
            cid, _ = colls.lookup(state.collection, CollectionType.CALIBRATION)
            tid = types.id_of(state.dataset_type)
            conn.execute(sa.delete(t.calib).where(
                t.calib.c.collection_id == cid, t.calib.c.dataset_type_id == tid,
                t.calib.c.data_id_key == state.data_id_key))
            rows = [{"collection_id": cid, "dataset_id": uuid.UUID(i), "dataset_type_id": tid,
                     "data_id_key": state.data_id_key, "timespan_begin": b, "timespan_end": e}
                    for i, b, e in state.entries]
            if rows:
                conn.execute(sa.insert(t.calib), rows)
            with self.db.importing(colls.owner(state.collection), state.version):
                version = self.db.append([CalibSlotsReplaced(
                    state.collection, state.dataset_type, [state.data_id_key])])
            self.registry.datasets.set_slot_versions(cid, [(tid, state.data_id_key)], version)

    def apply_releases(self, releases: Sequence[ReleaseState],
                       entries: Sequence[ReleaseEntries]) -> None:
        """Record releases made elsewhere, each with its manifest's lines (already checked
        against its root by the planner; the tree is rebuilt from them here)."""
        by_release: dict[str, list[ReleaseEntries]] = {}
        for chunk in entries:
            by_release.setdefault(chunk.release, []).append(chunk)
        for state in releases:
            chunks = sorted(by_release.get(state.name, []), key=lambda c: c.start)
            stored = [StoredEntry(i, uuid.UUID(json.loads(line)["id"]), h.hex(), line)
                      for i, (line, h) in enumerate(
                          (line, entry_hash(line.encode()))
                          for c in chunks for line in c.lines)]
            root, nodes = build(bytes.fromhex(e.hash) for e in stored)
            if root.hex() != state.root:
                raise ReleaseError(f"release {state.name!r}: its manifest does not hash to "
                                   "its root")
            with self.db.importing(state.site, 0):
                self.registry.releases.create(ReleaseInfo.from_state(state), stored, nodes)

    def retract_releases(self, releases: Sequence[ReleaseState]) -> None:
        """Retractions of releases held here, as their site made them."""
        for state in releases:
            with self.db.importing(state.site, 0):
                self.registry.releases.retract(state.name, state.retract_reason or "",
                                               when=state.retracted)

    def record_checks(self, checks: Sequence[ReleaseCheckState]) -> None:
        """Verifications other sites made of releases held here."""
        if checks:
            self.registry.releases.add_checks([ReleaseCheck.from_state(s) for s in checks])

    def apply_removals(self, states: Sequence[DatasetRemoval], *, keep: bool,
                       origin: str) -> None:
        """Deletions newer than what is here, in bulk: datasets deleted (or, with
        ``keep``, kept and marked), tombstones recorded for the ones never held or
        re-created since. ``origin``: the site named in the journal for a deletion
        in a run this registry does not know."""
        ids = [uuid.UUID(s.id) for s in states]
        known = self.dataset_tombstones(ids)
        fresh = [(s, i) for s, i in zip(states, ids, strict=True)
                 if known.get(i, -1) < s.version]
        if not fresh:
            return
        created = self.registry.datasets.versions([i for _, i in fresh])
        present = {i: s.version for s, i in fresh if created.get(i, s.version + 1) <= s.version}
        colls = self.registry.collections
        owners = {run: colls.owner(run) if colls.exists(run) else origin
                  for run in {s.run for s, _ in fresh}}
        self.db.append_replicated([(DatasetsRemoved([s.id]), owners[s.run], s.version)
                                   for s, _ in fresh])
        if present:  # files go to the trash, emptied after the commit
            self.registry.datasets.delete_rows(list(present), present, kept=keep)
        self._record_tombstones([s for s, i in fresh if i not in present], set(known))

    def _record_tombstones(self, states: Sequence[DatasetRemoval],
                           replaced: set[uuid.UUID]) -> None:
        """Tombstones of datasets not held here (never, or re-created since); ``replaced``:
        those of them with an older tombstone here."""
        if not states:
            return
        tomb = self.t.dataset_tombstone
        conn = self.db.current()
        ids = [uuid.UUID(s.id) for s in states]
        for chunk in chunked([i for i in ids if i in replaced]):
            conn.execute(sa.delete(tomb).where(tomb.c.dataset_id.in_(list(chunk))))
        now = time.time()
        conn.execute(sa.insert(tomb), [
            {"dataset_id": i, "run": s.run, "dataset_type": s.dataset_type,
             "data_id_key": s.data_id_key, "version": s.version, "kept": False,
             "removed_at": now} for i, s in zip(ids, states, strict=True)])

    def apply_collection_removal(self, state: CollectionRemoval) -> None:
        """Remove a collection its owner removed; remember the removal if it is not here.

        A collection is kept while a chain here still lists it, while it is newer
        than the removal (re-created), or while an archive keeps its datasets.
        """
        colls = self.registry.collections
        if not colls.exists(state.name):
            self._remember_collection_removal(state)
            return
        if colls.owner(state.name) != state.owner:
            return  # only the owner's removal counts
        created, _, _ = colls.versions(state.name)
        if created >= state.version or colls.parents(state.name):
            return
        _, ctype = colls.lookup(state.name)
        if ctype is CollectionType.RUN and self.registry.datasets.run_refs(state.name):
            return
        with self.db.importing(state.owner, state.version):
            colls.remove(state.name, check_owner=False)

    def _remember_collection_removal(self, state: CollectionRemoval) -> None:
        tomb = self.t.collection_tombstone
        conn = self.db.current()
        known = self.collection_tombstone(state.name)
        if known is not None and known >= state.version:
            return
        with self.db.importing(state.owner, state.version):
            self.db.append([CollectionRemoved(state.name)])
        conn.execute(sa.delete(tomb).where(tomb.c.name == state.name))
        conn.execute(sa.insert(tomb).values(name=state.name, owner_site=state.owner,
                                            version=state.version))
