"""A daf_butler YAML export (format 1.0.2) of a selection of a repository.

What ``Butler.export`` + ``saveDatasets`` + ``saveCollection`` would write for
the same datasets, block for block and in the same order:

1. ``dimension`` blocks, elements in dependency order: the records the data
   IDs of the datasets need, as daf_butler chooses them (see
   :mod:`federation.dafbutler.export_records`);
2. ``collection`` blocks: RUN, TAGGED and CALIBRATION collections by name,
   then CHAINED ones after their children;
3. a ``dataset_type`` + ``dataset`` pair per dataset type and RUN;
4. ``associations`` blocks: TAGGED membership and CALIBRATION validity ranges
   of the exported datasets, by collection name.

Storage classes and formatters that are this project's own are written as the
daf_butler ones that read the same files (:data:`STORAGE_CLASSES`,
:data:`FORMATTERS`), or as the user names them (:class:`ButlerNames`); a
dataset type with neither is refused.
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import sqlalchemy as sa

from federation.butler import Butler
from federation.dafbutler.export_records import RecordCollector, butler_order
from federation.dafbutler.export_yaml import WRITE_VERSION
from federation.dafbutler.records import from_timespan
from federation.datastore.storage_classes import DAF_BUTLER_PREFIX, storage_class_names
from federation.dimensions import daf_butler as butler_universe
from federation.dimensions.universe import DimensionUniverse
from federation.errors import ConfigError, InputError
from federation.model import Collection, CollectionType, DatasetRef, DatasetType, StoredFile
from federation.registry.registry import Registry
from federation.sync.selection import Selection
from federation.timespan import Timespan

#: this project's storage classes -> the daf_butler storage class of the same Python type
STORAGE_CLASSES = {"YAML": "StructuredDataDict", "JSON": "StructuredDataDict"}
#: this project's formatters -> the daf_butler formatter that reads the same files
FORMATTERS = {"yaml": "lsst.daf.butler.formatters.yaml.YamlFormatter",
              "json": "lsst.daf.butler.formatters.json.JsonFormatter"}
#: file extensions -> the daf_butler formatter that reads such files whatever their type
BY_EXTENSION = {".yaml": FORMATTERS["yaml"], ".json": FORMATTERS["json"]}

@dataclass(frozen=True)
class ExportedFile:
    """A dataset's file as the export lists it: ``path`` (relative to the import
    directory) and where it is in this repository (``source``)."""

    dataset_id: uuid.UUID
    source: Path
    path: str
    formatter: str  # the daf_butler formatter that reads it
    size: int
    checksum: str


@dataclass(frozen=True)
class ButlerNames:
    """daf_butler's storage class and formatter for one dataset type, given by the user
    (``--storage-class``, ``--formatter``); None: the one :func:`build_export` chooses."""

    storage_class: str | None = None
    formatter: str | None = None


@dataclass
class ButlerExport:
    """An export document and the files it lists."""

    document: dict[str, Any]
    files: list[ExportedFile] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def check_universe(universe: DimensionUniverse, repo: str | os.PathLike) -> None:
    """Refuse a repository whose universe is not daf_butler's."""
    if universe.namespace != butler_universe.NAMESPACE:
        raise ConfigError(
            f"{repo} uses the {universe.namespace} dimension universe (version "
            f"{universe.version}), not daf_butler's: daf_butler would not know its dimensions; "
            "only repositories made with 'fed create REPO --universe daf_butler' can be "
            "exported for it (use 'fed export' to carry this one to another fed site)")


