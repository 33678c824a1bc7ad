"""Pull-through reads: a dataset whose file is held at another site is fetched on read.

:class:`PullThrough` is the Butler's :class:`~federation.butler.FileSource`. When
``Butler.get`` (or ``get_uri``) meets a record saying "held at site X", the file is
fetched from X through X's transport (its site definition), by the sync core's
:class:`~federation.sync.fetcher.Fetcher`: into staging, size and xxh3-128 checked
against this repository's record, renamed into its usual place. The record then
says "here" (and the dataset becomes a cache entry, :mod:`federation.registry.cache`)
in the transaction that renamed the file, so the registry never names a file that is
not there. The next read is local. When X cannot be reached (or does not hold a good
copy), the other sites of the sites directory are asked; when none has it, the error
names the site holding it and why it could not be read.

Readers in several processes: a lock per file (one of 256 lock files under
``.federation-cache/`` in the datastore, by dataset ID) lets one of them fetch while
the others wait, then read the file it brought. With a size limit, fetches take turns
(``space.lock``): room is made by evicting least-recently-read entries (the caller's
``make_room``, which goes through ``fed drop``'s rule) and the file is placed before
the next fetch decides, so concurrent readers never overshoot the limit. Waits are
bounded by the configuration's ``wait``.
"""

from __future__ import annotations

import contextlib
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from federation.butler import Butler
from federation.cache.config import CacheConfig
from federation.errors import DatastoreError, FederationError, MissingDatasetError
from federation.model import DatasetRef, StoredFile
from federation.registry.cache import TOUCH_EVERY, CacheEntries
from federation.registry.database import Database
from federation.registry.states import DatasetState, FileInfo
from federation.sites import SiteDefinition, list_sites, sites_dir
from federation.sync.fetcher import Downloaded, Fetcher
from federation.sync.site_access import file_lock, open_site
from federation.transport.base import MissingFileError, Transport, TransportError
from federation.transport.renamed import RenamedTransport

CACHE_DIR = ".federation-cache"
STRIPES = 256  # lock files for per-file locks: bounded, whatever the number of datasets
#: ``make_room(butler, nbytes)``: free room for ``nbytes`` more under the size limit
MakeRoom = Callable[[Butler, int], None]


@dataclass(frozen=True)
class Attempt:
    """Why one site did not give the file."""

    site: str
    why: str
    reached: bool  # False: the site could not be reached at all


class _NotHeld(Exception):
    """The site holds no good copy (its registry says so)."""


@dataclass
class PullThrough:
    """Fetches files held at other sites on read; notes reads of the cache's files."""

    config: CacheConfig
    make_room: MakeRoom | None = None
    clock: Callable[[], float] = time.time
    _entries: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)
    _noted: dict[uuid.UUID, float] = field(default_factory=dict)

    # -- the Butler's FileSource -----------------------------------------------------

    def bring(self, butler: Butler, ref: DatasetRef, held_at: str) -> StoredFile:
        """The dataset's file here: fetched now, or by another reader meanwhile."""
        if not self.config.pull_through:
            raise MissingDatasetError(
                f"{ref} is held at site {held_at!r}; its file is not in this repository "
                "(sync it with files, or enable pull-through reads: fed cache configure "
                f"{butler.datastore.root} --pull-through)")
        root = butler.datastore.root
        with self._lock(root, f"files-{ref.id.int % STRIPES:03d}.lock",
                        f"another reader is fetching the file of {ref}"):
            found = butler.registry.datasets.file(ref.id)
            if found is None:
                raise MissingDatasetError(f"{ref} has no file in this repository")
            stored, held_at_now = found
            if held_at_now is None:  # another reader brought it while this one waited
                self.note_read(butler, ref)
                return stored
            limited = self.config.size_limit is not None
            with self._lock(root, "space.lock", "another reader is making room in the cache") \
                    if limited else contextlib.nullcontext():
                if limited and self.make_room is not None:
                    self.make_room(butler, stored.size)
                return self._fetch(butler, ref, stored, held_at_now)

    def note_read(self, butler: Butler, ref: DatasetRef) -> None:
        """Note the read time of a cache entry: at most once a minute per dataset."""
        now = self.clock()
        last = self._noted.get(ref.id)
        if last is not None and now - last < TOUCH_EVERY:
            return
        if len(self._noted) > 100_000:
            self._noted.clear()
        self._noted[ref.id] = now
        self.entries(butler.registry.db).touch(ref.id, now)

    def entries(self, db: Database) -> CacheEntries:
        found = self._entries.get(db)
        if found is None:
            found = self._entries[db] = CacheEntries(db)
        return found

    # -- fetching --------------------------------------------------------------------

    def _fetch(self, butler: Butler, ref: DatasetRef, stored: StoredFile, held_at: str
               ) -> StoredFile:
        attempts: list[Attempt] = []
        for site in self._sources(butler, held_at, attempts):
            outcome = _download(butler, ref, stored, site)
            if isinstance(outcome, Attempt):
                attempts.append(outcome)
                continue
            fetcher, downloaded = outcome
            return self._place(butler, ref, stored, site.name, fetcher, downloaded)
        raise MissingDatasetError(_failure(ref, held_at, attempts))

    def _place(self, butler: Butler, ref: DatasetRef, stored: StoredFile, source: str,
               fetcher: Fetcher, downloaded: Downloaded) -> StoredFile:
        """Rename the verified download into place and mark the file here, together."""
        staged = downloaded.staged[str(ref.id)]
        with butler.registry.transaction():
            if not self.entries(butler.registry.db).attach(ref.id, stored, staged.relative,
                                                           source, self.clock()):
                if staged.temp is not None:
                    staged.temp.unlink(missing_ok=True)
                raise MissingDatasetError(
                    f"{ref}: its record changed while its file was fetched from {source} "
                    "(removed, or brought here by a sync); read it again")
            placed = fetcher.place(downloaded)
            if placed.failed:
                _, why = placed.failed[str(ref.id)]
                raise DatastoreError(f"cannot put the file of {ref} fetched from {source} "
                                     f"into place at {staged.relative}: {why}")
        return StoredFile(staged.relative, stored.formatter, stored.size, stored.checksum)

    def _sources(self, butler: Butler, held_at: str, attempts: list[Attempt]
                 ) -> Iterator[SiteDefinition]:
        """The site holding the file, then every other site that might hold a copy."""
        sites = list_sites(self.config.sites)
        by_name = {s.name: s for s in sites}
        if held_at in by_name:
            yield by_name[held_at]
        else:
            attempts.append(Attempt(held_at, f"site {held_at} is not defined in "
                                             f"{sites_dir(self.config.sites)}", False))
        for site in sites:
            if site.name not in (held_at, butler.site) and not site.is_daf_butler:
                yield site

    @contextlib.contextmanager
    def _lock(self, root: Path, name: str, busy: str) -> Iterator[None]:
        folder = root / CACHE_DIR
        folder.mkdir(exist_ok=True)
        wait = self.config.wait
        with file_lock(folder / name, wait, lambda holder: DatastoreError(
                f"{busy} ({holder}); waited {wait:.0f} s, try again later")):
            yield


