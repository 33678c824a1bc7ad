"""Collections and what they hold: register, chain, tag and untag, certify and decertify."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.butler import Butler
from federation.errors import CollectionError, InputError
from federation.model import CollectionType
from federation.timespan import Timespan

CHAIN_MODES = ("redefine", "extend", "prepend", "remove", "pop")


@dataclass(frozen=True)
class CollectionRegistration:
    """A collection as registered, and whether this call created it."""

    name: str
    type: CollectionType
    new: bool


@dataclass(frozen=True)
class Chain:
    """A CHAINED collection and its children after a change."""

    parent: str
    children: list[str]


@dataclass(frozen=True)
class Tagged:
    """Outcome of tagging: datasets found by the query, and how many were not tagged yet."""

    tag: str
    found: int
    new: int

    @property
    def already(self) -> int:
        return self.found - self.new


@dataclass(frozen=True)
class Untagged:
    """Outcome of untagging: datasets found by the query, and how many left the tag."""

    tag: str
    found: int
    removed: int

    @property
    def not_tagged(self) -> int:
        return self.found - self.removed


@dataclass(frozen=True)
class Certified:
    """Datasets certified into a CALIBRATION collection over one validity range."""

    collection: str
    dataset_type: str
    count: int
    timespan: Timespan


@dataclass(frozen=True)
class Decertified:
    """Validity removed from a CALIBRATION collection.

    ``data_ids`` is how many data IDs a `where` expression selected (None: all);
    ``changed`` counts validity ranges removed, trimmed or split in two.
    """

    collection: str
    dataset_type: str
    timespan: Timespan
    data_ids: int | None
    changed: int


def register_collection(repo: Path, name: str, ctype: CollectionType | str = "TAGGED",
                        doc: str | None = None) -> CollectionRegistration:
    """Create a collection, or update the documentation of an existing one."""
    ctype = CollectionType(ctype)
    with Butler(repo) as butler:
        new = butler.registry.collections.register(name, ctype, doc or "")
        if doc is not None and not new:
            butler.registry.collections.set_doc(name, doc)
    return CollectionRegistration(name, ctype, new)


def collection_chain(repo: Path, parent: str, children: Sequence[str], *,
                     mode: str = "redefine", doc: str | None = None) -> Chain:
    """Create or change a CHAINED collection, all in one transaction.

    ``mode``: redefine (replace the children), extend/prepend (add at the
    end/front, skipping ones present), remove (drop the named children) or pop
    (drop children by position; default the first).
    """
    if mode not in CHAIN_MODES:
        raise InputError(f"unknown mode {mode!r}; use one of {', '.join(CHAIN_MODES)}")
    with Butler(repo) as butler:
        collections = butler.registry.collections
        with butler.registry.transaction():
            collections.register(parent, CollectionType.CHAINED, doc or "")
            new = _chain_children(parent, collections.children(parent), list(children), mode)
            collections.set_chain(parent, new)
            if doc is not None:
                collections.set_doc(parent, doc)
        return Chain(parent, new)


def _chain_children(parent: str, current: list[str], children: list[str], mode: str
                    ) -> list[str]:
    if mode == "redefine":
        return children
    if mode == "extend":
        return current + [c for c in children if c not in current]
    if mode == "prepend":
        return children + [c for c in current if c not in children]
    if mode == "remove":
        absent = [c for c in children if c not in current]
        if absent:
            raise CollectionError(f"{', '.join(absent)} not in chain {parent!r}")
        return [c for c in current if c not in children]
    try:  # pop: by position, default the first
        positions = [int(c) for c in children] if children else [0]
    except ValueError:
        raise InputError(
            f"pop takes child positions (integers), got {' '.join(children)!r}") from None
    if any(not -len(current) <= p < len(current) for p in positions):
        raise CollectionError(f"chain {parent!r} has {len(current)} children")
    drop = {current[p] for p in positions}
    return [c for c in current if c not in drop]


def associate(repo: Path, tag: str, *, collections: Sequence[str],
              dataset_types: Sequence[str] = (), where: str | None = None,
              bind: dict[str, Any] | None = None, doc: str = "") -> Tagged:
    """Tag every dataset a query finds (first match per data ID); creates the tag if needed."""
    with Butler(repo) as butler:
        refs = butler.query_datasets(list(dataset_types) or None, collections, where=where,
                                     bind=bind)
        with butler.registry.transaction():
            butler.registry.collections.register(tag, CollectionType.TAGGED, doc)
            new = butler.registry.datasets.associate(tag, refs)
        return Tagged(tag, len(refs), new)


def disassociate(repo: Path, tag: str, *, collections: Sequence[str],
                 dataset_types: Sequence[str] = (), where: str | None = None,
                 bind: dict[str, Any] | None = None) -> Untagged:
    """Untag every dataset a query finds (every match, not just the first per data ID).

    The datasets stay in their runs; only their membership in ``tag`` goes.
    """
    with Butler(repo) as butler:
        butler.registry.collections.lookup(tag, CollectionType.TAGGED)
        refs = butler.query_datasets(list(dataset_types) or None, collections, where=where,
                                     bind=bind, find_first=False)
        return Untagged(tag, len(refs), butler.disassociate(tag, refs))


def certify_calibrations(repo: Path, input_run: str, collection: str, dataset_type: str, *,
                         begin: str | None = None, end: str | None = None,
                         where: str | None = None, doc: str = "") -> Certified:
    """Certify a run's datasets of one type into a CALIBRATION collection (created if needed)."""
    timespan = Timespan.from_values(begin, end)
    with Butler(repo) as butler:
        butler.registry.collections.lookup(input_run, CollectionType.RUN)
        refs = butler.query_datasets(dataset_type, [input_run], where=where)
        if not refs:
            raise InputError(f"run {input_run!r} holds no {dataset_type} datasets to certify")
        with butler.registry.transaction():
            butler.registry.collections.register(collection, CollectionType.CALIBRATION, doc)
            butler.registry.datasets.certify(collection, refs, timespan)
        return Certified(collection, dataset_type, len(refs), timespan)


def decertify(repo: Path, collection: str, dataset_type: str, *, begin: str | None = None,
              end: str | None = None, where: str | None = None,
              bind: dict[str, Any] | None = None) -> Decertified:
    """Remove validity between ``begin`` and ``end`` (default: all time) for one type.

    With ``where``, only the data IDs of the certified datasets it selects
    are touched. Ranges reaching outside the span are trimmed or split.
    """
    timespan = Timespan.from_values(begin, end)
    with Butler(repo) as butler:
        butler.registry.collections.lookup(collection, CollectionType.CALIBRATION)
        data_ids = None
        if where:
            refs = butler.query_datasets(dataset_type, [collection], where=where, bind=bind,
                                         find_first=False, timespan=timespan)
            unique = {tuple(r.required_data_id.items()): r.required_data_id for r in refs}
            data_ids = list(unique.values())
        changed = butler.decertify(collection, dataset_type, timespan, data_ids)
        return Decertified(collection, dataset_type, timespan,
                           None if data_ids is None else len(data_ids), changed)
