"""Reading a source repository: journal entries or a snapshot, turned into states.

Each batch is self-contained: every dataset comes with its RUN, dataset type
and dimension records, every chain with its children's definitions, so a
destination can apply (or plan) one batch without the others.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from federation.model import CollectionType
from federation.registry.datasets import chunked
from federation.registry.registry import Registry
from federation.sync.selection import Selection
from federation.sync.states import (
    Batch,
    CalibSlotState,
    CollectionRemoval,
    CollectionState,
    DatasetRemoval,
    DatasetState,
    DatasetTypeState,
    FileInfo,
    RecordState,
    State,
    TagState,
)

BATCH_ENTRIES = 5000


class SourceReader:
    """Turns a source registry's journal (or current state) into batches of states."""

    def __init__(self, registry: Registry, selection: Selection, *,
                 here: str | None = None) -> None:
        """``here``: a site whose files count as the source's own (a mirror reads the
        registry of a remote site, whose files it records as held at that site)."""
        self.registry = registry
        self.selection = selection
        self.here = here
        self.tables = registry.db.tables
        self.collections: set[str] = set()
        self.type_names: set[str] = set()
        self.type_ids: set[int] = set()
        self._preloaded: set[str] = set()

    @contextmanager
    def window(self) -> Iterator[int]:
        """Fix what this sync covers: the journal head and the selected collections and
        types, read together in one snapshot that every read inside the block sees.

        Yields the journal head: every change up to it is in this sync, every later
        one in the next.
        """
        with self.registry.db.pinned():
            upto = self.registry.db.last_seq()
            self.collections = self.selected_collections()
            types = [t for t in self.registry.dataset_types.query()
                     if self.selection.matches_type(t.name)]
            self.type_names = {t.name for t in types}
            self.type_ids = {self.registry.dataset_types.id_of(t.name) for t in types}
            yield upto

    # -- selection -------------------------------------------------------------

    def selected_collections(self) -> set[str]:
        """Collections matching the selection, with the children of matching chains."""
        colls = self.registry.collections
        names = {c.name for c in colls.query() if self.selection.matches_collection(c.name)}
        stack = list(names)
        while stack:
            name = stack.pop()
            if colls.exists(name) and colls.lookup(name)[1] is CollectionType.CHAINED:
                for child in colls.children(name):
                    if child not in names:
                        names.add(child)
                        stack.append(child)
        return names

    def _where_filter(self, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        if not self.selection.where or not ids:
            return set(ids)
        return self.registry.datasets.ids_matching(
            ids, self.selection.where, self.selection.bind_dict,
            [self.registry.dataset_types.get(n) for n in self.type_names])

    # -- journal ---------------------------------------------------------------

    def journal(self, after: int, upto: int) -> Iterator[Batch]:
        """Batches for the journal entries in ``(after, upto]``."""
        pending: list = []
        for entry in self.registry.db.journal_entries(after, upto=upto):
            pending.append(entry)
            if len(pending) >= BATCH_ENTRIES:
                yield self._batch_for_entries(pending)
                pending = []
        if pending:
            yield self._batch_for_entries(pending)
        elif after < upto:
            yield Batch([], upto)

    def _batch_for_entries(self, entries: list) -> Batch:
        wanted = _Wanted()
        full = self.selection.is_full
        for entry in entries:
            kind, p = entry.kind, entry.payload
            if kind == "dataset":
                wanted.datasets.append(uuid.UUID(p["id"]))
            elif kind in ("associate", "disassociate"):
                if p["collection"] in self.collections:
                    wanted.tags.extend((p["collection"], uuid.UUID(i)) for i in p["ids"])
            elif kind == "certify":
                if p["collection"] in self.collections:
                    wanted.calib_ids.extend((p["collection"], uuid.UUID(i)) for i in p["ids"])
            elif kind in ("decertify", "calib_slot"):
                if p["collection"] in self.collections:
                    wanted.slots.extend((p["collection"], p["dataset_type"], k)
                                        for k in p["data_id_keys"] or [])
            elif kind in ("collection", "doc", "chain", "remove_collection"):
                if self.selection.matches_collection(p["name"]) or p["name"] in self.collections:
                    wanted.collections.append(p["name"])
            elif kind == "remove_dataset":
                wanted.removed.extend(uuid.UUID(i) for i in p["ids"])
            elif kind == "dataset_type" and self.selection.matches_type(p["name"]):
                wanted.types.add(p["name"])
            elif kind == "dimension_record" and full:
                wanted.records.append((p["dimension"], p["record"]))
        return Batch(self._states(wanted, from_journal=True), entries[-1].seq)

    # -- snapshot --------------------------------------------------------------

    def snapshot(self, collections: Iterable[str] | None = None) -> Iterator[Batch]:
        """Batches describing the current state of the selected (or given) collections."""
        names = sorted(self.collections if collections is None else collections)
        removed = self._removed_collections() if collections is None else []
        colls = self.registry.collections
        t = self.tables
        yield Batch(self._states(_Wanted(collections=names + removed,
                                         types=set(self.type_names)), from_journal=False), 0)
        with self.registry.db.reading() as conn:
            for name in removed:  # so that a stale path cannot bring them back
                yield from self._run_tombstones(conn, name)
            for name in names:
                if not colls.exists(name):
                    continue
                cid, ctype = colls.lookup(name)
                if ctype is CollectionType.RUN:
                    ids = conn.execute(sa.select(t.dataset.c.id).where(
                        t.dataset.c.run_id == cid,
                        t.dataset.c.dataset_type_id.in_(self.type_ids))).scalars().all()
                    for chunk in chunked(ids, BATCH_ENTRIES):
                        yield Batch(self._states(_Wanted(datasets=list(chunk)),
                                                 from_journal=False), 0)
                    yield from self._run_tombstones(conn, name)
                elif ctype is CollectionType.TAGGED:
                    ids = conn.execute(sa.select(t.tag.c.dataset_id).where(
                        t.tag.c.collection_id == cid)).scalars().all()
                    ids += conn.execute(sa.select(t.tag_removed.c.dataset_id).where(
                        t.tag_removed.c.collection_id == cid)).scalars().all()
                    for chunk in chunked(ids, BATCH_ENTRIES):
                        yield Batch(self._states(_Wanted(tags=[(name, i) for i in chunk]),
                                                 from_journal=False), 0)
                elif ctype is CollectionType.CALIBRATION:
                    slots = conn.execute(sa.select(
                        t.calib_slot.c.dataset_type_id, t.calib_slot.c.data_id_key).where(
                        t.calib_slot.c.collection_id == cid)).all()
                    wanted = _Wanted(slots=[
                        (name, self.registry.dataset_types.by_id(tid).name, key)
                        for tid, key in slots])
                    yield Batch(self._states(wanted, from_journal=False), 0)

    def _removed_collections(self) -> list[str]:
        """Selected collections their owner has removed (their tombstones)."""
        tomb = self.tables.collection_tombstone
        with self.registry.db.reading() as conn:
            names = conn.execute(sa.select(tomb.c.name).order_by(tomb.c.name)).scalars().all()
        return [n for n in names if self.selection.matches_collection(n)]

    def _run_tombstones(self, conn: sa.Connection, run: str) -> Iterator[Batch]:
        """Removals of the datasets that were in a RUN."""
        tomb = self.tables.dataset_tombstone
        removed = conn.execute(sa.select(tomb.c.dataset_id).where(
            tomb.c.run == run)).scalars().all()
        for chunk in chunked(removed, BATCH_ENTRIES):
            yield Batch(self._states(_Wanted(removed=list(chunk)), from_journal=False), 0)

    def retry_batch(self, ids: list[uuid.UUID]) -> Batch:
        """Datasets whose files failed earlier, with their tags and certifications."""
        t = self.tables
        wanted = _Wanted(datasets=list(ids))
        with self.registry.db.reading() as conn:
            for chunk in chunked(list(ids)):
                for name, dataset_id in conn.execute(
                        sa.select(t.collection.c.name, t.tag.c.dataset_id)
                        .join(t.tag, t.tag.c.collection_id == t.collection.c.id)
                        .where(t.tag.c.dataset_id.in_(list(chunk)))):
                    if name in self.collections:
                        wanted.tags.append((name, dataset_id))
                for name, dataset_id in conn.execute(
                        sa.select(t.collection.c.name, t.calib.c.dataset_id)
                        .join(t.calib, t.calib.c.collection_id == t.collection.c.id)
                        .where(t.calib.c.dataset_id.in_(list(chunk)))):
                    if name in self.collections:
                        wanted.calib_ids.append((name, dataset_id))
        return Batch(self._states(wanted, from_journal=False), 0)

    # -- state assembly --------------------------------------------------------

    def _states(self, wanted: _Wanted, *, from_journal: bool) -> list[State]:
        out = _Out()
        registry = self.registry
        for name in wanted.types:
            out.add_type(registry.dataset_types.get(name))
        for dimension, record in wanted.records:
            out.records[(dimension, _record_key(registry, dimension, record))] = record
        for name in wanted.collections:
            self._collection(name, out)
        datasets = self._selected_datasets(wanted.datasets, by_run=from_journal)
        self._add_datasets(datasets, out)
        self._tags(wanted.tags, out)
        slots = list(wanted.slots) + self._slots_of(wanted.calib_ids)
        self._calib_slots(slots, out)
        self._removals(wanted.removed, out)
        return out.ordered(registry)

    def _selected_datasets(self, ids: list[uuid.UUID], *, by_run: bool) -> list[uuid.UUID]:
        """Datasets of selected types (and, from the journal, selected runs) matching `where`."""
        if not ids:
            return []
        d = self.tables.dataset
        keep = []
        run_ids = {self.registry.collections.lookup(n)[0] for n in self.collections
                   if self.registry.collections.exists(n)}
        with self.registry.db.reading() as conn:
            for chunk in chunked(ids):
                stmt = sa.select(d.c.id).where(d.c.id.in_(list(chunk)),
                                               d.c.dataset_type_id.in_(self.type_ids))
                if by_run:
                    stmt = stmt.where(d.c.run_id.in_(run_ids))
                keep.extend(conn.execute(stmt).scalars().all())
        return list(self._where_filter(keep)) if keep else []

    def _add_datasets(self, ids: Sequence[uuid.UUID], out: _Out) -> None:
        ids = [i for i in ids if str(i) not in out.datasets]
        if not ids:
            return
        refs = self.registry.datasets.get_many(ids)
        versions = self.registry.datasets.versions(ids)
        files = {i: (f, held) for i, f, held in self.registry.datasets.iter_files(ids)}
        for dataset_id, ref in refs.items():
            stored, held = files.get(dataset_id, (None, None))
            info = None if stored is None else FileInfo(stored.path, stored.formatter,
                                                        stored.size, stored.checksum)
            out.datasets[str(dataset_id)] = DatasetState(
                str(dataset_id), ref.dataset_type.name, ref.run, ref.required_data_id, info,
                held if held != self.here else None, versions.get(dataset_id, 0))
            out.add_type(ref.dataset_type)
            self._collection(ref.run, out)
            self._records_for(ref.dataset_type.dimensions.names, ref.data_id, out)

    def _records_for(self, names: Sequence[str], data_id: dict[str, Any], out: _Out) -> None:
        dims = self.registry.dimensions
        for name in names:
            if name not in self._preloaded:  # small tables: one query instead of one per key
                dims.preload(name)
                self._preloaded.add(name)
            dim = self.registry.universe[name]
            key = tuple(data_id[k] for k in (*dim.requires, name))
            if (name, key) in out.records:
                continue
            record = dims.get(name, key)
            if record is not None:
                out.records[(name, key)] = record

    def _collection(self, name: str, out: _Out) -> None:
        if name in out.collections or name in out.removed_collections:
            return
        t = self.tables.collection
        with self.registry.db.reading() as conn:
            row = conn.execute(sa.select(t).where(t.c.name == name)).first()
            if row is None:
                tomb = self.tables.collection_tombstone
                gone = conn.execute(sa.select(tomb).where(tomb.c.name == name)).first()
                if gone is not None:
                    out.removed_collections[name] = CollectionRemoval(
                        name, gone.owner_site, gone.version)
                return
        children = None
        if row.type == CollectionType.CHAINED:
            children = self.registry.collections.children(name)
        out.collections[name] = CollectionState(
            name, row.type, row.owner_site, row.created_version, row.doc, row.doc_version,
            children, row.chain_version)
        for child in children or []:
            self._collection(child, out)

    def _tags(self, pairs: list[tuple[str, uuid.UUID]], out: _Out) -> None:
        t = self.tables
        by_collection: dict[str, list[uuid.UUID]] = {}
        for name, dataset_id in pairs:
            by_collection.setdefault(name, []).append(dataset_id)
        for name, ids in by_collection.items():
            if not self.registry.collections.exists(name):
                self._collection(name, out)
                continue
            cid, _ = self.registry.collections.lookup(name)
            self._collection(name, out)
            present, absent = {}, {}
            with self.registry.db.reading() as conn:
                for chunk in chunked(list(dict.fromkeys(ids))):
                    present.update(conn.execute(sa.select(t.tag.c.dataset_id, t.tag.c.version)
                                                .where(t.tag.c.collection_id == cid,
                                                       t.tag.c.dataset_id.in_(chunk))).all())
                    absent.update(conn.execute(
                        sa.select(t.tag_removed.c.dataset_id, t.tag_removed.c.version).where(
                            t.tag_removed.c.collection_id == cid,
                            t.tag_removed.c.dataset_id.in_(chunk))).all())
            selected = set(self._selected_datasets(list(present), by_run=False))
            present = {i: v for i, v in present.items() if i in selected}
            self._add_datasets(list(present), out)
            for dataset_id, version in absent.items():
                out.tags.append(TagState(name, str(dataset_id), False, version))
            for dataset_id, version in present.items():
                if str(dataset_id) in out.datasets:
                    out.tags.append(TagState(name, str(dataset_id), True, version))

    def _slots_of(self, pairs: list[tuple[str, uuid.UUID]]) -> list[tuple[str, str, str]]:
        refs = self.registry.datasets.get_many([i for _, i in pairs])
        from federation.registry.datasets import ref_key

        return [(name, refs[i].dataset_type.name, ref_key(refs[i]))
                for name, i in pairs if i in refs]

    def _calib_slots(self, slots: list[tuple[str, str, str]], out: _Out) -> None:
        t = self.tables
        colls = self.registry.collections
        with self.registry.db.reading() as conn:
            for name, type_name, key in dict.fromkeys(slots):
                if type_name not in self.type_names or not colls.exists(name):
                    continue
                cid, _ = colls.lookup(name)
                tid = self.registry.dataset_types.id_of(type_name)
                version = conn.execute(sa.select(t.calib_slot.c.version).where(
                    t.calib_slot.c.collection_id == cid, t.calib_slot.c.dataset_type_id == tid,
                    t.calib_slot.c.data_id_key == key)).scalar()
                rows = conn.execute(sa.select(
                    t.calib.c.dataset_id, t.calib.c.timespan_begin, t.calib.c.timespan_end)
                    .where(t.calib.c.collection_id == cid, t.calib.c.dataset_type_id == tid,
                           t.calib.c.data_id_key == key)
                    .order_by(t.calib.c.timespan_begin)).all()
                ids = [r[0] for r in rows]
                if ids and not self._where_filter(ids):
                    continue
                self._collection(name, out)
                self._add_datasets(ids, out)
                out.slots.append(CalibSlotState(name, type_name, key,
                                                [(str(r[0]), r[1], r[2]) for r in rows],
                                                version or 0))

    def _removals(self, ids: list[uuid.UUID], out: _Out) -> None:
        tomb = self.tables.dataset_tombstone
        with self.registry.db.reading() as conn:
            for chunk in chunked(list(dict.fromkeys(ids))):
                for row in conn.execute(sa.select(tomb).where(tomb.c.dataset_id.in_(chunk))):
                    # An archive keeps the data but still passes the deletion on.
                    if not self.selection.matches_type(row.dataset_type):
                        continue
                    out.removals.append(DatasetRemoval(str(row.dataset_id), row.run,
                                                       row.dataset_type, row.data_id_key,
                                                       row.version))


class _Wanted:
    """What a batch must describe, as collected from journal entries."""

    def __init__(self, **kwargs: Any) -> None:
        self.datasets: list[uuid.UUID] = []
        self.tags: list[tuple[str, uuid.UUID]] = []
        self.calib_ids: list[tuple[str, uuid.UUID]] = []
        self.slots: list[tuple[str, str, str]] = []
        self.collections: list[str] = []
        self.removed: list[uuid.UUID] = []
        self.types: set[str] = set()
        self.records: list[tuple[str, dict[str, Any]]] = []
        for key, value in kwargs.items():
            setattr(self, key, value)


class _Out:
    """States of one batch, de-duplicated, emitted in dependency order."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, tuple], dict[str, Any]] = {}
        self.types: dict[str, DatasetTypeState] = {}
        self.collections: dict[str, CollectionState] = {}
        self.removed_collections: dict[str, CollectionRemoval] = {}
        self.datasets: dict[str, DatasetState] = {}
        self.tags: list[TagState] = []
        self.slots: list[CalibSlotState] = []
        self.removals: list[DatasetRemoval] = []

    def add_type(self, dataset_type) -> None:
        if dataset_type.name not in self.types:
            self.types[dataset_type.name] = DatasetTypeState(
                dataset_type.name, list(dataset_type.dimensions.names),
                dataset_type.storage_class)

    def ordered(self, registry: Registry) -> list[State]:
        order = {name: i for i, name in enumerate(registry.universe.dimensions)}
        records = sorted(self.records.items(), key=lambda item: order[item[0][0]])
        states: list[State] = [RecordState(dim, record) for (dim, _), record in records]
        states += self.types.values()
        chains = [c for c in self.collections.values() if c.children is not None]
        states += [c for c in self.collections.values() if c.children is None]
        states += _children_first(chains)
        states += self.removals  # before datasets that may take the slots they free
        states += self.datasets.values()
        states += self.slots
        states += sorted(self.tags, key=lambda t: t.present)  # removals before additions
        states += self.removed_collections.values()
        return states


def _children_first(chains: list[CollectionState]) -> list[CollectionState]:
    by_name = {c.name: c for c in chains}
    seen: set[str] = set()
    result: list[CollectionState] = []

    def visit(chain: CollectionState) -> None:
        if chain.name in seen:
            return
        seen.add(chain.name)
        for child in chain.children or []:
            if child in by_name:
                visit(by_name[child])
        result.append(chain)

    for chain in chains:
        visit(chain)
    return result


def _record_key(registry: Registry, dimension: str, record: dict[str, Any]) -> tuple:
    dim = registry.universe[dimension]
    return tuple(record[k] for k in (*dim.requires, dimension))
