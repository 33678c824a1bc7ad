"""Datasets and their memberships: runs, tags, certifications, files, removal."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa

from federation.errors import (
    CalibrationError,
    ConflictError,
    ExpressionError,
    MissingDatasetError,
)
from federation.model import CollectionType, DatasetRef, DatasetType, StoredFile, ref_key
from federation.registry.collections import Collections
from federation.registry.database import IN_VALUES, Database, chunked
from federation.registry.dataset_types import DatasetTypes
from federation.registry.dimensions import DimensionRecords
from federation.registry.journal import (
    DatasetCreated,
    DatasetsRemoved,
)
from federation.registry.memberships import Memberships
from federation.registry.releases import Releases
from federation.timespan import Timespan


class LocalFile(NamedTuple):
    """A dataset's file in this datastore, and when the dataset arrived here."""

    stored: StoredFile
    arrived: float  # the dataset's ingest_date


class HeldElsewhere(NamedTuple):
    """A file to leave to another site: its record here as the caller verified it."""

    dataset_id: uuid.UUID
    path: str
    checksum: str
    site: str


class Datasets(Memberships):
    """Dataset rows, collection memberships and datastore records."""

    def __init__(self, db: Database, dims: DimensionRecords, types: DatasetTypes,
                 collections: Collections, releases: Releases) -> None:
        self.db = db
        self.releases = releases
        self.dims = dims
        self.types = types
        self.collections = collections
        t = db.tables
        self._dim_names = [n for n, d in db.universe.dimensions.items() if d.has_key]
        self._select_cols = [t.dataset.c.id, t.dataset.c.dataset_type_id, t.dataset.c.run_id,
                             *[t.dataset.c[n] for n in self._dim_names]]
        self._positions = {n: 3 + i for i, n in enumerate(self._dim_names)}
        self._row_template = dict.fromkeys(self._dim_names)

    # -- insertion -------------------------------------------------------------

    _FILE_COLUMNS = ("dataset_id", "path", "formatter", "size", "checksum", "held_at")

    def insert(self, run: str, entries: Sequence[tuple[DatasetRef, StoredFile | None]], *,
               keys: Sequence[str] | None = None, check_owner: bool = True,
               held_at: str | None = None, versions: Sequence[int] | None = None) -> None:
        """Insert datasets (and their file records) into one RUN, in bulk.

        ``keys`` are the data ID keys from :meth:`DimensionRecords.expand` (computed
        here when absent). A dataset whose UUID exists, whose (type, data ID)
        slot in the run is taken, or whose file path is already used is a
        :class:`ConflictError`; nothing is inserted then. ``held_at`` marks the
        file records as held by another site. ``versions`` are the datasets'
        creation versions at their owner (default: their journal entries here).
        """
        if not entries:
            return
        if check_owner:
            self.collections.check_writable(run)
        if keys is None:
            keys = [ref_key(ref) for ref, _ in entries]
        now = time.time()
        dims = self._dim_names
        uuid_value = self.db.uuid_value
        type_ids = {}
        rows, file_rows, journal = [], [], []
        for (ref, stored), key in zip(entries, keys, strict=True):
            if ref.run != run:
                raise ConflictError(f"{ref} belongs to run {ref.run!r}, not {run!r}")
            name = ref.dataset_type.name
            if name not in type_ids:
                type_ids[name] = self.types.id_of(name)
            data_id = ref.data_id
            db_id = uuid_value(ref.id)
            rows.append((db_id, type_ids[name], key, now, *[data_id.get(d) for d in dims]))
            # The journal names the dataset; readers take the rest from its rows.
            journal.append(DatasetCreated(str(ref.id)))
            if stored is not None:
                file_rows.append((db_id, stored.path, stored.formatter, stored.size,
                                  stored.checksum, held_at))
        if len({r[0] for r in rows}) != len(rows):
            raise ConflictError("the same dataset ID appears twice in one insert")
        if len({(r[1], r[2]) for r in rows}) != len(rows):
            raise ConflictError("two datasets with the same type and data ID in one insert")
        with self.db.transaction():
            run_id, _ = self.collections.lookup(run, CollectionType.RUN, fresh=True)
            first = self.db.append(journal)
            if versions is None:
                versions = range(first, first + len(rows))
            rows = [(r[0], r[1], run_id, r[2], r[3], v, *r[4:])
                    for r, v in zip(rows, versions, strict=True)]
            try:
                self.db.bulk_insert(self.db.tables.dataset, self._DATASET_COLUMNS, rows,
                                    prepared=True)
                self.db.bulk_insert(self.db.tables.file, self._FILE_COLUMNS, file_rows,
                                    prepared=True)
            except self.db.integrity_errors:
                raise self._explain_conflict(run, rows, file_rows) from None
            if held_at is None and file_rows and self.trash(limit=1):
                self.forget_trash([r[1] for r in file_rows])  # paths used again are no trash
            # Tombstones of earlier deletions stay: replicas compare their versions with
            # this creation's, whichever arrives first.

    @property
    def _DATASET_COLUMNS(self) -> tuple[str, ...]:  # noqa: N802
        return ("id", "dataset_type_id", "run_id", "data_id_key", "ingest_date", "version",
                *self._dim_names)

    def _explain_conflict(self, run: str, rows: list[tuple], file_rows: list[tuple]
                          ) -> ConflictError:
        """Which committed row a failed insert collided with (read on a fresh connection)."""
        t = self.db.tables
        d = t.dataset
        with self.db.engine.connect() as conn:
            for chunk in chunked(rows):
                taken = conn.execute(sa.select(d.c.id).where(
                    d.c.id.in_([_as_uuid(r[0]) for r in chunk]))).first()
                if taken is not None:
                    return ConflictError(
                        f"dataset ID {taken.id} already exists: {self._describe(conn, taken.id)}")
                taken = conn.execute(sa.select(d.c.id).where(
                    d.c.run_id == chunk[0][2],
                    sa.tuple_(d.c.dataset_type_id, d.c.data_id_key).in_(
                        [(r[1], r[3]) for r in chunk]))).first()
                if taken is not None:
                    return ConflictError(
                        f"run {run!r} already holds {self._describe(conn, taken.id)} "
                        f"(id {taken.id})")
            for chunk in chunked(file_rows):
                taken = conn.execute(sa.select(t.file.c.dataset_id, t.file.c.path).where(
                    t.file.c.path.in_([r[1] for r in chunk]))).first()
                if taken is not None:
                    return ConflictError(
                        f"file path {taken.path} already belongs to dataset {taken.dataset_id}; "
                        "use a file template that includes every data ID key")
        return ConflictError(f"datasets for run {run!r} conflict with ones being written "
                             "concurrently; retry")

    def _describe(self, conn: sa.Connection, dataset_id: uuid.UUID) -> str:
        """``type@data ID [run]`` read on ``conn`` alone (the caller's transaction has failed)."""
        t = self.db.tables
        row = conn.execute(
            sa.select(t.dataset_type.c.name, t.dataset.c.data_id_key, t.collection.c.name)
            .join(t.dataset_type, t.dataset_type.c.id == t.dataset.c.dataset_type_id)
            .join(t.collection, t.collection.c.id == t.dataset.c.run_id)
            .where(t.dataset.c.id == dataset_id)).first()
        return str(dataset_id) if row is None else f"{row[0]}@{row[1]} [{row[2]}]"

    # -- reading ---------------------------------------------------------------

    def _to_ref(self, row) -> DatasetRef:
        dataset_type = self.types.by_id(row[1])
        pos = self._positions
        data_id = {n: row[pos[n]] for n in dataset_type.dimensions.names}
        return DatasetRef(row[0], dataset_type, data_id, self.collections.name_of(row[2]))

    def get(self, dataset_id: uuid.UUID) -> DatasetRef | None:
        d = self.db.tables.dataset
        with self.db.reading() as conn:
            row = conn.execute(sa.select(*self._select_cols).where(d.c.id == dataset_id)).first()
        return None if row is None else self._to_ref(row)

    def get_many(self, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, DatasetRef]:
        d = self.db.tables.dataset
        found = {}
        with self.db.reading() as conn:
            for chunk in chunked(list(ids)):
                for row in conn.execute(sa.select(*self._select_cols).where(d.c.id.in_(chunk))):
                    found[row[0]] = self._to_ref(row)
        return found

    def file(self, dataset_id: uuid.UUID) -> tuple[StoredFile, str | None] | None:
        """The dataset's file record and the site holding it (None: here)."""
        f = self.db.tables.file
        with self.db.reading() as conn:
            row = conn.execute(sa.select(f).where(f.c.dataset_id == dataset_id)).first()
        if row is None:
            return None
        return StoredFile(row.path, row.formatter, row.size, row.checksum), row.held_at

    def iter_files(self, ids: Sequence[uuid.UUID] | None = None
                   ) -> Iterator[tuple[uuid.UUID, StoredFile, str | None]]:
        """Stream file records, all of them or those of ``ids``."""
        f = self.db.tables.file
        stmt = sa.select(f).order_by(f.c.path)
        with self.db.reading() as conn:
            batches = [stmt] if ids is None else [
                stmt.where(f.c.dataset_id.in_(c)) for c in chunked(list(ids))]
            for batch in batches:
                for row in conn.execution_options(yield_per=5000).execute(batch):
                    yield (row.dataset_id, StoredFile(row.path, row.formatter, row.size,
                                                      row.checksum), row.held_at)

    def files_here(self, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, LocalFile]:
        """The files of ``ids`` that are in this datastore (not held elsewhere), each with
        the time its dataset arrived here."""
        d, f = self.db.tables.dataset, self.db.tables.file
        stmt = sa.select(f.c.dataset_id, f.c.path, f.c.formatter, f.c.size, f.c.checksum,
                         d.c.ingest_date).join(d, d.c.id == f.c.dataset_id).where(
            f.c.dataset_id.in_(IN_VALUES), f.c.held_at.is_(None))
        return {row[0]: LocalFile(StoredFile(*row[1:5]), row[5])
                for row in self.db.select_in(stmt, dict.fromkeys(ids))}

    def hold_elsewhere(self, files: Sequence[HeldElsewhere]) -> list[uuid.UUID]:
        """Mark files as held at other sites, in one transaction: the datasets' records
        stay, their files go to the trash (deleted once this commits, see ``trash``).

        A file whose record changed since the caller verified it (another path or
        checksum, held elsewhere already, or gone) is left alone. Returns the datasets
        marked.
        """
        t = self.db.tables
        f = t.file
        marked: list[uuid.UUID] = []
        with self.db.transaction() as conn:
            for chunk in chunked(list(files)):
                wanted = {h.dataset_id: h for h in chunk}
                rows = conn.execute(sa.select(f.c.dataset_id, f.c.path, f.c.checksum).where(
                    f.c.dataset_id.in_(list(wanted)), f.c.held_at.is_(None))).all()
                same = [wanted[r[0]] for r in rows
                        if (r[1], r[2]) == (wanted[r[0]].path, wanted[r[0]].checksum)]
                by_site: dict[str, list[uuid.UUID]] = {}
                for held in same:
                    by_site.setdefault(held.site, []).append(held.dataset_id)
                for site, ids in by_site.items():
                    conn.execute(sa.update(f).where(f.c.dataset_id.in_(ids),
                                                    f.c.held_at.is_(None)).values(held_at=site))
                doomed = [h.path for h in same if not h.path.startswith("/")]
                if doomed:  # in-place ingests are never the datastore's to delete
                    conn.execute(sa.delete(t.trash).where(t.trash.c.path.in_(doomed)))
                    conn.execute(sa.insert(t.trash), [{"path": p} for p in doomed])
                marked += [h.dataset_id for h in same]
        return marked

    # -- searching -------------------------------------------------------------

    def find(self, dataset_type: DatasetType, key: str, collections: Sequence[str],
             timespan: Timespan | None = None) -> DatasetRef | None:
        """The first dataset of this type + data ID along the collection search path."""
        t = self.db.tables
        tid = self.types.id_of(dataset_type.name)
        d = t.dataset
        base = sa.select(*self._select_cols).where(d.c.dataset_type_id == tid)
        with self.db.reading() as conn:
            for cid, name, ctype in self.collections.flatten(collections):
                if ctype is CollectionType.RUN:
                    stmt = base.where(d.c.run_id == cid, d.c.data_id_key == key)
                elif ctype is CollectionType.TAGGED:
                    stmt = base.join(t.tag, t.tag.c.dataset_id == d.c.id).where(
                        t.tag.c.collection_id == cid, t.tag.c.data_id_key == key)
                else:
                    if timespan is None:
                        raise CalibrationError(
                            f"looking up {dataset_type.name} in CALIBRATION collection {name!r} "
                            "needs a time: give a timespan or an exposure/visit in the data ID")
                    c = t.calib
                    stmt = base.join(c, c.c.dataset_id == d.c.id).where(
                        c.c.collection_id == cid, c.c.data_id_key == key,
                        c.c.timespan_begin < timespan.end, c.c.timespan_end > timespan.begin)
                rows = conn.execute(stmt).all()
                if len(rows) > 1:
                    raise CalibrationError(
                        f"{len(rows)} {dataset_type.name} calibrations in {name!r} are valid "
                        f"during {timespan}; give a narrower time")
                if rows:
                    return self._to_ref(rows[0])
        return None

    def query(self, dataset_types: Sequence[DatasetType], collections: Sequence[str], *,
              where: str | None = None, bind: Mapping[str, Any] | None = None,
              find_first: bool = True, timespan: Timespan | None = None
              ) -> Iterator[DatasetRef]:
        """Stream datasets of the given types in the given collections.

        With ``find_first`` only the first match along the search path is
        returned for each (type, data ID); otherwise every distinct dataset.
        """
        if not dataset_types:
            return
        path = self.collections.flatten(collections)
        if not path:
            return
        d = self.db.tables.dataset
        names = self.db.universe.sorted({n for dt in dataset_types for n in dt.dimensions.names})
        type_ids = {self.types.id_of(dt.name): dt for dt in dataset_types}
        stmt = sa.select(d.c.id, d.c.dataset_type_id, d.c.run_id, *[d.c[n] for n in names])
        single_run = len(path) == 1 and path[0][2] is CollectionType.RUN
        if single_run:  # at most one dataset per slot already: no ranking, no sorting
            stmt = stmt.where(d.c.run_id == path[0][0])
        else:
            members = self._membership(path, timespan)
            stmt = stmt.add_columns(d.c.data_id_key).join(
                members, members.c.dataset_id == d.c.id).order_by(
                d.c.dataset_type_id, d.c.data_id_key, members.c.rank)
        stmt = self._filter(stmt, where, bind, names, dataset_types)
        # An overlay on SQLite (registry/overlay.py): the sort goes outside, so that its
        # union views are flattened; unless dimension records are joined, the members drive
        # the join (``+ 0``: the type's index is not used for it).
        fenced = not single_run and self.db.overlay and self.db.is_sqlite
        by_members = fenced and not any(
            t.name.startswith("dim_") for t in sa.sql.util.find_tables(stmt))
        type_column = d.c.dataset_type_id + 0 if by_members else d.c.dataset_type_id
        stmt = stmt.where(type_column.in_(list(type_ids)))
        if fenced:
            stmt = _sorted_outside(stmt, members.c.rank)
        layouts = {tid: (dt, [(n, 3 + names.index(n)) for n in dt.dimensions.names])
                   for tid, dt in type_ids.items()}
        run_names: dict[int, str] = {}
        previous = None
        seen: set[uuid.UUID] = set()
        with self.db.reading() as conn:
            for row in conn.execution_options(yield_per=10000).execute(stmt):
                if not single_run:
                    if find_first:
                        slot = (row[1], row[-1])
                        if slot == previous:
                            continue
                        previous = slot
                    elif row[0] in seen:
                        continue
                    else:
                        seen.add(row[0])
                dt, layout = layouts[row[1]]
                run = run_names.get(row[2])
                if run is None:
                    run = run_names[row[2]] = self.collections.name_of(row[2])
                yield DatasetRef(row[0], dt, {n: row[i] for n, i in layout}, run)

    def ids_matching(self, ids: Sequence[uuid.UUID], where: str, bind: Mapping[str, Any] | None,
                     dataset_types: Sequence[DatasetType]) -> set[uuid.UUID]:
        """The subset of ``ids`` whose data IDs satisfy a `where` expression."""
        d = self.db.tables.dataset
        names = self.db.universe.sorted({n for dt in dataset_types for n in dt.dimensions.names})
        found: set[uuid.UUID] = set()
        base = self._filter(sa.select(d.c.id), where, bind, names, dataset_types)
        with self.db.reading() as conn:
            for chunk in chunked(list(ids)):
                found.update(conn.execute(base.where(d.c.id.in_(list(chunk)))).scalars().all())
        return found

    def restrict(self, stmt: sa.Select, where: str | None, bind: Mapping[str, Any] | None,
                 dataset_types: Sequence[DatasetType]) -> sa.Select:
        """``stmt`` (over the dataset table) restricted to datasets whose data IDs satisfy
        ``where`` (naming any dimension of ``dataset_types``)."""
        names = self.db.universe.sorted({n for dt in dataset_types for n in dt.dimensions.names})
        return self._filter(stmt, where, bind, names, dataset_types)

    def _membership(self, path, timespan: Timespan | None) -> sa.Subquery:
        """(dataset_id, rank) for every dataset in the flattened search path."""
        t = self.db.tables
        parts = []
        runs = {cid: rank for rank, (cid, _, ct) in enumerate(path) if ct is CollectionType.RUN}
        tags = {cid: rank for rank, (cid, _, ct) in enumerate(path)
                if ct is CollectionType.TAGGED}
        calibs = {cid: rank for rank, (cid, _, ct) in enumerate(path)
                  if ct is CollectionType.CALIBRATION}
        if runs:
            parts.append(sa.select(t.dataset.c.id.label("dataset_id"),
                                   _rank(runs, t.dataset.c.run_id))
                         .where(t.dataset.c.run_id.in_(list(runs))))
        if tags:
            parts.append(sa.select(t.tag.c.dataset_id, _rank(tags, t.tag.c.collection_id))
                         .where(t.tag.c.collection_id.in_(list(tags))))
        if calibs:
            c = t.calib
            stmt = sa.select(c.c.dataset_id, _rank(calibs, c.c.collection_id)).where(
                c.c.collection_id.in_(list(calibs)))
            if timespan is not None:
                stmt = stmt.where(c.c.timespan_begin < timespan.end,
                                  c.c.timespan_end > timespan.begin)
            parts.append(stmt)
        union = parts[0] if len(parts) == 1 else sa.union_all(*parts)
        return union.subquery("members")

    def _filter(self, stmt: sa.Select, where: str | None, bind, allowed: Sequence[str],
                dataset_types: Sequence[DatasetType]) -> sa.Select:
        """``stmt`` (over the dataset table) restricted by a `where` expression."""
        joins: dict[str, sa.Table] = {}
        condition = self._compile_where(where, bind, joins, allowed, dataset_types)
        d = self.db.tables.dataset
        for name, table in joins.items():
            dim = self.db.universe.dimensions[name]
            stmt = stmt.outerjoin(table, sa.and_(*[table.c[k] == d.c[k]
                                                   for k in dim.keys]))
        return stmt if condition is None else stmt.where(condition)

    def _compile_where(self, where, bind, joins: dict[str, sa.Table], allowed: Sequence[str],
                       dataset_types: Sequence[DatasetType]):
        from federation.registry.where import compile_where

        t = self.db.tables
        universe = self.db.universe

        def resolve(name: str, field: str | None):
            if name not in universe.dimensions:
                raise ExpressionError(
                    f"unknown dimension {name!r} in where expression; "
                    f"known: {', '.join(universe.dimensions)}")
            if name not in allowed:
                raise ExpressionError(
                    f"dataset type(s) {', '.join(dt.name for dt in dataset_types)} have no "
                    f"dimension {name!r}; they have {', '.join(allowed)}")
            if field is None:
                return t.dataset.c[name]
            table = t.dimensions[name]
            if field == "timespan" or field not in table.c:
                fields = [c.name for c in table.c if not c.name.startswith("timespan")]
                raise ExpressionError(
                    f"unknown field {name}.{field} in where expression; "
                    f"{name} has {', '.join(fields)}")
            joins[name] = table
            return table.c[field]

        return compile_where(where, resolve, bind)

    def _stored(self, refs: Sequence[DatasetRef]) -> list[DatasetRef]:
        """The registry's own refs for ``refs``; an error if any dataset is not here.

        Slots are computed from the stored type and data ID, never from what a
        caller's ref claims.
        """
        stored = self.get_many([ref.id for ref in refs])
        missing = [ref for ref in refs if ref.id not in stored]
        if missing:
            raise MissingDatasetError(
                f"dataset {missing[0]} (id {missing[0].id}) is not in this registry"
                + (f", nor are {len(missing) - 1} more" if len(missing) > 1 else ""))
        return [stored[ref.id] for ref in refs]

    # -- removal ---------------------------------------------------------------

    def remove(self, refs: Sequence[DatasetRef], *, check_owner: bool = True
               ) -> list[tuple[uuid.UUID, StoredFile]]:
        """Delete datasets everywhere; returns their local files for the datastore to delete."""
        if check_owner:
            for run in {ref.run for ref in refs}:
                self.collections.check_writable(run)
        t = self.db.tables
        files = []
        with self.db.transaction() as conn:
            for chunk in chunked(list(dict.fromkeys(r.id for r in refs))):
                # Datasets already gone are neither deleted nor journaled again.
                chunk = conn.execute(sa.select(t.dataset.c.id).where(
                    t.dataset.c.id.in_(chunk))).scalars().all()
                if not chunk:
                    continue
                files.extend(
                    (row.dataset_id, StoredFile(row.path, row.formatter, row.size, row.checksum))
                    for row in conn.execute(sa.select(t.file).where(
                        t.file.c.dataset_id.in_(chunk), t.file.c.held_at.is_(None))))
                version = self.db.append([DatasetsRemoved([str(i) for i in chunk])])
                self.delete_rows(chunk, version)
        return files

    def delete_rows(self, ids: Sequence[uuid.UUID], version: int | Mapping[uuid.UUID, int], *,
                    kept: bool = False, tombstone: bool = True) -> None:
        """Delete datasets' rows (or, if ``kept``, only mark them) and leave tombstones with
        the deletion's version (one for all, or one per dataset) -- unless not
        ``tombstone``: a dataset replaced by its re-creation."""
        self.releases.check_deletable(list(ids))
        t = self.db.tables
        conn = self.db.current()
        tomb = t.dataset_tombstone
        now = time.time()
        for chunk in chunked(list(ids)):
            conn.execute(sa.delete(tomb).where(tomb.c.dataset_id.in_(list(chunk))))
            if not tombstone:
                continue
            rows = conn.execute(
                sa.select(t.dataset.c.id, t.collection.c.name, t.dataset_type.c.name,
                          t.dataset.c.data_id_key)
                .join(t.collection, t.collection.c.id == t.dataset.c.run_id)
                .join(t.dataset_type, t.dataset_type.c.id == t.dataset.c.dataset_type_id)
                .where(t.dataset.c.id.in_(list(chunk)))).all()
            if rows:
                conn.execute(sa.insert(tomb), [
                    {"dataset_id": r[0], "run": r[1], "dataset_type": r[2], "data_id_key": r[3],
                     "version": version if isinstance(version, int) else version[r[0]],
                     "kept": kept, "removed_at": now} for r in rows])
        if kept:
            return
        for chunk in chunked(list(ids)):
            self._drop_rows(conn, list(chunk))

    def _drop_rows(self, conn: sa.Connection, ids: list[uuid.UUID]) -> None:
        """Delete the rows of datasets, their files going to the trash."""
        t = self.db.tables
        doomed = conn.execute(sa.select(t.file.c.path).where(
            t.file.c.dataset_id.in_(list(ids)), t.file.c.held_at.is_(None))).scalars().all()
        doomed = [p for p in doomed if not p.startswith("/")]  # in-place ingests stay
        if doomed:
            conn.execute(sa.delete(t.trash).where(t.trash.c.path.in_(doomed)))
            conn.execute(sa.insert(t.trash), [{"path": p} for p in doomed])
        # A membership goes with its dataset; its version stays known here, so that a stale
        # replica sending it back is recognized as older, not taken for a new change.
        tag, gone = t.tag, t.tag_removed
        conn.execute(sa.insert(gone).from_select(
            ["collection_id", "dataset_id", "version"],
            sa.select(tag.c.collection_id, tag.c.dataset_id, tag.c.version)
            .where(tag.c.dataset_id.in_(list(ids)))))
        for table, column in ((t.file, t.file.c.dataset_id), (t.tag, t.tag.c.dataset_id),
                              (t.calib, t.calib.c.dataset_id), (t.dataset, t.dataset.c.id)):
            conn.execute(sa.delete(table).where(column.in_(list(ids))))

    def versions(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """Creation versions of datasets (see the ``version`` column)."""
        d = self.db.tables.dataset
        stmt = sa.select(d.c.id, d.c.version).where(d.c.id.in_(IN_VALUES))
        return dict(self.db.select_in(stmt, dict.fromkeys(ids)))

    def trash(self, limit: int | None = None) -> list[str]:
        """Paths of removed (or dropped) datasets' files not yet deleted from the
        datastore, that no file here uses again (at most ``limit`` of them). A record of a
        file held at another site keeps its path but has no file here."""
        t = self.db.tables
        stmt = sa.select(t.trash.c.path).where(t.trash.c.path.not_in(
            sa.select(t.file.c.path).where(t.file.c.held_at.is_(None))))
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.db.reading() as conn:
            return list(conn.execute(stmt).scalars().all())

    def forget_trash(self, paths: Sequence[str]) -> None:
        """Forget trashed paths once their files are deleted (or used again)."""
        t = self.db.tables
        with self.db.transaction() as conn:
            for chunk in chunked(list(paths)):
                conn.execute(sa.delete(t.trash).where(t.trash.c.path.in_(chunk)))

    def run_refs(self, run: str) -> list[DatasetRef]:
        run_id, _ = self.collections.lookup(run, CollectionType.RUN)
        d = self.db.tables.dataset
        with self.db.reading() as conn:
            rows = conn.execute(sa.select(*self._select_cols).where(d.c.run_id == run_id)).all()
        return [self._to_ref(r) for r in rows]


def _as_uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def _sorted_outside(stmt: sa.Select, rank: sa.ColumnElement) -> sa.Select:
    """The same rows in the same order, sorted outside a fenced subquery (``LIMIT -1
    OFFSET 0``): SQLite then flattens an overlay's UNION ALL views inside, each part using
    its indexes (an ORDER BY on a column not theirs keeps it from doing so)."""
    inner = stmt.order_by(None).add_columns(rank.label("fed_rank")).limit(-1).offset(0)
    inner = inner.subquery()
    return sa.select(*[c for c in inner.c if c.name != "fed_rank"]).order_by(
        inner.c.dataset_type_id, inner.c.data_id_key, inner.c.fed_rank)


def _rank(ranks: dict[int, int], column) -> sa.ColumnElement:
    if len(ranks) == 1:
        return sa.literal(next(iter(ranks.values()))).label("rank")
    return sa.case(ranks, value=column).label("rank")
