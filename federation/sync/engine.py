"""Synchronising one site into another: plan, move files, import records, advance cursor."""

from __future__ import annotations

import fcntl
import os
import pickle
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from federation.butler import Butler
from federation.errors import ConfigError, FederationError
from federation.faults import checkpoint
from federation.sites import SiteDefinition
from federation.sync.applier import Applier
from federation.sync.cursors import covered_collections, read_cursor, retry_ids
from federation.sync.progress import Progress
from federation.sync.reader import SourceReader
from federation.sync.report import Report, SyncConflictError
from federation.sync.selection import Selection
from federation.sync.states import Batch
from federation.transport.factory import transport_for

LOCK_NAME = ".federation-sync.lock"


@dataclass(frozen=True)
class SyncOptions:
    selection: Selection = Selection()
    dry_run: bool = False
    on_conflict: str = "fail"
    jobs: int = 4
    lock_timeout: float = 60.0


def open_site(site: SiteDefinition) -> Butler:
    """The repository a site definition describes; its registry must match the definition."""
    if site.is_remote:
        raise ConfigError(f"site {site.name} is reached over {site.transport}; its registry is "
                          "read only through the bundles it publishes")
    if not (site.root / "federation.yaml").is_file():
        raise ConfigError(f"site {site.name}: no repository at {site.root} "
                          f"(create it with 'fed site init {site.name}')")
    butler = Butler(site.root)
    if butler.site != site.name:
        butler.close()
        raise ConfigError(f"site {site.name}: the repository at {site.root} belongs to site "
                          f"{butler.site!r}")
    return butler


@contextmanager
def sync_lock(root: Path, site: str, timeout: float) -> Iterator[None]:
    """One sync into a repository at a time: wait up to ``timeout`` s, then fail clearly."""
    path = root / LOCK_NAME
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    raise FederationError(
                        f"another sync into {site} is running ({holder}); waited "
                        f"{timeout:.0f} s, try again later") from None
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def sync(source: SiteDefinition, destination: SiteDefinition, options: SyncOptions, *,
         sites: Sequence[SiteDefinition] = (), progress: Progress | None = None) -> Report:
    """Bring ``destination`` up to date with ``source`` for a selection.

    With ``on_conflict="fail"`` every batch is planned first and nothing is
    applied if any conflicts; with ``"skip"`` conflicting states are left
    out and reported. ``dry_run`` plans and reports only.

    A remote source (SFTP, HTTP) is read through its published bundles, kept in a
    local mirror; its files come over the network. A remote destination is pushed
    to: see :mod:`federation.sync.push`.
    """
    if source.name == destination.name:
        raise ConfigError("source and destination are the same site")
    if destination.read_only and not options.dry_run:
        raise ConfigError(f"site {destination.name} is read-only")
    if options.on_conflict not in ("fail", "skip"):
        raise ConfigError(f"--on-conflict must be fail or skip, not {options.on_conflict!r}")
    if destination.is_remote:
        from federation.sync.push import push

        return push(source, destination, options, progress=progress)
    with open_site(destination) as dst, \
            sync_lock(dst.config.root, destination.name, options.lock_timeout):
        if not source.is_remote:
            with open_site(source) as src:
                return _with_transport(source, src, dst, options, sites, progress,
                                       keep_deleted=destination.keep_deleted)
        from federation.sync.mirror import Mirror

        mirror = Mirror(source, dst.config.root)
        published = mirror.refresh()
        with mirror.open() as src:
            report = _with_transport(source, src, dst, options, sites, progress,
                                     keep_deleted=destination.keep_deleted,
                                     cursor_key=mirror.cursor_key)
        report.cursor = published
        return report


