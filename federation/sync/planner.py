"""Planning a batch: what each state would do to the destination, without writing.

Every state gets an action:

- ``insert`` / ``update`` / ``apply``: it changes the destination;
- ``fetch``: a dataset held here without its file, whose file now travels;
- ``replace``: a dataset its owner deleted and re-created under the same UUID
  (a newer creation version than the one held here);
- ``skip``: the destination already holds it (or something newer); ``refresh``: it
  holds the same dataset under an older creation version, which is brought up to
  date (reported as a skip);
- ``conflict``: it contradicts what the destination holds (both sides reported);
- ``refused``: it would change a collection this site owns;
- ``blocked``: it needs an object of the batch that is not taken.

A site receiving its own data back finds it identical and skips it; only a
real difference is a conflict.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence

from federation.butler import Butler
from federation.errors import FederationError
from federation.model import data_id_key
from federation.registry.replica import HeldDataset, Replica
from federation.registry.states import (
    CalibSlotState,
    CollectionRemoval,
    CollectionState,
    DatasetRemoval,
    DatasetState,
    DatasetTypeState,
    RecordState,
    ReleaseCheckState,
    ReleaseEntries,
    ReleaseState,
    State,
    TagState,
)
from federation.sites import SiteDefinition, owner_by_prefix
from federation.sync.batch import Batch
from federation.sync.release_planning import RELEASE_STATES, ReleasePlanning
from federation.sync.report import Conflict, Plan
from federation.sync.selection import Selection
from federation.transport.base import check_relative

FILE_ACTIONS = ("insert", "fetch", "replace")  # actions that may bring a file
NOT_TAKEN = ("conflict", "refused", "blocked")


def carries_file(state: DatasetState, selection: Selection) -> bool:
    """Whether a dataset's file travels with it for this selection (vs. held elsewhere)."""
    return selection.files and state.file is not None and state.held_at is None


