"""The interface every transport implements: local files, SFTP and HTTP.

Paths are POSIX paths relative to the site's datastore root, or absolute for
files a site holds outside it. Implementations never trust what they are
given: :func:`check_relative` refuses paths that would leave the root, and
:func:`walk` checks every name and size a server lists.
"""

from __future__ import annotations

import abc
import logging
import os
import posixpath
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import xxhash

from federation.datastore.checksum import CHUNK, file_checksum
from federation.errors import DatastoreError

#: Called from transfer threads with each chunk's byte count, for progress bars.
OnBytes = Callable[[int], None]
#: Bytes of one directory listing a network transport reads at most.
MAX_LISTING = 64 << 20
#: Directory levels a listing descends at most, well beyond what datastore templates make
#: (about 10). A web server follows links: a loop there would otherwise list the same files
#: under ever longer names, until the server's own limit (40 links on Linux) stops it.
MAX_DEPTH = 32
#: Largest size a listing may give a file (the largest a POSIX file can have).
MAX_SIZE = (1 << 63) - 1
#: One entry of a directory as a server lists it: its name, whether it is a directory, and
#: (for a file) its size. Nothing in it is trusted until :func:`walk` checked it.
Entry = tuple[str, bool, object]

log = logging.getLogger(__name__)


class TransportError(DatastoreError):
    """A file could not be listed, read or written through a transport."""


class MissingFileError(TransportError):
    """The site does not have the file asked for."""


@dataclass(frozen=True)
class RemoteFile:
    """A file of a site: its path relative to the root (or absolute) and its size."""

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
    if path and path[0] not in "/." and path[-1] not in "/." and "/." not in path \
            and "//" not in path and "\\" not in path and "\0" not in path:
        return path  # the common case, already normal: no empty, '.' or '..' part
    if not path or "\\" in path or "\0" in path:
        raise TransportError(f"path {path!r} escapes the datastore root")
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise TransportError(f"path {path!r} escapes the datastore root")
    return posixpath.normpath(path)


def check_prefix(prefix: str) -> str:
    """A directory to list: "" (the root) or a normalized relative path (trailing "/" allowed)."""
    stripped = prefix.rstrip("/")
    if not prefix:
        return ""
    if not stripped:  # "/" alone
        raise TransportError(f"path {prefix!r} escapes the datastore root")
    return check_relative(stripped)


def safe_name(name: object) -> bool:
    """Whether a listed name can be one component of a datastore path: a non-empty UTF-8
    string of at most 255 bytes without "/", "\\", NUL or other control characters, and
    not "." or ".."."""
    if not isinstance(name, str) or name in ("", ".", ".."):
        return False
    if any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in name):
        return False
    try:
        return len(name.encode("utf-8")) <= 255
    except UnicodeEncodeError:  # undecodable bytes of a local name
        return False


def walk(scan: Callable[[str], Iterable[Entry]], prefix: str, where: str
         ) -> Iterator[RemoteFile]:
    """Every file under the directory ``prefix``, from ``scan(directory)`` listing one
    directory at a time (depth first; only one listing open at a time).

    A missing directory (``scan`` raising FileNotFoundError or NotADirectoryError) yields
    nothing. Names that could not be datastore paths are skipped with a warning; a size
    that is not a non-negative integer, or nesting deeper than MAX_DEPTH, refuses the
    listing: ``where`` names the site in the message. An escaping ``prefix`` is refused
    at once, before anything is listed.
    """
    return _walk(scan, check_prefix(prefix), where)


def _walk(scan: Callable[[str], Iterable[Entry]], top: str, where: str) -> Iterator[RemoteFile]:
    pending = [(top, 0)]
    while pending:
        directory, depth = pending.pop()
        try:
            for name, is_dir, size in scan(directory):
                if not safe_name(name):
                    log.warning("%s: skipping the name %r listed in %s/", where, name,
                                directory)
                    continue
                path = f"{directory}/{name}" if directory else name
                if not is_dir:
                    yield RemoteFile(path, _checked_size(size, path, where))
                elif depth < MAX_DEPTH:
                    pending.append((path, depth + 1))
                else:
                    raise TransportError(f"{where}: {path} is nested more than {MAX_DEPTH} "
                                         "directories deep (a directory loop on the server?)")
        except (FileNotFoundError, NotADirectoryError):
            continue


def _checked_size(size: object, path: str, where: str) -> int:
    if isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= MAX_SIZE:
        return size
    raise TransportError(f"{where}: the listing gives {path} an invalid size {size!r}")


class Transport(abc.ABC):
    """Read and write files of one site's datastore."""

    #: whether :meth:`fetch_many` moves a group of small files faster than one
    #: :meth:`fetch` each (so that callers should group them)
    batches = False
    #: files to move in parallel unless told otherwise: a network transport waits on
    #: round trips and gains from several at once; one disk gains nothing (creating
    #: files in parallel only makes the kernel contend with itself)
    parallel = 4
    #: whether :meth:`put`, :meth:`delete` and :meth:`rename` may work (False: they raise)
    writable = True
    #: bytes of one directory listing read at most from a server (None: a local walk)
    max_listing: int | None = None

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
        """A small file's content (an outbox index); TransportError as soon as more than
        ``limit`` bytes arrive, so a huge file is never read whole."""
        received = 0

        def count(nbytes: int) -> None:
            nonlocal received
            received += nbytes
            if received > limit:
                raise TransportError(f"{path} is larger than {limit} bytes")

        with tempfile.TemporaryDirectory(prefix="fed-read-") as folder:
            local = Path(folder) / "file"
            self.fetch(path, local, on_bytes=count)
            if local.stat().st_size > limit:
                raise TransportError(f"{path} is larger than {limit} bytes")
            return local.read_bytes()

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[RemoteFile]:
        """Every regular file under the relative directory ``prefix`` ("" for the whole
        site), recursively and in no particular order, with paths relative to the root.

        Links to files are listed with their target's size; links to directories are not
        followed where the transport can tell them apart. A missing directory yields
        nothing; a prefix that escapes the root is refused like any path.
        """

    @abc.abstractmethod
    def rename(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` atomically, replacing ``dst`` (POSIX rename) and creating
        its directory; MissingFileError if ``src`` does not exist."""

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
