"""Applying batches of states to a destination repository.

:meth:`Applier.plan` classifies every state against the destination without
writing; :meth:`Applier.apply` moves the files a batch needs (verified, then
renamed into place) and writes its records and the cursor in one transaction.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from federation.butler import Butler
from federation.datastore.checksum import file_checksum
from federation.errors import ChecksumError, FederationError
from federation.faults import checkpoint
from federation.model import CollectionType, DatasetRef, StoredFile, data_id_key
from federation.registry.datasets import chunked
from federation.sites import SiteDefinition, owner_by_prefix
from federation.sync.progress import Progress
from federation.sync.report import Conflict, Plan, Report, SyncConflictError, refers_to
from federation.sync.selection import Selection
from federation.sync.states import (
    Batch,
    CalibSlotState,
    CollectionRemoval,
    CollectionState,
    DatasetRemoval,
    DatasetState,
    DatasetTypeState,
    RecordState,
    State,
    TagState,
    identity,
)
from federation.transport.base import FetchRequest, Transport, TransportError, check_relative

STAGING = ".federation-staging"
BATCH_FILE = 256 << 10  # files up to this size may travel in groups (see Transport.batches)
GROUP = 500  # files per group: bounds what one failed stream has to redo
FILE_ACTIONS = ("insert", "fetch")  # plan actions that bring a file


def carries_file(state: DatasetState, selection: Selection) -> bool:
    """Whether a dataset's file travels with it for this selection (vs. held elsewhere)."""
    return selection.files and state.file is not None and state.held_at is None


