"""Removal: pruning datasets, removing runs, removing other collections.

Each function finds what it would remove, returns that alone on a dry run,
and otherwise calls ``confirm`` with it before removing anything; ``confirm``
(the caller's question to the user) raises to cancel. Registry records go
first, in one transaction, and files after it commits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from federation.butler import Butler
from federation.errors import CollectionError
from federation.model import CollectionType, DatasetRef

T = TypeVar("T")
Confirm = Callable[[T], None]


@dataclass(frozen=True)
class Pruned:
    """Datasets found for pruning; ``done`` once they (records and files) are removed."""

    refs: list[DatasetRef]
    done: bool = False


@dataclass(frozen=True)
class RunSummary:
    """A RUN collection and how many datasets it holds."""

    name: str
    datasets: int


@dataclass(frozen=True)
class RunsRemoved:
    """Runs found for removal; ``removed`` datasets went with them once ``done``."""

    runs: list[RunSummary]
    removed: int = 0
    done: bool = False


@dataclass(frozen=True)
class CollectionSummary:
    """A collection to remove: its type, what it holds and the chains that hold it.

    ``members`` counts the datasets a TAGGED or CALIBRATION collection holds
    (they stay in their runs), or a chain's children. ``chains`` lists the
    chains holding it that are not being removed too.
    """

    name: str
    type: CollectionType
    members: int
    chains: list[str]


@dataclass(frozen=True)
class CollectionsRemoved:
    """Collections found for removal; ``done`` once they are gone."""

    collections: list[CollectionSummary]
    done: bool = False


def prune_datasets(repo: Path, dataset_types: Sequence[str] = (), *,
                   collections: Sequence[str], where: str | None = None,
                   bind: dict[str, Any] | None = None, dry_run: bool = False,
                   confirm: Confirm[list[DatasetRef]] | None = None) -> Pruned:
    """Remove every dataset a query finds (every match along the search path)."""
    with Butler(repo) as butler:
        refs = butler.query_datasets(list(dataset_types) or None, collections, where=where,
                                     bind=bind, find_first=False)
        if dry_run or not refs:
            return Pruned(refs)
        if confirm is not None:
            confirm(refs)
        butler.remove(refs)
        return Pruned(refs, done=True)


def remove_runs(repo: Path, patterns: Sequence[str], *, unlink_chains: bool = False,
                dry_run: bool = False, confirm: Confirm[list[RunSummary]] | None = None
                ) -> RunsRemoved:
    """Remove RUN collections (names or globs) with all their datasets and files.

    A run inside a chain is refused unless ``unlink_chains`` takes it out.
    """
    with Butler(repo) as butler:
        collections = butler.registry.collections
        runs = []
        for name in collections.expand_patterns(patterns):
            collections.lookup(name, CollectionType.RUN)
            runs.append(RunSummary(name, len(butler.registry.datasets.run_refs(name))))
        if dry_run or not runs:
            return RunsRemoved(runs)
        if confirm is not None:
            confirm(runs)
        removed = butler.remove_runs([r.name for r in runs], unlink_chains=unlink_chains)
        return RunsRemoved(runs, removed, done=True)


def remove_collections(repo: Path, patterns: Sequence[str], *, unlink_chains: bool = False,
                       dry_run: bool = False,
                       confirm: Confirm[list[CollectionSummary]] | None = None
                       ) -> CollectionsRemoved:
    """Remove TAGGED, CHAINED and CALIBRATION collections (names or globs), all or none.

    Their datasets stay in their runs; tags, certifications and chain links
    go. A RUN among them is refused (remove runs with :func:`remove_runs`);
    so is a collection inside a chain that is not removed too, unless
    ``unlink_chains`` takes it out of that chain.
    """
    with Butler(repo) as butler:
        found = _collection_plan(butler, patterns)
        if not unlink_chains and not dry_run:
            for summary in found:
                if summary.chains:
                    raise CollectionError(
                        f"collection {summary.name!r} is in chained collection "
                        f"{summary.chains[0]!r}; remove it from the chain first or ask to "
                        "unlink it")
        if dry_run or not found:
            return CollectionsRemoved(found)
        if confirm is not None:
            confirm(found)
        with butler.registry.transaction():
            for name in _parents_first(butler, [s.name for s in found]):
                butler.remove_collection(name, unlink_chains=unlink_chains)
        return CollectionsRemoved(found, done=True)


def _collection_plan(butler: Butler, patterns: Sequence[str]) -> list[CollectionSummary]:
    collections = butler.registry.collections
    names = collections.expand_patterns(patterns)
    found = []
    for name in names:
        coll = collections.get(name)
        if coll.type is CollectionType.RUN:
            raise CollectionError(
                f"collection {name!r} is a RUN: removing it removes its datasets; use "
                "remove_runs (fed remove-runs) for that")
        if coll.type is CollectionType.CHAINED:
            members = len(coll.children)
        else:
            members = len(butler.query_datasets(None, [name], find_first=False))
        chains = [p for p in collections.parents(name) if p not in names]
        found.append(CollectionSummary(name, coll.type, members, chains))
    return found


def _parents_first(butler: Butler, names: list[str]) -> list[str]:
    """``names`` ordered so that a chain comes before the members it holds among them."""
    collections = butler.registry.collections
    parents = {name: set(collections.parents(name)) & set(names) for name in names}
    ordered: list[str] = []
    while parents:
        ready = [name for name, held_by in parents.items() if not held_by & parents.keys()]
        ordered.extend(ready)  # chains have no cycles, so something is always ready
        for name in ready:
            del parents[name]
    return ordered
