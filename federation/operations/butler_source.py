"""``fed sync BUTLERSITE DEST``: an LSST butler repository pulled into a fed repository.

The selection is made and exported by daf_butler (:mod:`federation.dafbutler.source`);
the export is applied by :func:`federation.operations.import_butler.import_butler`,
which copies and hashes the files and writes the registry in one transaction.

The cursor (one row of the registry's ``sync_cursor`` table: ``pull`` from the
site, for the selection) holds what daf_butler cannot journal for us:

- ``newest``: the newest ``ingest_date`` seen (TAI ns; also its ``last_seq``);
- ``counts``: the number of datasets of each selected type;
- ``structure``: a digest of the collections' definitions (chains, tags,
  certifications with their validity).

A re-sync queries the datasets ingested after ``newest``, counts the datasets
per type and recomputes the structure digest. When nothing is new and both match,
nothing is written. When a count or the structure differs in a way new datasets do
not explain (a dataset removed at the source, one written by a transaction that
committed late, a tag or certification changed), the whole selection is compared,
as it is on the first sync and with ``--reset-cursor``. A full comparison also
finds the datasets gone from the source: they are reported, and kept here.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.butler import Butler
from federation.dafbutler.source import ButlerSource, Scan, check_selection, open_source
from federation.errors import ConfigError, InputError
from federation.operations.import_butler import ImportButlerReport, import_butler
from federation.registry.cursors import Cursor
from federation.sites import SiteDefinition
from federation.sync.logbook import logged
from federation.sync.options import SyncOptions
from federation.sync.progress import Progress
from federation.sync.report import Conflict as SyncConflict
from federation.sync.report import Report
from federation.sync.selection import Selection
from federation.sync.site_access import open_site, sync_lock

CURSOR_KEY = "daf_butler"


@dataclass(frozen=True)
class ButlerCursor:
    """How far a destination has followed a daf_butler repository, for one selection."""

    instance: str
    newest: int | None
    counts: dict[str, int]
    structure: str

    def matches(self, scan: Scan, new: list[Any]) -> bool:
        """The scan's counts and structure are the ones this cursor saw, plus the ``new``
        datasets the scan brings (each counted once per type)."""
        grown = dict(self.counts)
        for ref in new:
            grown[ref.datasetType.name] = grown.get(ref.datasetType.name, 0) + 1
        return scan.structure == self.structure and \
            {k: v for k, v in scan.counts.items() if v} == {k: v for k, v in grown.items() if v}


def load_cursor(dst: Butler, site: str, selection: Selection) -> ButlerCursor | None:
    found = dst.registry.cursors.get("pull", site, selection.key)
    state = None if found is None else found.selection.get(CURSOR_KEY)
    if not isinstance(state, dict):
        return None
    return ButlerCursor(found.instance or "", state.get("newest"),
                        dict(state.get("counts") or {}), str(state.get("structure", "")))


def save_cursor(dst: Butler, site: str, selection: Selection, cursor: ButlerCursor,
                collections: frozenset[str]) -> None:
    state = {"newest": cursor.newest, "counts": cursor.counts, "structure": cursor.structure}
    dst.registry.cursors.save(Cursor(
        "pull", site, selection.key, cursor.newest or 0,
        selection.to_dict() | {CURSOR_KEY: state}, collections, cursor.instance))


def pull_from_butler(source: SiteDefinition, destination: SiteDefinition,
                     options: SyncOptions, *, progress: Progress | None = None) -> Report:
    """Bring ``destination`` up to date with the LSST butler repository ``source`` for
    the options' selection (see the module docstring)."""
    selection = options.selection
    check_selection(selection, source.name)
    if destination.is_remote or destination.is_daf_butler:
        raise ConfigError(f"site {destination.name} is not a fed repository on this machine: "
                          f"an LSST butler repository syncs only into one")
    if destination.read_only and not options.dry_run:
        raise ConfigError(f"site {destination.name} is read-only")
    with open_site(destination) as dst, \
            sync_lock(dst.config.root, destination.name, options.lock_timeout):
        check_universe(dst)
        with open_source(source) as src:
            cursor = load_cursor(dst, source.name, selection)
            if cursor is not None and (options.reset_cursor or cursor.instance != src.instance):
                cursor = None
            unmatched = src.unmatched(selection) if cursor is None else []
            if unmatched:
                raise InputError(f"nothing at {source.name} matches {', '.join(unmatched)}; "
                                 "nothing was synced")
            if options.dry_run:
                return _plan(src, dst, selection, cursor).report
            with logged(dst, "sync", source.name, dst.site, selection=selection) as record:
                planned = _plan(src, dst, selection, cursor)
                report = planned.report
                if planned.export:
                    report = _apply(src, dst, planned, options, progress)
                following = planned.next_cursor(src, cursor)
                save_cursor(dst, source.name, selection, following,
                            frozenset(c.name for c in planned.scan.collections))
                if following.newest is not None:
                    report.notes.append(f"cursor: datasets of {source.name} ingested up to "
                                        f"{tai_iso(following.newest)} TAI")
                record.report = report
            return report


