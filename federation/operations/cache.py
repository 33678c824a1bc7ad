"""The shared cache as operations: open a Butler that reads through, status, evict, fetch.

A repository whose ``cache:`` block says ``pull_through: true``
(:class:`~federation.cache.config.CacheConfig`) is opened by :func:`open_butler` with a
:class:`~federation.cache.pull.PullThrough` attached: its reads of datasets held at
other sites fetch their files. Under a ``size_limit``, room is made before each fetch
by evicting the least recently read cache entries, and only through ``fed drop``
(:func:`federation.operations.drop.drop`, its datasets named one by one): a file goes
only where another site holds a verified copy now (and as many as a policy's flow
asks for), its record stays, held at that site, and a later read fetches it again.
Files that are not cache entries (synced here with files, written here) are never
evicted. ``fed cache evict`` evicts the same way down to a size.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.butler import Butler
from federation.cache.config import CacheConfig, format_size
from federation.cache.pull import PullThrough
from federation.errors import DatastoreError, InputError
from federation.model import DatasetRef
from federation.operations.drop import Candidate, DropRequest, drop
from federation.registry.cache import CacheEntries, CacheEntry, CacheTotals


def open_butler(repo: str | os.PathLike, *, collections: str | Sequence[str] | None = None,
                run: str | None = None, config: CacheConfig | None = None) -> Butler:
    """A Butler on ``repo`` that reads files held elsewhere through, as its ``cache:``
    block (or ``config``) says; a plain Butler when pull-through is off."""
    config = config or CacheConfig.load(repo)
    if not config.pull_through:
        return Butler(repo, collections=collections, run=run)
    files = PullThrough(config, make_room=lambda butler, nbytes: make_room(butler, config,
                                                                           nbytes))
    return Butler(repo, collections=collections, run=run, files=files)


# -- eviction -----------------------------------------------------------------------------


@dataclass
class Eviction:
    """Cache entries evicted (on a dry run: that would be) and kept, least recent first.

    ``kept``: entries the drop kept (no verified copy elsewhere, or fewer than a policy
    asks for), with what it found; ``unreachable``: sites that could not be checked.
    """

    site: str
    target: int
    used: int  # bytes of cache entries before
    dry_run: bool = False
    evicted: list[CacheEntry] = field(default_factory=list)
    kept: list[Candidate] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)
    datasets: dict[uuid.UUID, DatasetRef] = field(default_factory=dict)  # of the evicted

    @property
    def freed(self) -> int:
        return sum(e.size for e in self.evicted)

    @property
    def left(self) -> int:
        """Bytes of cache entries after the eviction."""
        return self.used - self.freed


def evict_to(butler: Butler, target: int, *, sites_dir: str | os.PathLike | None = None,
             dry_run: bool = False, wait: float = 60.0,
             progress: Callable[[int], None] | None = None) -> Eviction:
    """Evict least-recently-read cache entries of ``butler``'s repository until they
    take at most ``target`` bytes, each through the drop's rule."""
    entries = CacheEntries(butler.registry.db)
    if not dry_run:
        entries.prune()
    result = Eviction(butler.site, target, entries.totals().bytes, dry_run)
    queue = entries.least_recent() if result.used > target else []
    while result.left > target and queue:
        batch = _batch(queue, result.left - target)
        del queue[:len(batch)]
        dropped = drop(DropRequest(butler.site, ids=tuple(e.dataset_id for e in batch),
                                   dry_run=dry_run, wait=wait), sites_dir=sites_dir,
                       progress=progress)
        gone = {c.ref.id for c in dropped.dropped}
        result.evicted += [e for e in batch if e.dataset_id in gone]
        result.kept += dropped.kept
        result.unreachable |= dropped.unreachable
        if not dry_run:
            entries.forget(gone)
    result.datasets = butler.registry.datasets.get_many(e.dataset_id for e in result.evicted)
    return result


