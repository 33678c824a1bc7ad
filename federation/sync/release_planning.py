"""Planning a batch's releases: each is taken whole, once, if its manifest's lines hash to
its root; afterwards only its retraction and other sites' verifications of it arrive.

A release's lines come in the same batch as its row (see
:class:`~federation.sync.reader.SourceReader`); their action follows the row's.
"""

from __future__ import annotations

from federation.merkle import build, entry_hash
from federation.registry.registry import Registry
from federation.registry.states import ReleaseCheckState, ReleaseEntries, ReleaseState, State
from federation.sync.report import Conflict, Plan

RELEASE_STATES = (ReleaseState, ReleaseEntries, ReleaseCheckState)


class ReleasePlanning:
    """The release states of one batch, classified against one destination."""

    def __init__(self, registry: Registry, states: list[State]) -> None:
        self.registry = registry
        self.manifests: dict[str, list[ReleaseEntries]] = {}
        for state in states:
            if isinstance(state, ReleaseEntries):
                self.manifests.setdefault(state.release, []).append(state)
        self.actions: dict[str, str] = {}  # by release, as decided for its row

    def classify(self, state: State, plan: Plan) -> str:
        if isinstance(state, ReleaseState):
            action = self.actions[state.name] = self._release(state, plan)
            return action
        if isinstance(state, ReleaseEntries):
            return "insert" if self.actions.get(state.release) == "insert" else "skip"
        assert isinstance(state, ReleaseCheckState)
        return self._check(state)

    def _release(self, state: ReleaseState, plan: Plan) -> str:
        ours = self.registry.releases.find(state.name)
        if ours is not None:
            if ours.root != state.root:
                plan.conflicts.append(Conflict("release", state.name, "another release has "
                                               "this name here", f"root {state.root}",
                                               f"root {ours.root}"))
                return "conflict"
            return "update" if state.retracted and ours.retracted is None else "skip"
        problem = self.manifest_problem(state)
        if problem:
            plan.conflicts.append(Conflict("release", state.name, problem,
                                           f"root {state.root}", "no such release"))
            return "conflict"
        return "insert"

    def _check(self, state: ReleaseCheckState) -> str:
        """Another site's verification of a release held here (or arriving), if new; a
        site's own verifications are made there, not received."""
        held = self.actions.get(state.release) in ("insert", "update", "skip") or \
            self.registry.releases.find(state.release) is not None
        if not held or state.site == self.registry.site:
            return "skip"
        known = self.registry.releases.checks(state.release, [(state.site, state.checked)])
        return "skip" if known else "insert"

    def manifest_problem(self, state: ReleaseState) -> str | None:
        """Why the lines the batch carries are not the release's manifest, if they are not:
        every line, in key order, hashing to its root."""
        lines = _in_order(self.manifests.get(state.name, []))
        if lines is None or len(lines) != state.entries:
            found = 0 if lines is None else len(lines)
            return f"its manifest arrived with {found} of {state.entries} entries"
        root = build(entry_hash(line.encode()) for line in lines)[0].hex()
        if root != state.root:
            return f"its manifest hashes to {root}, not to the release's root"
        return None


def _in_order(chunks: list[ReleaseEntries]) -> list[str] | None:
    """The lines of a release's chunks in key order; None if they leave a gap or overlap."""
    lines: list[str] = []
    for chunk in sorted(chunks, key=lambda c: c.start):
        if chunk.start != len(lines):
            return None
        lines += chunk.lines
    return lines