class Planner:
    """Classifies the states of batches from ``source`` against one destination.

    ``removed`` carries, across the batches of one planning pass, the deletions
    earlier batches will have applied by the time a later one is.
    """

    def __init__(self, butler: Butler, source: str, selection: Selection, *,
                 sites: Sequence[SiteDefinition] = (), keep_deleted: bool = False,
                 with_files: bool = True) -> None:
        self.butler = butler
        self.registry = butler.registry
        self.replica = Replica(butler.registry)
        self.site = butler.site
        self.source = source
        self.selection = selection
        self.sites = list(sites)
        self._sites = {site.name: site for site in self.sites}
        self.keep_deleted = keep_deleted
        self.with_files = with_files
        self.removed: dict[str, int] = {}

    def wants_file(self, state: DatasetState) -> bool:
        return self.with_files and carries_file(state, self.selection)

    def files_needed(self, plan: Plan) -> list[DatasetState]:
        """Datasets of a plan whose files travel."""
        return [s for s, a in plan.actions if a in FILE_ACTIONS
                and isinstance(s, DatasetState) and self.wants_file(s)]

    def plan(self, batch: Batch, *, carry: bool = False) -> Plan:
        """Classify each state of a batch (``carry``: remember its deletions for the
        batches planned after it, before any is applied)."""
        plan = Plan()
        context = BatchContext(self, batch, applying=not carry)
        if carry:
            self.removed.update(context.removals)
        blocked: set[tuple[str, str]] = set()
        for state in batch.states:
            if blocked.intersection(_needs(state)) or context.lacks_datasets(state):
                action = "blocked"
            else:
                action = self._classify(state, context, plan)
            if action in NOT_TAKEN:
                blocked.add(_key_of(state))
            plan.actions.append((state, action))
        return plan

    # -- per kind ------------------------------------------------------------------

    def _classify(self, state: State, ctx: BatchContext, plan: Plan) -> str:
        if isinstance(state, DatasetState):
            return self._dataset(state, ctx, plan)
        if isinstance(state, RecordState):
            return self._record(state, ctx, plan)
        if isinstance(state, DatasetTypeState):
            return self._dataset_type(state, plan)
        if isinstance(state, CollectionState):
            return self._collection(state, plan)
        if isinstance(state, RELEASE_STATES):
            return ctx.releases.classify(state, plan)
        return self._versioned(state, ctx, plan)

    def _record(self, state: RecordState, ctx: BatchContext, plan: Plan) -> str:
        key = ctx.record_key(state)
        ours = ctx.record(state.dimension, key)
        if ours is None:
            return "insert"
        if ours == state.record:
            return "skip"
        plan.conflicts.append(Conflict("dimension record", f"{state.dimension} {key}",
                                       "records differ", state.record, ours))
        return "conflict"

    def _dataset_type(self, state: DatasetTypeState, plan: Plan) -> str:
        ours = self.registry.dataset_types.find(state.name)
        if ours is None:
            return "insert"
        if list(ours.dimensions.names) == list(state.dimensions) and \
                ours.storage_class == state.storage_class:
            return "skip"
        plan.conflicts.append(Conflict("dataset type", state.name, "definitions differ",
                                       f"{state.dimensions} -> {state.storage_class}", str(ours)))
        return "conflict"

    def _collection(self, state: CollectionState, plan: Plan) -> str:
        claimed = owner_by_prefix(state.name, self.sites)
        if state.release is not None and claimed != self.site:
            claimed = None  # a release's collections have names of their own
        if claimed is not None and claimed != state.owner:
            plan.conflicts.append(Conflict(
                "collection", state.name, f"its prefix is owned by site {claimed}",
                f"owner {state.owner}", f"owner {claimed}"))
            return "conflict"
        owner = self._sites.get(state.owner)
        if claimed is None and owner is not None and owner.owns and state.release is None:
            plan.conflicts.append(Conflict(
                "collection", state.name, f"site {state.owner} does not own its prefix (it "
                f"owns {', '.join(owner.owns)}): only the owner of a prefix creates "
                "collections under it", f"owner {state.owner}", "no site owns it"))
            return "conflict"
        ours = self.replica.collection_versions(state.name)
        if ours is None:
            removed = self.replica.collection_tombstone(state.name)
            if removed is not None and removed > state.created_version:
                return "skip"  # removed here by its owner after this version
            if state.owner == self.site:
                plan.conflicts.append(Conflict(
                    "collection", state.name, f"claims to be owned by this site ({self.site}), "
                    "which does not have it"))
                return "refused"
            return "insert"
        ctype, owner, _, doc_version, chain_version = ours
        if ctype != state.type or owner != state.owner:
            plan.conflicts.append(Conflict("collection", state.name, "definitions differ",
                                           f"{state.type} owned by {state.owner}",
                                           f"{ctype} owned by {owner}"))
            return "conflict"
        newer = state.doc_version > doc_version or (
            state.children is not None and state.chain_version > chain_version)
        if newer and owner == self.site:
            plan.conflicts.append(Conflict("collection", state.name,
                                           f"owned by this site ({self.site}); changes from "
                                           f"{self.source} are not accepted"))
            return "refused"
        return "update" if newer else "skip"

    def _dataset(self, state: DatasetState, ctx: BatchContext, plan: Plan) -> str:
        if state.file is not None and not os.path.isabs(state.file.path):
            try:
                check_relative(state.file.path)
            except FederationError as exc:
                plan.conflicts.append(Conflict("dataset", state.id, str(exc)))
                return "conflict"
        dataset_id = state.uuid
        mine = ctx.held.get(dataset_id)
        removed = ctx.tombstones.get(dataset_id)
        removal = ctx.removal_of(state.id)
        if mine is not None and removal is not None and mine.version <= removal:
            mine = None  # an earlier removal in this sync deletes what is held here
        if removal is not None:
            removed = max(removed or 0, removal)
        owner = ctx.owner(state.run)
        key = ctx.key(state)
        if mine is None:
            if removed is not None and removed >= state.version:
                return "skip"  # deleted here after (or without knowing) this creation
            if owner == self.site:
                plan.conflicts.append(Conflict(
                    "dataset", state.id, f"run {state.run} is owned by this site, which does "
                    f"not hold this dataset; datasets from {self.source} refused"))
                return "refused"
            other = ctx.slot_holder(state, key)
            if other is not None and other != dataset_id:
                plan.conflicts.append(Conflict(
                    "dataset", f"{state.dataset_type}@{key} in {state.run}",
                    "the slot holds a different dataset", state.id, str(other)))
                return "conflict"
            return "insert"
        differs = differences(state, key, mine)
        if not differs:
            if mine.held_at is not None and self.wants_file(state):
                return "fetch"
            # The same dataset: a newer creation version (its owner re-created it with the
            # same content) is recorded, so that older deletions cannot remove it.
            return "refresh" if state.version > mine.version else "skip"
        if state.version > mine.version and owner != self.site:
            return "replace"  # deleted and re-created by its owner since we got it
        if state.version < mine.version:
            return "skip"  # this site holds a newer creation than the source sent
        plan.conflicts.append(Conflict(
            "dataset", state.id, f"same UUID, different {' and '.join(differs)}",
            _describe(state.dataset_type, state.run, key, _checksum(state)),
            _describe(mine.dataset_type, mine.run, mine.key, mine.checksum)))
        return "conflict"

    def _versioned(self, state: State, ctx: BatchContext, plan: Plan) -> str:
        """Tags, calibration slots and removals: newer than what is here, or not."""
        collection = state.run if isinstance(state, DatasetRemoval) else (
            state.name if isinstance(state, CollectionRemoval) else state.collection)
        if isinstance(state, TagState) and ctx.deleted_here(state.dataset_id):
            return "skip"  # the dataset was deleted here: its memberships went with it
        newer = ctx.newer(state)
        if isinstance(state, DatasetRemoval) and newer and state.id in ctx.released:
            release = ctx.released[state.id]
            plan.conflicts.append(Conflict(
                "dataset", state.id, f"belongs to release {release!r} here: a released "
                "dataset is never deleted", f"deleted at {self.source} (its change "
                f"{state.version})", f"held by release {release!r}"))
            return "conflict"
        if ctx.owner(collection) == self.site and newer:
            plan.conflicts.append(Conflict(state.kind, collection, f"collection is owned by "
                                           f"this site ({self.site}), which does not have this "
                                           f"change; changes from {self.source} are not "
                                           "accepted"))
            return "refused"
        return "apply" if newer else "skip"