def make_room(butler: Butler, config: CacheConfig, incoming: int) -> None:
    """Evict until ``incoming`` more bytes fit under the size limit, or say why not."""
    limit = config.size_limit
    if limit is None:
        return
    if incoming > limit:
        raise DatastoreError(
            f"a file of {format_size(incoming)} does not fit in the cache of {butler.site} "
            f"(size limit {format_size(limit)}); raise it with fed cache configure "
            f"{butler.datastore.root} --size-limit SIZE")
    result = evict_to(butler, limit - incoming, sites_dir=config.sites, wait=config.wait)
    if result.left > limit - incoming:
        raise DatastoreError(
            f"no room for {format_size(incoming)} in the cache of {butler.site}: "
            f"{format_size(result.left)} of its {format_size(limit)} are files no other "
            "site holds verified now, so they are not evicted (fed cache status "
            f"{butler.datastore.root} --check shows them); raise the limit or sync them "
            "elsewhere")


# -- fed cache status / evict / fetch -----------------------------------------------------


@dataclass
class CacheStatus:
    """What a repository's cache holds; ``eviction``: with ``check``, a dry-run eviction
    of every entry (which are evictable now)."""

    site: str
    config: CacheConfig
    totals: CacheTotals
    least_recent: list[CacheEntry]
    eviction: Eviction | None = None
    datasets: dict[uuid.UUID, DatasetRef] = field(default_factory=dict)  # of least_recent


def cache_status(repo: str | os.PathLike, *, check: bool = False, show: int = 10,
                 sites_dir: str | os.PathLike | None = None,
                 progress: Callable[[int], None] | None = None) -> CacheStatus:
    """Size used and limit, counts, read times; ``check``: verify which entries could be
    evicted now (reads every other site's copy, as ``fed drop --dry-run``)."""
    config = CacheConfig.load(repo)
    with Butler(repo) as butler:
        entries = CacheEntries(butler.registry.db)
        status = CacheStatus(butler.site, config, entries.totals(),
                             entries.least_recent(limit=show))
        status.datasets = butler.registry.datasets.get_many(
            e.dataset_id for e in status.least_recent)
        if check:
            status.eviction = evict_to(butler, 0, sites_dir=sites_dir or config.sites,
                                       dry_run=True, progress=progress)
    return status


def evict(repo: str | os.PathLike, *, to: int | None = None, dry_run: bool = False,
          sites_dir: str | os.PathLike | None = None, wait: float = 60.0,
          progress: Callable[[int], None] | None = None) -> Eviction:
    """Evict down to ``to`` bytes (default: the size limit) through the drop's rule."""
    config = CacheConfig.load(repo)
    target = to if to is not None else config.size_limit
    if target is None:
        raise InputError(f"the cache of {Path(repo)} has no size limit: give --to SIZE "
                         "(--to 0 evicts every file another site holds)")
    with Butler(repo) as butler:
        return evict_to(butler, target, sites_dir=sites_dir or config.sites,
                        dry_run=dry_run, wait=wait, progress=progress)


@dataclass
class Fetched:
    """Datasets read through (their files fetched now) and those already here."""

    site: str
    fetched: list[tuple[DatasetRef, str]] = field(default_factory=list)
    here: int = 0


def fetch(repo: str | os.PathLike, dataset_types: Sequence[str] | None,
          collections: Sequence[str], *, where: str | None = None,
          bind: Mapping[str, Any] | None = None,
          progress: Callable[[int], None] | None = None) -> Fetched:
    """Read the selected datasets' files through the cache (as ``Butler.get_uri`` does),
    fetching those held at other sites; the first error stops."""
    config = CacheConfig.load(repo)
    if not config.pull_through:
        raise InputError(f"pull-through reads are off in {Path(repo)}: turn them on with "
                         f"fed cache configure {repo} --pull-through")
    with open_butler(repo, config=config) as butler:
        result = Fetched(butler.site)
        refs = butler.query_datasets(list(dataset_types) if dataset_types else None,
                                     list(collections), where=where, bind=bind)
        for ref in refs:
            found = butler.registry.datasets.file(ref.id)
            if found is not None and found[1] is not None:
                result.fetched.append((ref, butler.get_uri(ref)))
            elif found is not None:
                result.here += 1
            if progress is not None:
                progress(1)
    return result


def _batch(candidates: Sequence[CacheEntry], excess: int) -> list[CacheEntry]:
    """The least recent entries whose sizes add up to ``excess`` (all if too few)."""
    batch, total = [], 0
    for entry in candidates:
        if total >= excess:
            break
        batch.append(entry)
        total += entry.size
    return batch
