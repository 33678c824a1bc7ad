"""A Butler over a staging directory: reads the staged inputs, writes outputs to a RUN.

No database: the registry is the directory's YAML (see :mod:`federation.staging.area`).
Reads verify each file's size and xxh3 checksum against the staged registry
(once per file and process). Writes go through the project's storage classes
and formatters, laid out by the source repository's file templates under
``outputs/``; each output's file, then its YAML entry, is written to a
temporary name and renamed into place.

Provenance: an output's inputs are the ``inputs=`` given to :meth:`StagedButler.put`
(refs or UUIDs of staged inputs or earlier outputs); without it, the datasets
read with :meth:`StagedButler.get` since the previous put (the usual
get-compute-put loop).
"""

from __future__ import annotations

import fnmatch
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from federation.datastore.checksum import verify_file
from federation.datastore.posix import PosixDatastore
from federation.datastore.storage_classes import get_storage_class
from federation.datastore.templates import FileTemplates
from federation.errors import (
    ChecksumError,
    CollectionError,
    ConfigError,
    ConflictError,
    DatasetTypeError,
    InputError,
    MissingDatasetError,
    MissingRecordError,
)
from federation.model import CollectionType, DatasetRef, DatasetType, IdMode, make_dataset_id
from federation.registry.collections import check_collection_name
from federation.registry.dataset_types import _NAME as TYPE_NAME
from federation.registry.dataset_types import MAX_NAME
from federation.staging.area import OUTPUTS_DIR, StagingArea
from federation.staging.model import StagedDataset, StagedType
from federation.staging.records import StagedRecords

DataId = Mapping[str, Any]