class BatchContext:
    """What one batch needs to know of the destination, read in bulk (what the planner
    and its variants look up per state)."""

    def __init__(self, planner: Planner, batch: Batch, *, applying: bool) -> None:
        self.planner = planner
        self.replica = planner.replica
        self.registry = planner.registry
        self.types = {s.name: s for s in batch.states if isinstance(s, DatasetTypeState)}
        self.owners = {s.name: s.owner for s in batch.states if isinstance(s, CollectionState)}
        datasets = [s for s in batch.states if isinstance(s, DatasetState)]
        removals = [s for s in batch.states if isinstance(s, DatasetRemoval)]
        self.removals = {} if planner.keep_deleted else {s.id: s.version for s in removals}
        self.released = {str(i): r for i, r in self.registry.releases.holding(
            [uuid.UUID(s.id) for s in removals]).items()} if removals else {}
        self.releases = ReleasePlanning(self.registry, batch.states)
        ids = [s.uuid for s in datasets]
        self.held: dict[uuid.UUID, HeldDataset] = self.replica.held(ids)
        self.tombstones = self.replica.dataset_tombstones(
            ids + [uuid.UUID(s.id) for s in removals])
        self._keys: dict[str, str] = {}
        self._holders: dict[tuple[str, str], dict[str, uuid.UUID]] = {}
        wanted: dict[tuple[str, str], set[str]] = {}
        for state in datasets:
            wanted.setdefault((state.run, state.dataset_type), set()).add(self.key(state))
        for (run, type_name), keys in wanted.items():
            if self._same_type(type_name):
                self._holders[(run, type_name)] = self.replica.slot_holders(run, type_name, keys)
        self._records = self._known_records(batch)
        self._tags = self._tag_versions(batch)
        self._gone = self._deleted_here(
            {uuid.UUID(s.dataset_id) for s in batch.states if isinstance(s, TagState)},
            datasets)
        self._slots = self._slot_versions(batch)
        # Memberships name datasets sent in earlier batches (their RUN's): once those are
        # applied, a membership whose dataset did not arrive waits for the retry.
        self._absent: set[str] = set()
        if applying:
            named = {i for s in batch.states for i in _members(s)} - {s.id for s in datasets}
            found = self.replica.existing([uuid.UUID(i) for i in named])
            self._absent = {i for i in named if uuid.UUID(i) not in found}

    def _deleted_here(self, ids: set[uuid.UUID], datasets: list[DatasetState]
                      ) -> set[uuid.UUID]:
        """Which of these datasets were deleted here and do not come back in this batch."""
        if not ids:
            return set()
        arriving = {s.uuid: s.version for s in datasets}
        deleted = self.tombstones | self.replica.dataset_tombstones(
            [i for i in ids if i not in self.tombstones])
        planned = {}  # deletions this sync applies before this batch
        for i in ids:
            removal = self.removal_of(str(i))
            if removal is not None:
                planned[i] = deleted[i] = max(removal, deleted.get(i, removal))
        present = self.replica.existing([i for i in ids if i not in planned])
        return {i for i in ids if i in deleted and i not in present
                and arriving.get(i, -1) <= deleted[i]}

    def deleted_here(self, dataset_id: str) -> bool:
        """Whether a dataset a membership names was deleted here, or is by this sync before
        this batch, and does not come back in it."""
        return uuid.UUID(dataset_id) in self._gone

    def lacks_datasets(self, state: State) -> bool:
        """Whether a membership names a dataset that is neither here nor in the batch."""
        return bool(self._absent) and any(i in self._absent for i in _members(state))

    def removal_of(self, dataset_id: str) -> int | None:
        """The version of a deletion of this dataset applied before it in this sync."""
        found = self.removals.get(dataset_id)
        return found if found is not None else self.planner.removed.get(dataset_id)

    def owner(self, collection: str) -> str | None:
        """Who owns a collection: as the batch sends it, else as the destination has it
        (looked up once per batch: removals name the same few runs thousands of times)."""
        if collection in self.owners:
            return self.owners[collection]
        colls = self.registry.collections
        found = self.owners[collection] = \
            colls.owner(collection) if colls.exists(collection) else None
        return found

    def key(self, state: DatasetState) -> str:
        key = self._keys.get(state.id)
        if key is None:
            dims = self._dimensions(state.dataset_type)
            group = self.registry.universe.group(tuple(dims))
            key = self._keys[state.id] = data_id_key([state.data_id[n] for n in group.required])
        return key

    def _dimensions(self, name: str) -> list[str]:
        if name in self.types:
            return list(self.types[name].dimensions)
        return list(self.registry.dataset_types.get(name).dimensions.names)

    def _same_type(self, name: str) -> bool:
        """Whether this registry defines the dataset type as the batch does."""
        ours = self.registry.dataset_types.find(name)
        theirs = self.types.get(name)
        return ours is not None and (theirs is None or (
            list(ours.dimensions.names) == list(theirs.dimensions)
            and ours.storage_class == theirs.storage_class))

    def slot_holder(self, state: DatasetState, key: str) -> uuid.UUID | None:
        holder = self._holders.get((state.run, state.dataset_type), {}).get(key)
        if holder is not None and self.removal_of(str(holder)) is not None:
            return None  # deleted before this dataset arrives
        return holder

    def record_key(self, state: RecordState) -> tuple:
        dim = self.registry.universe[state.dimension]
        return tuple(state.record.get(k) for k in dim.keys)

    def _known_records(self, batch: Batch) -> dict[str, dict[tuple, dict | None]]:
        """The destination's records for the batch's record states, a query per dimension."""
        keys: dict[str, set[tuple]] = {}
        for state in batch.states:
            if isinstance(state, RecordState):
                keys.setdefault(state.dimension, set()).add(self.record_key(state))
        dims = self.registry.dimensions
        found: dict[str, dict[tuple, dict | None]] = {}
        for name, wanted in keys.items():
            dims.prefetch(name, wanted)
            found[name] = {key: dims.cached(name, key) for key in wanted}
        return found

    def record(self, dimension: str, key: tuple) -> dict | None:
        return self._records[dimension].get(key)

    def _tag_versions(self, batch: Batch) -> dict[tuple[str, uuid.UUID], int]:
        wanted: dict[str, list[uuid.UUID]] = {}
        for state in batch.states:
            if isinstance(state, TagState):
                wanted.setdefault(state.collection, []).append(uuid.UUID(state.dataset_id))
        return {(name, i): v for name, ids in wanted.items()
                for i, v in self.replica.tag_versions(name, ids).items()}

    def _slot_versions(self, batch: Batch) -> dict[tuple[str, str, str], int]:
        wanted: dict[tuple[str, str], list[str]] = {}
        for state in batch.states:
            if isinstance(state, CalibSlotState):
                wanted.setdefault((state.collection, state.dataset_type), []).append(
                    state.data_id_key)
        return {(c, t, k): v for (c, t), keys in wanted.items()
                for k, v in self.replica.calib_versions(c, t, keys).items()}

    def newer(self, state: State) -> bool:
        """Whether a versioned state is newer than what the destination holds."""
        if isinstance(state, DatasetRemoval):
            known = self.tombstones.get(uuid.UUID(state.id))
            return known is None or known < state.version
        if isinstance(state, CollectionRemoval):
            if self.registry.collections.exists(state.name):
                return True
            known = self.replica.collection_tombstone(state.name)
            return known is None or known < state.version
        if isinstance(state, TagState):
            return self._tags.get((state.collection, uuid.UUID(state.dataset_id)), 0) \
                < state.version
        return self._slots.get((state.collection, state.dataset_type, state.data_id_key), 0) \
            < state.version


