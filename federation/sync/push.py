"""Pushing to a site reached over SFTP, whose registry we cannot write.

``fed sync LOCAL REMOTE`` exports a bundle of LOCAL's journal since the last
push (the pusher keeps that cursor), uploads the files it lists and then the
bundle into REMOTE's inbox. On REMOTE, ``fed receive REMOTE`` imports the
inbox's bundles in order, verifying every file, and moves each one to
``inbox/done`` once applied. A bundle is uploaded last, under its final name
by an atomic rename, so a receiver never sees one whose files are not there.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from federation.errors import ConfigError
from federation.sites import SiteDefinition
from federation.sync.bundle import export_bundle, import_bundle
from federation.sync.engine import SyncOptions, open_site, sync_lock
from federation.sync.outbox import write_atomically
from federation.sync.progress import Progress
from federation.sync.report import Report
from federation.transport.factory import transport_for

PUSHED = ".federation-pushed"


def push(source: SiteDefinition, destination: SiteDefinition, options: SyncOptions, *,
         progress: Progress | None = None) -> Report:
    """Upload ``source``'s changes for a selection into ``destination``'s inbox."""
    if source.is_remote:
        raise ConfigError(f"both {source.name} and {destination.name} are remote: run the sync "
                          f"on a machine that runs one of them")
    if destination.transport != "sftp":
        raise ConfigError(f"site {destination.name} is published read-only over "
                          f"{destination.transport}: nothing can be pushed to it")
    progress = progress or Progress()
    selection = options.selection
    state_dir = source.root / PUSHED
    state_dir.mkdir(exist_ok=True)
    state_file = state_dir / f"{destination.name}.json"
    with open_site(source) as src, \
            sync_lock(state_dir, f"{source.name} -> {destination.name}", options.lock_timeout):
        pushed = json.loads(state_file.read_text()) if state_file.is_file() else {}
        since = int(pushed.get(selection.key, 0))
        upto = src.registry.db.last_seq()
        report = Report(cursor=since)
        if upto <= since:
            return report
        with tempfile.TemporaryDirectory(prefix="fed-push-") as work:
            stem = f"{source.name}-{since + 1:012d}-{upto:012d}-{selection.key[:8]}"
            bundle = Path(work) / f"{stem}.bundle"
            result = export_bundle(source, bundle, since=since, selection=selection, butler=src)
            for kind, n in result.counts.items():
                report.counts[f"{kind} push"] += n
            report.cursor = result.header.to_seq
            if options.dry_run:
                report.files, report.bytes = result.files, result.bytes
                return report
            inbox = transport_for(destination, "inbox")
            try:
                progress.planned(result.files, result.bytes)
                _upload_files(inbox, src.datastore.root, result.manifest, f"{stem}.files",
                              options.jobs, progress, report)
                inbox.put(bundle, bundle.name)
            finally:
                inbox.close()
        pushed[selection.key] = report.cursor
        write_atomically(state_file, json.dumps(pushed, indent=1).encode())
        return report


def _upload_files(inbox, root: Path, manifest, folder: str, jobs: int, progress: Progress,
                  report: Report) -> None:
    def one(item) -> int:
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


def receive(site: SiteDefinition, *, jobs: int = 4, on_conflict: str = "fail",
            sites=(), lock_timeout: float = 60.0) -> list[tuple[str, Report]]:
    """Import the bundles pushed into ``site``'s inbox, oldest first."""
    if site.is_remote:
        raise ConfigError(f"site {site.name} is reached over {site.transport}: receive on the "
                          "machine that runs its registry")
    inbox = site.inbox
    if inbox is None or not inbox.is_dir():
        return []
    done = inbox / "done"
    results = []
    for bundle in sorted(inbox.glob("*.bundle")):
        files = inbox / f"{bundle.stem}.files"
        report = import_bundle(bundle, site, files_from=files if files.is_dir() else None,
                               on_conflict=on_conflict, jobs=jobs, sites=sites,
                               lock_timeout=lock_timeout)
        done.mkdir(exist_ok=True)
        bundle.replace(done / bundle.name)
        shutil.rmtree(files, ignore_errors=True)
        results.append((bundle.name, report))
    return results


__all__ = ["push", "receive"]
