"""An LSST butler (daf_butler) repository as a ``fed sync`` source, read through daf_butler.

This is the one module that imports ``lsst.daf.butler`` (lazily: it is the optional
extra ``federation[butler]``). A sync from a ``kind: daf_butler`` site:

1. selects with daf_butler's own query system: the collections matching the
   selection's globs (and, for CHAINED ones, everything they reach), the dataset
   types matching its globs, and the datasets of those types in those collections
   that satisfy its ``where``;
2. writes a daf_butler export of them (``Butler.export(transfer=None)``: the
   datasets with the dimension records their data IDs need, their RUNs, and the
   selected TAGGED, CHAINED and CALIBRATION collections with their associations);
3. hands that export to :func:`federation.operations.import_butler.import_butler`,
   which reads the files from the butler's POSIX datastore, hashes them as it copies
   them (daf_butler records no checksums), and writes the registry in one
   transaction.

daf_butler keeps no change journal; the cursor (:mod:`federation.dafbutler.cursor`)
remembers the newest ``ingest_date`` seen, the number of datasets per dataset type
and a digest of the collection structure (chains, tags, certifications). A re-sync
asks only for datasets ingested after the cursor; when the counts or the structure
differ from what the cursor saw (a dataset deleted, or written by a transaction that
committed late, or a tag or certification changed), it compares the whole selection.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.errors import (
    ChecksumError,
    ConfigError,
    DatastoreError,
    ExpressionError,
    InputError,
)
from federation.sites import SiteDefinition
from federation.sync.selection import Selection

INSTALL_HINT = "pip install 'federation[butler]'"
SINCE = "fed_ingested_after"  # the bind name of the cursor's time in where expressions


def import_daf_butler() -> Any:
    """``lsst.daf.butler``, or a one-line error saying how to install it."""
    try:
        import lsst.daf.butler as daf_butler
    except ImportError as exc:
        raise ConfigError(f"reading an LSST butler repository needs lsst-daf-butler ({exc}): "
                          f"{INSTALL_HINT}") from None
    return daf_butler


@dataclass(frozen=True)
class CollectionInfo:
    """A collection of the butler repository, as the sync sees it."""

    name: str
    type: str  # RUN, TAGGED, CHAINED, CALIBRATION
    children: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scan:
    """What the selection holds at the source, as far as one sync needs to know.

    ``refs``: daf_butler DatasetRefs to bring (all of the selection, or those ingested
    after the cursor); ``ids``: every dataset of the selection (a full scan only);
    ``newest``: the newest ingest_date among ``refs``, TAI nanoseconds since 1970.
    """

    collections: tuple[CollectionInfo, ...]
    dataset_types: tuple[str, ...]
    refs: tuple[Any, ...]
    counts: dict[str, int]
    structure: str
    newest: int | None
    full: bool
    ids: frozenset[Any] = field(default=frozenset())

    @property
    def runs(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.collections if c.type == "RUN")


class ButlerSource:
    """An open daf_butler repository (read-only) and the queries a sync makes of it."""

    def __init__(self, site: SiteDefinition) -> None:
        daf_butler = import_daf_butler()
        self.site = site
        config = site.registry.config  # a DafButlerRepository
        if not config.exists():
            raise ConfigError(f"site {site.name}: no LSST butler repository at {config}")
        try:
            self.butler = daf_butler.Butler.from_config(str(config), writeable=False)
        except Exception as exc:  # daf_butler raises many kinds; one line for the user
            raise ConfigError(f"site {site.name}: cannot open the LSST butler repository at "
                              f"{config}: {_first_line(exc)}") from None
        self._daf_butler = daf_butler

    def close(self) -> None:
        close = getattr(self.butler, "close", None)
        if close is not None:
            close()

    @property
    def instance(self) -> str:
        """What a cursor follows: the repository's location (daf_butler has no instance id)."""
        return f"daf_butler:{self.site.registry.config}"

    def datastore_root(self) -> Path:
        """The root of its POSIX datastore, where the export's relative paths start."""
        roots = self.butler.get_datastore_roots()
        found = [root for root in roots.values() if root is not None]
        if len(found) != 1 or found[0].scheme not in ("file", ""):
            shown = ", ".join(str(r) for r in found) or "none"
            raise DatastoreError(f"site {self.site.name}: only an LSST butler repository "
                                 "with one POSIX datastore can be a sync source (its "
                                 f"datastore roots: {shown})")
        return Path(found[0].ospath)

    # -- selection ---------------------------------------------------------------------

    def collections(self, selection: Selection) -> tuple[CollectionInfo, ...]:
        """The collections matching the selection's globs, and every collection their
        chains reach (a chain is imported with its children)."""
        known = {info.name: CollectionInfo(info.name, info.type.name, tuple(info.children))
                 for info in self.butler.collections.query_info("*", include_chains=True)}
        chosen: dict[str, CollectionInfo] = {}

        def visit(name: str) -> None:
            if name in chosen:
                return
            chosen[name] = known[name]
            for child in known[name].children:
                visit(child)

        for name in sorted(known):
            if any(fnmatch.fnmatchcase(name, p) for p in selection.collections):
                visit(name)
        return tuple(chosen[name] for name in sorted(chosen))

    def unmatched(self, selection: Selection) -> list[str]:
        """``-c 'GLOB'`` / ``-t 'GLOB'`` for each glob (but ``*``) matching nothing here."""
        found = []
        for flag, patterns, names in (
                ("-c", selection.collections,
                 [c.name for c in self.butler.collections.query_info("*")]),
                ("-t", selection.dataset_types,
                 [t.name for t in self.butler.registry.queryDatasetTypes(...)])):
            found += [f"{flag} {p!r}" for p in patterns if p != "*"
                      and not any(fnmatch.fnmatchcase(n, p) for n in names)]
        return found

    def dataset_types(self, selection: Selection) -> tuple[str, ...]:
        names = [t.name for t in self.butler.registry.queryDatasetTypes(...)]
        return tuple(sorted(n for n in names if selection.matches_type(n)))

    def scan(self, selection: Selection, *, after: int | None) -> Scan:
        """The selection's datasets (all, or ingested after ``after`` ns TAI), with the
        per-type counts and structure digest a cursor compares."""
        collections = self.collections(selection)
        types = self.dataset_types(selection)
        names = [c.name for c in collections]
        refs: dict[Any, Any] = {}
        counts: dict[str, int] = {}
        newest: int | None = None
        ids: set[Any] = set()
        for dataset_type in types if names else ():
            found, latest = self._datasets(dataset_type, names, selection, after)
            counts[dataset_type] = self._count(dataset_type, names, selection)
            if after is None:
                ids.update(found)
            refs.update(found)
            if latest is not None:
                newest = latest if newest is None else max(newest, latest)
        return Scan(collections, types, tuple(refs.values()), counts,
                    self.structure(collections, types), newest, after is None, frozenset(ids))

    def _where(self, selection: Selection, after: int | None) -> tuple[str, dict[str, Any]]:
        where, bind = selection.where or "", selection.bind_dict
        if after is not None:
            since = f"ingest_date > {SINCE}"
            where = f"({where}) AND {since}" if where else since
            bind = bind | {SINCE: _time_from_ns(after)}
        return where, bind

    def _datasets(self, dataset_type: str, collections: Sequence[str], selection: Selection,
                  after: int | None) -> tuple[dict[Any, Any], int | None]:
        """UUID -> DatasetRef (with its dimension records) of one type in the collections,
        and the newest ingest_date among them (TAI ns)."""
        where, bind = self._where(selection, after)
        with self._query(selection) as query:
            datasets = query.datasets(dataset_type, collections=list(collections),
                                      find_first=False)
            if where:
                datasets = datasets.where(where, bind=bind)
            found = {ref.id: ref for ref in datasets.with_dimension_records()}
            if not found:
                return found, None
            search = query.join_dataset_search(dataset_type, collections=list(collections))
            if where:
                search = search.where(where, bind=bind)
            field = f"{dataset_type}.ingest_date"
            rows = search.general([], field, find_first=False).order_by(f"-{field}").limit(1)
            newest = [_ns_from_time(row[field]) for row in rows]
        return found, newest[0] if newest else None

    def _count(self, dataset_type: str, collections: Sequence[str],
               selection: Selection) -> int:
        """How many datasets of the type the collections hold (a dataset in two of them
        counts twice): one COUNT query, what a re-sync compares with its cursor."""
        where, bind = self._where(selection, None)
        with self._query(selection) as query:
            datasets = query.datasets(dataset_type, collections=list(collections),
                                      find_first=False)
            if where:
                datasets = datasets.where(where, bind=bind)
            return datasets.count(exact=True)

    @contextmanager
    def _query(self, selection: Selection) -> Iterator[Any]:
        """A daf_butler query; its errors in the user's expression become one line."""
        exceptions = (self._daf_butler.InvalidQueryError,
                      self._daf_butler.registry.DataIdValueError)
        try:
            with self.butler.query() as query:
                yield query
        except exceptions as exc:
            raise ExpressionError(f"--where {selection.where!r} at site {self.site.name}: "
                                  f"{_first_line(exc)}") from None

    def structure(self, collections: Sequence[CollectionInfo], types: Sequence[str]) -> str:
        """A digest of the collections' definitions: chains' children, tags' members and
        certifications (with validity), for the selected dataset types."""
        shape: list[Any] = [[c.name, c.type, list(c.children)] for c in collections]
        grouped = [c.name for c in collections if c.type in ("TAGGED", "CALIBRATION")]
        registry = self.butler.registry
        for dataset_type in types if grouped else ():
            entries = sorted(
                (a.collection, str(a.ref.id), str(a.timespan))
                for a in registry.queryDatasetAssociations(dataset_type, collections=grouped,
                                                           flattenChains=False))
            shape.append([dataset_type, entries])
        return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:32]

    # -- export --------------------------------------------------------------------------

    def export(self, scan: Scan, path: Path) -> Path:
        """A daf_butler export of the scanned datasets (with the records their data IDs
        need) and of the selected collections: files stay where they are (``transfer=None``:
        paths relative to the datastore root)."""
        with self.butler.export(filename=str(path), transfer=None) as export:
            if scan.refs:
                export.saveDatasets(scan.refs)
            for collection in scan.collections:
                if collection.type != "RUN" or scan.full:
                    export.saveCollection(collection.name)
        return path

    def check_files(self, refs: Sequence[Any], batch: int = 2000) -> None:
        """Each dataset's file is where daf_butler's datastore record says, with the size
        it records (its only integrity data by default: the bytes are hashed as they are
        copied). Raises before anything is written."""
        root = self.datastore_root()
        datastore = self.butler._datastore  # its records, in bulk: no public API has them
        for start in range(0, len(refs), batch):
            chunk = refs[start:start + batch]
            stored = datastore._get_stored_records_associated_with_refs(
                chunk, ignore_datastore_records=True)
            for ref in chunk:
                if ref.id not in stored:
                    raise DatastoreError(f"site {self.site.name}: dataset {ref.id} has no "
                                         "file in the butler's datastore: nothing synced")
                for info in stored[ref.id]:
                    self._check_file(root, ref.id, info)

    def _check_file(self, root: Path, dataset_id: Any, info: Any) -> None:
        path = root / info.path
        where = f"site {self.site.name}: dataset {dataset_id}'s file {path}"
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise DatastoreError(f"{where} cannot be read ({exc.strerror}): nothing "
                                 "synced") from None
        if info.file_size is not None and info.file_size >= 0 and size != info.file_size:
            raise ChecksumError(f"{where} is {size} bytes, its datastore record says "
                                f"{info.file_size}: corrupted or replaced; nothing synced")

    def run_ids(self, runs: Sequence[str], types: Sequence[str]) -> set[Any]:
        """Every dataset of the types in the RUNs (no where): what a full comparison checks
        the destination's datasets against."""
        found: set[Any] = set()
        for dataset_type in types if runs else ():
            with self.butler.query() as query:
                rows = query.join_dataset_search(dataset_type, collections=list(runs)).general(
                    [], f"{dataset_type}.dataset_id", find_first=False)
                found.update(row[f"{dataset_type}.dataset_id"] for row in rows)
        return found


