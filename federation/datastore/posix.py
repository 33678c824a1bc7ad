"""A datastore of files under one POSIX directory.

Every write goes to a hidden temporary name beside its destination and is
renamed into place only when the caller commits, so a crash never leaves a
partially written file under a registered name.
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.datastore.checksum import (
    file_checksum,
    file_kind,
    regular_file_checksum,
    verify_file,
)
from federation.datastore.storage_classes import StorageClass
from federation.datastore.templates import FileTemplates
from federation.errors import DatastoreError, InputError
from federation.faults import checkpoint
from federation.model import DatasetRef, StoredFile

TRANSFER_MODES = ("copy", "move", "hardlink", "symlink", "direct")


@dataclass
class StagedFile:
    """A file written under a temporary name, waiting for commit or abort."""

    stored: StoredFile
    final: Path | None  # None for in-place ("direct") ingest
    temp: Path | None
    after_commit: list[Path] = field(default_factory=list)  # sources to delete (move)
    renamed: bool = False

    def commit(self) -> None:
        """Rename into place (before the registry commits)."""
        if self.temp is not None and self.final is not None:
            os.replace(self.temp, self.final)
            self.renamed = True

    def abort(self) -> None:
        """Undo: remove whatever this staging put on disk."""
        for path in (self.temp, self.final if self.renamed else None):
            if path is not None:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass

    def finish(self) -> None:
        """After the registry committed: drop sources of a move."""
        for path in self.after_commit:
            try:
                path.unlink()
            except FileNotFoundError:
                pass



@contextmanager
def placing(staged: Sequence[StagedFile]) -> Iterator[Callable[[], None]]:
    """Staged files that enter with one registry transaction: call the function this
    yields inside the transaction, after its writes, to rename them into place; if
    anything fails every staging is undone; after the block (the transaction
    committed) the sources of moves are removed."""

    def commit() -> None:
        for item in staged:
            item.commit()

    try:
        yield commit
    except BaseException:
        for item in staged:
            item.abort()
        raise
    for item in staged:
        item.finish()

class PosixDatastore:
    """Files of datasets under ``root``, laid out by file templates."""

    def __init__(self, root: str | os.PathLike, templates: FileTemplates | None = None) -> None:
        self.root = Path(root).resolve()
        self.templates = templates or FileTemplates()

    def path_of(self, stored: StoredFile) -> Path:
        """Absolute path of a stored file; relative paths may not escape the root."""
        if os.path.isabs(stored.path):
            return Path(stored.path)
        return self.safe_path(stored.path)

    def safe_path(self, relative: str) -> Path:
        """Resolve a datastore-relative path, refusing one that escapes the root."""
        parts = relative.replace("\\", "/").split("/")
        if not relative or relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise DatastoreError(f"path {relative!r} escapes the datastore root")
        return self.root.joinpath(*parts)

    def _relative_path(self, ref: DatasetRef, extension: str) -> str:
        template = self.templates.for_type(ref.dataset_type.name,
                                           ref.dataset_type.dimensions.required)
        return template.format(run=ref.run, dataset_type=ref.dataset_type.name,
                               data_id=ref.data_id, dataset_id=ref.id, extension=extension)

    def _temp_for(self, final: Path) -> Path:
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:12]}")

    def stage_put(self, ref: DatasetRef, obj: Any, storage_class: StorageClass) -> StagedFile:
        """Write ``obj`` with its storage class's formatter to a temporary name."""
        formatter = storage_class.formatter
        formatter.validate(obj)
        relative = self._relative_path(ref, formatter.extension)
        final = self.safe_path(relative)
        temp = self._temp_for(final)
        try:
            formatter.write(obj, temp)
            size, checksum = file_checksum(temp)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return StagedFile(StoredFile(relative, formatter.name, size, checksum), final, temp)

    def stage_ingest(self, ref: DatasetRef, source: Path, storage_class: StorageClass,
                     transfer: str) -> StagedFile:
        """Bring an existing file in with one of :data:`TRANSFER_MODES`."""
        if transfer not in TRANSFER_MODES:
            raise InputError(f"unknown transfer mode {transfer!r}; use one of "
                             f"{', '.join(TRANSFER_MODES)}")
        absolute = os.path.abspath(source)
        try:
            # Only regular files: a FIFO or a device would block or never end.
            size, checksum = regular_file_checksum(absolute)
        except OSError as exc:
            raise InputError(f"cannot read {absolute}: {exc.strerror}") from None
        name = storage_class.formatter.name
        if transfer == "direct":
            return StagedFile(StoredFile(absolute, name, size, checksum), None, None)
        source = Path(absolute)
        relative = self._relative_path(ref, source.suffix)
        final = self.safe_path(relative)
        stored = StoredFile(relative, name, size, checksum)
        if final.exists() and os.path.samefile(source, final):
            # Already in place (e.g. a crash leftover being re-ingested): linking or
            # copying it onto itself would lose it, so register it as it is.
            staged = StagedFile(stored, final, None)
            if transfer == "move" and source.parent.resolve() / source.name != final \
                    and not final.is_symlink():
                staged.after_commit.append(source)  # another hard link to the same file
            return staged
        temp = self._temp_for(final)
        staged = StagedFile(stored, final, temp)
        try:
            if transfer == "copy":
                shutil.copyfile(source, temp)
            elif transfer == "hardlink":
                os.link(source, temp)
            elif transfer == "symlink":
                os.symlink(source.resolve(), temp)
            else:  # move: link when possible, else copy; the source goes after commit
                try:
                    os.link(source, temp)
                except OSError:
                    shutil.copyfile(source, temp)
                staged.after_commit.append(source)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise DatastoreError(f"cannot {transfer} {source} into the datastore: "
                                 f"{exc.strerror}") from None
        return staged

    def read(self, stored: StoredFile, storage_class: StorageClass) -> Any:
        path = self.path_of(stored)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise DatastoreError(f"file {path} of a registered dataset is missing") from None
        except OSError as exc:
            raise DatastoreError(f"cannot read {path}: {exc.strerror}") from None
        if not stat.S_ISREG(mode):  # a FIFO would block the formatter forever
            raise DatastoreError(f"file {path} of a registered dataset is {file_kind(mode)}, "
                                 "not a regular file")
        return storage_class.formatter.read(path)

    def exists(self, stored: StoredFile) -> bool:
        return self.path_of(stored).exists()

    def remove(self, stored: StoredFile) -> None:
        """Delete a stored file (in-place ingested files are left alone)."""
        if os.path.isabs(stored.path):
            return
        path = self.path_of(stored)
        path.unlink(missing_ok=True)
        checkpoint("datastore file unlinked")
        parent = path.parent
        while parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def check(self, stored: StoredFile) -> str | None:
        """Why the file does not match its record, or None when it does."""
        return verify_file(self.path_of(stored), stored.size, stored.checksum)
