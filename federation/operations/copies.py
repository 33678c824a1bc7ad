"""Copies of datasets at other sites, verified now.

A copy counts only when it is verified against this site's record of the file
(size and xxh3-128 checksum):

* at a site on this machine, its registry must hold the dataset's file (not
  held elsewhere) with the same size and checksum, and its file must be there
  with that size; it is then hashed, unless a complete verification of a release
  holding the dataset, recorded there after the dataset arrived there, vouches
  for it;
* at a site reached over SFTP or HTTP, the file at the same relative path (a
  synced dataset keeps its path) is read through the transport: its size, then
  its bytes, hashed as they arrive and never more than the record's size.

Copies that are one file on disk (a hard link, the same path ingested in place,
a symlink) are one copy: each local copy carries its (device, inode), and a copy
that is this site's own file does not count at all. A site that cannot be
reached holds nothing, and says why.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from federation.butler import Butler
from federation.datastore.checksum import mismatch, regular_file_checksum
from federation.errors import FederationError
from federation.model import StoredFile
from federation.registry.datasets import LocalFile
from federation.registry.releases import ReleaseCheck
from federation.sites import SiteDefinition
from federation.sync.site_access import open_site
from federation.transport.base import (
    MissingFileError,
    Transport,
    TransportError,
    check_relative,
)

Advance = Callable[[int], None]
#: what a copy is stored on: ("file", device, inode) on this machine, ("site", NAME) over a
#: network; copies on one storage count once
Storage = tuple
NOT_HELD = "not held"
SAME_FILE = "the same file as ours (a hard link, a symlink or the same path)"


@dataclass(frozen=True)
class Wanted:
    """A file of this site whose copies are looked for: its record, and the storage of
    the file itself (None when it is not there)."""

    dataset_id: uuid.UUID
    stored: StoredFile
    storage: Storage | None


@dataclass(frozen=True)
class Copy:
    """What one site holds of one dataset: a verified copy (``how`` it was verified), or
    why it does not count. ``fingerprint``: a local copy's (device, inode, size, mtime)
    when it was verified, to see that it is unchanged when the drop commits."""

    site: str
    verified: bool
    how: str
    storage: Storage = ()
    fingerprint: tuple = ()


@dataclass
class SiteCopies:
    """One site's copies of the wanted files, by dataset; ``unreachable``: why the site (or
    the rest of it) could not be checked."""

    site: str
    copies: dict[uuid.UUID, Copy] = field(default_factory=dict)
    unreachable: str | None = None


def storage_of(path: Path) -> Storage | None:
    """The (device, inode) of a file, following links; None if it is not there."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return ("file", info.st_dev, info.st_ino)


def check_site(site: SiteDefinition, wanted: Sequence[Wanted], advance: Advance) -> SiteCopies:
    """The copies ``site`` holds of the wanted files; ``advance(n)`` as files are checked."""
    if site.is_remote:
        return _check_remote(site, wanted, advance)
    return _check_local(site, wanted, advance)


def _check_local(site: SiteDefinition, wanted: Sequence[Wanted], advance: Advance
                 ) -> SiteCopies:
    try:
        butler = open_site(site)
    except (FederationError, sa.exc.SQLAlchemyError, OSError) as exc:
        advance(len(wanted))
        return SiteCopies(site.name, unreachable=_first_line(exc))
    found = SiteCopies(site.name)
    with butler:
        theirs = butler.registry.datasets.files_here(w.dataset_id for w in wanted)
        checks = release_checks(butler, list(theirs))
        for want in wanted:
            found.copies[want.dataset_id] = _local_copy(
                site.name, butler, want, theirs.get(want.dataset_id),
                checks.get(want.dataset_id))
            advance(1)
    return found


def release_checks(butler: Butler, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, ReleaseCheck]:
    """For datasets of a release this site verified completely (its latest check, on the
    release's own root), that check: it vouches for files that arrived before it."""
    if not ids:
        return {}
    releases = butler.registry.releases
    # One release per dataset: a dataset of two releases where the other one is the
    # verified one is hashed instead, which is slower, never wrong.
    holding = releases.holding(ids)
    complete: dict[str, ReleaseCheck] = {}
    for name in set(holding.values()):
        info = releases.get(name)  # with its latest check here
        if info.check is not None and info.check.complete and info.check.root == info.root:
            complete[name] = info.check
    return {i: complete[name] for i, name in holding.items() if name in complete}


