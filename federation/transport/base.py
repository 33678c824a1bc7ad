"""The interface every transport implements: local files, SFTP and HTTP.

Paths are POSIX paths relative to the site's datastore root, or absolute for
files a site holds outside it. Implementations never trust what they are
given: :func:`check_relative` refuses paths that would leave the root.
"""

from __future__ import annotations

import abc
import os
import posixpath
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import xxhash

from federation.datastore.checksum import CHUNK
from federation.errors import DatastoreError

#: Called from transfer threads with each chunk's byte count, for progress bars.
OnBytes = Callable[[int], None]


class TransportError(DatastoreError):
    """A file could not be listed, read or written through a transport."""


class MissingFileError(TransportError):
    """The site does not have the file asked for."""


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int


@dataclass(frozen=True)
class FetchRequest:
    """One file of a :meth:`Transport.fetch_many`: the site's path, where to write it, and
    the size its record gives."""

    path: str
    local: Path
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

    #: whether :meth:`fetch_many` moves a group of small files faster than one
    #: :meth:`fetch` each (so that callers should group them)
    batches = False

    @abc.abstractmethod
    def stat(self, path: str) -> RemoteFile | None:
        """Size of a file, or None if it does not exist."""

    @abc.abstractmethod
    def get(self, path: str, local: Path) -> None:
        """Copy the site's file ``path`` to the local file ``local`` (overwritten)."""

    def fetch(self, path: str, local: Path, *, resume: bool = False,
              on_bytes: OnBytes | None = None, size: int | None = None) -> tuple[int, str]:
        """Like :meth:`get`, returning the size and xxh3-128 of what was written.

        With ``resume``, a network transport continues a partial ``local`` file
        left by an interrupted transfer instead of starting over. ``size`` is the
        size the caller expects (its record's), sparing a transport a round trip;
        the caller still checks what arrived.
        """
        from federation.datastore.checksum import file_checksum

        self.get(path, local)
        got = file_checksum(local)
        if on_bytes is not None:
            on_bytes(got[0])
        return got

    def fetch_many(self, requests: Sequence[FetchRequest], *, on_bytes: OnBytes | None = None
                   ) -> Iterator[tuple[FetchRequest, tuple[int, str] | TransportError]]:
        """Fetch several files, yielding each request with its (size, xxh3) or its error,
        in any order. A partial file left by a failure can be resumed by :meth:`fetch`."""
        for request in requests:
            try:
                yield request, self.fetch(request.path, request.local, resume=True,
                                          on_bytes=on_bytes, size=request.size)
            except TransportError as exc:
                yield request, exc

    def read_bytes(self, path: str, limit: int = 64 << 20) -> bytes:
        """A small file's content (an outbox index), at most ``limit`` bytes."""
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / "file"
            self.get(path, local)
            if local.stat().st_size > limit:
                raise TransportError(f"{path} is larger than {limit} bytes")
            return local.read_bytes()

    @abc.abstractmethod
    def put(self, local: Path, path: str) -> None:
        """Store the local file at ``path`` on the site, atomically."""

    @abc.abstractmethod
    def delete(self, path: str) -> None:
        """Remove a file (no error if it is already gone)."""

    def describe(self) -> str:
        """Where this transport reads from, for messages."""
        return type(self).__name__

    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def close(self) -> None:  # noqa: B027 - optional hook: most transports hold nothing
        """Release connections."""


class PartialDownload:
    """A local file being downloaded, hashed as it is written.

    With ``resume`` it keeps what an interrupted transfer left and hashes it
    first, so the final checksum covers the whole file.
    """

    def __init__(self, local: Path, *, resume: bool, on_bytes: OnBytes | None = None) -> None:
        self.local = local
        self.on_bytes = on_bytes
        self.digest = xxhash.xxh3_128()
        self.offset = 0
        if resume and local.is_file():
            with open(local, "rb") as existing:
                while chunk := existing.read(CHUNK):
                    self.digest.update(chunk)
                    self.offset += len(chunk)
        self.resumed = self.offset
        self._file = open(local, "r+b" if self.offset else "wb")  # noqa: SIM115 - see close()
        self._file.seek(self.offset)

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self.digest.update(chunk)
        self.offset += len(chunk)
        if self.on_bytes is not None:
            self.on_bytes(len(chunk))

    def restart(self) -> None:
        """Throw away what is there (the remote file changed, or no resume is possible)."""
        self._file.seek(0)
        self._file.truncate()
        self.digest = xxhash.xxh3_128()
        self.offset = self.resumed = 0

    def close(self) -> tuple[int, str]:
        self._file.flush()
        self._file.truncate()
        self._file.close()
        return self.offset, self.digest.hexdigest()

    def abandon(self) -> None:
        """Keep the bytes on disk for a later resume; just close."""
        self._file.flush()
        self._file.close()


class Counters:
    """Bytes a transport resumed rather than fetched again (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.resumed_files = 0
        self.resumed_bytes = 0

    def resumed(self, size: int) -> None:
        if size:
            with self._lock:
                self.resumed_files += 1
                self.resumed_bytes += size


def remote_join(root: str, path: str) -> str:
    """``root/path`` for a relative datastore path; escaping paths are refused."""
    if os.path.isabs(path):
        raise TransportError(f"path {path!r} is outside the remote datastore root; files "
                             "ingested in place at a remote site cannot be fetched")
    return posixpath.join(root, check_relative(path))
