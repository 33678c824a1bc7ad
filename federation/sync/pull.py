"""Bringing a destination up to date with a source: ``fed sync SOURCE DEST``.

The source is a local repository, or a remote site read through its published
bundles (a mirror kept in the destination). One window fixes what the sync
covers; the driver plans it all, then applies it batch by batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

from federation.butler import Butler
from federation.errors import ConfigError
from federation.registry.cursors import Cursor
from federation.sites import SiteDefinition
from federation.sync.applier import Applier, CursorMove
from federation.sync.batch import Marked
from federation.sync.driver import Target, drive
from federation.sync.fetcher import Fetcher
from federation.sync.logbook import logged
from federation.sync.options import SyncOptions
from federation.sync.planner import Planner
from federation.sync.progress import Progress
from federation.sync.reader import SourceReader
from federation.sync.remote.mirror import Mirror
from federation.sync.report import Report
from federation.sync.reset import ResetPlanner
from federation.sync.rucio_fetcher import (
    RucioFetcher,
    bypassed_rucio,
    rucio_fetcher,
    through_rucio,
)
from federation.sync.site_access import check_accepts, check_universes, open_site, sync_lock


def pull(source: SiteDefinition, destination: SiteDefinition, options: SyncOptions, *,
         sites: Sequence[SiteDefinition] = (), progress: Progress | None = None) -> Report:
    """Bring ``destination`` (a local repository) up to date with ``source`` for a selection.

    With ``on_conflict="fail"`` nothing is applied if anything conflicts; with
    ``"skip"`` conflicting states are left out and reported; ``dry_run`` plans only.
    """
    if source.name == destination.name:
        raise ConfigError("source and destination are the same site")
    if destination.read_only and not options.dry_run:
        raise ConfigError(f"site {destination.name} is read-only")
    if destination.is_remote:
        raise ConfigError(f"site {destination.name} is reached over {destination.transport}: "
                          "push to it instead")
    with open_site(destination) as dst, \
            sync_lock(dst.config.root, destination.name, options.lock_timeout):
        check_accepts(dst, options.selection)
        if not options.dry_run:
            dst.registry.log.interrupted(destination.name)
        if not source.is_remote:
            with open_site(source) as src:
                return _pull(source, destination, src, dst, options, sites, progress,
                             keep_deleted=destination.keep_deleted or options.keep_deleted,
                             instance=src.registry.instance)
        mirror = Mirror(source, dst.config.root)
        published = mirror.refresh()
        with mirror.open() as src:
            report = _pull(source, destination, src, dst, options, sites, progress,
                           keep_deleted=destination.keep_deleted or options.keep_deleted,
                           instance=f"{mirror.source_instance}/{src.registry.instance}",
                           here=source.name)
        report.cursor = published
        return report


def _pull(source: SiteDefinition, destination: SiteDefinition, src: Butler, dst: Butler,
          options: SyncOptions,
          sites: Sequence[SiteDefinition], progress: Progress | None, *, keep_deleted: bool,
          instance: str, here: str | None = None) -> Report:
    selection = options.selection
    name = source.name
    check_universes(name, src.registry.universe, dst.site, dst.registry.universe)
    cursors = dst.registry.cursors
    cursor = followed(cursors.get("pull", name, selection.key), instance, name, dst.site,
                      reset=options.reset_cursor)
    start = cursor.last_seq if cursor is not None else None
    covered = set(cursor.covered) if cursor is not None and cursor.covered is not None else None
    retries = cursors.retries(name, selection.key)
    reader = SourceReader(src.registry, selection, here=here)
    transport = source.open_files() if selection.files else None
    rules = through_rucio(source, destination) if transport is not None else None
    try:
        if transport is None:
            fetcher = None
        elif rules is not None:
            fetcher = rucio_fetcher(source, dst, transport, rules, options, progress)
        else:
            fetcher = Fetcher(dst.datastore, transport, name, jobs=options.jobs,
                              progress=progress)
        target = Target(
            (ResetPlanner if options.reset_cursor else Planner)(
                dst, name, selection, sites=sites, keep_deleted=keep_deleted,
                with_files=transport is not None),
            Applier(dst, name, keep_deleted=keep_deleted), fetcher, selection.key,
            lambda mark: CursorMove(name, selection.key, selection.to_dict(), mark,
                                    frozenset(reader.collections), instance),
            start)

        @contextmanager
        def open_batches() -> Iterator[tuple[int, Marked]]:
            with reader.window() as upto:
                yield upto, reader.pull(upto, start, covered, retries)

        log = nullcontext() if options.dry_run else logged(
            dst, "sync", name, dst.site, selection=selection, cursor_from=start)
        with log as record:
            report = drive(open_batches, target, options, progress)
            if isinstance(fetcher, RucioFetcher):
                fetcher.finish(report, src if here is None else None, dst, sites, options,
                               keep_deleted=keep_deleted)
            elif fetcher is not None:
                report.notes += bypassed_rucio(source, destination, report)
            counters = getattr(transport, "counters", None)
            if counters is not None:
                report.resumed_files = counters.resumed_files
                report.resumed_bytes = counters.resumed_bytes
            if record is not None:
                record.report = report
        return report
    finally:
        if transport is not None:
            transport.close()


def followed(cursor: Cursor | None, instance: str, source: str, destination: str, *,
             reset: bool) -> Cursor | None:
    """The cursor to continue from, if it follows the source's repository instance.

    An instance is ``SOURCE[/MIRROR]``: a mirror rebuilt from the same source (a reset
    outbox) re-plans from a snapshot; a rebuilt source is an error, unless ``reset``.
    """
    if cursor is None or reset or cursor.instance == instance:
        return None if reset else cursor
    if (cursor.instance or "").split("/")[0] == instance.split("/")[0]:
        return None
    old, new = (cursor.instance or "?").split("/")[0][:12], instance.split("/")[0][:12]
    raise ConfigError(
        f"site {source} is another repository now (instance {new}) than the one {destination} "
        f"has followed (instance {old}): it was rebuilt or replaced. Run 'fed sync {source} "
        f"{destination} --reset-cursor' to re-plan from a snapshot; every difference from "
        "what this site holds is then reported as a conflict")