@contextmanager
def open_source(site: SiteDefinition) -> Iterator[ButlerSource]:
    source = ButlerSource(site)
    try:
        yield source
    finally:
        source.close()


def describe_repository(site: SiteDefinition) -> str:
    """``fed site check``: the repository opens, and what it holds."""
    with open_source(site) as source:
        root = source.datastore_root()
        count = len(source.butler.collections.query_info("*"))
        return f"LSST butler repository, {count} collections, datastore at {root}"


def check_selection(selection: Selection, site: str) -> None:
    """What a daf_butler source cannot do: a release, or records without their files."""
    if selection.release is not None:
        raise InputError(f"site {site} is an LSST butler repository: it has no releases")
    if not selection.files:
        raise InputError(f"site {site} is an LSST butler repository: its datasets come with "
                         "their files (daf_butler keeps no checksums to check them by later)")


def _time_from_ns(ns: int) -> Any:
    import astropy.time

    return astropy.time.Time(ns // 1_000_000_000, ns % 1_000_000_000 / 1e9, format="unix_tai",
                             scale="tai")


def _ns_from_time(time: Any) -> int:
    """TAI nanoseconds since 1970 (exact to the nanosecond for daf_butler's times)."""
    import astropy.time

    epoch = astropy.time.Time(0, format="unix_tai", scale="tai")
    delta = time.tai - epoch
    days = round(delta.jd1 * 86400 * 1_000_000_000)
    return days + round(delta.jd2 * 86400 * 1_000_000_000)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
