"""An in-memory transport: a TEST DOUBLE standing in for a remote site, with injected faults.

It exists for tests of the sync and of the transport contract itself; no site
definition can name it. Files are held in a dict (relative path -> bytes) that
a test may share, to place files "on the server" and to look at what arrived.
Faults are configured with small typed methods:

* :meth:`MemoryTransport.fail_next` -- the next N operations on a path (or on any
  path) fail with a transient error, which the :class:`RetryPolicy` retries;
* :meth:`MemoryTransport.cut_after` -- the next transfer of a path breaks after K
  bytes, leaving the partial local file for ``fetch(..., resume=True)``;
* :meth:`MemoryTransport.corrupt` -- reads of a path return altered bytes of the
  right size, which a caller's checksum verification must catch;
* :meth:`MemoryTransport.report_missing` -- the file is reported missing.

Every operation runs under the transport's RetryPolicy, so retries are bounded
in count and time like those of the real transports. ``contacts`` counts the
attempts that reached the "server": a refused path never does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from federation.datastore.checksum import CHUNK
from federation.transport.base import (
    Counters,
    Entry,
    MissingFileError,
    OnBytes,
    PartialDownload,
    RemoteFile,
    Transport,
    TransportError,
    remote_join,
    walk,
)
from federation.transport.retry import RetryPolicy, TransientError

T = TypeVar("T")
#: Retries quick enough for tests, bounded like the real ones.
FAST_RETRY = RetryPolicy(attempts=3, initial=0.01, maximum=0.05, deadline=2.0)


class MemoryTransport(Transport):
    """Files in ``files`` (path -> bytes), reached through injectable faults."""

    def __init__(self, files: dict[str, bytes] | None = None, *,
                 retry: RetryPolicy = FAST_RETRY, name: str = "memory") -> None:
        self.files: dict[str, bytes] = {} if files is None else files
        self.retry = retry
        self.name = name
        self.counters = Counters()
        self.contacts = 0  # attempts that reached the "server"
        self._lock = threading.Lock()
        self._failures: dict[str | None, int] = {}  # path (None: any) -> failures left
        self._cuts: dict[str, int] = {}
        self._corrupted: set[str] = set()
        self._missing: set[str] = set()

    def describe(self) -> str:
        return f"memory:{self.name}"

    # -- faults ------------------------------------------------------------------------

    def fail_next(self, count: int = 1, *, path: str | None = None) -> None:
        """The next ``count`` operations on ``path`` (on any path if None) raise a
        transient error; each retry attempt counts as one operation."""
        if count < 1:
            raise ValueError("count must be at least 1")
        key = None if path is None else self._key(path)
        with self._lock:
            self._failures[key] = self._failures.get(key, 0) + count

    def cut_after(self, path: str, nbytes: int) -> None:
        """The next transfer of ``path`` breaks (transiently) after ``nbytes`` bytes."""
        if nbytes < 0:
            raise ValueError("nbytes must not be negative")
        with self._lock:
            self._cuts[self._key(path)] = nbytes

    def corrupt(self, path: str) -> None:
        """Serve ``path`` with one byte altered (same size) until :meth:`clear_faults`."""
        with self._lock:
            self._corrupted.add(self._key(path))

    def report_missing(self, path: str) -> None:
        """Report ``path`` as missing (stat None, reads MissingFileError, not listed) until
        it is written again or :meth:`clear_faults`."""
        with self._lock:
            self._missing.add(self._key(path))

    def clear_faults(self) -> None:
        with self._lock:
            self._failures.clear()
            self._cuts.clear()
            self._corrupted.clear()
            self._missing.clear()

    # -- the "server" --------------------------------------------------------------------

    @staticmethod
    def _key(path: str) -> str:
        return remote_join("", path)  # refuses absolute and escaping paths, as remotes do

    def _call(self, what: str, keys: tuple[str, ...], func: Callable[[], T]) -> T:
        def attempt() -> T:
            with self._lock:
                self.contacts += 1
                for key in (*keys, None):
                    left = self._failures.get(key, 0)
                    if left:
                        self._failures[key] = left - 1
                        raise TransientError(f"injected failure of {what}")
            return func()
        return self.retry.call(what, attempt)

    def _read(self, key: str) -> bytes:
        with self._lock:
            if key in self._missing or key not in self.files:
                raise FileNotFoundError(key)
            data = self.files[key]
            if key in self._corrupted:
                middle = len(data) // 2
                data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:] \
                    if data else b"\0"
            return data

    def _check_tree(self, key: str) -> None:
        """Refuse what a filesystem could not hold: a file under a file, or over a folder."""
        parts = key.split("/")
        if any("/".join(parts[:i]) in self.files for i in range(1, len(parts))) \
                or any(k.startswith(key + "/") for k in self.files):
            raise TransportError(f"cannot write {key}: a file and a directory would share "
                                 "a name")

    # -- the interface -------------------------------------------------------------------

    def stat(self, path: str) -> RemoteFile | None:
        key = self._key(path)

        def look() -> RemoteFile | None:
            with self._lock:
                if key in self._missing or key not in self.files:
                    return None
                return RemoteFile(path, len(self.files[key]))
        return self._call(f"stat {path}", (key,), look)

    def get(self, path: str, local: Path) -> None:
        self.fetch(path, local)

    def fetch(self, path: str, local: Path, *, resume: bool = False,
              on_bytes: OnBytes | None = None, size: int | None = None) -> tuple[int, str]:
        key = self._key(path)
        download = PartialDownload(local, resume=resume, on_bytes=on_bytes)

        def transfer() -> None:
            data = self._read(key)
            if download.offset > len(data):
                download.restart()
            download.resumed = download.offset  # kept from an earlier attempt or run
            with self._lock:
                cut = self._cuts.pop(key, None)
            end = len(data) if cut is None else min(len(data), download.offset + cut)
            for start in range(download.offset, end, CHUNK):
                download.write(data[start:min(start + CHUNK, end)])
            if end < len(data):
                raise TransientError(f"connection dropped after {cut} bytes of {path}")

        try:
            self._call(f"download {path}", (key,), transfer)
        except FileNotFoundError:
            download.close()
            local.unlink(missing_ok=True)
            raise MissingFileError(f"{path} is missing at the source "
                                   f"({self.describe()})") from None
        except BaseException:
            download.abandon()  # what arrived stays for a resume
            raise
        self.counters.resumed(download.resumed)
        return download.close()

    def put(self, local: Path, path: str) -> None:
        """All or nothing: a cut upload stores nothing."""
        key = self._key(path)
        try:
            data = Path(local).read_bytes()
        except OSError as exc:
            raise TransportError(f"cannot read {local}: {exc.strerror}") from None

        def store() -> None:
            with self._lock:
                cut = self._cuts.pop(key, None)
                if cut is not None and cut < len(data):
                    raise TransientError(f"connection dropped after {cut} bytes of {path}")
                self._check_tree(key)
                self.files[key] = data
                self._missing.discard(key)
        self._call(f"upload {path}", (key,), store)

    def delete(self, path: str) -> None:
        key = self._key(path)

        def remove() -> None:
            with self._lock:
                self.files.pop(key, None)
        self._call(f"delete {path}", (key,), remove)

    def rename(self, src: str, dst: str) -> None:
        source, target = self._key(src), self._key(dst)

        def move() -> None:
            with self._lock:
                if source in self._missing or source not in self.files:
                    raise FileNotFoundError(source)
                data = self.files.pop(source)
                try:
                    self._check_tree(target)
                except TransportError:
                    self.files[source] = data
                    raise
                self.files[target] = data
                self._missing.discard(target)
        try:
            self._call(f"rename {src}", (source, target), move)
        except FileNotFoundError:
            raise MissingFileError(f"{src} is missing at {self.describe()}") from None

    def list(self, prefix: str = "") -> Iterator[RemoteFile]:
        return walk(self._scan, prefix, self.describe())

    def _scan(self, directory: str) -> list[Entry]:
        head = f"{directory}/" if directory else ""

        def scan() -> list[Entry]:
            with self._lock:
                found = [(key[len(head):], len(data)) for key, data in self.files.items()
                         if key.startswith(head) and key not in self._missing]
            if directory and not found:
                raise FileNotFoundError(directory)
            entries: list[Entry] = []
            folders: set[str] = set()
            for rest, size in found:
                name, below, _ = rest.partition("/")
                if not below:
                    entries.append((name, False, size))
                elif name not in folders:
                    folders.add(name)
                    entries.append((name, True, None))
            return entries
        return self._call(f"list {directory or '.'}", (directory,), scan)
