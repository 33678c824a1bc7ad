"""What each site says about itself, read in one short visit per site (a *probe*), and
how much of a source's journal lies after given cursors.

A site on this machine is read through its registry; a site reached over SFTP or HTTP
through what it published: its outbox index (its journal head) and a records-only
mirror of its outbox (its releases and collections). A remote site is asked with one
try per request and a request timeout no longer than the status deadline, so that an
unreachable one is known as such quickly.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from federation.butler import Butler
from federation.errors import ReleaseError
from federation.registry.cursors import Cursor
from federation.registry.lag import JournalTail, LatestRun, StatusReads
from federation.registry.releases import ReleaseCheck, ReleaseInfo
from federation.registry.sync_log import LogEntry
from federation.sites import SiteDefinition
from federation.sync.reader import SourceReader
from federation.sync.remote.mirror import MIRRORS
from federation.sync.remote.outbox import PUBLISHED, fetch_index
from federation.sync.selection import Selection
from federation.sync.site_access import open_site
from federation.transport.retry import RetryPolicy

#: where a remote site's records-only mirror is kept and brought up to date (a path)
Publisher = Callable[[SiteDefinition], Path]


@dataclass
class SiteProbe:
    """One site's answer. Cursors and retries are keyed by (peer site, selection key)."""

    site: SiteDefinition
    head: int = 0
    last_change: float | None = None
    collections: frozenset[str] = frozenset()
    releases: dict[str, tuple[ReleaseInfo, ReleaseCheck | None]] = field(default_factory=dict)
    pulls: dict[tuple[str, str], Cursor] = field(default_factory=dict)
    pushes: dict[tuple[str, str], Cursor] = field(default_factory=dict)
    retries: dict[tuple[str, str], int] = field(default_factory=dict)
    runs: list[LatestRun] = field(default_factory=list)
    recent: list[LogEntry] = field(default_factory=list)
    #: pulls from remote sources: entries their mirror here holds but the cursor has not
    #: reached, and the published entry the mirror has reached
    mirror_tails: dict[tuple[str, str], JournalTail] = field(default_factory=dict)
    mirrored: dict[str, int] = field(default_factory=dict)
    note: str = ""
    elapsed: float = 0.0


def quick(site: SiteDefinition, timeout: float) -> SiteDefinition:
    """``site`` asked once per request, within ``timeout`` seconds (a remote site)."""
    files = site.files
    if not hasattr(files, "retry") or not hasattr(files, "timeout"):
        return site
    hurried = dataclasses.replace(files, timeout=min(files.timeout, timeout),
                                  retry=RetryPolicy(attempts=1, deadline=timeout))
    return dataclasses.replace(site, files=hurried)


def probe(site: SiteDefinition, remote_sources: frozenset[str], publisher: Publisher,
          log_limit: int = 0) -> SiteProbe:
    """Read what ``site`` says: its journal head, releases, collections, cursors,
    retries and sync log (``log_limit`` latest entries too). Raises if it cannot be
    read (a site down, a repository missing)."""
    started = time.monotonic()
    if site.is_remote:
        found = _probe_published(site, publisher)
    else:
        with open_site(site) as butler:
            found = _probe_local(site, butler, remote_sources, log_limit)
    found.elapsed = time.monotonic() - started
    return found


def _probe_local(site: SiteDefinition, butler: Butler, remote_sources: frozenset[str],
                 log_limit: int) -> SiteProbe:
    registry = butler.registry
    reads = StatusReads(registry.db)
    found = SiteProbe(site, head=registry.db.last_seq())
    found.last_change = reads.written_at(found.head) if found.head else None
    _read_contents(found, butler)
    for cursor in registry.cursors.all():
        if cursor.kind == "pull":
            found.pulls[cursor.peer, cursor.selection_key] = cursor
        elif cursor.kind == "push":
            found.pushes[cursor.peer, cursor.selection_key] = cursor
    found.retries = reads.retry_counts()
    found.runs = reads.latest_runs()
    if log_limit:
        found.recent = registry.log.entries(limit=log_limit)
    for source in remote_sources:
        _read_mirror(found, butler.config.root / MIRRORS / source, source)
    return found


def _read_contents(found: SiteProbe, butler: Butler) -> None:
    """Its collections and releases (each with this site's latest verification)."""
    releases = butler.registry.releases
    found.collections = frozenset(c.name for c in butler.registry.collections.query())
    for name in releases.names():
        info = releases.get(name)  # with this registry's own site's latest check
        found.releases[name] = (info, info.check if releases.site == found.site.name
                                else releases.last_check(name, found.site.name))


def _read_mirror(found: SiteProbe, path: Path, source: str) -> None:
    """How far this site's mirror of a remote source has come, and which of its entries
    each cursor here has not applied yet."""
    if not (path / "federation.yaml").is_file():
        return
    with Butler(path) as mirror:
        cursor = mirror.registry.cursors.get("pull", source, PUBLISHED.key)
        found.mirrored[source] = cursor.last_seq if cursor is not None else 0
        reads = StatusReads(mirror.registry.db)
        for (peer, key), pulled in found.pulls.items():
            if peer == source:
                found.mirror_tails[peer, key] = reads.tail(pulled.last_seq, found.site.name)


def _probe_published(site: SiteDefinition, publisher: Publisher) -> SiteProbe:
    """A remote site, from what it published (its mirror brought up to date first). One
    that has published nothing yet answers with nothing (one pushed to, say)."""
    outbox = site.open_files("outbox")
    try:
        if fetch_index(outbox, site.name) is None:
            return SiteProbe(site, note=f"has published nothing yet at {outbox.describe()}")
    finally:
        outbox.close()
    path = publisher(site)
    with Butler(path) as mirror:
        cursor = mirror.registry.cursors.get("pull", site.name, PUBLISHED.key)
        found = SiteProbe(site, head=cursor.last_seq if cursor is not None else 0)
        _read_contents(found, mirror)
    return found


def journal_tails(site: SiteDefinition, wanted: set[tuple[int, str, str]],
                  selections: dict[str, Selection]) -> dict[tuple[int, str, str], JournalTail]:
    """For each (cursor, destination, selection key) wanted: the entries of ``site``'s
    journal after the cursor that the selection carries (as a sync would read them),
    leaving out the destination's own changes."""
    found = {}
    with open_site(site) as butler:
        for after, destination, key in wanted:
            selection = selections.get(key)
            if selection is None:
                tail = StatusReads(butler.registry.db).tail(after, destination)
            else:
                reader = SourceReader(butler.registry, selection)
                try:
                    with reader.window() as upto:
                        count, oldest = reader.pending(after, upto, destination)
                except ReleaseError:  # the release is not there yet: nothing to carry
                    count, oldest = 0, None
                tail = JournalTail(count, oldest)
            found[after, destination, key] = tail
    return found
