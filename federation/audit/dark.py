"""Dark files: files in the datastore that no record names.

One walk of the datastore's directory tree (``os.scandir``, links to directories not
followed) collects every file's relative path; one streaming read of every path the
registry names (file records, held here or elsewhere, and the trash: removed files
waiting to be deleted) takes those out; what is left is dark. A million files cost a
walk and a set difference, never a query per file. The walk comes first: a file
renamed into place before its record commits is then either seen with its record or
not seen at all.

The repository's own files are not the datastore's: at its root, ``federation.yaml``,
the SQLite registry (and its journal files) and every ``.federation-*`` entry
(staging, outbox, inbox, mirrors, notes, quarantine, locks), plus an outbox or inbox
that the site's definition puts elsewhere under the root.

``quarantine`` moves dark files into ``.federation-quarantine/<UTC time>/<path>``;
nothing here deletes a file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from federation.errors import DatastoreError
from federation.registry.audits import AuditReads

QUARANTINE = ".federation-quarantine"
#: a dark file modified more recently than this may be a write under way (a ``put``
#: renames its file into place just before its record commits): it is left in place
GRACE = 300.0


@dataclass(frozen=True)
class DarkFile:
    """A file no record names: its path relative to the root, size and modification time
    (of the entry itself: a link is not followed)."""

    path: str
    size: int
    mtime: float


@dataclass(frozen=True)
class Moved:
    """A dark file quarantined (``to``: its new path), or left in place (``why``)."""

    path: str
    to: str | None = None
    why: str = ""


def own_entries(root: Path, sqlite_file: Path | None) -> set[str]:
    """Names at the root of a repository that are the repository's, not the datastore's
    (besides every ``.federation-*`` entry)."""
    names = {"federation.yaml"}
    if sqlite_file is not None and sqlite_file.parent == root:
        names |= {sqlite_file.name + suffix for suffix in ("", "-wal", "-shm", "-journal")}
    return names


def walk(root: Path, own: set[str], skipped: Iterable[str] = ()) -> set[str]:
    """The relative path of every entry under ``root`` that is not a directory (files,
    links, anything else), leaving out the repository's own entries at the root and the
    directories ``skipped`` (relative paths)."""
    skipped = set(skipped)
    found: set[str] = set()
    pending = [("", str(root))]
    while pending:
        relative, folder = pending.pop()
        try:
            entries = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed while we walked
        except OSError as exc:
            raise DatastoreError(f"cannot list {folder}: {exc.strerror or exc}; which files "
                                 "are dark cannot be told (the checks done so far are "
                                 "kept: run the audit again to resume)") from None
        with entries:
            for entry in entries:
                name = entry.name
                if not relative and (name in own or name.startswith(".federation-")):
                    continue
                path = f"{relative}/{name}" if relative else name
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                if not is_dir:
                    found.add(path)
                elif path not in skipped:
                    pending.append((path, entry.path))
    return found


def find_dark(root: Path, reads: AuditReads, own: set[str], skipped: Iterable[str] = ()
              ) -> tuple[list[DarkFile], int]:
    """The dark files under ``root``, by path, and how many entries the walk saw."""
    found = walk(root, own, skipped)
    seen = len(found)
    for path in reads.recorded_paths():
        found.discard(path)
    dark = []
    for path in sorted(found):
        try:
            info = os.lstat(root / path)
        except FileNotFoundError:
            continue  # removed since the walk
        dark.append(DarkFile(path, info.st_size, info.st_mtime))
    return dark, seen


def quarantine(root: Path, dark: list[DarkFile], reads: AuditReads, *,
               now: float | None = None) -> list[Moved]:
    """Move the dark files into ``.federation-quarantine/<UTC time>/`` under their paths,
    except those a record names by now and those modified in the last GRACE seconds.
    Call it under the repository's sync lock."""
    now = time.time() if now is None else now
    named = reads.referenced(d.path for d in dark)
    target = _new_folder(root / QUARANTINE, now)
    moved = []
    for file in dark:
        if file.path in named:
            moved.append(Moved(file.path, why="a record names it now"))
            continue
        if now - file.mtime < GRACE:
            moved.append(Moved(file.path, why=f"modified less than {GRACE / 60:.0f} minutes "
                                              "ago: a write may be under way"))
            continue
        destination = target / file.path
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.rename(root / file.path, destination)
        except OSError as exc:
            moved.append(Moved(file.path, why=f"cannot move it: {exc.strerror or exc}"))
            continue
        _prune(root, (root / file.path).parent)
        moved.append(Moved(file.path, to=str(destination.relative_to(root))))
    return moved


def _new_folder(parent: Path, now: float) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    folder, n = parent / stamp, 1
    while folder.exists():
        n += 1
        folder = parent / f"{stamp}-{n}"
    return folder


def _prune(root: Path, folder: Path) -> None:
    """Remove the directories a move left empty, up to the root."""
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
