"""A site reached over SSH: files read and written with SFTP (paramiko).

Host keys are checked against a known_hosts file; an unknown or changed key
is refused, and trusting a key is an explicit step (:func:`trust_host_key`).
Each worker thread borrows a connection from a small pool, so ``--jobs N``
transfers over N connections. Transient failures (a dropped connection, a
restarting server) are retried with bounded backoff, resuming partial files.
"""

from __future__ import annotations

import errno
import logging
import posixpath
import queue
import shlex
import socket
import tarfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from federation.datastore.checksum import CHUNK
from federation.errors import ConfigError
from federation.transport.base import (
    Counters,
    FetchRequest,
    MissingFileError,
    OnBytes,
    PartialDownload,
    RemoteFile,
    Transport,
    TransportError,
    remote_join,
)
from federation.transport.retry import RetryPolicy, TransientError

SSH_WINDOW = 64 << 20  # a large SSH window keeps loopback and long-haul links busy
READ_SIZE = 255 << 10  # per SFTP read request: OpenSSH serves up to 255 KiB at once
WINDOW = 8 << 20  # bytes requested ahead of the reader

# paramiko logs a dropped connection at ERROR level; we report it ourselves, once.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False



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


class HostKeyError(TransportError):
    """The server's host key is unknown or differs from the one on record."""


class AuthenticationError(TransportError):
    """The server refused our credentials."""


@dataclass(frozen=True)
class SFTPSettings:
    """How to reach one site over SSH (the ``sftp:`` block of a site definition)."""

    host: str
    root: str
    port: int = 22
    user: str | None = None
    key_file: Path | None = None
    known_hosts: Path = Path("~/.ssh/known_hosts")
    timeout: float = 30.0
    retry: RetryPolicy = RetryPolicy()

    @property
    def address(self) -> str:
        """The host as known_hosts names it."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    @property
    def known_hosts_file(self) -> Path:
        return self.known_hosts.expanduser()


def fingerprint(key: paramiko.PKey) -> str:
    return key.fingerprint  # "SHA256:..." as ssh-keygen -l prints it


class _Refuse(paramiko.MissingHostKeyPolicy):
    """Refuse unknown keys, remembering the one offered so the error can show it."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        raise HostKeyError(
            f"the host key of {hostname} is not known ({key.get_name()} {fingerprint(key)}): "
            f"check that fingerprint with the site's operators, then trust it with "
            f"'fed site trust SITE'")


def _load_host_keys(client: paramiko.SSHClient, path: Path) -> None:
    if path.is_file():
        try:
            client.load_host_keys(str(path))
        except (OSError, paramiko.SSHException) as exc:
            raise ConfigError(f"cannot read known_hosts file {path}: {exc}") from None


def _transport(sock: Any, **kwargs: Any) -> paramiko.Transport:
    """An SSH transport preferring AES-GCM: its integrity check runs in OpenSSL, where
    paramiko checks the MACs of the other ciphers in Python, byte by byte."""
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    gcm = tuple(c for c in options.ciphers if c.endswith("-gcm@openssh.com"))
    options.ciphers = gcm + tuple(c for c in options.ciphers if c not in gcm)
    return transport


def connect(settings: SFTPSettings) -> paramiko.SSHClient:
    """An authenticated SSH connection; HostKeyError/AuthenticationError/TransientError."""
    client = paramiko.SSHClient()
    _load_host_keys(client, settings.known_hosts_file)
    client.set_missing_host_key_policy(_Refuse())
    key_file = settings.key_file.expanduser() if settings.key_file else None
    if key_file is not None and not key_file.is_file():
        raise ConfigError(f"SSH key file {key_file} does not exist")
    where = f"{settings.user + '@' if settings.user else ''}{settings.host}:{settings.port}"
    try:
        client.connect(settings.host, settings.port, username=settings.user,
                       key_filename=str(key_file) if key_file else None,
                       look_for_keys=key_file is None, allow_agent=key_file is None,
                       timeout=settings.timeout, banner_timeout=settings.timeout,
                       auth_timeout=settings.timeout, channel_timeout=settings.timeout,
                       transport_factory=_transport)
    except HostKeyError:
        client.close()
        raise
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyError(
            f"the host key of {settings.address} has CHANGED: the server offered "
            f"{fingerprint(exc.key)} but {settings.known_hosts_file} records "
            f"{fingerprint(exc.expected_key)}. Someone may be intercepting the connection; if "
            f"the site really changed its key, remove the old entry and run "
            f"'fed site trust SITE'") from None
    except paramiko.AuthenticationException as exc:
        client.close()
        raise AuthenticationError(f"authentication failed for {where}"
                                  + (f" with key {key_file}" if key_file else "")
                                  + f": {exc}") from None
    except paramiko.PasswordRequiredException:
        client.close()
        raise AuthenticationError(f"the key {key_file} is encrypted; use an agent or an "
                                  "unencrypted key for unattended syncs") from None
    except (OSError, EOFError, paramiko.SSHException) as exc:
        client.close()
        raise TransientError(f"cannot connect to {where}: {_reason(exc)}") from None
    transport = client.get_transport()
    assert transport is not None
    transport.window_size = SSH_WINDOW
    transport.default_window_size = SSH_WINDOW
    transport.set_keepalive(30)
    return client