class Applier:
    """Applies states from one source to a destination Butler."""

    def __init__(self, butler: Butler, source: str, selection: Selection, *,
                 sites: Sequence[SiteDefinition] = (), keep_deleted: bool = False,
                 transport: Transport | None = None, jobs: int = 4,
                 progress: Progress | None = None) -> None:
        self.butler = butler
        self.registry = butler.registry
        self.site = butler.site
        self.source = source
        self.selection = selection
        self.sites = list(sites)
        self.keep_deleted = keep_deleted
        self.transport = transport
        self.jobs = max(1, jobs)
        self.progress = progress or Progress()
        self.tables = self.registry.db.tables
        self._batch_types: dict[str, DatasetTypeState] = {}
        self._made_dirs: set[Path] = set()
        # Collections the selection covers at the source (chains expanded), kept with the
        # cursor so that a chain gaining a child later makes the next sync snapshot it.
        self.covered: set[str] = set()

    # -- planning --------------------------------------------------------------

    def plan(self, batch: Batch, removed_before: dict[str, int] | None = None) -> Plan:
        """Classify each state: insert, update, skip, refused, conflict or blocked.

        A state is *blocked* when it needs an object of the batch that is not
        taken (a conflicting collection, dataset type or dataset). When planning
        many batches before applying any, pass the same ``removed_before`` dict to
        each call: removals of earlier batches then free their slots and UUIDs.
        """
        plan = Plan()
        self._batch_types = {s.name: s for s in batch.states if isinstance(s, DatasetTypeState)}
        owners = {s.name: s.owner for s in batch.states if isinstance(s, CollectionState)}
        datasets = [s for s in batch.states if isinstance(s, DatasetState)]
        existing = self._existing_datasets([s.uuid for s in datasets])
        removals = {} if self.keep_deleted else {
            s.id: s.version for s in batch.states if isinstance(s, DatasetRemoval)}
        if removed_before is not None:
            removed_before.update(removals)
            removals = removed_before
        existing["removals"] = removals
        existing["by_slot"] = self._slot_holders(datasets, set(removals))
        blocked: set[tuple[str, str]] = set()  # objects not taken: what needs them waits too
        for state in batch.states:
            if blocked.intersection(_needs(state)):
                action = "blocked"
            else:
                action = self._classify(state, owners, existing, plan)
            if action in ("conflict", "refused", "blocked"):
                blocked.add(_key_of(state))
            plan.actions.append((state, action))
        return plan

    def _classify(self, state: State, owners: dict[str, str], existing: dict, plan: Plan) -> str:
        if isinstance(state, RecordState):
            return self._classify_record(state, plan)
        if isinstance(state, DatasetTypeState):
            return self._classify_type(state, plan)
        if isinstance(state, CollectionState):
            return self._classify_collection(state, plan)
        if isinstance(state, DatasetState):
            return self._classify_dataset(state, owners, existing, plan)
        collection = state.run if isinstance(state, DatasetRemoval) else (
            state.name if isinstance(state, CollectionRemoval) else state.collection)
        owner = owners.get(collection) or self._owner(collection)
        if owner == self.site:
            plan.conflicts.append(Conflict(state.kind, collection, f"collection is owned by "
                                           f"this site ({self.site}); changes from "
                                           f"{self.source} are not accepted"))
            return "refused"
        return "apply" if self._newer(state) else "skip"

    def _newer(self, state: State) -> bool:
        """Whether a versioned state is newer than what the destination holds."""
        t = self.tables
        colls = self.registry.collections
        with self.registry.db.reading() as conn:
            if isinstance(state, DatasetRemoval):
                known = conn.execute(sa.select(t.dataset_tombstone.c.version).where(
                    t.dataset_tombstone.c.dataset_id == uuid.UUID(state.id))).scalar()
                return known is None or known < state.version
            if isinstance(state, CollectionRemoval):
                tomb = t.collection_tombstone
                known = conn.execute(sa.select(tomb.c.version).where(
                    tomb.c.name == state.name)).scalar()
                return colls.exists(state.name) or known is None or known < state.version
            if not colls.exists(state.collection):
                return True
            cid, _ = colls.lookup(state.collection)
            if isinstance(state, TagState):
                dataset_id = uuid.UUID(state.dataset_id)
                versions = [conn.execute(sa.select(table.c.version).where(
                    table.c.collection_id == cid, table.c.dataset_id == dataset_id)).scalar()
                    for table in (t.tag, t.tag_removed)]
                return max(v or 0 for v in versions) < state.version
            found = self.registry.dataset_types._lookup(state.dataset_type)
            if found is None:
                return True
            current = conn.execute(sa.select(t.calib_slot.c.version).where(
                t.calib_slot.c.collection_id == cid, t.calib_slot.c.dataset_type_id == found[0],
                t.calib_slot.c.data_id_key == state.data_id_key)).scalar()
            return (current or 0) < state.version

    def _classify_record(self, state: RecordState, plan: Plan) -> str:
        dims = self.registry.dimensions
        dim = self.registry.universe[state.dimension]
        key = tuple(state.record[k] for k in (*dim.requires, dim.name))
        ours = dims.get(state.dimension, key)
        if ours is None:
            return "insert"
        if ours == state.record:
            return "skip"
        plan.conflicts.append(Conflict("dimension record", f"{state.dimension} {key}",
                                       "records differ", state.record, ours))
        return "conflict"

    def _classify_type(self, state: DatasetTypeState, plan: Plan) -> str:
        found = self.registry.dataset_types._lookup(state.name)
        if found is None:
            return "insert"
        ours = found[1]
        if list(ours.dimensions.names) == list(state.dimensions) and \
                ours.storage_class == state.storage_class:
            return "skip"
        plan.conflicts.append(Conflict("dataset type", state.name, "definitions differ",
                                       f"{state.dimensions} -> {state.storage_class}", str(ours)))
        return "conflict"

    def _classify_collection(self, state: CollectionState, plan: Plan) -> str:
        claimed = owner_by_prefix(state.name, self.sites)
        if claimed is not None and claimed != state.owner:
            plan.conflicts.append(Conflict(
                "collection", state.name, f"its prefix is owned by site {claimed}",
                f"owner {state.owner}", f"owner {claimed}"))
            return "conflict"
        collections = self.registry.collections
        if not collections.exists(state.name):
            if self._tombstoned(state):
                return "skip"
            if state.owner == self.site:
                plan.conflicts.append(Conflict(
                    "collection", state.name, f"claims to be owned by this site ({self.site}), "
                    "which does not have it"))
                return "refused"
            return "insert"
        ours = collections.get(state.name)
        if str(ours.type) != state.type or ours.owner_site != state.owner:
            plan.conflicts.append(Conflict("collection", state.name, "definitions differ",
                                           f"{state.type} owned by {state.owner}",
                                           f"{ours.type} owned by {ours.owner_site}"))
            return "conflict"
        _, doc_version, chain_version = collections.versions(state.name)
        newer = state.doc_version > doc_version or (
            state.children is not None and state.chain_version > chain_version)
        if newer and state.owner == self.site:
            plan.conflicts.append(Conflict("collection", state.name,
                                           f"owned by this site ({self.site}); changes from "
                                           f"{self.source} are not accepted"))
            return "refused"
        return "update" if newer else "skip"

    def _tombstoned(self, state: CollectionState) -> bool:
        """Removed here by its owner after the version the state describes."""
        tomb = self.tables.collection_tombstone
        with self.registry.db.reading() as conn:
            version = conn.execute(sa.select(tomb.c.version).where(
                tomb.c.name == state.name)).scalar()
        return version is not None and version > state.created_version

    def _classify_dataset(self, state: DatasetState, owners: dict[str, str], existing: dict,
                          plan: Plan) -> str:
        owner = owners.get(state.run) or self._owner(state.run)
        if owner == self.site:
            plan.conflicts.append(Conflict("dataset", state.id, f"run {state.run} is owned by "
                                           f"this site; datasets from {self.source} refused"))
            return "refused"
        if state.file is not None and not os.path.isabs(state.file.path):
            try:
                check_relative(state.file.path)
            except FederationError as exc:
                plan.conflicts.append(Conflict("dataset", state.id, str(exc)))
                return "conflict"
        key = self._key(state)
        mine = existing["by_id"].get(state.uuid)
        removed = existing["tombstones"].get(state.uuid)
        batch_removal = existing["removals"].get(state.id)
        if batch_removal is not None:  # the batch deletes this UUID before it arrives again
            mine = None
            removed = max(removed or 0, batch_removal)
        if mine is None:
            if removed is not None and removed >= state.version:
                return "skip"  # deleted here after (or without knowing) this creation
            other = existing["by_slot"].get((state.run, state.dataset_type, key))
            if other is not None:
                plan.conflicts.append(Conflict(
                    "dataset", f"{state.dataset_type}@{key} in {state.run}",
                    "the slot holds a different dataset", state.id, str(other)))
                return "conflict"
            return "insert"
        theirs = (state.dataset_type, state.run, key,
                  state.file.checksum if state.file else None)
        ours = (mine["dataset_type"], mine["run"], mine["key"], mine["checksum"])
        differs = theirs[:3] != ours[:3] or (theirs[3] and ours[3] and theirs[3] != ours[3])
        if differs:
            plan.conflicts.append(Conflict("dataset", state.id, "same UUID, different content",
                                           _describe(theirs), _describe(ours)))
            return "conflict"
        if mine["held_at"] is not None and self._wants_file(state):
            return "fetch"
        return "skip"

    def _same_type(self, name: str) -> bool:
        """Whether this registry defines the dataset type as the batch does."""
        found = self.registry.dataset_types._lookup(name)
        theirs = self._batch_types.get(name)
        return found is not None and (theirs is None or (
            list(found[1].dimensions.names) == list(theirs.dimensions)
            and found[1].storage_class == theirs.storage_class))

    def _wants_file(self, state: DatasetState) -> bool:
        return self.transport is not None and carries_file(state, self.selection)

    def files_needed(self, plan: Plan) -> list[DatasetState]:
        """Datasets of a plan whose files this applier will fetch."""
        return [s for s, a in plan.actions if isinstance(s, DatasetState)
                and a in FILE_ACTIONS and self._wants_file(s)]

    def _key(self, state: DatasetState) -> str:
        group = self.registry.universe.group(tuple(self._type_dims(state.dataset_type)))
        return data_id_key([state.data_id[n] for n in group.required])

    def _type_dims(self, name: str) -> list[str]:
        if name in self._batch_types:
            return list(self._batch_types[name].dimensions)
        return list(self.registry.dataset_types.get(name).dimensions.names)

    def _owner(self, collection: str) -> str | None:
        colls = self.registry.collections
        return colls.owner(collection) if colls.exists(collection) else None

    def _existing_datasets(self, ids: list[uuid.UUID]) -> dict[str, Any]:
        t = self.tables
        result: dict[str, Any] = {"by_id": {}, "by_slot": {}, "tombstones": {}}
        if not ids:
            return result
        with self.registry.db.reading() as conn:
            for chunk in chunked(ids):
                rows = conn.execute(
                    sa.select(t.dataset.c.id, t.dataset_type.c.name, t.collection.c.name,
                              t.dataset.c.data_id_key, t.file.c.checksum, t.file.c.held_at,
                              t.dataset.c.version)
                    .join(t.dataset_type, t.dataset_type.c.id == t.dataset.c.dataset_type_id)
                    .join(t.collection, t.collection.c.id == t.dataset.c.run_id)
                    .outerjoin(t.file, t.file.c.dataset_id == t.dataset.c.id)
                    .where(t.dataset.c.id.in_(list(chunk)))).all()
                for r in rows:
                    result["by_id"][r[0]] = {"dataset_type": r[1], "run": r[2], "key": r[3],
                                             "checksum": r[4], "held_at": r[5],
                                             "version": r[6]}
                result["tombstones"].update(conn.execute(
                    sa.select(t.dataset_tombstone.c.dataset_id, t.dataset_tombstone.c.version)
                    .where(t.dataset_tombstone.c.dataset_id.in_(list(chunk)))).all())
        return result

    def _slot_holders(self, states: list[DatasetState], removing: set[str]
                      ) -> dict[tuple[str, str, str], str]:
        """The datasets that are, and stay, in the (run, type, data ID) slots of ``states``."""
        wanted: dict[tuple[str, str], set[str]] = {}
        known: dict[tuple[str, str], bool] = {}
        for state in states:
            pair = (state.run, state.dataset_type)
            if pair not in known:
                known[pair] = (self.registry.collections.exists(state.run)
                               and self._same_type(state.dataset_type))
            if known[pair]:
                wanted.setdefault(pair, set()).add(self._key(state))
        d = self.tables.dataset
        holders: dict[tuple[str, str, str], str] = {}
        with self.registry.db.reading() as conn:
            for (run, type_name), keys in wanted.items():
                run_id, _ = self.registry.collections.lookup(run)
                type_id = self.registry.dataset_types.id_of(type_name)
                for chunk in chunked(sorted(keys)):
                    for dataset_id, key in conn.execute(sa.select(d.c.id, d.c.data_id_key).where(
                            d.c.run_id == run_id, d.c.dataset_type_id == type_id,
                            d.c.data_id_key.in_(list(chunk)))):
                        if str(dataset_id) not in removing:
                            holders[(run, type_name, key)] = str(dataset_id)
        return holders

    # -- applying --------------------------------------------------------------

    def apply(self, batch: Batch, *, cursor: tuple[str, int] | None, report: Report,
              strict: bool = False) -> None:
        """Bring in one batch: files first, then records + cursor in one transaction.

        ``strict`` (--on-conflict fail): a conflict found now (the destination
        changed since planning) stops the sync before this batch is applied.
        """
        plan = self.plan(batch)
        if strict and plan.conflicts:
            planned = Report()
            planned.add(plan)
            raise SyncConflictError(planned)
        wanted = self.files_needed(plan)
        arrived, failed = self._transfer(wanted, report)
        failed_ids = set(failed)
        report.add(plan, failed=failed_ids)
        with self.registry.transaction():
            new_datasets: list[DatasetState] = []
            for state, action in plan.actions:
                if action in ("skip", "refused", "conflict", "blocked"):
                    continue
                if refers_to(state, failed_ids):
                    continue
                if isinstance(state, DatasetState) and action == "insert":
                    new_datasets.append(state)  # inserted in bulk, in order
                    continue
                if new_datasets:
                    self._insert_datasets(new_datasets, arrived)
                    new_datasets = []
                self._apply_state(state, action, arrived)
                checkpoint("state applied")
            self._insert_datasets(new_datasets, arrived)
            self._record_retries(failed, report)
            if arrived:
                self.clear_retries([uuid.UUID(i) for i in arrived])
            if cursor is not None:
                self._save_cursor(*cursor)
            checkpoint("before commit")
        checkpoint("after commit")
        self.butler.empty_trash()
        report.failed.extend((i, p, r) for i, (p, r) in failed.items())

    def _apply_state(self, state: State, action: str, arrived: dict[str, str]) -> None:
        db = self.registry.db
        if isinstance(state, RecordState):
            self.registry.dimensions.insert(state.dimension, [state.record])
        elif isinstance(state, DatasetTypeState):
            self.registry.register_dataset_type(state.name, state.dimensions, state.storage_class)
        elif isinstance(state, CollectionState):
            self._apply_collection(state)
        elif isinstance(state, DatasetState):
            with db.importing(self._owner(state.run) or self.source, 0):
                self._apply_dataset(state, action, arrived)
        elif isinstance(state, TagState):
            self._apply_tag(state)
        elif isinstance(state, CalibSlotState):
            self._apply_slot(state)
        elif isinstance(state, DatasetRemoval):
            self._apply_removal(state)
        elif isinstance(state, CollectionRemoval):
            self._apply_collection_removal(state)

    def _apply_collection(self, state: CollectionState) -> None:
        colls = self.registry.collections
        db = self.registry.db
        if not colls.exists(state.name):
            doc = state.doc if state.doc_version <= state.created_version else ""
            with db.importing(state.owner, state.created_version):
                colls.register(state.name, CollectionType(state.type), doc, owner=state.owner)
        _, doc_version, chain_version = colls.versions(state.name)
        if state.doc_version > doc_version:
            with db.importing(state.owner, state.doc_version):
                colls.set_doc(state.name, state.doc, check_owner=False)
        if state.children is not None and state.chain_version > chain_version:
            with db.importing(state.owner, state.chain_version):
                colls.set_chain(state.name, state.children, check_owner=False)

    def _apply_dataset(self, state: DatasetState, action: str, arrived: dict[str, str]) -> None:
        """A dataset already here whose file has now arrived ("fetch")."""
        if state.id in arrived:
            f = self.tables.file
            self.registry.db.current().execute(
                sa.update(f).where(f.c.dataset_id == state.uuid)
                .values(path=arrived[state.id], held_at=None))

    def _insert_datasets(self, states: list[DatasetState], arrived: dict[str, str]) -> None:
        """New datasets, one bulk insert per (run, holding site)."""
        if not states:
            return
        registry = self.registry
        for name in {n for s in states for n in self._type_dims(s.dataset_type)}:
            registry.dimensions.preload(name)
        groups: dict[tuple[str, str | None], tuple[list, list, list]] = {}
        for state in states:
            dtype = registry.get_dataset_type(state.dataset_type)
            full, key = registry.expand_data_id(dtype, state.data_id)
            stored, held = None, None
            if state.file is not None:
                if state.id in arrived:
                    path = arrived[state.id]
                else:
                    path, held = state.file.path, state.held_at or self.source
                stored = StoredFile(path, state.file.formatter, state.file.size,
                                    state.file.checksum)
            entries, keys, versions = groups.setdefault((state.run, held), ([], [], []))
            entries.append((DatasetRef(state.uuid, dtype, full, state.run), stored))
            keys.append(key)
            versions.append(state.version)
        for (run, held), (entries, keys, versions) in groups.items():
            with registry.db.importing(self._owner(run) or self.source, 0):
                registry.datasets.insert(run, entries, keys=keys, check_owner=False,
                                         held_at=held, versions=versions)
            checkpoint("datasets inserted")

    def _apply_tag(self, state: TagState) -> None:
        t = self.tables
        colls = self.registry.collections
        cid, _ = colls.lookup(state.collection, CollectionType.TAGGED)
        dataset_id = uuid.UUID(state.dataset_id)
        conn = self.registry.db.current()
        current = conn.execute(sa.select(t.tag.c.version).where(
            t.tag.c.collection_id == cid, t.tag.c.dataset_id == dataset_id)).scalar()
        gone = conn.execute(sa.select(t.tag_removed.c.version).where(
            t.tag_removed.c.collection_id == cid,
            t.tag_removed.c.dataset_id == dataset_id)).scalar()
        if max(current or 0, gone or 0) >= state.version:
            return
        owner = colls.owner(state.collection)
        with self.registry.db.importing(owner, state.version):
            ref = self.registry.datasets.get(dataset_id)
            if state.present and ref is not None:
                self.registry.datasets.associate(state.collection, [ref], check_owner=False)
            elif not state.present and current is not None and ref is not None:
                self.registry.datasets.disassociate(state.collection, [ref], check_owner=False)
            elif not state.present:
                conn.execute(sa.delete(t.tag_removed).where(
                    t.tag_removed.c.collection_id == cid,
                    t.tag_removed.c.dataset_id == dataset_id))
                conn.execute(sa.insert(t.tag_removed).values(
                    collection_id=cid, dataset_id=dataset_id, version=state.version))

    def _apply_slot(self, state: CalibSlotState) -> None:
        t = self.tables
        colls = self.registry.collections
        cid, _ = colls.lookup(state.collection, CollectionType.CALIBRATION)
        tid = self.registry.dataset_types.id_of(state.dataset_type)
        conn = self.registry.db.current()
        current = conn.execute(sa.select(t.calib_slot.c.version).where(
            t.calib_slot.c.collection_id == cid, t.calib_slot.c.dataset_type_id == tid,
            t.calib_slot.c.data_id_key == state.data_id_key)).scalar()
        if (current or 0) >= state.version:
            return
        conn.execute(sa.delete(t.calib).where(
            t.calib.c.collection_id == cid, t.calib.c.dataset_type_id == tid,
            t.calib.c.data_id_key == state.data_id_key))
        rows = [{"collection_id": cid, "dataset_id": uuid.UUID(i), "dataset_type_id": tid,
                 "data_id_key": state.data_id_key, "timespan_begin": b, "timespan_end": e}
                for i, b, e in state.entries]
        if rows:
            conn.execute(sa.insert(t.calib), rows)
        with self.registry.db.importing(colls.owner(state.collection), state.version):
            version = self.registry.db.journal("calib_slot", [{
                "collection": state.collection, "dataset_type": state.dataset_type,
                "data_id_keys": [state.data_id_key]}])
        self.registry.datasets.set_slot_versions(cid, [(tid, state.data_id_key)], version)

    def _apply_removal(self, state: DatasetRemoval) -> None:
        t = self.tables
        conn = self.registry.db.current()
        dataset_id = uuid.UUID(state.id)
        known = conn.execute(sa.select(t.dataset_tombstone.c.version).where(
            t.dataset_tombstone.c.dataset_id == dataset_id)).scalar()
        if known is not None and known >= state.version:
            return
        created = conn.execute(sa.select(t.dataset.c.version).where(
            t.dataset.c.id == dataset_id)).scalar()
        # A creation newer than this removal is a re-creation: only the tombstone is kept.
        present = created is not None and created <= state.version
        with self.registry.db.importing(self._owner(state.run) or self.source, state.version):
            self.registry.db.journal("remove_dataset", [{"ids": [state.id]}])
            if present:  # files go to the trash, emptied after the commit
                self.registry.datasets.delete_rows([dataset_id], state.version,
                                                   kept=self.keep_deleted)
            else:
                conn.execute(sa.delete(t.dataset_tombstone).where(
                    t.dataset_tombstone.c.dataset_id == dataset_id))
                conn.execute(sa.insert(t.dataset_tombstone).values(
                    dataset_id=dataset_id, run=state.run, dataset_type=state.dataset_type,
                    data_id_key=state.data_id_key, version=state.version, kept=False,
                    removed_at=time.time()))

    def _apply_collection_removal(self, state: CollectionRemoval) -> None:
        colls = self.registry.collections
        if not colls.exists(state.name):
            self._remember_collection_removal(state)
            return
        if colls.owner(state.name) != state.owner:
            return
        created, _, _ = colls.versions(state.name)
        if created >= state.version or colls.parents(state.name):
            return
        _, ctype = colls.lookup(state.name)
        if ctype is CollectionType.RUN and self.registry.datasets.run_refs(state.name):
            return  # an archive keeps the datasets, so it keeps their run
        with self.registry.db.importing(state.owner, state.version):
            colls.remove(state.name, check_owner=False)

    def _remember_collection_removal(self, state: CollectionRemoval) -> None:
        """A tombstone for a collection never held here, so that no stale path revives it."""
        tomb = self.tables.collection_tombstone
        conn = self.registry.db.current()
        with self.registry.db.importing(state.owner, state.version):
            self.registry.db.journal("remove_collection", [{"name": state.name}])
        conn.execute(sa.delete(tomb).where(tomb.c.name == state.name))
        conn.execute(sa.insert(tomb).values(name=state.name, owner_site=state.owner,
                                            version=state.version))

    # -- files -----------------------------------------------------------------

    def _transfer(self, states: list[DatasetState], report: Report
                  ) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
        """Copy, verify and rename files into place; returns (arrived paths, failures).

        Small files go in groups when the transport moves a group faster than
        one file at a time (SFTP streams them); the rest go one by one.
        """
        arrived: dict[str, str] = {}
        failed: dict[str, tuple[str, str]] = {}
        if not states:
            return arrived, failed
        batched: list[DatasetState] = []
        single: list[DatasetState] = []
        for state in states:
            small = self.transport.batches and state.file.size <= BATCH_FILE
            (batched if small else single).append(state)
        with ThreadPoolExecutor(self.jobs) as pool:
            tasks = [pool.submit(self._fetch_group, group)
                     for group in _groups(batched, self.jobs)]
            tasks += [pool.submit(lambda state=state: [self._fetch_one(state)])
                      for state in single]
            for task in as_completed(tasks):
                for state, path, error in task.result():
                    if error is None:
                        arrived[state.id] = path
                        report.files += 1
                        report.bytes += state.file.size
                    else:
                        failed[state.id] = (state.file.path, error)
                    self.progress.advance(1, 0)
        return arrived, failed

    def _fetch_one(self, state: DatasetState) -> tuple[DatasetState, str | None, str | None]:
        try:
            return state, self._fetch(state), None
        except FederationError as exc:
            return state, None, str(exc)
        except OSError as exc:
            return state, None, f"{exc.strerror or exc}"

    def _fetch_group(self, group: list[DatasetState]
                     ) -> list[tuple[DatasetState, str | None, str | None]]:
        """Several small files through one :meth:`Transport.fetch_many` call."""
        results = []
        wanted: dict[FetchRequest, tuple[DatasetState, str, Path]] = {}
        for state in group:
            try:
                relative, final, temp = self._prepare(state)
            except (FederationError, OSError) as exc:
                results.append((state, None, str(exc)))
                continue
            if temp is None:
                results.append((state, relative, None))
            else:
                wanted[FetchRequest(state.file.path, temp, state.file.size)] = \
                    (state, relative, final)
        for request, outcome in self.transport.fetch_many(list(wanted), on_bytes=self._on_bytes):
            state, relative, final = wanted[request]
            try:
                if isinstance(outcome, BaseException):
                    raise outcome
                self._finish(state, request.local, final, outcome)
                results.append((state, relative, None))
            except FederationError as exc:
                results.append((state, None, str(exc)))
            except OSError as exc:
                results.append((state, None, f"{exc.strerror or exc}"))
        return results

    def _fetch(self, state: DatasetState) -> str:
        """One file: to a temporary name, size + xxh3 checked, then renamed into place."""
        relative, final, temp = self._prepare(state)
        if temp is None:
            return relative
        info = state.file
        try:
            got = self.transport.fetch(info.path, temp, resume=True, on_bytes=self._on_bytes,
                                       size=info.size)
        except TransportError:
            raise  # a partial download stays in staging: the next run resumes it
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        self._finish(state, temp, final, got)
        return relative

    def _prepare(self, state: DatasetState) -> tuple[str, Path, Path | None]:
        """(datastore path, final file, staging file), the last None if the file is here."""
        info = state.file
        if os.path.isabs(info.path):  # ingested in place at the source: give it a home here
            relative = check_relative(f"{state.run}/_external/{state.id}{Path(info.path).suffix}")
        else:
            relative = check_relative(info.path)
        final = self.butler.datastore.safe_path(relative)
        if final.exists():
            if self._path_in_use(relative):
                # Another dataset's file (e.g. one this batch deletes): never touch it.
                relative = check_relative(f"{Path(relative).with_suffix('')}-{state.id}"
                                          f"{Path(relative).suffix}")
                final = self.butler.datastore.safe_path(relative)
            if final.exists() and file_checksum(final) == (info.size, info.checksum):
                return relative, final, None  # an earlier, interrupted run brought it
        parent = final.parent
        if parent not in self._made_dirs:
            parent.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(parent)
        if self.staging not in self._made_dirs:
            self.staging.mkdir(exist_ok=True)
            self._made_dirs.add(self.staging)
        return relative, final, self.staging / f"{state.id}.part"

    def _finish(self, state: DatasetState, temp: Path, final: Path, got: tuple[int, str]
                ) -> None:
        """Check what arrived against the record and rename it into place."""
        info = state.file
        try:
            if got != (info.size, info.checksum) and temp.exists():
                # What an earlier run left may not be this file's start: fetch it whole.
                temp.unlink()
                got = self.transport.fetch(info.path, temp, on_bytes=self._on_bytes,
                                           size=info.size)
            if got != (info.size, info.checksum):
                raise ChecksumError(
                    f"{info.path} from {self.source} does not match its record (size {got[0]} "
                    f"vs {info.size}, checksum {got[1]} vs {info.checksum}); not imported")
            checkpoint("file verified")
            os.replace(temp, final)
            checkpoint("file renamed")
        except TransportError:
            raise
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def _on_bytes(self, nbytes: int) -> None:
        self.progress.advance(0, nbytes)

    def _path_in_use(self, relative: str) -> bool:
        f = self.tables.file
        with self.registry.db.reading() as conn:
            return conn.execute(sa.select(f.c.dataset_id).where(
                f.c.path == relative, f.c.held_at.is_(None))).first() is not None

    @property
    def staging(self) -> Path:
        """Where downloads land before they are verified and renamed into place."""
        return self.butler.datastore.root / STAGING

    def clear_staging(self, keep_days: float = 7.0) -> None:
        """Drop what interrupted syncs left in staging (call under the sync lock).

        Partial downloads younger than ``keep_days`` stay, for the next transfer of
        the same dataset to resume; they are verified like any other download.
        """
        if not self.staging.is_dir():
            return
        cutoff = time.time() - keep_days * 86400
        for entry in self.staging.iterdir():
            try:
                if entry.suffix in (".part", ".etag") and entry.stat().st_mtime >= cutoff:
                    continue
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
            except OSError:
                continue
        self.staging.mkdir(exist_ok=True)

    # -- bookkeeping -----------------------------------------------------------

    def _record_retries(self, failed: dict[str, tuple[str, str]], report: Report) -> None:
        retry = self.tables.sync_retry
        conn = self.registry.db.current()
        key = self.selection.key
        for dataset_id, (_, reason) in failed.items():
            conn.execute(sa.delete(retry).where(
                retry.c.source == self.source, retry.c.selection_key == key,
                retry.c.dataset_id == uuid.UUID(dataset_id)))
            conn.execute(sa.insert(retry).values(source=self.source, selection_key=key,
                                                 dataset_id=uuid.UUID(dataset_id),
                                                 reason=reason))

    def clear_retries(self, ids: Sequence[uuid.UUID]) -> None:
        retry = self.tables.sync_retry
        conn = self.registry.db.current()
        conn.execute(sa.delete(retry).where(
            retry.c.source == self.source, retry.c.selection_key == self.selection.key,
            retry.c.dataset_id.in_(list(ids))))

    def _save_cursor(self, source: str, seq: int) -> None:
        c = self.tables.sync_cursor
        conn = self.registry.db.current()
        key = self.selection.key
        conn.execute(sa.delete(c).where(c.c.source == source, c.c.selection_key == key))
        record = self.selection.to_dict() | {"expanded": sorted(self.covered)}
        conn.execute(sa.insert(c).values(
            source=source, selection_key=key, last_seq=seq, updated_at=time.time(),
            selection=json.dumps(record, sort_keys=True)))


