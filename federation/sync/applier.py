"""Applying a planned batch: its records, the files that arrived, and the cursor, in one
transaction.

Files are already in place (see :mod:`federation.sync.fetcher`); states that
need a file that failed to arrive are left out and their datasets queued for
the next sync to retry. Files of deleted datasets go to the registry's trash
in the same transaction and are deleted after it commits.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from federation.butler import Butler
from federation.faults import checkpoint
from federation.registry.cursors import Cursor
from federation.registry.replica import Replica
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
from federation.sync.fetcher import Fetched
from federation.sync.planner import NOT_TAKEN
from federation.sync.report import Plan, refers_to


@dataclass(frozen=True)
class CursorMove:
    """Where a pull's cursor goes once a batch is applied."""

    peer: str
    selection_key: str
    selection: dict
    last_seq: int
    covered: frozenset[str] | None
    instance: str | None


class Applier:
    """Writes planned batches from one source into a destination repository."""

    def __init__(self, butler: Butler, source: str, *, keep_deleted: bool = False) -> None:
        self.butler = butler
        self.registry = butler.registry
        self.replica = Replica(butler.registry)
        self.source = source
        self.keep_deleted = keep_deleted

    def apply(self, plan: Plan, fetched: Fetched, *, retry_key: str,
              cursor: CursorMove | None) -> int:
        """Write a batch's changes, its failed files for retry and the cursor, atomically;
        returns the destination's journal head after them.

        States are written by kind, in dependency order (records, dataset types,
        collections, deletions, datasets, calibration slots, tags, removed
        collections), each kind in bulk. A file that arrived but is gone once the
        write lock is held (another process emptied a trash holding its path) counts
        as failed: moved to ``fetched.failed``.
        """
        replica = self.replica
        with self.registry.transaction(), self.registry.db.replicating():
            self._check_arrived(fetched)
            failed = set(fetched.failed)
            taken: dict[type, list[tuple[State, str]]] = {kind: [] for kind in ORDER}
            adopted: list[State] = []
            for state, action in plan.actions:
                if action == "adopt":
                    adopted.append(state)
                elif action != "skip" and action not in NOT_TAKEN \
                        and not refers_to(state, failed):
                    taken[type(state)].append((state, action))
            replica.adopt(adopted)
            self._records([s for s, _ in taken[RecordState]])
            for state, _ in taken[DatasetTypeState]:
                self.registry.register_dataset_type(state.name, state.dimensions,
                                                    state.storage_class)
            for state, _ in taken[CollectionState]:
                replica.apply_collection(state)
            if taken[DatasetRemoval]:
                replica.apply_removals([s for s, _ in taken[DatasetRemoval]],
                                       keep=self.keep_deleted, origin=self.source)
                checkpoint("removals applied")
            self._datasets(taken[DatasetState], fetched.arrived)
            if taken[CalibSlotState]:
                replica.apply_calib_slots([s for s, _ in taken[CalibSlotState]])
            if taken[TagState]:
                replica.apply_tags([s for s, _ in taken[TagState]])
            for state, _ in taken[CollectionRemoval]:
                replica.apply_collection_removal(state)
            self._releases(taken)
            checkpoint("state applied")
            cursors = self.registry.cursors
            cursors.record_retries(self.source, retry_key, {
                uuid.UUID(i): reason for i, (_, reason) in fetched.failed.items()})
            if fetched.arrived:
                cursors.clear_retries(self.source, retry_key,
                                      [uuid.UUID(i) for i in fetched.arrived])
            if cursor is not None:
                cursors.save(Cursor("pull", cursor.peer, cursor.selection_key, cursor.last_seq,
                                    cursor.selection, cursor.covered, cursor.instance))
            head = self.registry.db.head()
            checkpoint("before commit")
        checkpoint("after commit")
        self.butler.empty_trash()
        return head

    def _check_arrived(self, fetched: Fetched) -> None:
        root = self.butler.datastore.root
        for dataset_id, path in list(fetched.arrived.items()):
            if not os.path.exists(os.path.join(root, path)):
                del fetched.arrived[dataset_id]
                fetched.failed[dataset_id] = (path, "the file was deleted by another process "
                                                    "after it arrived")

    def _releases(self, taken: dict[type, list[tuple[State, str]]]) -> None:
        """New releases with their manifests, retractions, other sites' verifications."""
        new = [s for s, a in taken[ReleaseState] if a == "insert"]
        if new:
            self.replica.apply_releases(new, [s for s, _ in taken[ReleaseEntries]])
        retracted = [s for s, a in taken[ReleaseState] if a == "update"]
        if retracted:
            self.replica.retract_releases(retracted)
        if taken[ReleaseCheckState]:
            self.replica.record_checks([s for s, _ in taken[ReleaseCheckState]])

    def _records(self, states: Sequence[RecordState]) -> None:
        """New dimension records, one insert per dimension, required ones first."""
        by_dimension: dict[str, list[dict]] = {}
        for state in states:
            by_dimension.setdefault(state.dimension, []).append(state.record)
        for name in self.registry.universe.sorted(by_dimension):
            self.registry.dimensions.insert(name, by_dimension[name])

    def _datasets(self, taken: Sequence[tuple[State, str]], arrived: dict[str, str]) -> None:
        """Files that arrived for datasets held here without them; re-created datasets
        replacing their old creation; then every new dataset in bulk."""
        attach = {s.id: arrived[s.id] for s, a in taken if a == "fetch" and s.id in arrived}
        if attach:
            self.replica.attach_files(attach)
        refreshed = {s.uuid: s.version for s, a in taken if a == "refresh"}
        if refreshed:
            self.replica.set_versions(refreshed)
        replaced = [s for s, a in taken if a == "replace"]
        if replaced:
            self.replica.remove_for_recreation(replaced)
        new = [s for s, a in taken if a in ("insert", "replace")]
        if new:
            self.replica.insert_datasets(new, arrived, held_at=self.source)
            checkpoint("datasets inserted")


#: the order in which a batch's kinds of states are written
ORDER = (RecordState, DatasetTypeState, CollectionState, DatasetRemoval, DatasetState,
         CalibSlotState, TagState, CollectionRemoval, ReleaseState, ReleaseEntries,
         ReleaseCheckState)
