"""The `fed query-*` commands: what a repository holds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.butler import Butler
from federation.errors import MissingDatasetError
from federation.model import Collection, CollectionType, DatasetRef, DatasetType


@dataclass(frozen=True)
class FoundDataset:
    """A dataset a query found; with ``show_uri``, its file's URI or why there is none here."""

    ref: DatasetRef
    uri: str | None = None
    no_uri: str | None = None


@dataclass(frozen=True)
class DatasetQuery:
    """The datasets a query found, in search order, and whether URIs were asked for."""

    datasets: list[FoundDataset]
    show_uri: bool = False


@dataclass(frozen=True)
class DimensionRecordQuery:
    """Records of one dimension; each a mapping of field -> value (timespans as Timespan)."""

    dimension: str
    records: list[dict[str, Any]]

    @property
    def fields(self) -> list[str]:
        return list(self.records[0]) if self.records else []


def query_datasets(repo: Path, dataset_types: Sequence[str] = (), *,
                   collections: Sequence[str] = (), where: str | None = None,
                   bind: dict[str, Any] | None = None, find_all: bool = False,
                   show_uri: bool = False) -> DatasetQuery:
    """Datasets of some types (names or globs; default all) along a collection search path.

    Without collections every collection is searched (in name order). Without
    ``find_all`` only the first match per type + data ID is returned.
    """
    with Butler(repo) as butler:
        refs = butler.query_datasets(list(dataset_types) or None, list(collections) or ["*"],
                                     where=where, bind=bind, find_first=not find_all)
        if not show_uri:
            return DatasetQuery([FoundDataset(ref) for ref in refs])
        return DatasetQuery([_with_uri(butler, ref) for ref in refs], show_uri=True)


def _with_uri(butler: Butler, ref: DatasetRef) -> FoundDataset:
    """A dataset with its file's URI, or why its file is not here (held at which site)."""
    try:
        return FoundDataset(ref, uri=butler.get_uri(ref))
    except MissingDatasetError:
        held_at = butler.exists(ref).held_at
        return FoundDataset(ref, no_uri=f"held at site {held_at}: its file is not here"
                            if held_at else "no file in this repository")


def query_collections(repo: Path, patterns: Sequence[str] = (),
                      types: Sequence[CollectionType | str] = ()) -> list[Collection]:
    """Collections matching any of the patterns (globs; default all), each listed once."""
    with Butler(repo) as butler:
        found: list[Collection] = []
        seen: set[str] = set()
        wanted = [CollectionType(t) for t in types] or None
        for pattern in patterns or ["*"]:
            for coll in butler.registry.collections.query(pattern, wanted):
                if coll.name not in seen:
                    seen.add(coll.name)
                    found.append(coll)
        return found


def query_dimension_records(repo: Path, dimension: str, *, where: str | None = None,
                            bind: dict[str, Any] | None = None) -> DimensionRecordQuery:
    """The records of one dimension, optionally filtered by a `where` expression."""
    with Butler(repo) as butler:
        records = butler.query_dimension_records(dimension, where=where, bind=bind)
    return DimensionRecordQuery(dimension, records)


def query_dataset_types(repo: Path, pattern: str = "*") -> list[DatasetType]:
    """Dataset types whose names match a glob."""
    with Butler(repo) as butler:
        return butler.registry.dataset_types.query(pattern)