def tai_iso(ns: int) -> str:
    """TAI nanoseconds since 1970 as an ISO time (to the millisecond)."""
    moment = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=ns // 1000)
    return moment.isoformat(timespec="milliseconds")


def check_universe(dst: Butler) -> None:
    universe = dst.registry.universe
    if universe.namespace != "daf_butler":
        raise ConfigError(f"site {dst.site} is in the {universe.namespace} dimension universe, "
                          "not daf_butler's: an LSST butler repository syncs only into a "
                          "repository created with 'fed create DEST --universe daf_butler'")


@dataclass
class Planned:
    """What one sync brings: the scan, the datasets the destination lacks, whether an
    export must be applied (new datasets, or a collection structure to bring)."""

    scan: Scan
    new: list[Any]
    export: bool
    report: Report

    def next_cursor(self, src: ButlerSource, cursor: ButlerCursor | None) -> ButlerCursor:
        newest = [n for n in (self.scan.newest, cursor and cursor.newest) if n is not None]
        return ButlerCursor(src.instance, max(newest) if newest else None,
                            dict(self.scan.counts), self.scan.structure)


def _plan(src: ButlerSource, dst: Butler, selection: Selection,
          cursor: ButlerCursor | None) -> Planned:
    scan = src.scan(selection, after=None if cursor is None else cursor.newest)
    report = Report()
    new = _not_held(dst, scan)
    if cursor is not None and not cursor.matches(scan, new):
        report.notes.append(f"{src.site.name} changed beyond new datasets (a count or a "
                            "collection's definition differs): compared the whole selection")
        scan = src.scan(selection, after=None)
        new = _not_held(dst, scan)
    changed = cursor is None or scan.structure != cursor.structure
    if scan.full:
        report.notes += _gone(src, dst, scan)
    for action, count in (("insert", len(new)), ("skip", len(scan.refs) - len(new))):
        if count:
            report.counts[f"dataset {action}"] += count
    export = bool(new) or changed
    if not scan.full or not changed:
        scan = _only(scan, new)
    return Planned(scan, new, export, report)


def _not_held(dst: Butler, scan: Scan) -> list[Any]:
    """The scanned datasets the destination does not hold."""
    held = dst.registry.datasets.get_many([uuid.UUID(str(ref.id)) for ref in scan.refs])
    return [ref for ref in scan.refs if uuid.UUID(str(ref.id)) not in held]


def _only(scan: Scan, refs: list[Any]) -> Scan:
    """The scan with only ``refs`` to export (the collections still named)."""
    return Scan(scan.collections, scan.dataset_types, tuple(refs), scan.counts, scan.structure,
                scan.newest, scan.full, scan.ids)


def _gone(src: ButlerSource, dst: Butler, scan: Scan) -> list[str]:
    """Datasets here in the selection's RUNs and types that the source no longer has."""
    types = set(scan.dataset_types)
    runs = [run for run in scan.runs if dst.registry.collections.exists(run)]
    here = {ref.id: ref for run in runs for ref in dst.registry.datasets.run_refs(run)
            if ref.dataset_type.name in types}
    if not here:
        return []
    there = {uuid.UUID(str(i)) for i in src.run_ids(runs, sorted(types))}
    gone = sorted(str(i) for i in set(here) - there)
    if not gone:
        return []
    shown = ", ".join(gone[:5]) + (f" and {len(gone) - 5} more" if len(gone) > 5 else "")
    return [f"{len(gone)} dataset(s) here are gone from {src.site.name} ({shown}); they are "
            "kept here (remove them with 'fed remove' if they should go)"]


def _apply(src: ButlerSource, dst: Butler, planned: Planned, options: SyncOptions,
           progress: Progress | None) -> Report:
    """Export the planned datasets and collections with daf_butler; import the export."""

    advance = None
    if progress is not None:
        progress.planned(len(planned.new), 0)

        def advance(files: int) -> None:
            progress.advance(files, 0)

    src.check_files(planned.new)
    with tempfile.TemporaryDirectory(prefix="fed-butler-") as tmp:
        export = src.export(planned.scan, Path(tmp) / "export.yaml")
        imported = import_butler(dst.config.root, export, files_from=src.datastore_root(),
                                 transfer="copy", on_conflict=options.on_conflict,
                                 progress=advance)
    return as_report(imported, planned.report)


#: the import report's counts, as a sync report names them ("<kind> <action>")
_COUNTS = (("dimension_record insert", "records"), ("dataset_type insert", "dataset_types"),
           ("collection insert", "collections"), ("dataset insert", "datasets"),
           ("tag insert", "tags"), ("calib_slot insert", "certifications"),
           ("chain insert", "chains"), ("present skip", "present"))


def as_report(imported: ImportButlerReport, planned: Report) -> Report:
    """The import's report as a sync report (its counts; the plan's notes)."""
    report = Report(files=imported.files, bytes=imported.bytes, notes=list(planned.notes))
    for key, attribute in _COUNTS:
        count = getattr(imported, attribute)
        if count:
            report.counts[key] = count
    for conflict in imported.conflicts:
        report.add_conflicts([SyncConflict(conflict.kind, conflict.name, "differs",
                                           conflict.export, conflict.here)])
    return report
