"""The interface every transport implements (local files now; SFTP and HTTP later).

Paths are POSIX paths relative to the site's datastore root, or absolute for
files a site holds outside it. Implementations never trust what they are
given: :func:`check_relative` refuses paths that would leave the root.
"""

from __future__ import annotations

import abc
import posixpath
from dataclasses import dataclass
from pathlib import Path

from federation.errors import DatastoreError


class TransportError(DatastoreError):
    """A file could not be listed, read or written through a transport."""


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int


def check_relative(path: str) -> str:
    """A normalized relative path, or TransportError if it could escape the root."""
    if not path or "\\" in path or "\0" in path:
        raise TransportError(f"path {path!r} escapes the datastore root")
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise TransportError(f"path {path!r} escapes the datastore root")
    return posixpath.normpath(path)


class Transport(abc.ABC):
    """Read and write files of one site's datastore."""

    @abc.abstractmethod
    def stat(self, path: str) -> RemoteFile | None:
        """Size of a file, or None if it does not exist."""

    @abc.abstractmethod
    def get(self, path: str, local: Path) -> None:
        """Copy the site's file ``path`` to the local file ``local`` (overwritten)."""

    def fetch(self, path: str, local: Path) -> tuple[int, str]:
        """Like :meth:`get`, returning the size and xxh3-128 of what was written."""
        from federation.datastore.checksum import file_checksum

        self.get(path, local)
        return file_checksum(local)

    @abc.abstractmethod
    def put(self, local: Path, path: str) -> None:
        """Store the local file at ``path`` on the site, atomically."""

    @abc.abstractmethod
    def delete(self, path: str) -> None:
        """Remove a file (no error if it is already gone)."""

    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def close(self) -> None:  # noqa: B027 - optional hook: most transports hold nothing
        """Release connections."""
