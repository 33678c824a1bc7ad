"""A site on a filesystem this machine can see."""

from __future__ import annotations

import os
import shutil
import stat as stat_mode
import uuid
from collections.abc import Iterator
from pathlib import Path

import xxhash

from federation.datastore.checksum import CHUNK
from federation.transport.base import (
    Entry,
    MissingFileError,
    OnBytes,
    RemoteFile,
    Transport,
    TransportError,
    check_relative,
    walk,
)


class LocalTransport(Transport):
    """Files under ``root``. Absolute paths (in-place ingests) may be read as they are;
    writing, renaming, deleting and listing take relative paths only."""

    parallel = 1

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        self._root = str(self.root)

    def describe(self) -> str:
        return str(self.root)

    def _path(self, path: str, *, absolute: bool = False) -> Path:
        if absolute and os.path.isabs(path):
            return Path(path)
        return self.root.joinpath(*check_relative(path).split("/"))

    def stat(self, path: str) -> RemoteFile | None:
        """Size of a regular file (or a link to one); None if missing or not a file."""
        try:
            found = self._path(path, absolute=True).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise TransportError(f"cannot stat {path}: {exc.strerror}") from None
        return RemoteFile(path, found.st_size) if stat_mode.S_ISREG(found.st_mode) else None

    def get(self, path: str, local: Path) -> None:
        try:
            shutil.copyfile(self._path(path, absolute=True), local)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise MissingFileError(f"{path} is missing at the source") from None
        except OSError as exc:
            raise TransportError(f"cannot copy {path}: {exc.strerror}") from None

    def fetch(self, path: str, local: Path, *, resume: bool = False,
              on_bytes: OnBytes | None = None, size: int | None = None) -> tuple[int, str]:
        """Copy and hash in one pass over the bytes (a local copy always starts over).

        Plain file descriptors and string paths: for small files the per-file cost
        is what matters, and ``open()`` and ``Path`` objects double it.
        """
        digest = xxhash.xxh3_128()
        copied = 0
        source = path if os.path.isabs(path) else f"{self._root}/{check_relative(path)}"
        try:
            src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if not stat_mode.S_ISREG(os.fstat(src).st_mode):
                    raise MissingFileError(f"{path} is not a regular file at the source")
                dst = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
                try:
                    while chunk := os.read(src, CHUNK):
                        digest.update(chunk)
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(dst, view):]
                        copied += len(chunk)
                        if on_bytes is not None:
                            on_bytes(len(chunk))
                finally:
                    os.close(dst)
            finally:
                os.close(src)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise MissingFileError(f"{path} is missing at the source") from None
        except OSError as exc:
            raise TransportError(f"cannot copy {path}: {exc.strerror}") from None
        return copied, digest.hexdigest()

    def put(self, local: Path, path: str) -> None:
        """Copy to a temporary name beside the target, then rename it into place."""
        target = self._path(path)
        temp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:12]}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, temp)
            os.replace(temp, target)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise TransportError(f"cannot write {path}: {exc.strerror}") from None

    def delete(self, path: str) -> None:
        try:
            self._path(path).unlink(missing_ok=True)
        except NotADirectoryError:
            pass  # a parent is a file: the path cannot exist
        except OSError as exc:
            raise TransportError(f"cannot delete {path}: {exc.strerror}") from None

    def rename(self, src: str, dst: str) -> None:
        source, target = self._path(src), self._path(dst)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        except FileNotFoundError:
            if not source.exists():
                raise MissingFileError(f"{src} is missing at {self.root}") from None
            raise TransportError(f"cannot rename {src} to {dst}: no such directory") from None
        except OSError as exc:
            raise TransportError(f"cannot rename {src} to {dst}: {exc.strerror}") from None

    def list(self, prefix: str = "") -> Iterator[RemoteFile]:
        """A streaming walk (os.scandir): memory stays flat however many files there are.
        Links to directories are not followed, so a link loop cannot trap it."""
        return walk(self._scan, prefix, str(self.root))

    def _scan(self, directory: str) -> Iterator[Entry]:
        folder = os.path.join(self.root, directory) if directory else str(self.root)
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            yield entry.name, True, None
                        elif entry.is_file():
                            yield entry.name, False, entry.stat().st_size
                    except FileNotFoundError:
                        continue  # removed while we listed
        except (FileNotFoundError, NotADirectoryError):
            raise
        except OSError as exc:
            raise TransportError(f"cannot list {directory or '.'} under {self.root}: "
                                 f"{exc.strerror}") from None
