"""What importing a daf_butler export would change in a repository, checked whole.

:func:`plan_import` compares a :class:`~federation.dafbutler.importer.ButlerExport`
with a registry, reading only: records, dataset types, collections, datasets,
tags and certifications are each new (to write), present (the same is already
there) or a :class:`Conflict` (something different is there). Anything the
export refers to that neither it nor the repository holds, and any file that
is missing, is an InputError before anything is written.

Storage classes are mapped by :func:`~federation.dafbutler.importer.storage_class_for`.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa

from federation.dafbutler.importer import (
    ButlerExport,
    Conflict,
    ExportDataset,
    ImportPlan,
    NewDataset,
    storage_class_for,
)
from federation.dafbutler.records import from_butler, to_timespan
from federation.datastore.checksum import file_checksum
from federation.datastore.posix import PosixDatastore
from federation.errors import FederationError, InputError
from federation.model import CollectionType, DatasetRef, DatasetType, StoredFile, data_id_key
from federation.registry.database import IN_VALUES
from federation.registry.dimensions import coerce_key
from federation.registry.registry import Registry
from federation.timespan import Timespan


def plan_import(registry: Registry, datastore: PosixDatastore, export: ButlerExport, *,
                files_from: Path, transfer: str, templated: set[str] | None = None
                ) -> ImportPlan:
    """Compare ``export`` with the repository; raise InputError for what cannot be
    imported at all. ``templated``: dataset types whose files go where the repository's
    templates say (None: all of them); the others keep the export's paths."""
    return _Planner(registry, datastore, export, files_from, transfer, templated).run()