class StagedButler:
    """The inputs staged by ``fed stage`` and the outputs a job writes beside them.

    ``collections`` is the default search path for reads (default: the
    collections named at staging); ``run`` the RUN outputs are written to.
    """

    def __init__(self, root: str | Path, *, collections: str | Sequence[str] | None = None,
                 run: str | None = None) -> None:
        self.area = StagingArea.load(root)
        self.root = self.area.root
        self.universe = self.area.universe
        self.records = StagedRecords(self.universe, self.area.records)
        self.run = run
        if isinstance(collections, str):
            collections = [collections]
        self.collections = list(collections) if collections else list(
            self.area.header.search_path)
        self._types: dict[str, DatasetType] = {}
        for staged in (*self.area.dataset_types, *self.area.output_types):
            self._types[staged.name] = self._make_type(staged)
        self._datasets: dict[uuid.UUID, StagedDataset] = {
            d.id: d for d in (*self.area.inputs, *self.area.outputs)}
        #: (dataset type, data ID key) of each dataset: its slot in a collection
        self._keys = {d.id: self._key_of(d) for d in self._datasets.values()}
        self._slots = {(*self._keys[d.id], d.run): d.id for d in self._datasets.values()}
        self._members = {c.name: {self._keys[i]: i for i in c.datasets if i in self._keys}
                         for c in self.area.collections if c.type is CollectionType.TAGGED}
        self._staged_collections = {c.name for c in self.area.collections} | {
            d.run for d in self.area.inputs}
        self._verified: set[uuid.UUID] = set()
        self._read: dict[uuid.UUID, None] = {}  # read since the last put, in order
        self._datastore = PosixDatastore(self.root / OUTPUTS_DIR,
                                         FileTemplates(dict(self.area.header.templates)))

    def __enter__(self) -> StagedButler:
        return self

    def __exit__(self, *exc) -> None:
        return None

    # -- dataset types -------------------------------------------------------

    def _make_type(self, staged: StagedType) -> DatasetType:
        try:
            group = self.universe.group(staged.dimensions)
        except ConfigError as exc:  # unknown or key-less dimensions
            raise DatasetTypeError(f"dataset type {staged.name!r}: {exc}") from None
        get_storage_class(staged.storage_class)
        return DatasetType(staged.name, group, staged.storage_class)

    def register_dataset_type(self, name: str, dimensions: Iterable[str],
                              storage_class: str) -> bool:
        """Declare an output dataset type (dimensions of the staged universe); True if new.

        Declaring an existing type again is a no-op; a different definition is refused.
        """
        if not isinstance(name, str) or not TYPE_NAME.fullmatch(name) or len(name) > MAX_NAME:
            raise DatasetTypeError(f"invalid dataset type name {name!r}: start with a letter; "
                                   f"letters, digits, '_', '.'; at most {MAX_NAME} characters")
        staged = StagedType(name, tuple(dimensions), storage_class)
        dataset_type = self._make_type(staged)
        known = self._types.get(name)
        if known is not None:
            if known != dataset_type:
                raise DatasetTypeError(f"dataset type {name!r} is already defined as {known}; "
                                       f"not {dataset_type}")
            return False
        self.area.write_output_type(StagedType(name, dataset_type.dimensions.names,
                                               storage_class))
        self._types[name] = dataset_type
        return True

    def get_dataset_type(self, name: str) -> DatasetType:
        found = self._types.get(name)
        if found is None:
            raise DatasetTypeError(f"unknown dataset type {name!r} in this staging directory; "
                                   "declare it with register_dataset_type")
        return found

    # -- reading -------------------------------------------------------------

    def _ref(self, dataset: StagedDataset) -> DatasetRef:
        return DatasetRef(dataset.id, self.get_dataset_type(dataset.dataset_type),
                          dict(dataset.data_id), dataset.run)

    def _key_of(self, dataset: StagedDataset) -> tuple[str, str]:
        group = self.get_dataset_type(dataset.dataset_type).dimensions
        _, key = self.records.expand(group, {k: dataset.data_id[k] for k in group.required
                                             if k in dataset.data_id})
        return dataset.dataset_type, key

    def _search_path(self, collections: str | Sequence[str] | None) -> list[str]:
        if collections is None:
            collections = self.collections
        elif isinstance(collections, str):
            collections = [collections]
        if not collections:
            raise CollectionError("no collections to search: pass collections=")
        return list(collections)

    def find_dataset(self, dataset_type: str, data_id: DataId | None = None, *,
                     collections: str | Sequence[str] | None = None,
                     **kwargs: Any) -> DatasetRef | None:
        """The first matching dataset along the search path (input RUNs, named
        collections as staged, output RUNs), or None; None too for a data ID naming a
        value the staged records do not hold."""
        dtype = self.get_dataset_type(dataset_type)
        try:
            _, key = self.records.expand(dtype.dimensions, dict(data_id or {}, **kwargs))
        except MissingRecordError:
            return None
        for name in self._search_path(collections):
            members = self._members.get(name)
            if members is None:
                found = self._slots.get((dataset_type, key, name))
            else:
                found = members.get((dataset_type, key))
            if found is not None:
                return self._ref(self._datasets[found])
        return None

    def query_datasets(self, dataset_types: str | Sequence[str] | None = None,
                       collections: str | Sequence[str] | None = None) -> list[DatasetRef]:
        """Datasets of the given types (names or globs; None: all), first found along
        the search path for each type and data ID."""
        patterns = [dataset_types] if isinstance(dataset_types, str) else dataset_types
        found: dict[tuple[str, str], DatasetRef] = {}
        for name in self._search_path(collections):
            members = self._members.get(name)
            ids = members.values() if members is not None else [
                d.id for d in self._datasets.values() if d.run == name]
            for dataset in (self._datasets[i] for i in ids):
                if patterns and not any(fnmatch.fnmatchcase(dataset.dataset_type, p)
                                        for p in patterns):
                    continue
                found.setdefault(self._keys[dataset.id], self._ref(dataset))
        return list(found.values())

    def get(self, ref_or_type: DatasetRef | str, data_id: DataId | None = None, *,
            collections: str | Sequence[str] | None = None, **kwargs: Any) -> Any:
        """Read a dataset (by ref, or by type + data ID), its file checked first."""
        if isinstance(ref_or_type, DatasetRef):
            ref = ref_or_type
        else:
            ref = self.find_dataset(ref_or_type, data_id, collections=collections, **kwargs)
            if ref is None:
                raise MissingDatasetError(
                    f"no {ref_or_type} dataset with data ID {dict(data_id or {}, **kwargs)} in "
                    f"collections {', '.join(self._search_path(collections))}")
        dataset = self._datasets.get(ref.id)
        if dataset is None:
            raise MissingDatasetError(f"{ref} is not in this staging directory")
        path = self.area.file_path(dataset.path)
        if dataset.id not in self._verified:
            problem = verify_file(path, dataset.size, dataset.checksum)
            if problem:
                raise ChecksumError(f"staged file {dataset.path} of {ref}: {problem}")
            self._verified.add(dataset.id)
        obj = get_storage_class(ref.dataset_type.storage_class).formatter.read(path)
        self._read[dataset.id] = None
        return obj

    # -- writing -------------------------------------------------------------

    def put(self, obj: Any, dataset_type: str, data_id: DataId | None = None, *,
            run: str | None = None, inputs: Iterable[DatasetRef | uuid.UUID | str] | None = None,
            **kwargs: Any) -> DatasetRef:
        """Write ``obj`` as a new output dataset in a RUN, recording what it was made from."""
        run = self._output_run(run)
        dtype = self.get_dataset_type(dataset_type)
        full, key = self.records.expand(dtype.dimensions, dict(data_id or {}, **kwargs))
        taken = self._slots.get((dtype.name, key, run))
        if taken is not None:
            raise ConflictError(f"run {run!r} already holds a {dtype.name} dataset with data "
                                f"ID {full} (id {taken})")
        made_from = self._inputs(inputs)
        required = {name: full[name] for name in dtype.dimensions.required}
        ref = DatasetRef(make_dataset_id(IdMode.RANDOM, dtype.name, required, run), dtype,
                         full, run)
        staged = self._datastore.stage_put(ref, obj, get_storage_class(dtype.storage_class))
        dataset = StagedDataset(ref.id, dtype.name, run, full,
                                f"{OUTPUTS_DIR}/{staged.stored.path}", staged.stored.size,
                                staged.stored.checksum, made_from)
        try:
            staged.commit()
            self.area.write_output(dataset)
        except BaseException:
            staged.abort()
            raise
        self._datasets[ref.id] = dataset
        self._keys[ref.id] = (dtype.name, key)
        self._slots[(dtype.name, key, run)] = ref.id
        self._verified.add(ref.id)
        self._read.clear()
        return ref

    def _output_run(self, run: str | None) -> str:
        run = run or self.run
        if not run:
            raise CollectionError("no RUN given: pass run= here or when opening the "
                                  "StagedButler")
        check_collection_name(run)
        if run in self._staged_collections:
            raise CollectionError(f"collection {run!r} holds staged inputs: write outputs to "
                                  "a new RUN")
        return run

    def _inputs(self, inputs: Iterable[DatasetRef | uuid.UUID | str] | None
                ) -> tuple[uuid.UUID, ...]:
        if inputs is None:
            return tuple(self._read)
        ids: dict[uuid.UUID, None] = {}
        for item in inputs:
            try:
                dataset_id = item.id if isinstance(item, DatasetRef) else uuid.UUID(str(item))
            except ValueError:
                raise InputError(f"input {item!r} is not a dataset ref or UUID") from None
            if dataset_id not in self._datasets:
                raise MissingDatasetError(f"input {dataset_id} is not a dataset of this "
                                          "staging directory")
            ids[dataset_id] = None
        return tuple(ids)

    # -- listing -------------------------------------------------------------

    @property
    def inputs(self) -> list[DatasetRef]:
        """Every staged input dataset."""
        return [self._ref(d) for d in self.area.inputs]

    @property
    def outputs(self) -> list[DatasetRef]:
        """Every output written so far (by this and earlier butlers on the directory)."""
        inputs = {d.id for d in self.area.inputs}
        return [self._ref(d) for d in self._datasets.values() if d.id not in inputs]

    def inputs_of(self, ref: DatasetRef | uuid.UUID) -> list[uuid.UUID]:
        """The recorded inputs of an output."""
        dataset_id = ref.id if isinstance(ref, DatasetRef) else ref
        return list(self._datasets[dataset_id].inputs)