def build_export(butler: Butler, selection: Selection, *, relocate: bool = False,
                 given: Mapping[str, ButlerNames] | None = None) -> ButlerExport:
    """The export of the datasets ``selection`` finds (every one, not just the first per
    data ID), with the collections it names and the RUNs those datasets are in.

    ``relocate``: files ingested in place (absolute paths) get a path under their RUN,
    for a copy of the files; otherwise they are listed where they are. ``given``: daf_butler
    names the user chose, by dataset type.
    """
    registry = butler.registry
    check_universe(registry.universe, butler.config.root)
    refs = select_datasets(butler, selection)
    _check_given(registry, given or {})
    files, storage_classes = _files(butler, refs, relocate, given or {})
    collections = _collections(registry, selection, refs)
    types = sorted({r.dataset_type.name: r.dataset_type for r in refs}.items())
    calibration = _calibration_types(registry)
    order = butler_order(registry.universe)
    dimension_blocks = RecordCollector(registry).blocks(refs, order)
    data: list[dict[str, Any]] = [*dimension_blocks, *map(_collection_block, collections)]
    by_type_run: dict[tuple[str, str], list[DatasetRef]] = defaultdict(list)
    for ref in refs:
        by_type_run[(ref.dataset_type.name, ref.run)].append(ref)
    for name, dataset_type in types:
        for run in sorted(r for t, r in by_type_run if t == name):
            data.append(_dataset_type_block(dataset_type, storage_classes[name],
                                            name in calibration, order))
            data.append(_dataset_block(name, run, by_type_run[(name, run)], files, order))
    associations = _association_blocks(registry, collections, {r.id for r in refs})
    data.extend(associations)
    universe = registry.universe
    document = {"description": "Butler Data Repository Export", "version": WRITE_VERSION,
                "universe_version": universe.version,
                "universe_namespace": universe.namespace, "data": data}
    counts = {"dimension records": sum(len(b["records"]) for b in dimension_blocks),
              "collections": len(collections), "dataset types": len(types),
              "datasets": len(refs), "associations": len(associations)}
    notes = [] if refs else [f"no datasets matched the selection ({selection.describe()})"]
    return ButlerExport(document, list(files.values()), counts, notes)


def _check_given(registry: Registry, given: Mapping[str, ButlerNames]) -> None:
    known = {t.name for t in registry.dataset_types.query()}
    unknown = sorted(set(given) - known)
    if unknown:
        raise InputError(f"--storage-class/--formatter name dataset types this repository "
                         f"does not have: {', '.join(unknown)}")


def select_datasets(butler: Butler, selection: Selection) -> list[DatasetRef]:
    """Every dataset in the selected collections (through chains, tags and
    certifications) of the selected types whose data ID matches ``where``."""
    types = None
    if selection.dataset_types != ("*",):
        types = [t.name for t in butler.registry.dataset_types.query()
                 if selection.matches_type(t.name)]
        if not types:
            return []
    return butler.query_datasets(types, list(selection.collections), where=selection.where,
                                 bind=selection.bind_dict, find_first=False)


# -- files, storage classes and formatters ----------------------------------------


def _files(butler: Butler, refs: list[DatasetRef], relocate: bool,
           given: Mapping[str, ButlerNames]) -> tuple[dict[uuid.UUID, ExportedFile],
                                                      dict[str, str]]:
    """Each dataset's file with its daf_butler formatter, and each dataset type's daf_butler
    storage class; refused when a file is not here or daf_butler would not read it."""
    stored = {i: info for i, info, held_at in butler.registry.datasets.iter_files(
        [r.id for r in refs]) if held_at is None}
    missing = [r for r in refs if r.id not in stored]
    if missing:
        raise InputError(f"{len(missing)} selected datasets have no file in this repository "
                         f"(first: {missing[0]}); sync them here with their files, or leave "
                         "them out with -c, -t or --where")
    files, storage_classes, unknown = {}, {}, set()
    for ref in refs:
        info, names = stored[ref.id], given.get(ref.dataset_type.name, ButlerNames())
        storage_class = names.storage_class or butler_storage_class(ref.dataset_type)
        formatter = names.formatter or butler_formatter(info, ref.dataset_type.storage_class)
        if storage_class is None or formatter is None:
            unknown.add(f"{ref.dataset_type.name} ({ref.dataset_type.storage_class})")
            continue
        storage_classes[ref.dataset_type.name] = storage_class
        path = info.path
        if os.path.isabs(path) and relocate:
            path = f"{ref.run}/_external/{ref.id}{Path(path).suffix}"
        files[ref.id] = ExportedFile(ref.id, butler.datastore.path_of(info), path, formatter,
                                     info.size, info.checksum)
    if unknown:
        raise InputError(f"daf_butler has no storage class or formatter for "
                         f"{', '.join(sorted(unknown))}: name them with --storage-class "
                         "TYPE=CLASS and --formatter TYPE=CLASS, or leave those dataset types "
                         "out with -t")
    return files, storage_classes


def butler_formatter(info: StoredFile, storage_class: str | None = None) -> str | None:
    """The daf_butler formatter that reads a file: its own, if it names one; for a
    daf_butler storage class kept opaque here, the one its file's extension names."""
    if info.formatter.startswith("lsst."):
        return info.formatter
    if storage_class is not None and storage_class.startswith(DAF_BUTLER_PREFIX):
        return BY_EXTENSION.get(PurePosixPath(info.path).suffix.lower())
    return FORMATTERS.get(info.formatter)