def _local_copy(site: str, butler: Butler, want: Wanted, theirs: LocalFile | None,
                check: ReleaseCheck | None) -> Copy:
    if theirs is None:
        return Copy(site, False, NOT_HELD)
    ours = want.stored
    if (theirs.stored.size, theirs.stored.checksum) != (ours.size, ours.checksum):
        return Copy(site, False, "its record has another size or checksum")
    try:
        path = butler.datastore.path_of(theirs.stored)
        info = os.stat(path)
    except FileNotFoundError:
        return Copy(site, False, "its file is missing")
    except (OSError, FederationError) as exc:
        return Copy(site, False, f"its file cannot be read ({_first_line(exc)})")
    if not stat.S_ISREG(info.st_mode):
        return Copy(site, False, "its file is not a regular file")
    storage = ("file", info.st_dev, info.st_ino)
    if storage == want.storage:
        return Copy(site, False, SAME_FILE)
    if info.st_size != ours.size:
        return Copy(site, False, mismatch((info.st_size, ""), (ours.size, ours.checksum)) or "")
    fingerprint = fingerprint_of(info)
    if check is not None and check.checked > theirs.arrived:
        return Copy(site, True, f"release {check.release} verified there {_when(check.checked)}",
                    storage, fingerprint)
    try:
        got = regular_file_checksum(path)
    except (OSError, FederationError) as exc:
        return Copy(site, False, f"its file cannot be read ({_first_line(exc)})")
    problem = mismatch(got, (ours.size, ours.checksum))
    if problem:
        return Copy(site, False, problem)
    return Copy(site, True, "hashed", storage, fingerprint)


def fingerprint_of(info: os.stat_result) -> tuple:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def still_there(site: SiteDefinition, copies: dict[uuid.UUID, Copy]
                ) -> dict[uuid.UUID, Copy]:
    """``copies`` (verified ones at a local site) as they stand now: a copy whose record
    is no longer a file there with the same storage, size and time no longer counts.
    Called under the site's sync lock, when the drop commits."""
    changed = "changed at the site while the drop was checking it"
    try:
        butler = open_site(site)
    except (FederationError, sa.exc.SQLAlchemyError, OSError) as exc:
        why = f"unreachable when the drop committed ({_first_line(exc)})"
        return {i: Copy(c.site, False, why) for i, c in copies.items()}
    now: dict[uuid.UUID, Copy] = {}
    with butler:
        theirs = butler.registry.datasets.files_here(copies)
        for dataset_id, copy in copies.items():
            found = theirs.get(dataset_id)
            try:
                info = os.stat(butler.datastore.path_of(found.stored)) if found else None
            except (OSError, FederationError):
                info = None
            same = info is not None and fingerprint_of(info) == copy.fingerprint
            now[dataset_id] = copy if same else Copy(copy.site, False, changed)
    return now


# -- sites reached over the network ------------------------------------------------


class _TooLong(TransportError):
    """The site sent more bytes than the record says the file has."""


def _check_remote(site: SiteDefinition, wanted: Sequence[Wanted], advance: Advance
                  ) -> SiteCopies:
    found = SiteCopies(site.name)
    try:
        transport = site.open_files()
    except FederationError as exc:
        advance(len(wanted))
        found.unreachable = _first_line(exc)
        return found
    try:
        with tempfile.TemporaryDirectory(prefix="fed-drop-") as folder:
            local = Path(folder) / "copy"
            for done, want in enumerate(wanted):
                try:
                    found.copies[want.dataset_id] = _remote_copy(site, transport, want, local)
                except FederationError as exc:  # the site (not one file) failed
                    found.unreachable = _first_line(exc)
                    advance(len(wanted) - done)
                    return found
                advance(1)
    finally:
        transport.close()
    return found


def _remote_copy(definition: SiteDefinition, transport: Transport, want: Wanted,
                 local: Path) -> Copy:
    """The file at our path under the site's root, read through its transport."""
    site, ours = definition.name, want.stored
    try:
        check_relative(ours.path)
    except TransportError:
        return Copy(site, False, "its path here is not one to look for there")
    info = transport.stat(ours.path)
    if info is None:
        return Copy(site, False, NOT_HELD)
    if info.size != ours.size:
        return Copy(site, False, mismatch((info.size, ""), (ours.size, ours.checksum)) or "")
    received = 0

    def bounded(nbytes: int) -> None:
        nonlocal received
        received += nbytes
        if received > ours.size:
            raise _TooLong(f"{ours.path}: more than the {ours.size} bytes of its record")

    try:
        got = transport.fetch(ours.path, local, size=ours.size, on_bytes=bounded)
    except MissingFileError:
        return Copy(site, False, "its file is missing")
    except _TooLong:
        return Copy(site, False, f"it sends more than the {ours.size} bytes of our record")
    finally:
        local.unlink(missing_ok=True)
        local.with_name(local.name + ".etag").unlink(missing_ok=True)
    problem = mismatch(got, (ours.size, ours.checksum))
    if problem:
        return Copy(site, False, problem)
    return Copy(site, True, f"read over {definition.transport.upper()} and hashed",
                ("site", site))


def _when(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
