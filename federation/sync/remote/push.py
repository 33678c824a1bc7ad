"""Pushing to a site reached over SFTP, whose registry we cannot write.

``fed sync LOCAL REMOTE`` exports a bundle of LOCAL's journal since the last
push (the pusher keeps that cursor), uploads the files it lists and then the
bundle into REMOTE's inbox. On REMOTE, ``fed receive REMOTE`` imports the
inbox's bundles in order, verifying every file, and moves each one to
``inbox/done`` once applied. A bundle is uploaded last, under its final name
by an atomic rename, so a receiver never sees one whose files are not there.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from federation.errors import ConfigError
from federation.registry.cursors import Cursor
from federation.sites import SiteDefinition
from federation.sync.bundle.export import export_bundle
from federation.sync.bundle.format import ManifestEntry
from federation.sync.bundle.importer import import_into
from federation.sync.logbook import logged
from federation.sync.options import SyncOptions
from federation.sync.progress import Progress
from federation.sync.report import Report
from federation.sync.site_access import open_site, sync_lock
from federation.transport.base import Transport

PUSHED = ".federation-pushed"  # the pusher's lock folder


def push(source: SiteDefinition, destination: SiteDefinition, options: SyncOptions, *,
         progress: Progress | None = None) -> Report:
    """Upload ``source``'s changes for a selection into ``destination``'s inbox."""
    if source.is_remote:
        raise ConfigError(f"both {source.name} and {destination.name} are remote: run the sync "
                          f"on a machine that runs one of them")
    if not destination.kind.writable:
        raise ConfigError(f"site {destination.name} is published read-only over "
                          f"{destination.transport}: nothing can be pushed to it")
    progress = progress or Progress()
    selection = options.selection
    state_dir = source.root / PUSHED
    state_dir.mkdir(exist_ok=True)
    with open_site(source) as src, \
            sync_lock(state_dir, f"{source.name} -> {destination.name}", options.lock_timeout):
        cursors = src.registry.cursors
        found = cursors.get("push", destination.name, selection.key)
        since = found.last_seq if found is not None else 0
        report = Report(cursor=since)
        if src.registry.db.last_seq() <= since:
            return report
        with tempfile.TemporaryDirectory(prefix="fed-push-") as work:
            bundle = Path(work) / "push.bundle"
            result = export_bundle(source, bundle, since=since, selection=selection, butler=src)
            upto = result.header.to_seq
            for kind, n in result.counts.items():
                report.counts[f"{kind} push"] += n
            report.cursor = upto
            if options.dry_run:
                report.files, report.bytes = result.files, result.bytes
                return report
            stem = f"{source.name}-{since + 1:012d}-{upto:012d}-{selection.key[:8]}"
            with logged(src, "push", source.name, destination.name, selection=selection,
                        cursor_from=since) as record:
                inbox = destination.open_files("inbox")
                try:
                    progress.planned(result.files, result.bytes)
                    _upload_files(inbox, src.datastore.root, result.manifest, f"{stem}.files",
                                  options.jobs or inbox.parallel, progress, report)
                    inbox.put(bundle, f"{stem}.bundle")
                finally:
                    inbox.close()
                cursors.save(Cursor("push", destination.name, selection.key, upto,
                                    selection.to_dict()))
                record.report = report
        return report


def _upload_files(inbox: Transport, root: Path, manifest: Sequence[tuple[ManifestEntry, str]],
                  folder: str, jobs: int, progress: Progress, report: Report) -> None:
    def one(item: tuple[ManifestEntry, str]) -> int:
        entry, original = item
        target = f"{folder}/{entry.path}"
        there = inbox.stat(target)
        if there is None or there.size != entry.size:  # else an earlier push sent it
            inbox.put(root / original if not Path(original).is_absolute() else Path(original),
                      target)
        progress.advance(1, entry.size)
        return entry.size

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for size in pool.map(one, manifest):
            report.files += 1
            report.bytes += size


def receive(site: SiteDefinition, options: SyncOptions, *,
            sites: Sequence[SiteDefinition] = ()) -> list[tuple[str, Report]]:
    """Import the bundles pushed into ``site``'s inbox, oldest first."""
    if site.is_remote:
        raise ConfigError(f"site {site.name} is reached over {site.transport}: receive on the "
                          "machine that runs its registry")
    inbox = site.inbox
    if inbox is None or not inbox.is_dir():
        return []
    done = inbox / "done"
    results = []
    with open_site(site) as dst, sync_lock(dst.config.root, site.name, options.lock_timeout):
        for bundle in sorted(inbox.glob("*.bundle")):
            files = inbox / f"{bundle.stem}.files"
            report = import_into(bundle, dst, options,
                                 files_from=files if files.is_dir() else None, sites=sites,
                                 keep_deleted=site.keep_deleted, operation="receive")
            done.mkdir(exist_ok=True)
            bundle.replace(done / bundle.name)
            shutil.rmtree(files, ignore_errors=True)
            results.append((bundle.name, report))
    return results


__all__ = ["push", "receive"]
