"""One typed function per `fed` repository command; the CLI only parses and prints.

Each function opens the repository, does one operation and returns what
happened, so it can be tested and scripted without click.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from federation.butler import Butler
from federation.errors import CollectionError, InputError
from federation.inputs import read_dimension_records, read_ingest_table
from federation.model import CollectionType, DatasetRef
from federation.timespan import Timespan

Progress = Callable[[int], None] | None

CHAIN_MODES = ("redefine", "extend", "prepend", "remove", "pop")


def insert_dimension_records(repo: Path, path: Path, dimension: str | None = None
                             ) -> dict[str, tuple[int, int]]:
    """Insert records from a file; returns ``{dimension: (given, new)}``."""
    records = read_dimension_records(path, dimension)
    with Butler(repo) as butler:
        universe = butler.registry.universe
        ordered = universe.sorted(name for name in records if universe[name])
        result = {}
        with butler.registry.transaction():
            for name in ordered:
                new = butler.registry.insert_dimension_records(name, records[name])
                result[name] = (len(records[name]), new)
    return result


def ingest_files(repo: Path, dataset_type: str, run: str, table: Path, *,
                 transfer: str = "copy", id_mode: str = "random",
                 prefix: Path | None = None, data_id: dict[str, Any] | None = None,
                 progress: Progress = None) -> list[DatasetRef]:
    """Ingest the files a table lists into ``run``; nothing is kept if any file fails."""
    datasets = read_ingest_table(table, dataset_type, prefix=prefix, common=data_id)
    with Butler(repo) as butler:
        return butler.ingest(datasets, run=run, transfer=transfer, id_mode=id_mode,
                             progress=progress)


def collection_chain(repo: Path, parent: str, children: Sequence[str], *,
                     mode: str = "redefine", doc: str | None = None) -> list[str]:
    """Create or change a CHAINED collection; returns its new children."""
    if mode not in CHAIN_MODES:
        raise InputError(f"unknown mode {mode!r}; use one of {', '.join(CHAIN_MODES)}")
    with Butler(repo) as butler:
        collections = butler.registry.collections
        with butler.registry.transaction():
            collections.register(parent, CollectionType.CHAINED, doc or "")
            current = collections.children(parent)
            if mode == "redefine":
                new = list(children)
            elif mode == "extend":
                new = current + [c for c in children if c not in current]
            elif mode == "prepend":
                new = list(children) + [c for c in current if c not in children]
            elif mode == "remove":
                absent = [c for c in children if c not in current]
                if absent:
                    raise CollectionError(f"{', '.join(absent)} not in chain {parent!r}")
                new = [c for c in current if c not in children]
            else:  # pop: by position, default the first
                try:
                    positions = [int(c) for c in children] if children else [0]
                except ValueError:
                    raise InputError(
                        f"pop takes child positions (integers), got {' '.join(children)!r}"
                    ) from None
                if any(not -len(current) <= p < len(current) for p in positions):
                    raise CollectionError(f"chain {parent!r} has {len(current)} children")
                drop = {current[p] for p in positions}
                new = [c for c in current if c not in drop]
            collections.set_chain(parent, new)
            if doc is not None:
                collections.set_doc(parent, doc)
        return new


def associate(repo: Path, tag: str, *, collections: Sequence[str],
              dataset_types: Sequence[str] | None = None, where: str | None = None,
              doc: str = "") -> tuple[int, int]:
    """Tag every dataset a query finds; returns (found, newly tagged)."""
    with Butler(repo) as butler:
        refs = butler.query_datasets(dataset_types or None, collections, where=where)
        with butler.registry.transaction():
            butler.registry.collections.register(tag, CollectionType.TAGGED, doc)
            new = butler.registry.datasets.associate(tag, refs)
        return len(refs), new


def certify_calibrations(repo: Path, input_run: str, collection: str, dataset_type: str, *,
                         begin: str | None, end: str | None, where: str | None = None,
                         doc: str = "") -> int:
    """Certify a run's datasets of one type into a CALIBRATION collection."""
    timespan = Timespan.from_values(begin, end)
    with Butler(repo) as butler:
        butler.registry.collections.lookup(input_run, CollectionType.RUN)
        refs = butler.query_datasets(dataset_type, [input_run], where=where)
        if not refs:
            raise InputError(f"run {input_run!r} holds no {dataset_type} datasets to certify")
        with butler.registry.transaction():
            butler.registry.collections.register(collection, CollectionType.CALIBRATION, doc)
            butler.registry.datasets.certify(collection, refs, timespan)
        return len(refs)


def find_for_pruning(repo: Path, *, collections: Sequence[str],
                     dataset_types: Sequence[str] | None, where: str | None) -> list[DatasetRef]:
    with Butler(repo) as butler:
        return butler.query_datasets(dataset_types or None, collections, where=where,
                                     find_first=False)


def prune_datasets(repo: Path, refs: Sequence[DatasetRef]) -> int:
    with Butler(repo) as butler:
        return butler.remove(refs)


def find_runs(repo: Path, patterns: Sequence[str]) -> list[tuple[str, int]]:
    """RUN collections matching the patterns, with their dataset counts."""
    with Butler(repo) as butler:
        names = butler.registry.collections.expand_patterns(patterns)
        result = []
        for name in names:
            butler.registry.collections.lookup(name, CollectionType.RUN)
            result.append((name, len(butler.registry.datasets.run_refs(name))))
        return result


def remove_runs(repo: Path, names: Sequence[str], *, unlink_chains: bool = False) -> int:
    with Butler(repo) as butler:
        return butler.remove_runs(names, unlink_chains=unlink_chains)
