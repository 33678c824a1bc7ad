"""The registry as a sync source: its objects read as versioned states, in bulk.

A sync decides *which* objects to send (from the journal or a snapshot, under a
selection); this module reads their current states. Reads go through
:meth:`Database.reading`, so inside :meth:`Database.pinned` they all see one
snapshot of the registry.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from federation.model import CollectionType, DatasetType
from federation.registry.database import IN_VALUES, chunked
from federation.registry.registry import Registry
from federation.registry.states import (
    CalibSlotState,
    CollectionRemoval,
    CollectionState,
    DatasetRemoval,
    DatasetState,
    FileInfo,
)

Slot = tuple[str, str, str]  # (CALIBRATION collection, dataset type, data ID key)


class SourceStates:
    """Reads a registry's collections, datasets, memberships and tombstones as states.

    ``here``: a site whose files count as the source's own. A mirror holds the
    registry of a remote site and records that site's files as held there;
    read through the mirror they are the source's files again.
    """

    def __init__(self, registry: Registry, *, here: str | None = None) -> None:
        self.registry = registry
        self.here = here
        self.t = registry.db.tables
        dims = [n for n, d in registry.universe.dimensions.items() if d.has_key]
        self._first_dim = 5  # position of the first dimension column in _dataset_select
        self._dim_pos = {n: self._first_dim + i for i, n in enumerate(dims)}
        d, f = self.t.dataset, self.t.file
        self._dataset_select = sa.select(
            d.c.id, d.c.dataset_type_id, d.c.run_id, d.c.version, d.c.data_id_key,
            *[d.c[n] for n in dims],
            f.c.path, f.c.formatter, f.c.size, f.c.checksum, f.c.held_at,
        ).select_from(d.outerjoin(f, f.c.dataset_id == d.c.id))
        self._layouts: dict[int, tuple[str, list[tuple[str, int]]]] = {}

    # -- collections -------------------------------------------------------------

    def collection(self, name: str) -> CollectionState | CollectionRemoval | None:
        """A collection's state, its removal if its owner removed it, or None."""
        c = self.t.collection
        with self.registry.db.reading() as conn:
            row = conn.execute(sa.select(c).where(c.c.name == name)).first()
            if row is None:
                tomb = self.t.collection_tombstone
                gone = conn.execute(sa.select(tomb).where(tomb.c.name == name)).first()
                return None if gone is None else CollectionRemoval(
                    name, gone.owner_site, gone.version)
        children = None
        if row.type == CollectionType.CHAINED:
            children = self.registry.collections.children(name)
        return CollectionState(name, row.type, row.owner_site, row.created_version, row.doc,
                               row.doc_version, children, row.chain_version)

    def created_after(self, names: Iterable[str], seq: int) -> set[str]:
        """Which of these collections were created here after journal entry ``seq``."""
        c = self.t.collection
        with self.registry.db.reading() as conn:
            found = set(conn.execute(sa.select(c.c.name).where(c.c.created_seq > seq))
                        .scalars())
        return found & set(names)

    def removed_collections(self) -> list[CollectionRemoval]:
        """Every collection tombstone, by name."""
        tomb = self.t.collection_tombstone
        with self.registry.db.reading() as conn:
            rows = conn.execute(sa.select(tomb).order_by(tomb.c.name)).all()
        return [CollectionRemoval(r.name, r.owner_site, r.version) for r in rows]

    # -- datasets ----------------------------------------------------------------

    def datasets(self, ids: Sequence[uuid.UUID]) -> list[DatasetState]:
        """The states of the datasets among ``ids`` that exist, with their files."""
        stmt = self._dataset_select.where(self.t.dataset.c.id.in_(IN_VALUES))
        return [self._state(row) for row in self.registry.db.select_in(stmt, ids)]

    def run_datasets(self, run: str, type_ids: Iterable[int], *, chunk: int
                     ) -> Iterator[list[DatasetState]]:
        """Every dataset of the given types in a RUN, streamed in lists of ``chunk``."""
        d = self.t.dataset
        run_id, _ = self.registry.collections.lookup(run, CollectionType.RUN)
        stmt = self._dataset_select.where(d.c.run_id == run_id,
                                          d.c.dataset_type_id.in_(list(type_ids)))
        with self.registry.db.reading() as conn:
            result = conn.execution_options(yield_per=chunk).execute(stmt)
            for rows in result.partitions(chunk):
                yield [self._state(row) for row in rows]

    def _state(self, row: Sequence[Any]) -> DatasetState:
        layout = self._layouts.get(row[1])
        if layout is None:
            dataset_type = self.registry.dataset_types.by_id(row[1])
            layout = self._layouts[row[1]] = (
                dataset_type.name,
                [(n, self._dim_pos[n]) for n in dataset_type.dimensions.required])
        name, positions = layout
        path = row[-5]
        info = None if path is None else FileInfo(path, row[-4], row[-3], row[-2])
        held = row[-1]
        return DatasetState(str(row[0]), name, self.registry.collections.name_of(row[2]),
                            {n: row[i] for n, i in positions}, info,
                            None if held == self.here else held, row[3])

    def matching(self, ids: Sequence[uuid.UUID], *, type_ids: Iterable[int],
                 run_ids: Iterable[int] | None = None, where: str | None = None,
                 bind: Mapping[str, Any] | None = None,
                 dataset_types: Sequence[DatasetType] = ()) -> list[uuid.UUID]:
        """The datasets among ``ids`` of the given types (and runs) matching ``where``."""
        if not ids:
            return []
        d = self.t.dataset
        stmt = sa.select(d.c.id).where(d.c.id.in_(IN_VALUES),
                                       d.c.dataset_type_id.in_(list(type_ids)))
        if run_ids is not None:
            stmt = stmt.where(d.c.run_id.in_(list(run_ids)))
        keep = [row[0] for row in self.registry.db.select_in(stmt, ids)]
        if where and keep:
            return list(self.registry.datasets.ids_matching(keep, where, bind, dataset_types))
        return keep

    def calibrations_for(self, calibs: Iterable[str], *, types: Sequence[DatasetType],
                         run_ids: Iterable[int], where: str | None,
                         bind: Mapping[str, Any] | None,
                         ids: Sequence[uuid.UUID] | None = None) -> set[uuid.UUID]:
        """The datasets certified in the CALIBRATION collections ``calibs`` that the selected
        datasets need: of the datasets of ``types`` in ``run_ids`` matching ``where``
        (or only those among ``ids``), each one with an observation dimension (one with a
        timespan, e.g. exposure or visit) needs the calibrations whose validity range
        overlaps its observation's and whose data ID agrees with its own."""
        colls, universe = self.registry.collections, self.registry.universe
        calib_ids = [colls.lookup(n)[0] for n in calibs if colls.exists(n)]
        run_ids = list(run_ids)
        if not calib_ids or not run_ids:
            return set()
        t, found = self.t, set()
        d, c = t.dataset, t.calib
        cd = d.alias("calibrated")
        certified = {tid for (tid,) in self._rows(sa.select(c.c.dataset_type_id).distinct()
                                                  .where(c.c.collection_id.in_(calib_ids)))}
        calib_types = [self.registry.dataset_types.by_id(tid) for tid in certified]
        for selected in types:
            observed = [n for n in selected.dimensions.required if universe[n].has_timespan]
            if not observed:
                continue
            obs = t.dimensions[observed[0]].alias("observation")
            tid = self.registry.dataset_types.id_of(selected.name)
            for calib in calib_types:
                agree = [n for n in calib.dimensions.required if n in selected.dimensions.names]
                stmt = (sa.select(c.c.dataset_id).distinct()
                        .select_from(d.join(obs, sa.and_(*[obs.c[k] == d.c[k] for k in
                                                           universe[observed[0]].keys])))
                        .join(cd, sa.and_(*[cd.c[k] == d.c[k] for k in agree]))
                        .join(c, c.c.dataset_id == cd.c.id)
                        .where(d.c.dataset_type_id == tid, d.c.run_id.in_(run_ids),
                               cd.c.dataset_type_id == self.registry.dataset_types.id_of(
                                   calib.name),
                               c.c.collection_id.in_(calib_ids),
                               obs.c.timespan_begin < c.c.timespan_end,
                               obs.c.timespan_end > c.c.timespan_begin))
                stmt = self.registry.datasets.restrict(stmt, where, bind, types)
                if ids is None:
                    found.update(row[0] for row in self._rows(stmt))
                else:
                    found.update(row[0] for row in self.registry.db.select_in(
                        stmt.where(d.c.id.in_(IN_VALUES)), list(ids)))
        return found

    def _rows(self, stmt: sa.Select) -> list[sa.Row]:
        with self.registry.db.reading() as conn:
            return conn.execute(stmt).all()

    def slot_keys(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[str, str]]:
        """(dataset type, data ID key) of existing datasets: their calibration slots."""
        d = self.t.dataset
        found = {}
        with self.registry.db.reading() as conn:
            for chunk in chunked(list(ids)):
                for dataset_id, tid, key in conn.execute(sa.select(
                        d.c.id, d.c.dataset_type_id, d.c.data_id_key).where(
                        d.c.id.in_(list(chunk)))):
                    found[dataset_id] = (self.registry.dataset_types.by_id(tid).name, key)
        return found

    # -- memberships -------------------------------------------------------------

    def tags(self, collection: str, ids: Sequence[uuid.UUID] | None = None
             ) -> tuple[dict[uuid.UUID, int], dict[uuid.UUID, int]]:
        """(present, removed) memberships of a TAGGED collection with their versions:
        all of them, or those of ``ids``."""
        cid, _ = self.registry.collections.lookup(collection)
        t = self.t
        present: dict[uuid.UUID, int] = {}
        removed: dict[uuid.UUID, int] = {}
        with self.registry.db.reading() as conn:
            for table, into in ((t.tag, present), (t.tag_removed, removed)):
                stmt = sa.select(table.c.dataset_id, table.c.version).where(
                    table.c.collection_id == cid)
                if ids is None:
                    into.update(conn.execute(stmt).all())
                    continue
                for chunk in chunked(list(dict.fromkeys(ids))):
                    into.update(conn.execute(stmt.where(
                        table.c.dataset_id.in_(list(chunk)))).all())
        return present, removed

    def calib_slots(self, collection: str) -> list[Slot]:
        """Every slot (type, data ID) a CALIBRATION collection has ever had ranges in."""
        cid, _ = self.registry.collections.lookup(collection)
        cs = self.t.calib_slot
        with self.registry.db.reading() as conn:
            rows = conn.execute(sa.select(cs.c.dataset_type_id, cs.c.data_id_key).where(
                cs.c.collection_id == cid)).all()
        return [(collection, self.registry.dataset_types.by_id(tid).name, key)
                for tid, key in rows]

    def calib_slot(self, slot: Slot) -> CalibSlotState | None:
        """A slot's validity ranges and version; None if the collection or type is gone."""
        collection, type_name, key = slot
        colls, types = self.registry.collections, self.registry.dataset_types
        if not colls.exists(collection) or types.find(type_name) is None:
            return None
        cid, _ = colls.lookup(collection)
        tid = types.id_of(type_name)
        t = self.t
        with self.registry.db.reading() as conn:
            version = conn.execute(sa.select(t.calib_slot.c.version).where(
                t.calib_slot.c.collection_id == cid, t.calib_slot.c.dataset_type_id == tid,
                t.calib_slot.c.data_id_key == key)).scalar()
            rows = conn.execute(sa.select(
                t.calib.c.dataset_id, t.calib.c.timespan_begin, t.calib.c.timespan_end)
                .where(t.calib.c.collection_id == cid, t.calib.c.dataset_type_id == tid,
                       t.calib.c.data_id_key == key)
                .order_by(t.calib.c.timespan_begin)).all()
        return CalibSlotState(collection, type_name, key,
                              [(str(r[0]), r[1], r[2]) for r in rows], version or 0)

    def memberships(self, ids: Sequence[uuid.UUID]
                    ) -> tuple[list[tuple[str, uuid.UUID]], list[tuple[str, uuid.UUID]]]:
        """(TAGGED, CALIBRATION) collections holding each of ``ids``."""
        t = self.t
        tagged: list[tuple[str, uuid.UUID]] = []
        certified: list[tuple[str, uuid.UUID]] = []
        with self.registry.db.reading() as conn:
            for chunk in chunked(list(ids)):
                for table, into in ((t.tag, tagged), (t.calib, certified)):
                    into.extend(conn.execute(
                        sa.select(t.collection.c.name, table.c.dataset_id)
                        .join(table, table.c.collection_id == t.collection.c.id)
                        .where(table.c.dataset_id.in_(list(chunk)))).all())
        return tagged, certified

    # -- tombstones --------------------------------------------------------------

    def removals(self, ids: Sequence[uuid.UUID]) -> list[DatasetRemoval]:
        """The tombstones of datasets among ``ids`` that their owner deleted."""
        tomb = self.t.dataset_tombstone
        found: list[DatasetRemoval] = []
        with self.registry.db.reading() as conn:
            for chunk in chunked(list(dict.fromkeys(ids))):
                found.extend(_removal(row) for row in conn.execute(
                    sa.select(tomb).where(tomb.c.dataset_id.in_(list(chunk)))))
        return found

    def run_removals(self, run: str, *, chunk: int) -> Iterator[list[DatasetRemoval]]:
        """The tombstones of every dataset deleted from a RUN, streamed."""
        tomb = self.t.dataset_tombstone
        with self.registry.db.reading() as conn:
            result = conn.execution_options(yield_per=chunk).execute(
                sa.select(tomb).where(tomb.c.run == run).order_by(tomb.c.dataset_id))
            for rows in result.partitions(chunk):
                yield [_removal(row) for row in rows]


def _removal(row: Any) -> DatasetRemoval:
    return DatasetRemoval(str(row.dataset_id), row.run, row.dataset_type, row.data_id_key,
                          row.version)

