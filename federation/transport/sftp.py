"""A site reached over SSH: files read and written with SFTP (paramiko).

Connections (host keys, credentials) come from :mod:`federation.transport.ssh`.
Each worker thread borrows a connection from a small pool, so ``--jobs N``
transfers over N connections. Transient failures (a dropped connection, a
restarting server) are retried with bounded backoff, resuming partial files.
"""

from __future__ import annotations

import errno
import posixpath
import queue
import shlex
import stat as stat_mode
import tarfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import paramiko

from federation.datastore.checksum import CHUNK
from federation.transport.base import (
    MAX_LISTING,
    Counters,
    Entry,
    FetchRequest,
    MissingFileError,
    OnBytes,
    PartialDownload,
    RemoteFile,
    Transport,
    TransportError,
    remote_join,
    walk,
)
from federation.transport.retry import TransientError
from federation.transport.ssh import (
    AuthenticationError,
    HostKeyError,
    SSHTarget,
    connect,
    reason,
    scan_host_key,
    trust_host_key,
)

__all__ = ["AuthenticationError", "HostKeyError", "SFTPTransport", "connect", "scan_host_key",
           "trust_host_key"]

READ_SIZE = 255 << 10  # per SFTP read request: OpenSSH serves up to 255 KiB at once
WINDOW = 8 << 20  # bytes requested ahead of the reader


def _quiet_read_ahead(handle: paramiko.SFTPFile) -> None:
    """Make paramiko's read-ahead thread end quietly if the connection drops: the read
    that waits for its data fails too and is retried, so the traceback Python prints for
    an uncaught error in a thread would only add noise."""
    run = handle._prefetch_thread  # paramiko starts its thread with this bound method

    def read_ahead(*args: Any) -> None:
        with suppress(EOFError, OSError, paramiko.SSHException):
            run(*args)

    handle._prefetch_thread = read_ahead


def _read_window(handle: paramiko.SFTPFile, download: PartialDownload, total: int) -> bool:
    """Read up to WINDOW bytes with READ_SIZE requests in flight together; False if the
    file ended early. Windows keep paramiko's read-ahead buffer small: it slows down
    quadratically with the number of buffered chunks."""
    start = download.offset
    end = min(start + WINDOW, total)
    chunks = [(offset, min(READ_SIZE, end - offset)) for offset in range(start, end, READ_SIZE)]
    if len(chunks) == 1:
        handle.seek(start)
        data = [handle.read(end - start)]
    else:
        data = handle.readv(chunks)
    for (_, length), chunk in zip(chunks, data, strict=False):
        download.write(chunk)
        if len(chunk) < length:
            return False
    return True