def _with_transport(source: SiteDefinition, src: Butler, dst: Butler, options: SyncOptions,
                    sites: Sequence[SiteDefinition], progress: Progress | None, *,
                    keep_deleted: bool, cursor_key: str | None = None) -> Report:
    transport = transport_for(source) if options.selection.files else None
    try:
        applier = Applier(dst, source.name, options.selection, sites=sites,
                          keep_deleted=keep_deleted, transport=transport,
                          jobs=options.jobs, progress=progress)
        reader = SourceReader(src.registry, options.selection,
                              here=source.name if source.is_remote else None)
        report = _run(reader, cursor_key or src.site, dst, applier, options)
        counters = getattr(transport, "counters", None)
        if counters is not None:
            report.resumed_files, report.resumed_bytes = (counters.resumed_files,
                                                          counters.resumed_bytes)
        return report
    finally:
        if transport is not None:
            transport.close()


def _run(reader: SourceReader, source_key: str, dst: Butler, applier: Applier,
         options: SyncOptions) -> Report:
    """Plan every batch inside one window on the source, then apply what was planned.

    The planning pass spools the batches it read, so that the applying pass applies
    exactly what was planned: a change written at the source meanwhile is in the
    next sync, never half in this one.
    """
    selection = options.selection
    if not options.dry_run:
        applier.clear_staging()
        dst.empty_trash()  # files a crashed run had removed the records of
    planned = Report()
    removed: dict[str, int] = {}
    files = nbytes = 0
    with Spool(applier.staging if not options.dry_run else None) as spool:
        with reader.window() as upto:
            applier.covered = set(reader.collections)
            for batch, mark in _batches(reader, dst, source_key, applier.source, selection,
                                        upto):
                plan = applier.plan(batch, removed)
                planned.add(plan)
                needed = applier.files_needed(plan)
                files, nbytes = files + len(needed), nbytes + sum(s.file.size for s in needed)
                spool.write(batch, mark)
                checkpoint("batch planned")
        planned.cursor = upto
        if options.dry_run:
            return planned
        if planned.conflicts and options.on_conflict == "fail":
            raise SyncConflictError(planned)
        applier.progress.planned(files, nbytes)
        checkpoint("sync planned")
        report = Report(cursor=upto)
        strict = options.on_conflict == "fail"
        for batch, mark in spool.read():
            applier.apply(batch, cursor=(source_key, mark) if mark is not None else None,
                          report=report, strict=strict)
    # A dataset can come in several batches of a snapshot (its RUN's, a TAGGED or
    # CALIBRATION collection's): a file that failed is one failure, reported once.
    report.failed = list({dataset_id: (dataset_id, path, reason)
                          for dataset_id, path, reason in report.failed}.values())
    return report


def _batches(reader: SourceReader, dst: Butler, source_key: str, source: str,
             selection: Selection, upto: int) -> Iterator[tuple[Batch, int | None]]:
    """What this sync carries, with the cursor position after each batch (None: the
    cursor does not move, e.g. inside a snapshot)."""
    cursor = read_cursor(dst, source_key, selection)
    retries = retry_ids(dst, source, selection)
    if retries:
        yield reader.retry_batch(retries), None
    if cursor is None:
        for batch in reader.snapshot():
            yield batch, None
        yield Batch([], upto), upto
        return
    before = covered_collections(dst, source_key, selection)
    added = reader.collections - before if before is not None else set()
    if added:  # e.g. a selected chain gained a child: bring what it already holds
        for batch in reader.snapshot(added):
            yield batch, None
    for batch in reader.journal(cursor, upto):
        yield batch, batch.upto


class Spool:
    """Batches written once and read back (a pickle file in staging; memory for a dry run)."""

    def __init__(self, folder: Path | None) -> None:
        self.path = None if folder is None else folder / f"spool-{uuid.uuid4().hex}.pickle"
        self._file = None

    def __enter__(self) -> Spool:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w+b")  # noqa: SIM115 - closed in __exit__
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self.path.unlink(missing_ok=True)

    def write(self, batch: Batch, mark: int | None) -> None:
        if self._file is not None:
            pickle.dump((batch, mark), self._file, protocol=pickle.HIGHEST_PROTOCOL)

    def read(self) -> Iterator[tuple[Batch, int | None]]:
        self._file.flush()
        self._file.seek(0)
        while True:
            try:
                yield pickle.load(self._file)
            except EOFError:
                return
