"""Freezing a release: what the selected collections hold now, as a manifest, a Merkle root
and collections that can never change.

The search collections (RUN and TAGGED, through chains, in order) are searched as a
Butler would, first match per dataset type and data ID; the CALIBRATION collections
on the path give their certifications as they stand (an earlier collection's range
wins over a later one's that overlaps it). The release is then searchable by its
name: ``NAME`` is a CHAINED collection of ``NAME/found`` (TAGGED: what the search
found) and ``NAME/calib`` (CALIBRATION: the frozen validity ranges).
"""

from __future__ import annotations

import getpass
import socket
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from federation.butler import Butler
from federation.errors import InputError, ReleaseError
from federation.merkle import build
from federation.model import CollectionType, DatasetRef, StoredFile
from federation.registry.collections import check_collection_name
from federation.registry.releases import ReleaseInfo, StoredEntry
from federation.release.manifest import ManifestEntry
from federation.timespan import Timespan


@dataclass(frozen=True)
class ReleaseRequest:
    """What to freeze: a name, the collections searched, and optionally dataset types and
    a `where` expression on data IDs (for the searched datasets, not calibrations)."""

    name: str
    collections: Sequence[str]
    dataset_types: Sequence[str] | None = None
    where: str | None = None
    bind: Mapping[str, Any] | None = None
    doc: str = ""


def freeze(butler: Butler, request: ReleaseRequest) -> ReleaseInfo:
    """Create the release ``request.name`` at this repository's site."""
    registry = butler.registry
    name = request.name
    if registry.db.role == "release":
        raise ReleaseError("this is a release site: it holds releases synced from the sites "
                           "that made them; create a release where its data is owned")
    check_collection_name(name)
    if name in registry.releases.names():
        raise ReleaseError(f"release {name!r} exists already; a release never changes: give "
                           "the new one another name")
    for collection in (name, f"{name}/found", f"{name}/calib"):
        if registry.collections.exists(collection):
            raise ReleaseError(f"collection {collection!r} exists already; choose another "
                               "release name")
    if not request.collections:
        raise InputError("a release needs collections to freeze (-c)")
    types = registry.dataset_types.resolve(request.dataset_types)
    path = registry.collections.flatten(registry.collections.expand_patterns(
        request.collections))
    if not path:
        raise InputError(f"no collection matches {', '.join(request.collections)}")
    searched = [n for _, n, t in path if t is not CollectionType.CALIBRATION]
    found = list(registry.datasets.query(types, searched, where=request.where,
                                         bind=request.bind)) if searched else []
    certified = _certifications(butler, [n for _, n, t in path
                                         if t is CollectionType.CALIBRATION],
                                {t.name for t in types})
    refs = {ref.id: ref for ref in found} | {ref.id: ref for ref, _ in certified}
    for run in sorted({ref.run for ref in refs.values()}):
        owner = registry.collections.owner(run)
        if owner != registry.site:
            raise ReleaseError(f"run {run!r} is owned by site {owner!r}: a release is created "
                               "at the site that owns its data (a replica could not keep its "
                               "owner's deletions out)")
    files = {i: f for i, f, _ in registry.datasets.iter_files(list(refs))}
    ranges: dict[uuid.UUID, list[tuple[int, int]]] = {}
    for ref, span in certified:
        ranges.setdefault(ref.id, []).append((span.begin, span.end))
    found_ids = {ref.id for ref in found}
    entries = sorted((_entry(ref, files.get(ref.id), ref.id in found_ids,
                             tuple(sorted(ranges.get(ref.id, ()))))
                      for ref in refs.values()), key=lambda e: e.key)
    if not entries:
        raise InputError(f"release {name!r} would be empty: nothing of the selected types in "
                         f"{', '.join(request.collections)}")
    hashes = [e.hash for e in entries]
    root, nodes = build(hashes)
    info = ReleaseInfo(
        name, root.hex(), registry.site, time.time(), f"{getpass.getuser()}@{socket.gethostname()}",
        request.doc, {"collections": list(request.collections),
                      "dataset_types": list(request.dataset_types or []),
                      "where": request.where, "bind": dict(request.bind or {})},
        len(entries), sum(e.size or 0 for e in entries),
        counts=dict(sorted(Counter(e.dataset_type for e in entries).items())))
    stored = [StoredEntry(i, e.id, h.hex(), e.line)
              for i, (e, h) in enumerate(zip(entries, hashes, strict=True))]
    with registry.transaction():
        _searchable(butler, name, request.doc, found, certified)
        registry.releases.create(info, stored, nodes)
    return registry.releases.get(name)


def _certifications(butler: Butler, collections: list[str], types: set[str]
                    ) -> list[tuple[DatasetRef, Timespan]]:
    """The certifications of ``collections`` in order; a range overlapping one an earlier
    collection gave the same type and data ID is left out (it would not be found)."""
    kept: list[tuple[DatasetRef, Timespan]] = []
    taken: dict[tuple[str, str], list[Timespan]] = {}
    for collection in collections:
        for ref, span in butler.registry.datasets.certifications(collection):
            if ref.dataset_type.name not in types:
                continue
            slot = (ref.dataset_type.name, str(sorted(ref.required_data_id.items())))
            if any(span.overlaps(other) for other in taken.get(slot, ())):
                continue
            kept.append((ref, span))
            taken.setdefault(slot, []).append(span)
    return kept


def _entry(ref: DatasetRef, stored: StoredFile | None, found: bool,
           validity: tuple[tuple[int, int], ...]) -> ManifestEntry:
    return ManifestEntry(
        ref.dataset_type.name, dict(sorted(ref.required_data_id.items())), ref.run, ref.id,
        ref.dataset_type.storage_class, stored.size if stored else None,
        stored.checksum if stored else None, found, validity)


def _searchable(butler: Butler, name: str, doc: str, found: list[DatasetRef],
                certified: list[tuple[DatasetRef, Timespan]]) -> None:
    """``NAME`` -> [``NAME/found``, ``NAME/calib``], written before the release row makes
    them read-only (inside the caller's transaction, and journaled before the release, so
    that a sync sends them first)."""
    registry = butler.registry
    collections, datasets = registry.collections, registry.datasets
    children = []
    if found:
        collections.register(f"{name}/found", CollectionType.TAGGED, doc, release=True)
        datasets.associate(f"{name}/found", found, check_owner=False)
        children.append(f"{name}/found")
    if certified:
        collections.register(f"{name}/calib", CollectionType.CALIBRATION, doc, release=True)
        by_span: dict[Timespan, list[DatasetRef]] = {}
        for ref, span in certified:
            by_span.setdefault(span, []).append(ref)
        for span, refs in by_span.items():
            datasets.certify(f"{name}/calib", refs, span, check_owner=False)
        children.append(f"{name}/calib")
    collections.register(name, CollectionType.CHAINED, doc, release=True)
    collections.set_chain(name, children, check_owner=False)