def _members(state: State) -> list[str]:
    """The datasets a membership state puts into a collection."""
    if isinstance(state, TagState):
        return [state.dataset_id] if state.present else []
    if isinstance(state, CalibSlotState):
        return [entry[0] for entry in state.entries]
    return []


def differences(state: DatasetState, key: str, mine: HeldDataset) -> list[str]:
    """What differs between a dataset state and what is held under its UUID."""
    found = []
    if state.dataset_type != mine.dataset_type:
        found.append("dataset type")
    if key != mine.key:
        found.append("data ID")
    if state.run != mine.run:
        found.append("run")
    theirs = _checksum(state)
    if theirs and mine.checksum and theirs != mine.checksum:
        found.append("content (checksum)")
    return found


def _checksum(state: DatasetState) -> str | None:
    return state.file.checksum if state.file is not None else None


def _describe(dataset_type: str, run: str, key: str, checksum: str | None) -> str:
    return f"{dataset_type}@{key} in {run}" + (f", xxh3 {checksum}" if checksum else "")


def _key_of(state: State) -> tuple[str, str]:
    """What other states name this one by."""
    if isinstance(state, DatasetTypeState | CollectionState | ReleaseState):
        return (state.kind, state.name)
    if isinstance(state, DatasetState):
        return (state.kind, state.id)
    return (state.kind, str(id(state)))


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
    if isinstance(state, ReleaseState):
        return [("collection", state.name)]
    if isinstance(state, ReleaseEntries | ReleaseCheckState):
        return [("release", state.release)]
    return []
