"""A daf_butler YAML export read into typed parts, checked in itself.

:func:`read_export` parses an export (``butler`` / ``Butler.export``, format
1.0.x) and checks what can be checked without a repository: every block is
well formed, nothing is defined twice in two different ways, every dataset's
dataset type and RUN and every collection a chain, tag or certification names
are either in the export or left for the repository to have (listed in
:attr:`ButlerExport.external_types` and :attr:`ButlerExport.external_collections`).
What the repository holds is compared in :mod:`federation.dafbutler.import_plan`,
which fills an :class:`ImportPlan`.

Storage classes: daf_butler's are mapped to this project's fixed set
(:func:`storage_class_for`). A name both know (``NumpyArray``) is kept; any other
(``StructuredDataDict``, ``ExposureF``) becomes the storage class the repository
already gives that dataset type, else ``daf_butler:NAME`` (an opaque storage class:
the file is kept byte for byte, read back as bytes, and exported under its name).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.dafbutler import export_yaml
from federation.dafbutler.export_yaml import ButlerTimespan
from federation.datastore.storage_classes import DAF_BUTLER_PREFIX, storage_class_names
from federation.errors import InputError
from federation.model import CollectionType, DatasetRef, DatasetType
from federation.timespan import Timespan

# What a daf_butler storage class this project does not know becomes (see storage_class_for).


@dataclass(frozen=True)
class ExportCollection:
    """A collection block: its type, its doc (None: the export gives none) and, for a
    CHAINED collection, its children in order."""

    name: str
    type: CollectionType
    doc: str | None = None
    children: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportDatasetType:
    """A dataset_type block: daf_butler lists implied dimensions too."""

    name: str
    dimensions: tuple[str, ...]
    storage_class: str
    is_calibration: bool = False


@dataclass(frozen=True)
class ExportDataset:
    """One dataset of a dataset block: its UUID, its data ID as the export gives it
    (required dimensions), its file's path relative to the exported datastore."""

    id: uuid.UUID
    dataset_type: str
    run: str
    data_id: dict[str, Any]
    path: str
    formatter: str | None = None


@dataclass(frozen=True)
class ExportValidity:
    """One validity range of a CALIBRATION collection and the datasets certified over it."""

    collection: str
    timespan: ButlerTimespan
    dataset_ids: tuple[uuid.UUID, ...]


@dataclass
class ButlerExport:
    """Everything an export holds, in the order it must be written."""

    source: str
    universe_namespace: str
    universe_version: int | None
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # daf_butler form
    collections: dict[str, ExportCollection] = field(default_factory=dict)
    dataset_types: dict[str, ExportDatasetType] = field(default_factory=dict)
    datasets: list[ExportDataset] = field(default_factory=list)
    tags: dict[str, list[uuid.UUID]] = field(default_factory=dict)
    validities: list[ExportValidity] = field(default_factory=list)

    @property
    def external_types(self) -> set[str]:
        """Dataset types the datasets use that the export does not define."""
        return {d.dataset_type for d in self.datasets} - set(self.dataset_types)

    @property
    def external_collections(self) -> set[str]:
        """Collections referred to (runs, chain children, tags, certifications) that the
        export does not define."""
        named = {d.run for d in self.datasets} | set(self.tags) | {
            v.collection for v in self.validities}
        for collection in self.collections.values():
            named.update(collection.children)
        return named - set(self.collections)


@dataclass(frozen=True)
class Conflict:
    """Something the export gives differently from what the repository holds."""

    kind: str  # record, dataset type, collection, chain, dataset, tag, certification
    name: str
    here: str
    export: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: repository has {self.here}; export has {self.export}"


@dataclass(frozen=True)
class NewDataset:
    """A dataset to write: its ref (complete data ID), its key, where its file comes from
    and where it goes (None: where the repository's file template puts it)."""

    ref: DatasetRef
    key: str
    source: Path
    path: str | None


