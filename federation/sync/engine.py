"""Synchronising one site into another: plan, move files, import records, advance cursor."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from federation.butler import Butler
from federation.errors import ConfigError, ConflictError, FederationError
from federation.sites import SiteDefinition
from federation.sync.applier import Applier
from federation.sync.cursors import covered_collections, read_cursor, retry_ids
from federation.sync.reader import SourceReader
from federation.sync.report import Report
from federation.sync.selection import Selection
from federation.sync.states import Batch
from federation.transport import LocalTransport, Transport

LOCK_NAME = ".federation-sync.lock"


class SyncConflictError(ConflictError):
    """A sync found conflicts and, with --on-conflict fail, applied nothing."""

    def __init__(self, report: Report) -> None:
        self.report = report
        first = report.conflicts[0]
        more = len(report.conflicts) - 1
        super().__init__(f"{len(report.conflicts)} conflict(s), nothing applied: {first}"
                         + (f" (and {more} more; see --dry-run)" if more else ""))


@dataclass(frozen=True)
class SyncOptions:
    selection: Selection = Selection()
    dry_run: bool = False
    on_conflict: str = "fail"
    jobs: int = 4
    lock_timeout: float = 60.0


def open_site(site: SiteDefinition) -> Butler:
    """The repository a site definition describes; its registry must match the definition."""
    if not (site.root / "federation.yaml").is_file():
        raise ConfigError(f"site {site.name}: no repository at {site.root} "
                          f"(create it with 'fed site init {site.name}')")
    butler = Butler(site.root)
    if butler.site != site.name:
        butler.close()
        raise ConfigError(f"site {site.name}: the repository at {site.root} belongs to site "
                          f"{butler.site!r}")
    return butler


def transport_for(site: SiteDefinition) -> Transport:
    if site.transport == "local":
        return LocalTransport(site.root)
    raise ConfigError(f"site {site.name}: transport {site.transport!r} is not available")


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
         sites: Sequence[SiteDefinition] = (),
         progress: Callable[[int, int], None] | None = None) -> Report:
    """Bring ``destination`` up to date with ``source`` for a selection.

    With ``on_conflict="fail"`` every batch is planned first and nothing is
    applied if any conflicts; with ``"skip"`` conflicting states are left
    out and reported. ``dry_run`` plans and reports only.
    """
    if source.name == destination.name:
        raise ConfigError("source and destination are the same site")
    if destination.read_only and not options.dry_run:
        raise ConfigError(f"site {destination.name} is read-only")
    if options.on_conflict not in ("fail", "skip"):
        raise ConfigError(f"--on-conflict must be fail or skip, not {options.on_conflict!r}")
    with open_site(source) as src, open_site(destination) as dst:
        transport = transport_for(source) if options.selection.files else None
        applier = Applier(dst, source.name, options.selection, sites=sites,
                          keep_deleted=destination.keep_deleted, transport=transport,
                          jobs=options.jobs, progress=progress)
        with sync_lock(dst.config.root, destination.name, options.lock_timeout):
            return _run(src, dst, applier, options)


def _run(src: Butler, dst: Butler, applier: Applier, options: SyncOptions) -> Report:
    selection = options.selection
    report = Report()

    def batches() -> Iterator[tuple[Batch, int | None]]:
        upto = src.registry.db.last_seq()
        reader = SourceReader(src.registry, selection)
        applier.covered = set(reader.collections)
        cursor = read_cursor(dst, src.site, selection)
        retries = retry_ids(dst, src.site, selection)
        if retries:
            yield reader.retry_batch(retries), None
        if cursor is None:
            for batch in reader.snapshot():
                yield batch, None
            yield Batch([], upto), upto
        else:
            before = covered_collections(dst, src.site, selection)
            added = reader.collections - before if before is not None else set()
            if added:  # e.g. a selected chain gained a child: bring what it already holds
                for batch in reader.snapshot(added):
                    yield batch, None
            for batch in reader.journal(cursor, upto):
                yield batch, batch.upto
        report.cursor = upto

    if not options.dry_run:
        applier.clear_staging()
        dst.empty_trash()  # files a crashed run had removed the records of
    if options.dry_run or options.on_conflict == "fail":
        planned = Report()
        removed: dict[str, int] = {}
        for batch, _ in batches():
            planned.add(applier.plan(batch, removed))
        if options.dry_run:
            planned.cursor = report.cursor
            return planned
        if planned.conflicts:
            raise SyncConflictError(planned)
    for batch, upto in batches():
        applier.apply(batch, cursor=(src.site, upto) if upto is not None else None,
                      report=report)
    # A dataset can come in several batches of a snapshot (its RUN's, a TAGGED or
    # CALIBRATION collection's): a file that failed is one failure, reported once.
    report.failed = list({dataset_id: (dataset_id, path, reason)
                          for dataset_id, path, reason in report.failed}.values())
    return report