class _Planner:
    def __init__(self, registry: Registry, datastore: PosixDatastore, export: ButlerExport,
                 files_from: Path, transfer: str, templated: set[str] | None) -> None:
        self.registry, self.datastore, self.export = registry, datastore, export
        self.universe = registry.universe
        self.files_from, self.transfer, self.templated = files_from, transfer, templated
        self.plan = ImportPlan()
        self.rows: dict[str, dict[tuple, dict[str, Any]]] = {}  # export records, row form
        self.types: dict[str, DatasetType | None] = {}  # None: a conflicting type, skipped
        self.refs: dict[uuid.UUID, DatasetRef | None] = {}  # None: conflicting, skipped
        self.checked: set[str] = set()  # collections checked by _expected
        self.looked: dict[tuple[str, tuple], dict[str, Any] | None] = {}  # repository records

    def run(self) -> ImportPlan:
        self._records()
        self._dataset_types()
        self._collections()
        self._datasets()
        self._fetch_members()
        self._tags()
        self._certifications()
        self._check_writable()
        return self.plan

    def _conflict(self, kind: str, name: Any, here: Any, export: Any) -> None:
        self.plan.conflicts.append(Conflict(kind, str(name), str(here), str(export)))

    # -- dimension records -------------------------------------------------------

    def _records(self) -> None:
        dims = self.registry.dimensions
        unknown = sorted(set(self.export.records) - set(self.universe.dimensions))
        if unknown:
            raise InputError(f"{self.export.source}: records of {', '.join(unknown)}, which "
                             f"universe {self.universe.namespace}:{self.universe.version} "
                             "does not have")
        for element in self.universe.sorted(self.export.records):
            dim = self.universe[element]
            rows: dict[tuple, dict[str, Any]] = {}
            for record in self.export.records[element]:
                try:
                    row = dims.normalize(element, from_butler(dim, record))
                except FederationError as exc:
                    raise InputError(f"{self.export.source}: {element} record {record}: "
                                     f"{exc}") from None
                key = tuple(row[k] for k in dim.keys)
                if rows.setdefault(key, row) != row:
                    raise InputError(f"{self.export.source}: two different {element} records "
                                     f"for {_fmt(dim.keys, key)}")
            self.rows[element] = rows
            dims.prefetch(element, rows)
            new = []
            for key, row in rows.items():
                stored = dims.cached(element, key)
                if stored is None:
                    new.append(row)
                elif stored != row:
                    self._conflict("record", f"{element} {_fmt(dim.keys, key)}",
                                   _diff(stored, row), _diff(row, stored))
                    rows[key] = stored  # the repository's stays: data IDs are completed from it
                else:
                    self.plan.present += 1
            if new:
                self.plan.records[element] = new
        for element, new in self.plan.records.items():
            dim = self.universe[element]
            for other in (*dim.requires, *dim.implies):
                keys = {tuple(row[k] for k in self.universe[other].keys) for row in new}
                self._prefetch(other, keys)
                for key in keys:
                    self._record(other, key, f"{element} records refer to")

    def _prefetch(self, name: str, keys: Iterable[tuple]) -> None:
        """Load in bulk the repository's records of ``name`` the export does not give."""
        given = self.rows.get(name, {})
        self.registry.dimensions.prefetch(name, [k for k in keys if k not in given])

    def _record(self, name: str, key: tuple, context: str) -> dict[str, Any]:
        """The record of ``name`` for ``key``, from the export or the repository."""
        found = self.rows.get(name, {}).get(key)
        if found is None:
            if (name, key) not in self.looked:  # absent keys are not cached by the registry
                self.looked[name, key] = self.registry.dimensions.get(name, key)
            found = self.looked[name, key]
        if found is not None:
            return found
        dim = self.universe[name]
        if not (dim.requires or dim.implies or dim.metadata or dim.has_timespan):
            return {name: key[0]}  # a key-only record: the registry creates it
        raise InputError(f"{self.export.source}: {context} {name} {_fmt(dim.keys, key)}, "
                         "which neither the export nor the repository has")

    # -- dataset types -----------------------------------------------------------

    def _dataset_types(self) -> None:
        types = self.registry.dataset_types
        for name, exported in self.export.dataset_types.items():
            existing = types.find(name)
            try:
                wanted = types.make(name, exported.dimensions,
                                    storage_class_for(exported, existing))
            except FederationError as exc:
                raise InputError(f"{self.export.source}: {exc}") from None
            if existing is None:
                self.plan.dataset_types.append(wanted)
            elif existing.dimensions != wanted.dimensions or \
                    existing.storage_class != wanted.storage_class:
                self._conflict("dataset type", name, existing, wanted)
                wanted = None
            else:
                self.plan.present += 1
            self.types[name] = wanted
        for name in sorted(self.export.external_types):
            found = types.find(name)
            if found is None:
                raise InputError(f"{self.export.source}: datasets of dataset type {name!r}, "
                                 "which neither the export nor the repository defines")
            self.types[name] = found

    # -- collections --------------------------------------------------------------

    def _collections(self) -> None:
        collections = self.registry.collections
        for name, exported in self.export.collections.items():
            if not collections.exists(name):
                collections.check_owned(name)
                self.plan.collections.append((name, exported.type, exported.doc or ""))
                if exported.type is CollectionType.CHAINED:
                    self.plan.chains[name] = list(exported.children)
                continue
            stored = collections.get(name)
            if stored.type is not exported.type:
                self._conflict("collection", name, stored.type, exported.type)
                continue
            if exported.doc is not None and exported.doc != (stored.doc or ""):
                self._conflict("collection doc", name, repr(stored.doc), repr(exported.doc))
            else:
                self.plan.present += 1
            if exported.type is CollectionType.CHAINED:
                if list(stored.children) != list(exported.children):
                    self._conflict("chain", name, list(stored.children),
                                   list(exported.children))
                else:
                    self.plan.present += 1
        for name in sorted(self.export.external_collections):
            if not collections.exists(name):
                raise InputError(f"{self.export.source}: collection {name!r} is referred to "
                                 "but neither the export nor the repository has it")

    def _expected(self, name: str, ctype: CollectionType) -> None:
        """``name`` is (or will be) a ``ctype`` collection this site may write into."""
        if name in self.checked:
            return
        self.checked.add(name)
        if name in {c[0] for c in self.plan.collections}:
            return  # new: its type is checked against its use in the export
        found = self.registry.collections.lookup(name)[1]
        if found is not ctype:
            raise InputError(f"{self.export.source}: collection {name!r} is {found} in the "
                             f"repository; the export needs a {ctype}")

    def _check_writable(self) -> None:
        """Existing collections that would change must be this site's to write."""
        new = {c[0] for c in self.plan.collections}
        changed = {n.ref.run for n in self.plan.datasets} | set(self.plan.tags) | set(
            self.plan.chains) | {collection for collection, _ in self.plan.certifications}
        for name in sorted(changed - new):
            self.registry.collections.check_writable(name)

    # -- datasets ------------------------------------------------------------------

    def _datasets(self) -> None:
        datasets = self.export.datasets
        for dataset in datasets:
            self._expected(dataset.run, CollectionType.RUN)
        for name in {d.dataset_type for d in datasets}:
            dataset_type = self.types.get(name)
            for dim in () if dataset_type is None else dataset_type.dimensions.required:
                keys = self.universe[dim].keys
                try:
                    self._prefetch(dim, {tuple(coerce_key(self.universe[k], d.data_id[k])
                                               for k in keys)
                                         for d in datasets if d.dataset_type == name})
                except (KeyError, FederationError):
                    continue  # _ref names the bad data ID
        stored = self.registry.datasets.get_many([d.id for d in datasets])
        stored_files = {i: f for i, f, _ in self.registry.datasets.iter_files(list(stored))}
        slots: dict[tuple[str, str, str], uuid.UUID] = {}
        left_out: dict[str, int] = {}
        for dataset in datasets:
            dataset_type = self.types.get(dataset.dataset_type)
            if dataset_type is None:  # its type conflicts: left out with it
                self.refs[dataset.id] = None
                left_out[dataset.dataset_type] = left_out.get(dataset.dataset_type, 0) + 1
                continue
            ref, key = self._ref(dataset, dataset_type)
            slot = (dataset_type.name, dataset.run, key)
            if slots.setdefault(slot, dataset.id) != dataset.id:
                raise InputError(f"{self.export.source}: datasets {slots[slot]} and "
                                 f"{dataset.id} are both {ref}")
            source = self._source(dataset)
            here = stored.get(dataset.id)
            if here is not None:
                self._compare(dataset, ref, here, source, stored_files.get(dataset.id))
                continue
            templated = self._templated(dataset_type.name) or _outside(dataset.path)
            path = None if templated else dataset.path
            if path is not None:
                self.datastore.safe_path(path)
            self.plan.datasets.append(NewDataset(ref, key, source, path))
            self.refs[dataset.id] = ref
        for name, count in left_out.items():
            self._conflict("datasets", f"of type {name}", "another definition of the type",
                           f"{count} dataset(s), left out with it")
        self._check_slots()

    def _ref(self, dataset: ExportDataset, dataset_type: DatasetType) -> tuple[DatasetRef, str]:
        """The dataset's ref with its complete data ID, from the export's records or the
        repository's."""
        group = dataset_type.dimensions
        context = f"dataset {dataset.id} ({dataset.dataset_type}) refers to"
        try:
            full = {n: coerce_key(self.universe[n], dataset.data_id[n]) for n in group.required}
        except KeyError as exc:
            raise InputError(f"{self.export.source}: the data ID of dataset {dataset.id} "
                             f"lacks {exc.args[0]}") from None
        except FederationError as exc:
            raise InputError(f"{self.export.source}: dataset {dataset.id}: {exc}") from None
        records = {n: self._record(n, tuple(full[k] for k in self.universe[n].keys), context)
                   for n in group.required}
        pending = list(group.implied)
        while pending:  # each implied value comes from a record already found
            ready = [n for n in pending if any(n in r for r in records.values())]
            if not ready:
                raise InputError(f"{self.export.source}: dataset {dataset.id}: cannot "
                                 f"determine {', '.join(pending)} from {full}")
            for name in ready:
                full[name] = next(r[name] for r in records.values() if name in r)
                records[name] = self._record(
                    name, tuple(full[k] for k in self.universe[name].keys), context)
                pending.remove(name)
        key = data_id_key([full[n] for n in group.required])
        return DatasetRef(dataset.id, dataset_type, full, dataset.run), key

    def _source(self, dataset: ExportDataset) -> Path:
        """The dataset's file under ``files_from`` (or where an absolute path or file URI
        says, for a file daf_butler holds outside its datastore): a regular file."""
        source = _outside(dataset.path) or self.files_from / dataset.path
        try:
            mode = os.stat(source).st_mode
        except OSError as exc:
            raise InputError(f"{self.export.source}: file {source} of dataset {dataset.id} "
                             f"cannot be read: {exc.strerror}") from None
        if not stat.S_ISREG(mode):
            raise InputError(f"{self.export.source}: {source} of dataset {dataset.id} is not "
                             "a regular file")
        return source

    def _templated(self, dataset_type: str) -> bool:
        return self.transfer == "direct" or self.templated is None or \
            dataset_type in self.templated

    def _compare(self, dataset: ExportDataset, ref: DatasetRef, here: DatasetRef,
                 source: Path, stored_file: StoredFile | None) -> None:
        """A dataset whose UUID the repository has: the same one, or a conflict."""
        same = (here.dataset_type.name == ref.dataset_type.name and here.run == ref.run
                and here.required_data_id == ref.required_data_id)
        if same and stored_file is not None:
            size, checksum = file_checksum(source)
            if (size, checksum) != (stored_file.size, stored_file.checksum):
                self._conflict("dataset", dataset.id,
                               f"a file of {stored_file.size} bytes, xxh3 {stored_file.checksum}",
                               f"{source} of {size} bytes, xxh3 {checksum}")
                self.refs[dataset.id] = None
                return
        if not same:
            self._conflict("dataset", dataset.id, here, ref)
            self.refs[dataset.id] = None
            return
        self.plan.present += 1
        self.refs[dataset.id] = here

    def _check_slots(self) -> None:
        """New datasets whose run slot or file path the repository already uses."""
        db = self.registry.db
        d, f, c, dt = (db.tables.dataset, db.tables.file, db.tables.collection,
                       db.tables.dataset_type)
        new = {(n.ref.dataset_type.name, n.ref.run, n.key): n for n in self.plan.datasets}
        stmt = (sa.select(d.c.id, dt.c.name, c.c.name, d.c.data_id_key)
                .join(dt, dt.c.id == d.c.dataset_type_id).join(c, c.c.id == d.c.run_id)
                .where(d.c.data_id_key.in_(IN_VALUES)))
        taken: set[uuid.UUID] = set()
        for row in db.select_in(stmt, {key for _, _, key in new}):
            found = new.get((row[1], row[2], row[3]))
            if found is not None:
                self._conflict("dataset", found.ref.id, f"{found.ref} as {row[0]}", found.ref)
                taken.add(found.ref.id)
        by_path = {n.path: n for n in self.plan.datasets if n.path is not None}
        stmt = sa.select(f.c.dataset_id, f.c.path).where(f.c.path.in_(IN_VALUES))
        for row in db.select_in(stmt, list(by_path)):
            found = by_path[row.path]
            self._conflict("dataset", found.ref.id, f"file {row.path} of dataset "
                           f"{row.dataset_id}", f"file {row.path} for {found.ref}")
            taken.add(found.ref.id)
        if taken:
            self.plan.datasets = [n for n in self.plan.datasets if n.ref.id not in taken]
            self.refs.update(dict.fromkeys(taken))

    # -- tags and certifications -----------------------------------------------------

    def _fetch_members(self) -> None:
        """Load in bulk the datasets associations name that the export does not hold."""
        named = {i for ids in self.export.tags.values() for i in ids}
        named.update(i for v in self.export.validities for i in v.dataset_ids)
        self.refs.update(self.registry.datasets.get_many(named - set(self.refs)))

    def _member(self, dataset_id: uuid.UUID, collection: str) -> DatasetRef | None:
        """The ref of a dataset an association names (None: it is skipped)."""
        if dataset_id not in self.refs:
            raise InputError(f"{self.export.source}: {collection!r} names dataset "
                             f"{dataset_id}, which neither the export nor the repository has")
        return self.refs[dataset_id]

    def _tags(self) -> None:
        for tag, ids in self.export.tags.items():
            self._expected(tag, CollectionType.TAGGED)
            held = self._held(tag)
            wanted: dict[tuple[str, str], DatasetRef] = {}
            for dataset_id in dict.fromkeys(ids):
                ref = self._member(dataset_id, tag)
                if ref is None:
                    self._conflict("tag", tag, "(a conflicting dataset, skipped)", dataset_id)
                    continue
                slot = (ref.dataset_type.name, data_id_key(list(ref.required_data_id.values())))
                if wanted.setdefault(slot, ref) is not ref:
                    raise InputError(f"{self.export.source}: {tag!r} tags both "
                                     f"{wanted[slot].id} and {ref.id} for {ref}")
                there = held.get(slot)
                if there is None:
                    self.plan.tags.setdefault(tag, []).append(ref)
                elif there == ref.id:
                    self.plan.present += 1
                else:
                    self._conflict("tag", tag, f"{ref} as {there}", f"{ref} as {ref.id}")

    def _held(self, tag: str) -> dict[tuple[str, str], uuid.UUID]:
        """The (type, data ID key) slots a TAGGED collection of the repository holds."""
        if not self.registry.collections.exists(tag):
            return {}
        return {(r.dataset_type.name, data_id_key(list(r.required_data_id.values()))): r.id
                for r in self.registry.datasets.query(self.registry.dataset_types.query(),
                                                      [tag], find_first=False)}

    def _certifications(self) -> None:
        by_collection: dict[str, list[tuple[DatasetRef, Timespan]]] = {}
        for validity in self.export.validities:
            self._expected(validity.collection, CollectionType.CALIBRATION)
            span = to_timespan(validity.timespan)
            for dataset_id in validity.dataset_ids:
                ref = self._member(dataset_id, validity.collection)
                if ref is None:
                    self._conflict("certification", validity.collection,
                                   "(a conflicting dataset, skipped)", dataset_id)
                    continue
                by_collection.setdefault(validity.collection, []).append((ref, span))
        for collection, wanted in by_collection.items():
            stored: dict[tuple, list[tuple[uuid.UUID, Timespan]]] = {}
            if self.registry.collections.exists(collection):
                for ref, span in self.registry.datasets.certifications(collection):
                    stored.setdefault(_slot(ref), []).append((ref.id, span))
            mine: dict[tuple, list[Timespan]] = {}
            for ref, span in wanted:
                if any(s.overlaps(span) for s in mine.get(_slot(ref), [])):
                    raise InputError(f"{self.export.source}: {collection!r} certifies two "
                                     f"datasets for {ref} at once around {span}")
                mine.setdefault(_slot(ref), []).append(span)
                clash = [(i, s) for i, s in stored.get(_slot(ref), []) if s.overlaps(span)]
                if (ref.id, span) in clash:
                    self.plan.present += 1
                elif clash:
                    self._conflict("certification", collection,
                                   f"{clash[0][0]} valid {clash[0][1]}", f"{ref.id} valid {span}")
                else:
                    self.plan.certifications.setdefault((collection, span), []).append(ref)


def _outside(path: str) -> Path | None:
    """The file an absolute path or ``file://`` URI of an export names (None: a path
    relative to the exported datastore); other URIs are refused."""
    if path.startswith("file://"):
        return Path(unquote(urlsplit(path).path))
    if "://" in path:
        raise InputError(f"file {path} is not on a local file system: copy it beside the "
                         "others and give --files-from")
    return Path(path) if os.path.isabs(path) else None


def _slot(ref: DatasetRef) -> tuple[str, tuple]:
    return ref.dataset_type.name, tuple(ref.required_data_id.values())


def _fmt(names: Iterable[str], values: Iterable[Any]) -> str:
    return "{" + ", ".join(f"{n}={v!r}" for n, v in zip(names, values, strict=True)) + "}"


def _diff(mine: dict[str, Any], other: dict[str, Any]) -> str:
    """The fields of ``mine`` that differ from ``other``."""
    return "{" + ", ".join(f"{k}={mine.get(k)!r}" for k in sorted(set(mine) | set(other))
                           if mine.get(k) != other.get(k)) + "}"