@dataclass
class ImportPlan:
    """Everything to write, what is already there, and the conflicts."""

    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    dataset_types: list[DatasetType] = field(default_factory=list)
    collections: list[tuple[str, CollectionType, str]] = field(default_factory=list)
    chains: dict[str, list[str]] = field(default_factory=dict)
    datasets: list[NewDataset] = field(default_factory=list)
    tags: dict[str, list[DatasetRef]] = field(default_factory=dict)
    certifications: dict[tuple[str, Timespan], list[DatasetRef]] = field(default_factory=dict)
    present: int = 0  # items (of every kind) already there as the export gives them
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def new_items(self) -> int:
        return (sum(len(r) for r in self.records.values()) + len(self.dataset_types)
                + len(self.collections) + len(self.chains) + len(self.datasets)
                + sum(len(r) for r in self.tags.values())
                + sum(len(r) for r in self.certifications.values()))


def storage_class_for(exported: ExportDatasetType, existing: DatasetType | None) -> str:
    """This project's storage class for a daf_butler dataset type (see the module doc)."""
    if exported.storage_class in storage_class_names():
        return exported.storage_class
    if existing is not None:
        return existing.storage_class
    return DAF_BUTLER_PREFIX + exported.storage_class


def read_export(path: Path) -> ButlerExport:
    """Read and check an export file; any problem is one InputError line naming it."""
    try:
        with open(path, "rb") as stream:
            document = export_yaml.load(stream, name=str(path))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    return parse_export(document, str(path))


def parse_export(document: dict[str, Any], source: str) -> ButlerExport:
    """An already loaded export document (see :func:`export_yaml.load`) as typed parts."""
    version = document.get("universe_version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise InputError(f"{source}: universe_version must be a number, got {version!r}")
    export = ButlerExport(source, str(document.get("universe_namespace") or "daf_butler"),
                          version)
    readers = {"dimension": _dimension, "collection": _collection,
               "dataset_type": _dataset_type, "dataset": _datasets,
               "associations": _associations}
    for index, block in enumerate(document["data"], 1):
        where = f"{source}: data block {index}"
        if not isinstance(block, dict) or block.get("type") not in readers:
            kind = block.get("type") if isinstance(block, dict) else block
            raise InputError(f"{where}: unknown block type {kind!r} (expected one of "
                             f"{', '.join(readers)})")
        try:
            readers[block["type"]](export, block)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where} ({block.get('type')}): malformed: "
                             f"{type(exc).__name__} {exc}") from None
        except InputError as exc:
            raise InputError(f"{where} ({block.get('type')}): {exc}") from None
    _check_inside(export)
    return export


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InputError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _dimension(export: ButlerExport, block: dict[str, Any]) -> None:
    element = _text(block["element"], "element")
    records = block.get("records") or []
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise InputError(f"records of {element} must be a list of mappings")
    export.records.setdefault(element, []).extend(records)


def _collection(export: ButlerExport, block: dict[str, Any]) -> None:
    name = _text(block["name"], "collection name")
    try:
        ctype = CollectionType(str(block["collection_type"]).upper())
    except ValueError:
        raise InputError(f"collection {name!r} has unknown collection_type "
                         f"{block['collection_type']!r}") from None
    children: tuple[str, ...] = ()
    if ctype is CollectionType.CHAINED:
        given = block.get("children") or []
        if not isinstance(given, list):
            raise InputError(f"children of chain {name!r} must be a list")
        children = tuple(_text(c, f"a child of chain {name!r}") for c in given)
    doc = block.get("doc")
    if doc is not None and not isinstance(doc, str):
        raise InputError(f"doc of collection {name!r} must be a string")
    collection = ExportCollection(name, ctype, doc, children)
    if export.collections.setdefault(name, collection) != collection:
        raise InputError(f"collection {name!r} is defined twice, differently")