def butler_storage_class(dataset_type: DatasetType) -> str | None:
    """The daf_butler storage class of a dataset type (None: daf_butler has none)."""
    name = dataset_type.storage_class
    if name.startswith(DAF_BUTLER_PREFIX):
        return name[len(DAF_BUTLER_PREFIX):]
    if name not in storage_class_names():
        return name  # not one of this project's names: daf_butler's own
    return STORAGE_CLASSES.get(name)


# -- collections ------------------------------------------------------------------


def _collections(registry: Registry, selection: Selection, refs: list[DatasetRef]
                 ) -> list[Collection]:
    """The named collections, their chains' children, and the RUNs of the datasets, in the
    order daf_butler registers them: non-chains by name, then chains after their children."""
    colls = registry.collections
    names = {c.name for c in colls.query() if selection.matches_collection(c.name)}
    names |= {r.run for r in refs}
    stack = list(names)
    while stack:
        found = colls.get(stack.pop())
        for child in found.children:
            if child not in names:
                names.add(child)
                stack.append(child)
    found = {name: colls.get(name) for name in names}
    ordered = sorted(n for n, c in found.items() if c.type is not CollectionType.CHAINED)
    chains = {n: c.children for n, c in found.items() if c.type is CollectionType.CHAINED}
    while chains:
        done = set(ordered)
        ready = sorted(n for n, children in chains.items() if done.issuperset(children))
        ordered += ready
        for name in ready:
            del chains[name]
    return [found[n] for n in ordered]


def _collection_block(coll: Collection) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "collection", "collection_type": str(coll.type),
                             "name": coll.name}
    if coll.doc:
        block["doc"] = coll.doc
    if coll.type is CollectionType.RUN:
        block |= {"host": None, "timespan_begin": None, "timespan_end": None}
    elif coll.type is CollectionType.CHAINED:
        block["children"] = list(coll.children)
    return block


# -- dataset types and datasets ---------------------------------------------------


def _calibration_types(registry: Registry) -> set[str]:
    """Dataset types certified in any CALIBRATION collection here: daf_butler certifies
    only types registered as calibrations."""
    calib = registry.db.tables.calib
    with registry.db.reading() as conn:
        ids = set(conn.execute(sa.select(calib.c.dataset_type_id).distinct()).scalars())
    return {t.name for t in registry.dataset_types.query()
            if registry.dataset_types.id_of(t.name) in ids}


def _dataset_type_block(dataset_type: DatasetType, storage_class: str, is_calibration: bool,
                        order: list[str]) -> dict[str, Any]:
    names = set(dataset_type.dimensions.names)
    return {"type": "dataset_type", "name": dataset_type.name,
            "dimensions": [n for n in order if n in names],
            "storage_class": storage_class,
            "is_calibration": is_calibration}


def _dataset_block(name: str, run: str, refs: list[DatasetRef],
                   files: Mapping[uuid.UUID, ExportedFile], order: list[str]) -> dict[str, Any]:
    required = set(refs[0].dataset_type.dimensions.required)
    keys = [n for n in order if n in required]
    records = []
    for ref in sorted(refs, key=lambda r: files[r.id].path):
        exported = files[ref.id]
        records.append({"dataset_id": [ref.id], "data_id": [{k: ref.data_id[k] for k in keys}],
                        "path": exported.path, "formatter": exported.formatter})
    return {"type": "dataset", "dataset_type": name, "run": run, "records": records}


def _association_blocks(registry: Registry, collections: list[Collection],
                        ids: set[uuid.UUID]) -> list[dict[str, Any]]:
    """TAGGED membership and CALIBRATION validity ranges of the exported datasets."""
    types = registry.dataset_types.query()
    blocks = []
    for coll in sorted(collections, key=lambda c: c.name):
        head = {"type": "associations", "collection": coll.name,
                "collection_type": str(coll.type)}
        if coll.type is CollectionType.TAGGED:
            tagged = sorted(r.id for r in registry.datasets.query(types, [coll.name],
                                                                  find_first=False)
                            if r.id in ids)
            if tagged:
                blocks.append(head | {"dataset_ids": tagged})
        elif coll.type is CollectionType.CALIBRATION:
            ranges: dict[Timespan, list[uuid.UUID]] = defaultdict(list)
            for ref, span in registry.datasets.certifications(coll.name):
                if ref.id in ids:
                    ranges[span].append(ref.id)
            if ranges:
                blocks.append(head | {"validity_ranges": [
                    {"timespan": from_timespan(span), "dataset_ids": sorted(ranges[span])}
                    for span in sorted(ranges, key=lambda s: (s.begin, s.end))]})
    return blocks