def _key_of(state: State) -> tuple[str, str]:
    """What other states name this one by."""
    if isinstance(state, DatasetTypeState | CollectionState):
        return (state.kind, state.name)
    if isinstance(state, DatasetState):
        return (state.kind, state.id)
    return (state.kind, str(identity(state)))


def _needs(state: State) -> list[tuple[str, str]]:
    """The objects a state refers to, which must be taken before it can be."""
    if isinstance(state, CollectionState):
        return [("collection", child) for child in state.children or []]
    if isinstance(state, DatasetState):
        return [("collection", state.run), ("dataset_type", state.dataset_type)]
    if isinstance(state, TagState):
        return [("collection", state.collection), ("dataset", state.dataset_id)]
    if isinstance(state, CalibSlotState):
        return [("collection", state.collection), ("dataset_type", state.dataset_type),
                *(("dataset", entry[0]) for entry in state.entries)]
    return []


def _describe(values: tuple) -> str:
    dataset_type, run, key, checksum = values
    text = f"{dataset_type}@{key} in {run}"
    return text + (f", xxh3 {checksum}" if checksum else "")


def _groups(states: list[DatasetState], jobs: int) -> list[list[DatasetState]]:
    """Groups of at most GROUP files, at least ``jobs`` of them when there are enough."""
    if not states:
        return []
    size = max(1, min(GROUP, -(-len(states) // jobs)))
    return [states[i:i + size] for i in range(0, len(states), size)]