def _dataset_type(export: ButlerExport, block: dict[str, Any]) -> None:
    name = _text(block["name"], "dataset type name")
    dims = block.get("dimensions") or []
    if not isinstance(dims, list) or not all(isinstance(d, str) for d in dims):
        raise InputError(f"dimensions of dataset type {name!r} must be a list of names")
    dataset_type = ExportDatasetType(name, tuple(dims),
                                     _text(block["storage_class"], "storage_class"),
                                     bool(block.get("is_calibration", False)))
    if export.dataset_types.setdefault(name, dataset_type) != dataset_type:
        raise InputError(f"dataset type {name!r} is defined twice, differently")


def _datasets(export: ButlerExport, block: dict[str, Any]) -> None:
    type_name = _text(block["dataset_type"], "dataset_type")
    run = _text(block["run"], "run")
    for record in block.get("records") or []:
        ids = record["dataset_id"]
        ids = ids if isinstance(ids, list) else [ids]
        data_ids = record["data_id"]
        data_ids = data_ids if isinstance(data_ids, list) else [data_ids]
        if len(ids) != len(data_ids):
            raise InputError(f"a {type_name} record has {len(ids)} dataset_id(s) but "
                             f"{len(data_ids)} data_id(s)")
        path = _text(record["path"], f"path of a {type_name} dataset")
        formatter = record.get("formatter")
        for dataset_id, data_id in zip(ids, data_ids, strict=True):
            if not isinstance(dataset_id, uuid.UUID):
                raise InputError(f"dataset_id {dataset_id!r} is not a !uuid value")
            if not isinstance(data_id, dict):
                raise InputError(f"data_id of dataset {dataset_id} must be a mapping")
            export.datasets.append(ExportDataset(dataset_id, type_name, run, dict(data_id),
                                                 path, formatter if isinstance(formatter, str)
                                                 else None))


def _associations(export: ButlerExport, block: dict[str, Any]) -> None:
    name = _text(block["collection"], "collection")
    ctype = str(block.get("collection_type", "")).upper()
    if ctype == "TAGGED":
        ids = block.get("dataset_ids") or []
        export.tags.setdefault(name, []).extend(_uuids(ids, name))
    elif ctype == "CALIBRATION":
        for entry in block.get("validity_ranges") or []:
            span = entry["timespan"]
            if not isinstance(span, ButlerTimespan):
                raise InputError(f"validity range of {name!r} is not a "
                                 "!lsst.daf.butler.Timespan")
            export.validities.append(ExportValidity(
                name, span, tuple(_uuids(entry.get("dataset_ids") or [], name))))
    else:
        raise InputError(f"associations of {name!r} have collection_type {ctype or None!r}: "
                         "expected TAGGED or CALIBRATION")


def _uuids(values: Any, collection: str) -> list[uuid.UUID]:
    if not isinstance(values, list) or not all(isinstance(v, uuid.UUID) for v in values):
        raise InputError(f"dataset_ids of {collection!r} must be a list of !uuid values")
    return values


def _check_inside(export: ButlerExport) -> None:
    """What the export says about itself must agree: one dataset per UUID, memberships of
    collections of the right type (when the export defines them)."""
    seen: dict[uuid.UUID, ExportDataset] = {}
    for dataset in export.datasets:
        first = seen.setdefault(dataset.id, dataset)
        if first != dataset:
            raise InputError(f"{export.source}: dataset {dataset.id} is given twice, "
                             f"differently ({first.dataset_type} in {first.run}, "
                             f"{dataset.dataset_type} in {dataset.run})")
    export.datasets = list(seen.values())
    expected = [(name, CollectionType.TAGGED, "tags") for name in export.tags]
    expected += [(v.collection, CollectionType.CALIBRATION, "validity ranges")
                 for v in export.validities]
    expected += [(d.run, CollectionType.RUN, "datasets") for d in export.datasets]
    for name, ctype, what in expected:
        defined = export.collections.get(name)
        if defined is not None and defined.type is not ctype:
            raise InputError(f"{export.source}: collection {name!r} is {defined.type} in the "
                             f"export but has {what}, which need a {ctype}")
