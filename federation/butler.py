"""The Butler: put, get, ingest, find, query and remove over one site's repository."""

from __future__ import annotations

import gc
import os
import shutil
import stat
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from federation.butler_types import (  # noqa: F401 - part of the Butler's API
    Existence,
    FileDataset,
    FileProblem,
    FileSource,
    VerifyReport,
)
from federation.config import CONFIG_NAME, RepoConfig
from federation.datastore.checksum import file_kind
from federation.datastore.posix import PosixDatastore, StagedFile, placing
from federation.datastore.storage_classes import get_storage_class
from federation.datastore.templates import FileTemplates
from federation.dimensions.universe import DimensionUniverse
from federation.errors import (
    CollectionError,
    ConfigError,
    ConflictError,
    DatastoreError,
    FederationError,
    InputError,
    MissingDatasetError,
    MissingRecordError,
    RetractedReleaseWarning,
)
from federation.faults import checkpoint
from federation.model import (
    CollectionType,
    DatasetRef,
    DatasetType,
    IdMode,
    StoredFile,
    make_dataset_id,
)
from federation.registry.collections import check_collection_name
from federation.registry.registry import Registry
from federation.timespan import Timespan

DataId = Mapping[str, Any]


def _check_regular_files(datasets: Sequence[FileDataset]) -> None:
    """Only regular files can be ingested: a FIFO or a device would hang the read."""
    for fd in datasets:
        try:
            mode = os.stat(fd.path).st_mode
        except OSError as exc:
            raise fd.context(InputError(
                f"cannot read {os.path.abspath(fd.path)}: {exc.strerror}")) from None
        if not stat.S_ISREG(mode):
            raise fd.context(InputError(
                f"{os.path.abspath(fd.path)} is {file_kind(mode)}, not a regular file: "
                "only regular files can be ingested"))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Bulk work builds many long-lived objects; collector passes over them are wasted."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Butler:
    """One site's repository: a registry plus a POSIX datastore.

    ``collections`` is the default search path for reads; ``run`` the default
    RUN for writes (and, if no collections are given, the search path too).
    ``files``: where files held at other sites come from on read (None: such reads fail;
    :func:`federation.operations.cache.open_butler` gives a repository's configured one).
    """

    files: FileSource | None = None  # pull-through hook

    def __init__(self, repo: str | Path, *, collections: str | Sequence[str] | None = None,
                 run: str | None = None, files: FileSource | None = None) -> None:
        self.config = RepoConfig.load(repo)
        self.registry = Registry.open(self.config.db_url)
        self.datastore = PosixDatastore(self.config.root, FileTemplates(self.config.templates))
        self.run = run
        if isinstance(collections, str):
            collections = [collections]
        self.collections = list(collections) if collections else ([run] if run else [])
        self._checked: set[str] = set()  # collections checked for retracted releases
        self.files = files

    @staticmethod
    def create(repo: str | Path, *, db: str | None = None, site: str = "local",
               universe: DimensionUniverse | None = None,
               templates: Mapping[str, str] | None = None, owns: Sequence[str] = (),
               role: str = "repository") -> Path:
        """Create a new repository directory with its registry; nothing is left on failure."""
        root = Path(repo).absolute()
        if (root / CONFIG_NAME).exists():
            raise ConfigError(f"{root} is already a federation repository")
        if root.exists() and not root.is_dir():
            raise ConfigError(f"{root} exists and is not a directory")
        FileTemplates(dict(templates or {}))  # validate before touching anything
        # The outermost directory this call creates: removed again on failure.
        created_dir = next((p for p in (root, *root.parents) if p.parent.exists()), root)
        created_dir = None if root.exists() else created_dir
        config = RepoConfig(root=root, db=db, templates=dict(templates or {}))
        sqlite_file = Path(config.db_url.removeprefix("sqlite:///")) if db is None else None
        # Never delete a registry this call did not create (e.g. one whose config was lost).
        created_db = sqlite_file is not None and not sqlite_file.exists()
        try:
            root.mkdir(parents=True, exist_ok=True)
            try:
                Registry.create(config.db_url, site=site, universe=universe,
                                owns=owns, role=role).close()
            except sa.exc.DBAPIError as exc:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
                raise ConfigError(f"cannot create registry database: "
                                  f"{reason[0] if reason else type(exc).__name__}") from None
            config.save()
        except BaseException:
            if created_db:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{sqlite_file}{suffix}").unlink(missing_ok=True)
            if created_dir is not None:
                shutil.rmtree(created_dir, ignore_errors=True)
            raise
        return root

    def close(self) -> None:
        self.registry.close()

    def __enter__(self) -> Butler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def site(self) -> str:
        return self.registry.site

    # -- helpers -------------------------------------------------------------

    def _run(self, run: str | None) -> str:
        run = run or self.run
        if not run:
            raise CollectionError("no RUN given: pass run= here or when creating the Butler")
        if self.registry.collections.exists(run):
            self.registry.collections.lookup(run, CollectionType.RUN)
            self.registry.collections.check_writable(run)
        else:
            check_collection_name(run)  # registered by _store, with the datasets
        return run

    def _collections(self, collections: str | Sequence[str] | None) -> list[str]:
        if collections is None:
            collections = self.collections
        elif isinstance(collections, str):
            collections = [collections]
        if not collections:
            raise CollectionError("no collections to search: pass collections=")
        names = self.registry.collections.expand_patterns(collections)
        unchecked = set(names) - self._checked  # a warning once, not a query per lookup
        self._checked |= unchecked
        for name, reason in self.registry.releases.retracted(unchecked).items():
            warnings.warn(f"release {name!r} has been retracted: {reason}",
                          RetractedReleaseWarning, stacklevel=3)
        return names

    def _new_ref(self, dataset_type: DatasetType, data_id: DataId, run: str,
                 id_mode: IdMode) -> tuple[DatasetRef, str]:
        full, key = self.registry.expand_data_id(dataset_type, data_id)
        required = {name: full[name] for name in dataset_type.dimensions.required}
        dataset_id = make_dataset_id(id_mode, dataset_type.name, required, run)
        return DatasetRef(dataset_id, dataset_type, full, run), key

    def _store(self, run: str, items: list[tuple[DatasetRef, StagedFile]],
               keys: list[str]) -> None:
        """Insert records and rename staged files into place, all or nothing.

        File paths are unique in the registry, so a file already sitting at a
        destination once the insert succeeded is a crash leftover and is replaced.
        """
        with placing([staged for _, staged in items]) as commit_files, \
                self.registry.transaction():
            # A new RUN appears only together with its datasets: a failed write leaves none.
            self.registry.collections.register(run, CollectionType.RUN)
            self.registry.datasets.insert(run, [(ref, s.stored) for ref, s in items],
                                          keys=keys)
            commit_files()

    def _resolve(self, ref_or_type: DatasetRef | str, data_id: DataId | None,
                 collections, timespan: Timespan | None, kwargs) -> DatasetRef:
        if isinstance(ref_or_type, DatasetRef):
            return ref_or_type
        full_id = dict(data_id or {}, **kwargs)
        ref, unknown = self._find(ref_or_type, full_id, collections, timespan)
        if ref is not None:
            return ref
        where = ", ".join(self._collections(collections))
        message = f"no {ref_or_type} dataset with data ID {full_id} in collections {where}"
        if unknown is None:
            raise MissingDatasetError(message)
        missing = f"this repository holds no {unknown.dimension} record for {unknown.key}"
        if unknown.dimension in self.registry.get_dataset_type(ref_or_type).dimensions.names:
            raise MissingDatasetError(
                f"{message}: {missing}, so it holds no dataset with that data ID (the value "
                "does not exist, or that part of the data was never synced here)")
        raise MissingDatasetError(  # a key only used for its time (a calibration lookup)
            f"cannot look up {ref_or_type} at the time of {unknown.dimension} "
            f"{unknown.key}: {missing} (the value does not exist, or it was never synced "
            "here); give a timespan instead")

    # -- writing -------------------------------------------------------------

    def put(self, obj: Any, dataset_type: str, data_id: DataId | None = None, *,
            run: str | None = None, id_mode: IdMode | str = IdMode.RANDOM,
            **kwargs: Any) -> DatasetRef:
        """Store an in-memory object as a new dataset in a RUN."""
        run = self._run(run)
        dtype = self.registry.get_dataset_type(dataset_type)
        ref, key = self._new_ref(dtype, dict(data_id or {}, **kwargs), run, IdMode(id_mode))
        staged = self.datastore.stage_put(ref, obj, get_storage_class(dtype.storage_class))
        self._store(run, [(ref, staged)], [key])
        return ref

    def ingest(self, datasets: Iterable[FileDataset], *, run: str | None = None,
               transfer: str = "copy", id_mode: IdMode | str = IdMode.RANDOM,
               progress: Callable[[int], None] | None = None) -> list[DatasetRef]:
        """Register existing files as datasets, all in one transaction.

        ``progress`` is called with 1 for each file staged.
        """
        run = self._run(run)
        id_mode = IdMode(id_mode)
        datasets = list(datasets)
        with _gc_paused():
            _check_regular_files(datasets)
            self._prefetch_records(datasets)
            self._check_sources([fd.path for fd in datasets], transfer)
            refs, keys = self._ingest_refs(datasets, run, id_mode)
            items: list[tuple[DatasetRef, StagedFile]] = []
            try:
                for fd, ref in zip(datasets, refs, strict=True):
                    try:
                        staged = self.datastore.stage_ingest(
                            ref, fd.path, get_storage_class(ref.dataset_type.storage_class),
                            transfer)
                    except FederationError as exc:
                        raise fd.context(exc) from None
                    items.append((ref, staged))
                    if progress is not None:
                        progress(1)
            except BaseException:
                for _, staged in items:
                    staged.abort()
                raise
            self._store(run, items, keys)
        return refs

    def _ingest_refs(self, datasets: Sequence[FileDataset], run: str, id_mode: IdMode
                     ) -> tuple[list[DatasetRef], list[str]]:
        """Every file's ref, checked before any file is touched; errors name the file's row."""
        refs, keys = [], []
        seen: dict[tuple[str, str], FileDataset] = {}
        for fd in datasets:
            try:
                dtype = self.registry.get_dataset_type(fd.dataset_type)
                ref, key = self._new_ref(dtype, fd.data_id, run, id_mode)
                first = seen.setdefault((dtype.name, key), fd)
                if first is not fd:
                    raise ConflictError(
                        f"two datasets with the same type and data ID {ref.required_data_id}"
                        f" (also {first.origin or first.path})")
            except FederationError as exc:
                raise fd.context(exc) from None
            refs.append(ref)
            keys.append(key)
        return refs, keys

    def _check_sources(self, sources: list[str | os.PathLike], transfer: str) -> None:
        """Refuse to move, symlink to or register in place a registered dataset's own file."""
        if transfer not in ("move", "symlink", "direct"):
            return
        root = str(self.datastore.root) + os.sep
        parents: dict[str, str] = {}
        inside: dict[str, Path] = {}
        for source in sources:
            parent, name = os.path.split(os.path.abspath(source))
            if parent not in parents:
                parents[parent] = os.path.realpath(parent) + os.sep
            real = parents[parent] + name
            if real.startswith(root):
                inside[Path(real[len(root):]).as_posix()] = source
        if not inside:
            return
        f = self.registry.db.tables.file
        paths = list(inside)
        with self.registry.db.reading() as conn:
            for start in range(0, len(paths), 1000):
                owner = conn.execute(sa.select(f.c.dataset_id, f.c.path).where(
                    f.c.path.in_(paths[start:start + 1000]), f.c.held_at.is_(None))).first()
                if owner is not None:
                    raise DatastoreError(
                        f"cannot {transfer} {inside[owner.path]}: it is the stored file of "
                        f"dataset {owner.dataset_id}; use transfer 'copy' or 'hardlink'")

    def _prefetch_records(self, datasets: Sequence[FileDataset]) -> None:
        """Load the dimension records bulk ingest will need in a few queries."""
        dims = self.registry.dimensions
        names = {name for type_name in {fd.dataset_type for fd in datasets}
                 for name in self.registry.get_dataset_type(type_name).dimensions.required}
        for name in names:
            if dims.preload(name):
                continue
            record_key = self.registry.universe[name].keys
            keys = set()
            for fd in datasets:
                try:
                    keys.add(tuple(fd.data_id[k] for k in record_key))
                except KeyError:
                    continue  # expand() reports the missing key properly
            try:
                dims.prefetch(name, keys)
            except sa.exc.StatementError:
                continue  # values of the wrong type: expand() reports them

    # -- reading -------------------------------------------------------------

    def find_dataset(self, dataset_type: str, data_id: DataId | None = None, *,
                     collections: str | Sequence[str] | None = None,
                     timespan: Timespan | None = None, **kwargs: Any) -> DatasetRef | None:
        """The first matching dataset along the collection search path, or None.

        In CALIBRATION collections the dataset valid at ``timespan`` is found;
        without one, the time of an exposure or visit in the data ID is used.
        A data ID naming a value this repository has no dimension record for
        (a site that never synced that part of the data) finds nothing.
        """
        return self._find(dataset_type, dict(data_id or {}, **kwargs), collections, timespan)[0]

    def _find(self, dataset_type: str, data_id: DataId, collections,
              timespan: Timespan | None) -> tuple[DatasetRef | None, MissingRecordError | None]:
        """The dataset found, or None and the record that is missing here if that is why."""
        dtype = self.registry.get_dataset_type(dataset_type)
        path = self._collections(collections)
        try:
            full, key = self.registry.expand_data_id(dtype, data_id, allow_extra=True)
            if timespan is None:
                timespan = self.registry.dimensions.timespan_of(full)
        except MissingRecordError as exc:
            return None, exc
        return self.registry.datasets.find(dtype, key, path, timespan), None

    def get(self, ref_or_type: DatasetRef | str, data_id: DataId | None = None, *,
            collections: str | Sequence[str] | None = None, timespan: Timespan | None = None,
            **kwargs: Any) -> Any:
        """Read a dataset, by ref or by dataset type + data ID searched through collections."""
        ref = self._resolve(ref_or_type, data_id, collections, timespan, kwargs)
        return self.datastore.read(self._file_here(ref),
                                   get_storage_class(ref.dataset_type.storage_class))

    def _file_here(self, ref: DatasetRef) -> StoredFile:
        """The record of a dataset's file in this datastore; an error saying where the file
        is when it is held at another site, or that there is none."""
        found = self.registry.datasets.file(ref.id)
        if found is None:
            raise MissingDatasetError(f"{ref} has no file in this repository")
        stored, held_at = found
        if held_at is not None and self.files is not None:  # pull-through hook
            return self.files.bring(self, ref, held_at)
        if held_at is not None:
            raise MissingDatasetError(
                f"{ref} is held at site {held_at!r}; its file is not in this repository "
                "(sync it with files to read it here)")
        if self.files is not None:  # pull-through hook
            self.files.note_read(self, ref)
        return stored

    def exists(self, ref_or_type: DatasetRef | str, data_id: DataId | None = None, *,
               collections: str | Sequence[str] | None = None, **kwargs: Any) -> Existence:
        """Whether the dataset's file is here; false, naming the site, if held elsewhere."""
        try:
            ref = self._resolve(ref_or_type, data_id, collections, None, kwargs)
        except MissingDatasetError:
            return Existence(False)
        found = self.registry.datasets.file(ref.id)
        if found is None:
            return Existence(False, registered=True)
        if found[1] is not None:
            return Existence(False, registered=True, held_at=found[1])
        return Existence(self.datastore.exists(found[0]), registered=True)

    def get_uri(self, ref_or_type: DatasetRef | str, data_id: DataId | None = None, *,
                collections: str | Sequence[str] | None = None, **kwargs: Any) -> str:
        """The file:// URI of a dataset's file."""
        ref = self._resolve(ref_or_type, data_id, collections, None, kwargs)
        return self.datastore.path_of(self._file_here(ref)).as_uri()

    def query_datasets(self, dataset_types: str | Sequence[str] | None = None,
                       collections: str | Sequence[str] | None = None, *,
                       where: str | None = None, bind: Mapping[str, Any] | None = None,
                       find_first: bool = True, timespan: Timespan | None = None
                       ) -> list[DatasetRef]:
        """Datasets of the given types (names or globs; None: all) in the collections."""
        types = self.registry.dataset_types.resolve(dataset_types)
        return list(self.registry.datasets.query(
            types, self._collections(collections), where=where, bind=bind,
            find_first=find_first, timespan=timespan))

    def query_dimension_records(self, dimension: str, *, where: str | None = None,
                                bind: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.registry.dimensions.query(dimension, where, bind)

    # -- removal -------------------------------------------------------------

    def remove(self, refs: Iterable[DatasetRef]) -> int:
        """Delete datasets: registry records first, then their files."""
        refs = list(refs)
        self.registry.datasets.remove(refs)
        self.empty_trash()
        return len(refs)

    def empty_trash(self) -> int:
        """Delete files whose records were removed (also after a crash); returns how many.

        Each chunk is deleted inside a write transaction: no other writer can put a
        file back at a trashed path (a re-ingest of the same data ID) between the check
        that nothing uses the path and the unlink.
        """
        datasets = self.registry.datasets
        if not datasets.trash(limit=1):  # the common case costs one read
            return 0
        count = 0
        while True:
            with self.registry.transaction():
                paths = datasets.trash(limit=1000)
                checkpoint("trash listed")
                for path in paths:
                    self.datastore.remove(StoredFile(path, "", 0, ""))
                    checkpoint("trashed file deleted")
                datasets.forget_trash(paths)
            count += len(paths)
            if len(paths) < 1000:
                return count

    def remove_runs(self, names: Iterable[str], *, unlink_chains: bool = False) -> int:
        """Delete RUN collections with all their datasets; returns datasets removed."""
        names = list(names)
        collections = self.registry.collections
        for name in names:
            collections.lookup(name, CollectionType.RUN)
            collections.check_writable(name)
        count = 0
        with self.registry.transaction():
            for name in names:
                for parent in collections.parents(name):
                    if not unlink_chains:
                        raise CollectionError(
                            f"run {name!r} is in chained collection {parent!r}; remove it from "
                            "the chain first or ask to unlink it")
                    collections.set_chain(parent, [c for c in collections.children(parent)
                                                   if c != name])
                refs = self.registry.datasets.run_refs(name)
                count += len(refs)
                self.registry.datasets.remove(refs)
                collections.remove(name)
        self.empty_trash()
        return count

    # -- collection contents ---------------------------------------------------

    def disassociate(self, tag: str, refs: Iterable[DatasetRef]) -> int:
        """Remove datasets from a TAGGED collection; returns how many were in it.

        The datasets themselves stay (in their runs and other collections).
        """
        return self.registry.datasets.disassociate(tag, list(refs))

    def decertify(self, collection: str, dataset_type: str, timespan: Timespan,
                  data_ids: Iterable[DataId] | None = None) -> int:
        """Remove validity within ``timespan`` from a CALIBRATION collection.

        Only ``data_ids`` (default: every data ID) of ``dataset_type`` are
        touched; ranges partly inside ``timespan`` are trimmed or split, so a
        later lookup in that time finds nothing. Returns the number of
        validity ranges changed.
        """
        dtype = self.registry.get_dataset_type(dataset_type)
        keys = None
        if data_ids is not None:
            keys = [self.registry.expand_data_id(dtype, data_id)[1] for data_id in data_ids]
        return self.registry.datasets.decertify(collection, dtype, timespan, data_id_keys=keys)

    def remove_collection(self, name: str, *, unlink_chains: bool = False) -> None:
        """Delete a TAGGED, CHAINED or CALIBRATION collection; its datasets stay.

        Its tags, certifications or chain links go with it. A collection inside
        a chain is refused unless ``unlink_chains`` takes it out of those
        chains. A RUN is refused: removing one removes its datasets, which is
        :meth:`remove_runs`'s job.
        """
        collections = self.registry.collections
        with self.registry.transaction():
            _, ctype = collections.lookup(name, fresh=True)
            if ctype is CollectionType.RUN:
                raise CollectionError(
                    f"collection {name!r} is a RUN: removing it removes its datasets; use "
                    "remove_runs (fed remove-runs) for that")
            collections.check_writable(name)
            for parent in collections.parents(name):
                if not unlink_chains:
                    raise CollectionError(
                        f"collection {name!r} is in chained collection {parent!r}; remove it "
                        "from the chain first or ask to unlink it")
                collections.set_chain(parent, [c for c in collections.children(parent)
                                               if c != name])
            collections.remove(name)

    # -- checking ------------------------------------------------------------

    def verify(self, refs: Iterable[DatasetRef] | None = None, progress=None) -> VerifyReport:
        """Re-hash files against their recorded size and xxh3 checksum."""
        report = VerifyReport()
        ids = None if refs is None else [r.id for r in refs]
        for dataset_id, stored, held_at in self.registry.datasets.iter_files(ids):
            if held_at is not None:
                report.held_elsewhere += 1
                continue
            try:
                problem = self.datastore.check(stored)
            except FederationError as exc:
                problem = str(exc)
            report.checked += 1
            if problem:
                report.problems.append(FileProblem(dataset_id, stored.path, problem))
            if progress is not None:
                progress(1)
        return report