def _download(butler: Butler, ref: DatasetRef, stored: StoredFile, site: SiteDefinition
              ) -> tuple[Fetcher, Downloaded] | Attempt:
    """The file from ``site`` in staging, verified; or why not."""
    try:
        transport = _open(site, ref.id, stored)
    except _NotHeld as exc:
        return Attempt(site.name, str(exc), True)
    except (FederationError, sa.exc.SQLAlchemyError, OSError) as exc:
        return Attempt(site.name, _first_line(exc), False)
    state = DatasetState(str(ref.id), ref.dataset_type.name, ref.run, {},
                         FileInfo(stored.path, stored.formatter, stored.size, stored.checksum))
    try:
        fetcher = Fetcher(butler.datastore, transport, site.name)
        downloaded = fetcher.download([state])
    except MissingFileError:
        return Attempt(site.name, "not held (no file at its path there)", True)
    except (TransportError, OSError) as exc:
        return Attempt(site.name, _first_line(exc), False)
    finally:
        transport.close()
    if state.id in downloaded.failed:
        return Attempt(site.name, downloaded.failed[state.id][1], True)
    return fetcher, downloaded


def _open(site: SiteDefinition, dataset_id: uuid.UUID, stored: StoredFile) -> Transport:
    """A transport to ``site``'s files. A site on this machine is asked only for a file
    its registry holds with our size and checksum, at the path it records."""
    if site.is_remote:
        return site.open_files()
    with open_site(site) as theirs:
        found = theirs.registry.datasets.files_here([dataset_id]).get(dataset_id)
    if found is None:
        raise _NotHeld("not held")
    if (found.stored.size, found.stored.checksum) != (stored.size, stored.checksum):
        raise _NotHeld("its record has another size or checksum")
    return RenamedTransport(site.open_files(), {stored.path: found.stored.path})


def _failure(ref: DatasetRef, held_at: str, attempts: list[Attempt]) -> str:
    """One line: the site holding the file and why it could not be read, then the rest."""
    first = next((a for a in attempts if a.site == held_at), None)
    if first is None:
        head = f"its file is held at site {held_at}"
    elif first.reached:
        head = f"its file is held at site {held_at}, which did not give a good copy ({first.why})"
    else:
        head = f"its file is held at site {held_at}, which could not be reached ({first.why})"
    others = [f"{a.site}: {a.why}" for a in attempts if a is not first]
    tail = f"; no other site gave it ({'; '.join(others)})" if others else ""
    return f"cannot read {ref}: {head}{tail}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
