"""Comparing what two sites hold for a selection, group by group.

A site's state is read as *groups* of keyed entries: the collections (type,
owner, documentation, chain), each TAGGED collection's members, each
CALIBRATION collection's validity ranges, each RUN's datasets (UUID, type, data
ID, size, checksum), each dimension's records, and the releases. Each group is
summarized by the root of a content-defined Merkle tree over its entries (the
releases' tree, :mod:`federation.merkle`): groups whose roots agree are
confirmed without listing their entries; only the groups that differ are
compared entry by entry. A release both sites hold under the same root confirms
its frozen collections by that root alone: their members are not read.

One group is read from each side at a time, so memory follows the largest group,
not the repository.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from federation.butler import Butler
from federation.merkle import build, entry_hash
from federation.model import CollectionType
from federation.registry.releases import release_holding
from federation.registry.source import SourceStates
from federation.sync.selection import Selection

Entries = dict[str, str]  # key -> canonical JSON of what the site holds under it


@dataclass(frozen=True)
class Difference:
    """One entry of a group that differs: only at A, only at B, or held differently."""

    group: str
    key: str
    a: Any = None  # None: not at A
    b: Any = None  # None: not at B

    @property
    def kind(self) -> str:
        return "only at A" if self.b is None else "only at B" if self.a is None else "differs"

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "key": self.key, "kind": self.kind, "a": self.a,
                "b": self.b}


@dataclass
class GroupResult:
    """One group: its entries at each side, whether their roots agree, and how it was
    confirmed (``"root"``: by the Merkle roots; ``"release X"``: by a release's root)."""

    group: str
    a_entries: int
    b_entries: int
    same: bool
    confirmed: str = "root"


@dataclass
class SiteDiff:
    """The comparison of two sites for a selection."""

    a: str
    b: str
    selection: Selection
    groups: list[GroupResult] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not self.differences and all(g.same for g in self.groups)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "selection": self.selection.to_dict(),
                "same": self.same,
                "groups": [{"group": g.group, "a": g.a_entries, "b": g.b_entries,
                            "same": g.same, "confirmed": g.confirmed} for g in self.groups],
                "differences": [d.to_dict() for d in self.differences]}


def diff_sites(a_name: str, a: Butler, b_name: str, b: Butler, selection: Selection,
               progress: Callable[[str], None] | None = None) -> SiteDiff:
    """Compare sites A and B (open repositories) for ``selection``."""
    left, right = _SiteState(a, selection), _SiteState(b, selection)
    result = SiteDiff(a_name, b_name, selection)
    releases = _shared_releases(left, right)
    for group in _groups(left, right):
        if progress is not None:
            progress(group)
        vouched = _frozen_by(group, releases)
        if vouched is not None:
            result.groups.append(GroupResult(group, 0, 0, True, f"release {vouched}"))
            continue
        ours, theirs = left.entries(group), right.entries(group)
        same = _root(ours) == _root(theirs)
        result.groups.append(GroupResult(group, len(ours), len(theirs), same))
        if same:
            continue
        held = left.holds(group), right.holds(group)
        if all(held):
            result.differences += _compare(group, ours, theirs)
        else:  # a collection one side does not have: one line, not one per member
            count = f"the whole collection ({len(ours) or len(theirs)} entries)"
            result.differences.append(Difference(group, "*", count if held[0] else None,
                                                 None if held[0] else count))
    return result


def _shared_releases(a: _SiteState, b: _SiteState) -> list[str]:
    """Releases both sides hold under the same root (their frozen collections agree)."""
    theirs = b.release_roots()
    return [name for name, root in a.release_roots().items() if theirs.get(name) == root]


def _frozen_by(group: str, releases: list[str]) -> str | None:
    """The shared release whose frozen members a group is, if any."""
    kind, _, name = group.partition(" ")
    return release_holding(name, releases) if kind in ("tags", "calib") else None


def _groups(a: _SiteState, b: _SiteState) -> Iterator[str]:
    """Every group either side has, in a stable order."""
    yield "collections"
    yield "releases"
    for kind in ("records", "datasets", "tags", "calib"):
        yield from sorted(set(a.group_names(kind)) | set(b.group_names(kind)))


