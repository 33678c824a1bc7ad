"""Reading a source for a selection: its journal or a snapshot, as batches of states.

Every batch is self-contained: datasets come with their RUN, dataset type and
dimension records, chains with their children. A snapshot sends RUNs first, so
that the TAGGED and CALIBRATION batches after them refer to datasets already
sent; a dataset is sent once per snapshot.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from federation.errors import ReleaseError
from federation.model import CollectionType, DatasetType
from federation.registry.journal import (
    CalibSlotsReplaced,
    ChainChanged,
    CollectionCreated,
    CollectionDocChanged,
    CollectionRemoved,
    DatasetCreated,
    DatasetsCertified,
    DatasetsDecertified,
    DatasetsRemoved,
    DatasetsTagged,
    DatasetsUntagged,
    DatasetTypeRegistered,
    DimensionRecordAdded,
    JournalEntry,
    ReleaseChecked,
    ReleaseCreated,
    ReleaseRetracted,
)
from federation.registry.registry import Registry
from federation.registry.releases import release_holding
from federation.registry.source import Slot, SourceStates
from federation.registry.states import (
    CollectionRemoval,
    CollectionState,
    DatasetState,
    DatasetTypeState,
    RecordState,
    ReleaseCheckState,
    ReleaseEntries,
    ReleaseState,
    State,
    TagState,
)
from federation.sync.batch import Batch, Marked
from federation.sync.selection import Selection

BATCH = 5000  # journal entries or datasets per batch


class SourceReader:
    """Batches of states describing what a selection of a source holds or changed."""

    def __init__(self, registry: Registry, selection: Selection, *,
                 here: str | None = None) -> None:
        self.registry = registry
        self.selection = selection
        self.states = SourceStates(registry, here=here)
        self.collections: set[str] = set()
        self.types: dict[str, DatasetType] = {}
        self.type_ids: set[int] = set()
        self._runs: set[str] = set()
        self._run_ids: set[int] = set()
        self._releases: list[str] = []
        #: the releases this sync carries: those whose collection the selection covers
        self.releases: list[str] = []
        self._source = here or registry.site
        self._calibs: list[str] = []  # the selected CALIBRATION collections
        self._calibrations: set[uuid.UUID] | None = None  # what the subset needs of them

    @contextmanager
    def window(self) -> Iterator[int]:
        """Fix what this sync covers: the journal head and the selected collections and
        types, read together in one snapshot that every read inside the block sees.

        Yields the journal head: every change up to it is in this sync, every later
        one in the next.
        """
        with self.registry.db.pinned():
            upto = self.registry.db.last_seq()
            self.collections = self._selected_collections()
            self.types = {t.name: t for t in self.registry.dataset_types.query()
                          if self.selection.matches_type(t.name)}
            self.type_ids = {self.registry.dataset_types.id_of(n) for n in self.types}
            colls = self.registry.collections
            self._runs = {n for n in self.collections if colls.lookup(n)[1] is CollectionType.RUN}
            self._run_ids = {colls.lookup(n)[0] for n in self._runs}
            self.releases = [r for r in self._releases if r in self.collections]
            self._calibs = sorted(n for n in self.collections
                                  if colls.lookup(n)[1] is CollectionType.CALIBRATION)
            self._calibrations = None
            wanted = self.selection.release
            if wanted is not None and wanted not in self._releases:
                raise ReleaseError(f"the source holds no release {wanted!r}")
            yield upto

    def _selected_collections(self) -> set[str]:
        """Collections matching the selection, with the children of matching chains."""
        colls = self.registry.collections
        self._releases = self.registry.releases.names()
        names = {c.name for c in colls.query() if self.selection.matches_collection(c.name)}
        stack = list(names)
        while stack:
            name = stack.pop()
            if colls.lookup(name)[1] is CollectionType.CHAINED:
                for child in colls.children(name):
                    if child not in names:
                        names.add(child)
                        stack.append(child)
        return names

    def pull(self, upto: int, cursor: int | None, covered: set[str] | None,
             retries: Sequence[uuid.UUID] = ()) -> Marked:
        """Everything a destination at ``cursor`` needs to reach ``upto``: failed files
        again, a snapshot if it has nothing yet (or of collections the selection
        covers since its last sync), then the journal."""
        if retries:
            yield self.retry_batch(retries), None
        if cursor is None:
            for batch in self.snapshot():
                yield batch, None
            yield Batch(), upto
            return
        added = self.collections - covered if covered is not None else set()
        added -= self.states.created_after(added, cursor)  # the journal brings those whole
        if added:  # e.g. a selected chain gained a child: bring what it already holds
            for batch in self.snapshot(added):
                yield batch, None
        for batch, mark in self.journal(cursor, upto):
            batch.repeats = bool(added or retries)
            yield batch, mark

    # -- journal -------------------------------------------------------------------

    def journal(self, after: int, upto: int) -> Marked:
        """Batches for the journal entries in ``(after, upto]``."""
        pending: list[JournalEntry] = []
        last = after
        for entry in self.registry.db.entries(after, upto=upto):
            pending.append(entry)
            last = entry.seq
            if len(pending) >= BATCH:
                yield self._batch_for(pending), last
                pending = []
        if pending or last < upto:
            yield self._batch_for(pending), upto

    def _batch_for(self, entries: list[JournalEntry]) -> Batch:
        return self._batch(self._select(entries)[0])

    def pending(self, after: int, upto: int, exclude_origin: str | None = None
                ) -> tuple[int, float | None]:
        """How many journal entries in ``(after, upto]`` this selection carries (leaving
        out changes first made at ``exclude_origin``: a destination skips its own changes
        when they come back), and when the first of them was written."""
        count, oldest = 0, None
        pending: list[JournalEntry] = []
        entries = self.registry.db.entries(after, upto=upto)
        for entry in entries:
            if exclude_origin is None or entry.origin != exclude_origin:
                pending.append(entry)
            if len(pending) >= BATCH:
                count, oldest = self._count(pending, count, oldest)
                pending = []
        return self._count(pending, count, oldest)

    def _count(self, entries: list[JournalEntry], count: int, oldest: float | None
               ) -> tuple[int, float | None]:
        carried = self._select(entries, exact=True)[1]
        if carried and oldest is None:
            oldest = carried[0].created_at
        return count + len(carried), oldest

    def _select(self, entries: list[JournalEntry], *, exact: bool = False
                ) -> tuple[_Wanted, list[JournalEntry]]:
        """What a batch for these journal entries must describe, and the entries it
        carries (``exact``: a deletion counts only if its dataset type is selected, which
        costs a lookup the batch itself makes anyway)."""
        wanted = _Wanted()
        carried: list[JournalEntry] = []
        created: list[tuple[JournalEntry, uuid.UUID]] = []
        removed: list[tuple[JournalEntry, list[uuid.UUID]]] = []
        selected = self.collections
        full = self.selection.is_full
        for entry in entries:
            change = entry.change
            kind = type(change)
            taken = False
            if kind is DatasetCreated:
                created.append((entry, uuid.UUID(change.id)))
            elif kind in (DatasetsTagged, DatasetsUntagged):
                if taken := change.collection in selected:
                    wanted.tags.extend((change.collection, uuid.UUID(i)) for i in change.ids)
            elif kind is DatasetsCertified:
                if taken := change.collection in selected:
                    wanted.certified.extend((change.collection, uuid.UUID(i))
                                            for i in change.ids)
            elif kind in (DatasetsDecertified, CalibSlotsReplaced):
                if taken := change.collection in selected:
                    wanted.slots.extend((change.collection, change.dataset_type, k)
                                        for k in change.data_id_keys or [])
            elif kind in (CollectionCreated, CollectionDocChanged, ChainChanged,
                          CollectionRemoved):
                if taken := (change.name in selected
                             or self.selection.matches_collection(change.name)):
                    wanted.collections.append(change.name)
            elif kind in (ReleaseCreated, ReleaseRetracted):
                if taken := change.name in self.releases:
                    wanted.releases.append(change.name)
            elif kind is ReleaseChecked:
                if taken := change.release in self.releases:
                    wanted.checks.append((change.release, change.site, change.checked))
            elif kind is DatasetsRemoved:
                ids = [uuid.UUID(i) for i in change.ids]
                wanted.removed.extend(ids)
                removed.append((entry, ids))
            elif kind is DatasetTypeRegistered:
                if taken := change.name in self.types:
                    wanted.types.add(change.name)
            elif kind is DimensionRecordAdded and full:
                wanted.records.append((change.dimension, change.record))
                taken = True
            if taken:
                carried.append(entry)
        matched = set(self.states.matching(
            [i for _, i in created], type_ids=self.type_ids, run_ids=self._run_ids,
            where=self.selection.where, bind=self.selection.bind_dict,
            dataset_types=list(self.types.values())))
        wanted.datasets = [i for _, i in created if i in matched]
        carried += [entry for entry, i in created if i in matched]
        if wanted.datasets and self._completes():
            needed = self._needed_calibrations(wanted.datasets)
            wanted.certified += [p for p in self.states.memberships(list(needed))[1]
                                 if p[0] in self._calibs]
        if removed:
            kept = {uuid.UUID(r.id) for r in self.states.removals(wanted.removed)
                    if self.selection.matches_type(r.dataset_type)} if exact else None
            carried += [entry for entry, ids in removed
                        if kept is None or kept.intersection(ids)]
        carried.sort(key=lambda e: e.seq)
        return wanted, carried

    # -- snapshot ------------------------------------------------------------------

    def snapshot(self, collections: Iterable[str] | None = None) -> Iterator[Batch]:
        """Batches describing the current state of the selected (or given) collections:
        their definitions, then RUNs (with their deletions), then TAGGED and
        CALIBRATION memberships."""
        names = sorted(self.collections if collections is None else collections)
        removed = [] if collections is not None else [
            r for r in self.states.removed_collections()
            if self.selection.matches_collection(r.name)]
        yield self._batch(_Wanted(collections=names + [r.name for r in removed],
                                  types=set(self.types)))
        if collections is None and self.selection.is_full:
            yield from self._all_records()  # a full replica: records nothing refers to too
        colls = self.registry.collections
        kinds = {name: colls.lookup(name)[1] for name in names}
        for name in [r.name for r in removed] + [n for n in names
                                                 if kinds[n] is CollectionType.RUN]:
            yield from self._run_snapshot(name, removed=kinds.get(name) is None)
        for name in names:
            if kinds[name] is CollectionType.TAGGED:
                present, gone = self.states.tags(name)
                ids = list(present) + list(gone)
                for start in range(0, len(ids), BATCH):
                    chunk = ids[start:start + BATCH]
                    yield self._batch(_Wanted(tags=[(name, i) for i in chunk]))
            elif kinds[name] is CollectionType.CALIBRATION:
                slots = self.states.calib_slots(name)
                for start in range(0, len(slots), BATCH):
                    yield self._batch(_Wanted(slots=slots[start:start + BATCH]))
        for release in self.releases:  # after the collections they freeze
            if release in names:
                yield self._batch(_Wanted(releases=[release]))

    def _all_records(self) -> Iterator[Batch]:
        """Every dimension record, in batches, required dimensions first."""
        dims = self.registry.dimensions
        for dimension in self.registry.universe.dimensions:
            for records in dims.stream(dimension, BATCH):
                yield self._batch(_Wanted(records=[(dimension, r) for r in records]))

    def _run_snapshot(self, run: str, *, removed: bool) -> Iterator[Batch]:
        """A RUN's datasets (unless the run is gone), then the deletions made in it, so that
        a stale path cannot bring them back."""
        if not removed:
            for states in self.states.run_datasets(run, self.type_ids, chunk=BATCH):
                if self.selection.where:
                    keep = set(self.states.matching(
                        [s.uuid for s in states], type_ids=self.type_ids,
                        where=self.selection.where, bind=self.selection.bind_dict,
                        dataset_types=list(self.types.values())))
                    states = [s for s in states if s.uuid in keep]
                if states:
                    out = _Out()
                    self._add_datasets(states, out)
                    yield out.batch(self.registry)
        for removals in self.states.run_removals(run, chunk=BATCH):
            removals = [r for r in removals if self.selection.matches_type(r.dataset_type)]
            if removals:
                out = _Out()
                out.removals.extend(removals)
                yield out.batch(self.registry)

    def retry_batch(self, ids: Sequence[uuid.UUID]) -> Batch:
        """Datasets whose files failed earlier, with their tags and certifications."""
        tagged, certified = self.states.memberships(ids)
        selected = self.collections
        return self._batch(_Wanted(
            datasets=list(ids), tags=[p for p in tagged if p[0] in selected],
            certified=[p for p in certified if p[0] in selected]), retry=True)

    # -- assembly ------------------------------------------------------------------

    def _batch(self, wanted: _Wanted, *, retry: bool = False) -> Batch:
        out = _Out()
        for name in wanted.types:
            out.add_type(self.types[name])
        for dimension, record in wanted.records:
            out.records[(dimension, self._record_key(dimension, record))] = record
        for name in wanted.collections:
            self._collection(name, out)
        self._add_datasets(self.states.datasets(wanted.datasets), out)
        self._tags(wanted.tags, out, include_all=retry)
        slots = list(wanted.slots)
        keys = self.states.slot_keys([i for _, i in wanted.certified])
        slots += [(name, *keys[i]) for name, i in wanted.certified if i in keys]
        self._calib_slots(slots, out, include_all=retry)
        out.removals.extend(r for r in self.states.removals(wanted.removed)
                            if self.selection.matches_type(r.dataset_type))
        self._add_releases(wanted, out)
        return out.batch(self.registry)

    def _add_releases(self, wanted: _Wanted, out: _Out) -> None:
        """Releases whole (their row, every manifest line, every verification known here)
        and verifications made since."""
        releases = self.registry.releases
        for name in dict.fromkeys(wanted.releases):
            out.releases.append(releases.get(name).state)
            out.release_entries.extend(releases.entry_chunks(name))
            out.checks.extend(c.state for c in releases.checks(name))
        by_release: dict[str, list[tuple[str, float]]] = {}
        for release, site, checked in wanted.checks:
            if release not in wanted.releases:
                by_release.setdefault(release, []).append((site, checked))
        for release, keys in by_release.items():
            out.checks.extend(c.state for c in releases.checks(release, keys))

    def _add_datasets(self, states: Iterable[DatasetState], out: _Out) -> None:
        states = [s for s in states if s.id not in out.datasets]
        self._prefetch_records(states)
        for state in states:
            out.datasets[state.id] = state
            dataset_type = self.types.get(state.dataset_type) or \
                self.registry.dataset_types.get(state.dataset_type)
            out.add_type(dataset_type)
            self._collection(state.run, out)
            self._records_for(dataset_type.dimensions.required, state.data_id, out)

    def _prefetch_records(self, states: Sequence[DatasetState]) -> None:
        """Load the records the datasets' data IDs name, a bulk query per dimension."""
        universe, dims = self.registry.universe, self.registry.dimensions
        keys: dict[str, set[tuple]] = {}
        for state in states:
            data_id = state.data_id
            for name in data_id:
                dim = universe[name]
                keys.setdefault(name, set()).add(tuple(data_id[k] for k in dim.keys))
        for name, wanted in keys.items():
            dims.prefetch(name, wanted)

    def _records_for(self, names: Sequence[str], values: dict[str, Any], out: _Out) -> None:
        """The records of a data ID's dimensions, and of the dimensions they imply."""
        universe, dims = self.registry.universe, self.registry.dimensions
        for name in names:
            dim = universe[name]
            key = tuple(values[k] for k in dim.keys)
            if (name, key) in out.records:
                continue
            record = dims.get(name, key)
            if record is None:
                continue
            out.records[(name, key)] = record
            if dim.implies:
                self._records_for(dim.implies, {**values, **record}, out)

    def _collection(self, name: str, out: _Out) -> None:
        if name in out.collections or name in out.removed_collections:
            return
        state = self.states.collection(name)
        if isinstance(state, CollectionRemoval):
            out.removed_collections[name] = state
        elif state is not None:
            release = release_holding(name, self._releases)
            if release is not None:
                state = dataclasses.replace(state, release=release)
            out.collections[name] = state
            for child in state.children or []:
                self._collection(child, out)

    # -- complete subsets ----------------------------------------------------------

    def _completes(self) -> bool:
        """Whether this selection is a subset by data ID of RUNs and of CALIBRATION
        collections: then the calibrations it brings are those its datasets need (not
        those whose data IDs happen to match)."""
        return bool(self.selection.where and self._calibs and self._run_ids)

    def _needed_calibrations(self, ids: Sequence[uuid.UUID] | None = None) -> set[uuid.UUID]:
        """The calibrations the selected datasets (all, or those among ``ids``) need."""
        if not self._completes():
            return set()
        if ids is None and self._calibrations is not None:
            return self._calibrations
        found = self.states.calibrations_for(
            self._calibs, types=list(self.types.values()), run_ids=self._run_ids,
            where=self.selection.where, bind=self.selection.bind_dict, ids=ids)
        if ids is None:
            self._calibrations = found
        return found

    def _needed(self, ids: Iterable[uuid.UUID], out: _Out, include_all: bool, *,
                calibrations: bool = False) -> set[uuid.UUID]:
        """The datasets among ``ids`` a membership may be sent for (selected types, `where`;
        for ``calibrations``, what a subset needs), adding to the batch those not sent
        through their RUN's own batches."""
        ids = list(dict.fromkeys(ids))
        if calibrations and self._completes():
            keep = self._needed_calibrations() & set(ids)
        else:
            keep = set(self.states.matching(ids, type_ids=self.type_ids,
                                            where=self.selection.where,
                                            bind=self.selection.bind_dict,
                                            dataset_types=list(self.types.values())))
        states = self.states.datasets([i for i in ids if i in keep])
        extra = states if include_all else [s for s in states if s.run not in self._runs]
        self._add_datasets(extra, out)
        return {s.uuid for s in states}

    def _tags(self, pairs: list[tuple[str, uuid.UUID]], out: _Out, include_all: bool) -> None:
        by_collection: dict[str, list[uuid.UUID]] = {}
        for name, dataset_id in pairs:
            by_collection.setdefault(name, []).append(dataset_id)
        colls = self.registry.collections
        for name, ids in by_collection.items():
            self._collection(name, out)
            if not colls.exists(name):
                continue
            present, gone = self.states.tags(name, ids)
            selected = self._needed(present, out, include_all)
            for dataset_id, version in gone.items():
                out.tags.append(TagState(name, str(dataset_id), False, version))
            for dataset_id, version in present.items():
                if dataset_id in selected:
                    out.tags.append(TagState(name, str(dataset_id), True, version))

    def _calib_slots(self, slots: list[Slot], out: _Out, include_all: bool) -> None:
        for slot in dict.fromkeys(slots):
            if slot[1] not in self.types:
                continue
            state = self.states.calib_slot(slot)
            if state is None:
                continue
            ids = [uuid.UUID(entry[0]) for entry in state.entries]
            needed = self._needed(ids, out, include_all, calibrations=True) if ids else set()
            if ids and not needed:
                continue
            if self._completes():  # the slot whole; its other datasets as records only
                others = self.states.datasets([i for i in ids if i not in needed])
                self._add_datasets([s if s.held_at else dataclasses.replace(
                    s, held_at=self._source) for s in others], out)
            self._collection(state.collection, out)
            out.slots.append(state)

    def _record_key(self, dimension: str, record: dict[str, Any]) -> tuple:
        dim = self.registry.universe[dimension]
        return tuple(record[k] for k in dim.keys)


class _Wanted:
    """What a batch must describe, as collected from journal entries or a snapshot."""

    def __init__(self, **kwargs: Any) -> None:
        self.datasets: list[uuid.UUID] = []
        self.tags: list[tuple[str, uuid.UUID]] = []
        self.certified: list[tuple[str, uuid.UUID]] = []
        self.slots: list[Slot] = []
        self.collections: list[str] = []
        self.removed: list[uuid.UUID] = []
        self.types: set[str] = set()
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.releases: list[str] = []
        self.checks: list[tuple[str, str, float]] = []
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
        self.slots: list = []
        self.removals: list = []
        self.releases: list[ReleaseState] = []
        self.release_entries: list[ReleaseEntries] = []
        self.checks: list[ReleaseCheckState] = []

    def add_type(self, dataset_type: DatasetType) -> None:
        if dataset_type.name not in self.types:
            self.types[dataset_type.name] = DatasetTypeState(
                dataset_type.name, list(dataset_type.dimensions.names),
                dataset_type.storage_class)

    def batch(self, registry: Registry) -> Batch:
        return Batch(self.ordered(registry))

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
        states += self.releases  # after the collections they freeze, with their manifests
        states += self.release_entries
        states += self.checks
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
