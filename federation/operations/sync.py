"""The federation commands: sync, export, import, bundle show, publish, receive and log.

Sites are named as on the command line and looked up in a sites directory
(``--sites``, ``$FED_SITES`` or ``./sites``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from federation.errors import ConfigError, FederationError, InputError, ReleaseError
from federation.operations.butler_source import pull_from_butler
from federation.operations.rucio import register_site
from federation.operations.selection import (
    check_patterns,
    datasets_in,
    first_use,
    note_if_empty,
    refuse_unmatched,
)
from federation.registry.sync_log import LogEntry
from federation.release.verify import verify as verify_release
from federation.sites import SiteDefinition, list_sites, load_site
from federation.sync.bundle.export import ExportResult, export_bundle
from federation.sync.bundle.format import Bundle, BundleSummary
from federation.sync.bundle.importer import import_bundle, inspect
from federation.sync.options import SyncOptions
from federation.sync.progress import Progress
from federation.sync.pull import pull
from federation.sync.remote.outbox import PublishResult, publish
from federation.sync.remote.push import push, receive
from federation.sync.report import Report
from federation.sync.selection import Selection
from federation.sync.site_access import open_site
from federation.timespan import to_ns

SitesDir = str | os.PathLike | None


def sync(source: str, destination: str, options: SyncOptions, *, sites_dir: SitesDir = None,
         progress: Progress | None = None) -> Report:
    """``fed sync SOURCE DEST``: pull into a local destination, or push to a remote one.

    The first sync of a selection whose globs match nothing at SOURCE is refused
    (nothing written); one that carries no dataset says so in a note.
    """
    src, dst = load_site(source, sites_dir), load_site(destination, sites_dir)
    if src.is_daf_butler or dst.is_daf_butler:
        return _sync_daf_butler(src, dst, options, progress)
    selection = options.selection
    if selection.release is not None and not src.is_remote and src.name != dst.name:
        with open_site(src) as butler:
            if butler.registry.releases.find(selection.release) is None:
                raise ReleaseError(f"site {src.name} has no release {selection.release!r} "
                                   "('fed release list' shows what it has)")
    first = _checkable(src, dst, selection) and first_use(src, dst, selection)
    if first:
        check_patterns(src, dst, options)
    report = sync_sites(src, dst, options, sites=list_sites(sites_dir), progress=progress)
    if first:
        report.notes += note_if_empty(src.name, selection, datasets_in(report))
    if selection.release is not None and not options.dry_run:
        if dst.is_remote:
            report.notes.append(f"{dst.name} verifies release {selection.release} when it "
                                "receives it ('fed receive')")
        elif not selection.files:
            report.notes.append(f"records only: {dst.name} holds release "
                                f"{selection.release} once its files arrive and it verifies "
                                "them ('fed release verify')")
        else:
            with open_site(dst) as butler:
                check = verify_release(butler, selection.release, jobs=options.jobs).check
                report.verified.append(check)
            if check.complete and src.rucio is not None and dst.rucio is not None:
                report.notes += _lock_release(selection.release, (src, dst), sites_dir)
    return report


def _sync_daf_butler(src: SiteDefinition, dst: SiteDefinition, options: SyncOptions,
                     progress: Progress | None) -> Report:
    """From an LSST butler repository (``kind: daf_butler``), read through daf_butler."""
    if dst.is_daf_butler:
        raise ConfigError(f"site {dst.name} is an LSST butler repository (kind: daf_butler): "
                          "fed syncs from it, not into it ('fed export-butler' writes for it)")
    return pull_from_butler(src, dst, options, progress=progress)


def _lock_release(release: str, holders: tuple[SiteDefinition, ...],
                  sites_dir: SitesDir) -> list[str]:
    """A release that went through Rucio gets a locked rule on each holding site's RSE (the
    sites on this machine), so that Rucio itself refuses to remove it there."""
    notes = []
    for site in holders:
        if site.is_remote:
            continue
        done = register_site(site.name, release=release, sites_dir=sites_dir)
        if done.rule_created:
            notes.append(f"release {release} locked in Rucio on {site.rucio.rse} "
                         f"(rule {done.rule})")
        notes += done.notes
    return notes


def _checkable(source: SiteDefinition, destination: SiteDefinition,
               selection: Selection) -> bool:
    """Whether a sync's selection is checked against its source first: it names
    something, and the sync can run at all (else the sync's own error is clearer)."""
    return not selection.is_full and source.name != destination.name \
        and not (source.is_remote and destination.is_remote)


def sync_sites(source: SiteDefinition, destination: SiteDefinition, options: SyncOptions, *,
               sites: list[SiteDefinition] | None = None,
               progress: Progress | None = None) -> Report:
    """:func:`sync` between site definitions already loaded."""
    if source.is_daf_butler or destination.is_daf_butler:
        return _sync_daf_butler(source, destination, options, progress)
    if destination.is_remote:
        return push(source, destination, options, progress=progress)
    return pull(source, destination, options, sites=sites or [], progress=progress)


def export(source: str, output: str | os.PathLike, *, since: int, selection: Selection,
           with_files: str | os.PathLike | None = None,
           sites_dir: SitesDir = None) -> ExportResult:
    """``fed export``: SOURCE's journal after ``since`` (0: a snapshot) into a bundle file.

    A snapshot of a selection whose globs match nothing is refused; one that
    carries no dataset says so in a note.
    """
    site = load_site(source, sites_dir)
    with open_site(site) as butler:
        if since == 0:
            refuse_unmatched(site.name, butler, selection, "nothing was exported")
        result = export_bundle(site, output, since=since, selection=selection,
                               with_files=with_files, butler=butler)
    if since == 0:
        result.notes += note_if_empty(site.name, selection, result.counts["dataset"])
    return result


def import_(bundle: str | os.PathLike, destination: str, options: SyncOptions, *,
            files_from: str | os.PathLike | None = None, sites_dir: SitesDir = None,
            progress: Progress | None = None) -> Report:
    """``fed import``: a bundle applied to DESTINATION as a sync would apply it."""
    return import_bundle(bundle, load_site(destination, sites_dir), options,
                         files_from=files_from, sites=list_sites(sites_dir), progress=progress)


def bundle_show(path: str | os.PathLike) -> BundleSummary:
    """``fed bundle show``: a bundle's header, contents and integrity."""
    return inspect(path)


def bundle_records(path: str | os.PathLike) -> Iterator[bytes]:
    """``fed bundle show --records``: the bundle's record lines, as written."""
    with Bundle(path) as bundle:
        yield from bundle.records()


def publish_site(name: str, *, lock_timeout: float = 60.0,
                 sites_dir: SitesDir = None) -> PublishResult:
    """``fed publish``: NAME's new journal entries as a bundle in its outbox."""
    return publish(load_site(name, sites_dir), lock_timeout=lock_timeout)


def receive_site(name: str, options: SyncOptions, *,
                 sites_dir: SitesDir = None) -> list[tuple[str, Report]]:
    """``fed receive``: the bundles pushed into NAME's inbox, oldest first; releases that
    arrived are verified here (a site holds a release once it verified it)."""
    site = load_site(name, sites_dir)
    results = receive(site, options, sites=list_sites(sites_dir))
    arrived = [report for _, report in results if report.counts.get("release insert")]
    if arrived and not options.dry_run:
        with open_site(site) as butler:
            releases = butler.registry.releases
            arrived[-1].verified += [verify_release(butler, release, jobs=options.jobs).check
                                     for release in releases.names()
                                     if releases.last_check(release) is None]
    return results


@dataclass(frozen=True)
class SiteLog:
    """The log of one site's repository, or why it could not be read."""

    site: str
    entries: list[LogEntry]
    error: str | None = None


def log(site: str | None = None, *, since: float | None = None, limit: int | None = None,
        sites_dir: SitesDir = None) -> list[SiteLog]:
    """``fed log``: the sync log of one site, or of every site run on this machine."""
    if site is not None:
        definitions = [load_site(site, sites_dir)]
        if definitions[0].is_remote:
            raise ConfigError(f"site {site} is reached over {definitions[0].transport}: its log "
                              "is kept where its registry is")
    else:
        definitions = [s for s in list_sites(sites_dir) if not s.is_remote]
    found = []
    for definition in definitions:
        try:
            with open_site(definition) as butler:
                entries = butler.registry.log.entries(since=since, limit=limit)
        except FederationError as exc:
            if site is not None:
                raise
            found.append(SiteLog(definition.name, [], str(exc)))
            continue
        found.append(SiteLog(definition.name, entries))
    return found


def parse_since_time(value: str, now: Callable[[], float] = time.time) -> float:
    """``--since``: an ISO date/time, or a duration back from now (``30m``, ``12h``, ``7d``)."""
    text = value.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return now() - float(text[:-1]) * units[text[-1]]
    try:
        return to_ns(text, default=0) / 1e9
    except (FederationError, ValueError):
        raise InputError(f"--since {value!r}: give a date/time (2026-12-01, "
                         "2026-12-01T12:00) or a duration back from now (30m, 12h, 7d)") from None


__all__ = ["SiteLog", "bundle_show", "export", "import_", "log", "parse_since_time",
           "publish_site", "receive_site", "sync", "sync_sites"]