def scan_host_key(settings: SFTPSettings) -> paramiko.PKey:
    """The key a server offers, without authenticating (for `fed site trust`)."""
    try:
        sock = socket.create_connection((settings.host, settings.port), settings.timeout)
    except OSError as exc:
        raise TransportError(f"cannot connect to {settings.host}:{settings.port}: "
                             f"{_reason(exc)}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=settings.timeout)
        return transport.get_remote_server_key()
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise TransportError(f"{settings.host}:{settings.port} did not complete an SSH "
                             f"handshake: {_reason(exc)}") from None
    finally:
        transport.close()


def trust_host_key(settings: SFTPSettings, key: paramiko.PKey) -> Path:
    """Record ``key`` for the site's host in its known_hosts file (replacing an old one)."""
    path = settings.known_hosts_file
    keys = paramiko.HostKeys()
    if path.is_file():
        keys.load(str(path))
    if settings.address in keys:
        del keys[settings.address]
    keys.add(settings.address, key.get_name(), key)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    keys.save(str(temp))
    temp.replace(path)
    return path


def _reason(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None)  # paramiko's NoValidConnectionsError: per address
    if isinstance(errors, dict) and errors:
        exc = next(iter(errors.values()))
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class SFTPTransport(Transport):
    """Files under ``settings.root`` on an SSH server, over a pool of SFTP connections."""

    batches = True

    def __init__(self, settings: SFTPSettings, *, root: str | None = None) -> None:
        self.settings = settings
        self.root = root or settings.root
        self.counters = Counters()
        self._pool: queue.LifoQueue[tuple[paramiko.SSHClient, paramiko.SFTPClient]] = \
            queue.LifoQueue()
        self._closed = False
        self._streams: bool | None = None  # can the server run tar? (None: not tried yet)

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
            except (OSError, EOFError, paramiko.SSHException) as exc:
                client.close()
                raise TransientError(f"cannot start SFTP on {self.settings.host}: "
                                     f"{_reason(exc)}") from None
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
                    raise TransientError(_reason(exc)) from None
        return self.settings.retry.call(what, attempt)

    def _path(self, path: str) -> str:
        return remote_join(self.root, path)

    def stat(self, path: str) -> RemoteFile | None:
        remote = self._path(path)
        try:
            attrs = self._call(f"stat {remote}", lambda sftp: sftp.stat(remote))
        except FileNotFoundError:
            return None
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
                total = size if size is not None else handle.stat().st_size or 0
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
        remote = self._path(path)
        temp = posixpath.join(posixpath.dirname(remote),
                              f".{posixpath.basename(remote)}.tmp-{uuid.uuid4().hex[:12]}")

        def attempt(sftp: paramiko.SFTPClient) -> None:
            _makedirs(sftp, posixpath.dirname(remote))
            try:
                sftp.put(str(local), temp, confirm=True)
                sftp.posix_rename(temp, remote)
            except BaseException:
                with suppress(OSError, EOFError, paramiko.SSHException):
                    sftp.remove(temp)
                raise

        self._call(f"upload {remote}", attempt)

    def delete(self, path: str) -> None:
        remote = self._path(path)
        with suppress(FileNotFoundError):
            self._call(f"delete {remote}", lambda sftp: sftp.remove(remote))

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
