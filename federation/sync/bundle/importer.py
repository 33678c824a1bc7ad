"""Importing bundles: ``fed import``, and the receives and mirror refreshes built on it.

A bundle is checked whole before anything is written (format, trailer, every
record and path, continuity with the destination's cursor, its files), then
applied by the driver as a sync would apply the same batches.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

from federation.butler import Butler
from federation.dimensions.universe import DimensionUniverse
from federation.errors import ConfigError, FederationError, InputError
from federation.sites import SiteDefinition
from federation.sync.applier import Applier, CursorMove
from federation.sync.batch import Marked
from federation.sync.bundle.format import Bundle, BundleHeader, BundleSummary
from federation.sync.driver import Target, drive
from federation.sync.fetcher import Fetcher
from federation.sync.logbook import logged
from federation.sync.options import SyncOptions
from federation.sync.planner import Planner
from federation.sync.progress import Progress
from federation.sync.report import Report
from federation.sync.site_access import check_accepts, check_universes, open_site, sync_lock
from federation.transport.local import LocalTransport


def check_cursor(header: BundleHeader, cursor: int | None, destination: str) -> None:
    """A journal bundle must start at or before what the destination already has."""
    if header.snapshot:
        return
    if cursor is None:
        raise InputError(f"{destination} has never synced {header.source} with this "
                         f"selection, and this bundle starts after journal entry "
                         f"{header.from_seq}: export a snapshot (fed export {header.source} "
                         f"--since 0)")
    if header.from_seq > cursor:
        raise InputError(f"this bundle starts after {header.source} journal entry "
                         f"{header.from_seq}, but {destination} has {header.source} only up to "
                         f"entry {cursor}: export again with --since {cursor}")


def import_bundle(path: str | os.PathLike, destination: SiteDefinition, options: SyncOptions,
                  *, files_from: str | os.PathLike | None = None,
                  sites: Sequence[SiteDefinition] = (), progress: Progress | None = None
                  ) -> Report:
    """Validate a whole bundle, then apply it to ``destination`` as a sync would.

    Nothing is written unless the bundle is intact, continues the destination's
    cursor (or is a snapshot), and every file to fetch is in ``files_from``. The
    selection is the bundle's own (``options.selection`` is not used).
    """
    if destination.read_only and not options.dry_run:
        raise ConfigError(f"site {destination.name} is read-only")
    with open_site(destination) as dst:
        with sync_lock(dst.config.root, destination.name, options.lock_timeout):
            return import_into(path, dst, options, files_from=files_from, sites=sites,
                               keep_deleted=destination.keep_deleted, progress=progress)


def import_into(path: str | os.PathLike, dst: Butler, options: SyncOptions, *,
                files_from: str | os.PathLike | None = None,
                sites: Sequence[SiteDefinition] = (), keep_deleted: bool = False,
                expect_source: str | None = None, operation: str = "import",
                progress: Progress | None = None) -> Report:
    """:func:`import_bundle` into an open repository whose sync lock the caller holds."""
    with Bundle(path) as bundle:
        summary = bundle.validate()
        header = summary.header
        assert header is not None
        selection = header.selection
        if expect_source is not None and header.source != expect_source:
            raise InputError(f"bundle {bundle.path} comes from {header.source}, not from "
                             f"{expect_source}")
        if header.source == dst.site:
            raise ConfigError(f"this bundle comes from {dst.site} itself")
        check_accepts(dst, selection)
        if header.universe is not None:
            check_universes(header.source, DimensionUniverse(header.universe), dst.site,
                            dst.registry.universe)
        transport = None
        if selection.files and summary.files:
            if files_from is None:
                raise InputError(f"the bundle lists {summary.files} file(s): give --files-from "
                                 "DIR (a directory from 'fed export --with-files', or the "
                                 f"{header.source} repository root), or export with --no-files")
            if not Path(files_from).is_dir():
                raise InputError(f"--files-from {files_from} is not a directory")
            transport = LocalTransport(files_from)
        source = header.source
        found = dst.registry.cursors.get("pull", source, selection.key)
        cursor = found.last_seq if found is not None else None
        check_cursor(header, cursor, dst.site)
        covered = found.covered if found is not None else None
        instance = found.instance if found is not None else None
        fetcher = None if transport is None else Fetcher(
            dst.datastore, transport, source, jobs=options.jobs, progress=progress)

        def cursor_after(mark: int) -> CursorMove | None:
            if cursor is not None and mark <= cursor:
                return None  # the cursor never moves backwards
            return CursorMove(source, selection.key, selection.to_dict(), mark, covered,
                              instance)

        target = Target(
            Planner(dst, source, selection, sites=sites, keep_deleted=keep_deleted,
                    with_files=transport is not None),
            Applier(dst, source, keep_deleted=keep_deleted), fetcher, selection.key,
            cursor_after, cursor,
            check_files=None if transport is None else _files_checker(transport, dst))

        @contextmanager
        def open_batches() -> Iterator[tuple[int, Marked]]:
            yield header.to_seq, bundle.batches()

        log = nullcontext() if options.dry_run else logged(
            dst, operation, source, dst.site, selection=selection, cursor_from=cursor)
        with log as record:
            report = drive(open_batches, target, options, progress)
            if record is not None:
                record.report = report
        return report


def _files_checker(transport: LocalTransport, dst: Butler) -> Callable[[list], None]:
    """Every file to fetch must be in --files-from with its size (or already in place)."""

    def check(needed: list) -> None:
        missing: list[str] = []
        for state in needed:
            info = state.file
            found = transport.stat(info.path)
            if found is not None and found.size == info.size:
                continue
            here = dst.datastore.safe_path(info.path)
            if here.is_file() and here.stat().st_size == info.size:
                continue
            missing.append(info.path if found is None else f"{info.path} (size {found.size}, "
                                                            f"expected {info.size})")
        if missing:
            raise InputError(f"{len(missing)} file(s) the bundle needs are missing from "
                             f"--files-from {transport.root}: {missing[0]}"
                             + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))

    return check


def inspect(path: str | os.PathLike) -> BundleSummary:
    """Read a bundle for `fed bundle show`: the summary, with ``error`` set if damaged.

    A file that is not a bundle at all (no readable header) is an InputError.
    """
    with Bundle(path) as bundle:
        summary = BundleSummary(bundle.path, bundle.compressed)
        try:
            bundle.scan(summary)
        except FederationError as exc:
            if summary.header is None:
                raise
            summary.error = str(exc)
    return summary
