"""Planning against a rebuilt source (``--reset-cursor``).

A repository rebuilt under the same site name is another instance: its journal and
its versions start again, so they cannot be compared with what a replica holds of
the former one. The sync then re-plans from a snapshot comparing contents instead:
what is equal takes the new repository's versions (``adopt``; ``refresh`` for a
dataset), every difference is a conflict with both sides.
"""

from __future__ import annotations

import uuid

from federation.registry.states import (
    CalibSlotState,
    CollectionRemoval,
    CollectionState,
    DatasetRemoval,
    DatasetState,
    State,
    TagState,
)
from federation.sync.planner import BatchContext, Planner, differences
from federation.sync.report import Conflict, Plan


class ResetPlanner(Planner):
    """Classifies states of a rebuilt source by content, not by version."""

    def _collection(self, state: CollectionState, plan: Plan) -> str:
        if not self.registry.collections.exists(state.name):
            return super()._collection(state, plan)
        ours = self.registry.collections.get(state.name)
        theirs = (state.type, state.owner, state.doc,
                  list(state.children) if state.children is not None else [])
        mine = (str(ours.type), ours.owner_site, ours.doc, list(ours.children))
        if theirs != mine:
            plan.conflicts.append(Conflict("collection", state.name,
                                           "differs from the former repository's",
                                           str(theirs), str(mine)))
            return "conflict"
        return "adopt"

    def _dataset(self, state: DatasetState, ctx: BatchContext, plan: Plan) -> str:
        mine = ctx.held.get(state.uuid)
        if mine is None:
            if state.uuid in ctx.tombstones:
                plan.conflicts.append(Conflict(
                    "dataset", state.id, "deleted here by the former repository",
                    state.run, "deleted"))
                return "conflict"
            return super()._dataset(state, ctx, plan)
        key = ctx.key(state)
        differs = differences(state, key, mine)
        if differs:
            plan.conflicts.append(Conflict(
                "dataset", state.id, f"same UUID, different {' and '.join(differs)} than the "
                "former repository's", state.run, mine.run))
            return "conflict"
        if mine.held_at is not None and self.wants_file(state):
            return "fetch"
        return "refresh"

    def _versioned(self, state: State, ctx: BatchContext, plan: Plan) -> str:
        same = self._same_as_here(state)
        if same:
            return "adopt"
        subject = state.id if isinstance(state, DatasetRemoval) else (
            state.name if isinstance(state, CollectionRemoval) else state.collection)
        plan.conflicts.append(Conflict(state.kind, subject,
                                       "differs from what the former repository gave"))
        return "conflict"

    def _same_as_here(self, state: State) -> bool:
        replica = self.replica
        if isinstance(state, TagState):
            present = replica.tagged(state.collection, [uuid.UUID(state.dataset_id)])
            return bool(present) == state.present
        if isinstance(state, CalibSlotState):
            return replica.calib_entries(state.collection, state.dataset_type,
                                         state.data_id_key) == list(state.entries)
        if isinstance(state, DatasetRemoval):
            return not replica.existing([uuid.UUID(state.id)])
        return not self.registry.collections.exists(state.name)