def _root(entries: Entries) -> bytes:
    return build(entry_hash(f"{k}\t{v}".encode()) for k, v in sorted(entries.items()))[0]


def _compare(group: str, a: Entries, b: Entries) -> list[Difference]:
    found = []
    for key in sorted(a.keys() | b.keys()):
        if a.get(key) != b.get(key):
            found.append(Difference(group, key, _value(a.get(key)), _value(b.get(key))))
    return found


def _value(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


class _SiteState:
    """One site's state for a selection, read group by group."""

    def __init__(self, butler: Butler, selection: Selection) -> None:
        self.registry = butler.registry
        self.selection = selection
        self.states = SourceStates(butler.registry)
        colls = self.registry.collections
        self.collections = {c.name: c for c in colls.query()
                            if selection.matches_collection(c.name)}
        stack = [c for c in self.collections.values() if c.type is CollectionType.CHAINED]
        while stack:  # chains bring their children, as in a sync
            for child in colls.children(stack.pop().name):
                if child not in self.collections:
                    found = colls.get(child)
                    self.collections[child] = found
                    if found.type is CollectionType.CHAINED:
                        stack.append(found)
        self.types = {t.name: t for t in self.registry.dataset_types.query()
                      if selection.matches_type(t.name)}
        self.type_ids = [self.registry.dataset_types.id_of(n) for n in self.types]

    def group_names(self, kind: str) -> list[str]:
        if kind == "records":
            return [f"records {d}" for d in self.registry.universe.dimensions] \
                if self.selection.is_full else []
        wanted = {"datasets": CollectionType.RUN, "tags": CollectionType.TAGGED,
                  "calib": CollectionType.CALIBRATION}[kind]
        return [f"{kind} {n}" for n, c in self.collections.items() if c.type is wanted]

    def release_roots(self) -> dict[str, str]:
        releases = self.registry.releases
        return {n: releases.get(n).root for n in releases.names() if n in self.collections}

    def holds(self, group: str) -> bool:
        """Whether this side has the collection a group is about."""
        kind, _, name = group.partition(" ")
        return kind not in ("datasets", "tags", "calib") or name in self.collections

    def entries(self, group: str) -> Entries:
        kind, _, name = group.partition(" ")
        if not self.holds(group):
            return {}  # the other side's collection: nothing here
        return getattr(self, f"_{kind}")(name)

    def _collections(self, _: str) -> Entries:
        return {c.name: _json({"type": str(c.type), "owner": c.owner_site, "doc": c.doc,
                               **({"children": list(c.children)}
                                  if c.type is CollectionType.CHAINED else {})})
                for c in self.collections.values()}

    def _releases(self, _: str) -> Entries:
        releases = self.registry.releases
        found = {}
        for name in releases.names():
            if name in self.collections:
                info = releases.get(name)
                found[name] = _json({"root": info.root, "site": info.site,
                                     "retracted": info.retracted is not None})
        return found

    def _records(self, dimension: str) -> Entries:
        dim = self.registry.universe[dimension]
        found = {}
        for record in self.registry.dimensions.query(dimension):
            key = [record[k] for k in dim.keys]
            found[_json(key)] = _json(record)
        return found

    def _datasets(self, run: str) -> Entries:
        found = {}
        for chunk in self.states.run_datasets(run, self.type_ids, chunk=10000):
            for s in chunk:
                found[s.id] = _json({
                    "dataset_type": s.dataset_type, "data_id": s.data_id,
                    "size": s.file.size if s.file else None,
                    "checksum": s.file.checksum if s.file else None})
        return found

    def _tags(self, collection: str) -> Entries:
        present, _ = self.states.tags(collection)
        known = set(self.states.matching(list(present), type_ids=self.type_ids))
        return {str(i): "1" for i in present if i in known}

    def _calib(self, collection: str) -> Entries:
        found: dict[str, list] = {}
        for ref, span in self.registry.datasets.certifications(collection):
            if ref.dataset_type.name in self.types:
                key = f"{ref.dataset_type.name}@{_json(dict(sorted(ref.required_data_id.items())))}"
                found.setdefault(key, []).append([str(ref.id), span.begin, span.end])
        return {k: _json(sorted(v)) for k, v in found.items()}