class SFTPTransport(Transport):
    """Files under the directory ``root`` of an SSH server, over a pool of SFTP connections."""

    batches = True
    max_listing = MAX_LISTING

    def __init__(self, settings: SSHTarget, root: str) -> None:
        self.settings = settings
        self.root = root
        self.counters = Counters()
        self._pool: queue.LifoQueue[tuple[paramiko.SSHClient, paramiko.SFTPClient]] = \
            queue.LifoQueue()
        self._closed = False
        self._streams: bool | None = None  # can the server run tar? (None: not tried yet)
        self._posix_rename: bool | None = None  # does it know posix-rename@openssh.com?

    def describe(self) -> str:
        return f"sftp://{self.settings.host}:{self.settings.port}{self.root}"

    @contextmanager
    def _sftp(self) -> Iterator[paramiko.SFTPClient]:
        with self._connection() as (_, sftp):
            yield sftp

    @contextmanager
    def _connection(self) -> Iterator[tuple[paramiko.SSHClient, paramiko.SFTPClient]]:
        """A connection for one operation; dropped (not pooled) if the operation failed."""
        try:
            client, sftp = self._pool.get_nowait()
        except queue.Empty:
            client = connect(self.settings)
            try:
                sftp = client.open_sftp()
                sftp.get_channel().settimeout(self.settings.timeout)  # a stalled server
            except (OSError, EOFError, paramiko.SSHException) as exc:
                client.close()
                raise TransientError(f"cannot start SFTP on {self.settings.host}: "
                                     f"{reason(exc)}") from None
        try:
            yield client, sftp
        except FileNotFoundError:
            self._pool.put((client, sftp))  # an answer, not a broken connection
            raise
        except BaseException:
            client.close()
            raise
        if self._closed:
            client.close()
        else:
            self._pool.put((client, sftp))

    def _call(self, what: str, func) -> Any:
        """Run ``func(sftp)`` with retries; maps paramiko/socket errors to ours."""
        def attempt() -> Any:
            with self._sftp() as sftp:
                try:
                    return func(sftp)
                except FileNotFoundError:
                    raise
                except PermissionError as exc:
                    raise TransportError(f"permission denied: {exc.filename or what}") from None
                except (OSError, EOFError, paramiko.SSHException) as exc:
                    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                        raise TransportError("no space left on the remote site") from None
                    raise TransientError(reason(exc)) from None
        return self.settings.retry.call(what, attempt)

    def _path(self, path: str) -> str:
        return remote_join(self.root, path)

    def stat(self, path: str) -> RemoteFile | None:
        remote = self._path(path)
        try:
            attrs = self._call(f"stat {remote}", lambda sftp: sftp.stat(remote))
        except FileNotFoundError:
            return None
        if attrs.st_mode is not None and not stat_mode.S_ISREG(attrs.st_mode):
            return None  # a directory or a device: not a file of the site
        return RemoteFile(path, attrs.st_size or 0)

    def get(self, path: str, local: Path) -> None:
        self.fetch(path, local)

    def fetch(self, path: str, local: Path, *, resume: bool = False,
              on_bytes: OnBytes | None = None, size: int | None = None) -> tuple[int, str]:
        remote = self._path(path)
        download = PartialDownload(local, resume=resume, on_bytes=on_bytes)

        def attempt(sftp: paramiko.SFTPClient) -> None:
            with sftp.open(remote, "rb") as handle:
                _quiet_read_ahead(handle)
                handle.MAX_REQUEST_SIZE = READ_SIZE
                total = size
                if total is None:
                    attrs = handle.stat()
                    if attrs.st_mode is not None and not stat_mode.S_ISREG(attrs.st_mode):
                        raise FileNotFoundError(errno.ENOENT, "not a regular file")
                    total = attrs.st_size or 0
                if download.offset > total:
                    download.restart()
                while download.offset < total:
                    if not _read_window(handle, download, total):
                        return  # shorter than expected: the caller's size check says so

        try:
            self._call(f"download {remote}", attempt)
        except FileNotFoundError:
            download.close()
            local.unlink(missing_ok=True)
            raise MissingFileError(f"{path} is missing at the source ({remote})") from None
        except BaseException:
            download.abandon()  # what arrived stays for the next run to resume
            raise
        self.counters.resumed(download.resumed)
        return download.close()

    def fetch_many(self, requests: Sequence[FetchRequest], *, on_bytes: OnBytes | None = None
                   ) -> Iterator[tuple[FetchRequest, tuple[int, str] | TransportError]]:
        """Small files in one tar stream (``tar`` run on the server over the same SSH
        connection), as rsync runs itself there: SFTP costs several round trips per file.

        Only regular files with exactly the requested names are taken from the stream.
        Where the server runs no commands (an SFTP-only account) or the stream breaks,
        the files not yet received are fetched one by one over SFTP.
        """
        pending: dict[str, FetchRequest] = {}
        for request in requests:
            try:
                pending[remote_join("", request.path)] = request  # refuses escaping paths
            except TransportError as exc:
                yield request, exc
        if len(pending) > 1 and self._streams is not False:
            try:
                for name, result in self._tar_stream(pending, on_bytes):
                    yield pending.pop(name), result
                self._streams = True
            except _NoStream:
                self._streams = False
            except (OSError, EOFError, paramiko.SSHException, tarfile.TarError,
                    TransportError):
                pass  # what did not arrive is fetched below, with retries
        yield from super().fetch_many(list(pending.values()), on_bytes=on_bytes)

    def _tar_stream(self, pending: dict[str, FetchRequest], on_bytes: OnBytes | None
                    ) -> Iterator[tuple[str, tuple[int, str]]]:
        with self._connection() as (client, _):
            transport = client.get_transport()
            assert transport is not None
            channel = transport.open_session(timeout=self.settings.timeout)
            try:
                channel.settimeout(self.settings.timeout)
                try:
                    channel.exec_command(f"cd {shlex.quote(self.root)} && exec tar -c -f - "
                                         "--no-recursion --null -T -")
                except paramiko.SSHException:
                    raise _NoStream() from None
                names = b"".join(name.encode() + b"\0" for name in pending)
                threading.Thread(target=_send_and_close, args=(channel, names),
                                 daemon=True).start()
                try:
                    archive = tarfile.open(fileobj=channel.makefile("rb"), mode="r|")
                except tarfile.ReadError:
                    raise _NoStream() from None  # no tar there, or no shell: SFTP only
                with archive:
                    for member in archive:
                        request = pending.get(member.name)
                        if request is None or not member.isreg():
                            continue
                        source = archive.extractfile(member)
                        download = PartialDownload(request.local, resume=False,
                                                   on_bytes=on_bytes)
                        try:
                            while chunk := source.read(CHUNK):
                                download.write(chunk)
                        except BaseException:
                            download.abandon()
                            raise
                        yield member.name, download.close()
            finally:
                channel.close()

    def put(self, local: Path, path: str) -> None:
        """Upload to a temporary name beside the target, then rename it into place."""
        remote = self._path(path)
        temp = posixpath.join(posixpath.dirname(remote),
                              f".{posixpath.basename(remote)}.tmp-{uuid.uuid4().hex[:12]}")

        def attempt(sftp: paramiko.SFTPClient) -> None:
            _makedirs(sftp, posixpath.dirname(remote))
            source.seek(0)
            try:
                sftp.putfo(source, temp, confirm=True)
                self._rename(sftp, temp, remote)
            except BaseException:
                with suppress(OSError, EOFError, paramiko.SSHException):
                    sftp.remove(temp)
                raise

        try:
            source = open(local, "rb")  # noqa: SIM115 - opened first: a local error is no retry
        except OSError as exc:
            raise TransportError(f"cannot read {local}: {exc.strerror}") from None
        with source:
            try:
                self._call(f"upload {remote}", attempt)
            except FileNotFoundError:  # the folder vanished under us
                raise TransportError(f"cannot write {remote}: no such directory") from None

    def delete(self, path: str) -> None:
        remote = self._path(path)
        with suppress(FileNotFoundError):
            self._call(f"delete {remote}", lambda sftp: sftp.remove(remote))

    def rename(self, src: str, dst: str) -> None:
        source, target = self._path(src), self._path(dst)
        attempts = 0

        def attempt(sftp: paramiko.SFTPClient) -> None:
            nonlocal attempts
            attempts += 1
            _makedirs(sftp, posixpath.dirname(target))
            try:
                self._rename(sftp, source, target)
            except FileNotFoundError:
                # A retry after a dropped connection: the first attempt may have renamed.
                if attempts > 1 and _exists(sftp, target):
                    return
                raise

        try:
            self._call(f"rename {source}", attempt)
        except FileNotFoundError:
            raise MissingFileError(f"{src} is missing at {self.describe()}") from None

    def _rename(self, sftp: paramiko.SFTPClient, source: str, target: str) -> None:
        """POSIX rename (replacing ``target``) with the OpenSSH extension; a server without
        it gets a plain SFTP rename after removing ``target`` (not atomic there)."""
        if self._posix_rename is not False:
            try:
                sftp.posix_rename(source, target)
                self._posix_rename = True
                return
            except OSError as exc:
                if exc.errno is not None or "unsupported" not in str(exc).lower():
                    raise
                self._posix_rename = False
        with suppress(FileNotFoundError):
            sftp.remove(target)
        sftp.rename(source, target)

    def list(self, prefix: str = "") -> Iterator[RemoteFile]:
        """One SFTP directory read per directory, at most ``max_listing`` bytes each; links
        to files are listed with their target's size, links to directories are skipped."""
        return walk(self._scan, prefix, self.describe())

    def _scan(self, directory: str) -> list[Entry]:
        remote = remote_join(self.root, directory) if directory else self.root
        limit = self.max_listing

        def read(sftp: paramiko.SFTPClient) -> list[Entry]:
            listed: list[tuple[str, int | None, object]] = []
            used = 0
            try:  # the whole directory first: a request made meanwhile would take its replies
                for attrs in sftp.listdir_iter(remote):
                    used += len(attrs.filename) + len(getattr(attrs, "longname", "") or "") + 32
                    if limit is not None and used > limit:
                        raise TransportError(f"the listing of {remote} is larger than "
                                             f"{limit} bytes")
                    listed.append((attrs.filename, attrs.st_mode, attrs.st_size))
            except UnicodeDecodeError:
                raise TransportError(f"the listing of {remote} holds a name that is not "
                                     "UTF-8") from None
            entries: list[Entry] = []
            for name, mode, size in listed:
                if mode is not None and stat_mode.S_ISLNK(mode):
                    try:
                        target = sftp.stat(posixpath.join(remote, name))
                    except FileNotFoundError:
                        continue  # a dangling link
                    if target.st_mode is None or stat_mode.S_ISDIR(target.st_mode):
                        continue  # never followed: a link loop would never end
                    mode, size = target.st_mode, target.st_size
                if mode is None:
                    continue  # the server did not say what it is
                if stat_mode.S_ISDIR(mode):
                    entries.append((name, True, None))
                elif stat_mode.S_ISREG(mode):
                    entries.append((name, False, size))
            return entries

        return self._call(f"list {remote}", read)

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                client, _ = self._pool.get_nowait()
            except queue.Empty:
                return
            client.close()


class _NoStream(Exception):
    """The server cannot stream files with tar: use SFTP alone."""


def _send_and_close(channel: paramiko.Channel, data: bytes) -> None:
    """Feed tar its list of names (from a thread: tar may write before it reads them all)."""
    with suppress(OSError, EOFError, paramiko.SSHException):
        channel.sendall(data)
        channel.shutdown_write()


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.stat(path)
    except FileNotFoundError:
        return False
    return True


def _makedirs(sftp: paramiko.SFTPClient, directory: str) -> None:
    missing = []
    while directory not in ("", "/"):
        try:
            sftp.stat(directory)
            break
        except FileNotFoundError:
            missing.append(directory)
            directory = posixpath.dirname(directory)
    for folder in reversed(missing):
        with suppress(OSError):  # another worker may have made it meanwhile
            sftp.mkdir(folder)
