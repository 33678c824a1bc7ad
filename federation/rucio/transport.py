"""A site's files read and written through Rucio, on the site's RSE.

The datastore path of a file is its Rucio name (the identity mapping of
:mod:`federation.rucio.names`): a file of the site is a replica on the RSE, AVAILABLE.
Bytes travel by the replica's PFN: ``file://`` PFNs (a POSIX RSE this machine mounts) are
read and written on the local filesystem, ``http(s)://`` and ``davs://`` PFNs are read with
requests. Lookups go through :class:`~federation.rucio.session.RucioSession` in bulk.

What Rucio allows shapes the writes. A file's size and checksums never change once
registered, and ``add_replicas`` leaves a registered replica as it is: replacing a file
with other content means deleting its replica first, which Rucio's generic permission
policy grants to no account (so ``put`` refuses, in one line, and keeps the old file).
Deleting marks the replica BEING_DELETED (Rucio's reaper removes it from the catalog
later) and removes its bytes; a file a replication rule protects is never deleted.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import requests

from federation.datastore.checksum import CHUNK
from federation.rucio.hashing import file_sums
from federation.rucio.names import why_unmappable
from federation.rucio.session import Replica, RucioError, RucioFile, RucioSession
from federation.transport.base import (
    MAX_SIZE,
    Counters,
    FetchRequest,
    MissingFileError,
    OnBytes,
    PartialDownload,
    RemoteFile,
    Transport,
    TransportError,
    check_prefix,
    remote_join,
    safe_name,
)

AVAILABLE = "AVAILABLE"
BEING_DELETED = "BEING_DELETED"
#: PFN schemes whose bytes this transport reads (davs is WebDAV over https)
READABLE = ("file", "http", "https", "davs")
_RANGE = re.compile(r"bytes (\d+)-")
log = logging.getLogger(__name__)


class RucioTransport(Transport):
    """The files of one site: replicas on the RSE of ``session``'s settings, in its scope."""

    batches = False
    parallel = 4
    writable = True

    def __init__(self, session: RucioSession) -> None:
        self.session = session
        self.rse = session.settings.rse
        self.counters = Counters()
        self._local = threading.local()  # one requests.Session per thread, for http PFNs
        self._http: list[requests.Session] = []
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"rucio://{self.rse} ({self.session.settings.url})"

    # -- reading -------------------------------------------------------------------------

    def _replica(self, name: str | None) -> Replica | None:
        """The file's replica on the RSE when it is AVAILABLE (None for a path that has no
        Rucio name: no file of the site can have it)."""
        if name is None:
            return None
        found = self.session.replicas(self.rse, [name]).get(name)
        return found if found is not None and found.state == AVAILABLE else None

    def stat(self, path: str) -> RemoteFile | None:
        found = self._replica(_name(path))
        return RemoteFile(path, found.size) if found is not None else None

    def get(self, path: str, local: Path) -> None:
        self.fetch(path, local)

    def fetch(self, path: str, local: Path, *, resume: bool = False,
              on_bytes: OnBytes | None = None, size: int | None = None) -> tuple[int, str]:
        return self._read(path, self._replica(_name(path)), local, resume, on_bytes)

    def fetch_many(self, requests: Sequence[FetchRequest], *, on_bytes: OnBytes | None = None
                   ) -> Iterator[tuple[FetchRequest, tuple[int, str] | TransportError]]:
        """One replica lookup for the whole group, then each file's bytes."""
        named: list[tuple[FetchRequest, str | None]] = []
        for request in requests:
            try:
                named.append((request, _name(request.path)))
            except TransportError as exc:
                yield request, exc
        try:
            found = self.session.replicas(self.rse, [n for _, n in named if n is not None])
        except TransportError as exc:
            for request, _ in named:
                yield request, exc
            return
        for request, name in named:
            replica = found.get(name) if name is not None else None
            if replica is not None and replica.state != AVAILABLE:
                replica = None
            try:
                yield request, self._read(request.path, replica, request.local, True, on_bytes)
            except TransportError as exc:
                yield request, exc

    def _read(self, path: str, replica: Replica | None, local: Path, resume: bool,
              on_bytes: OnBytes | None) -> tuple[int, str]:
        """The replica's bytes into ``local`` (continuing a partial file with ``resume``),
        with their size and xxh3; MissingFileError, and no local file, without a replica."""
        if replica is None:
            local.unlink(missing_ok=True)
            raise MissingFileError(f"{path} is missing at the source (no available replica "
                                   f"on {self.rse})")
        pfn = self._readable_pfn(path, replica)
        download = PartialDownload(local, resume=resume, on_bytes=on_bytes)
        if download.offset > replica.size:
            download.restart()  # longer than the file: not a part of it
        try:
            if download.offset < replica.size or download.offset == 0:
                if pfn.startswith("file:"):
                    self._read_file(path, _local_file(pfn), download)
                else:
                    self._read_url(path, pfn, download)
        except MissingFileError:
            download.close()
            local.unlink(missing_ok=True)
            raise
        except BaseException:
            download.abandon()  # what arrived stays for a resume
            raise
        if download.offset != replica.size:
            download.close()
            local.unlink(missing_ok=True)
            raise TransportError(f"{path}: {pfn} holds {download.offset} bytes, Rucio records "
                                 f"{replica.size} for it on {self.rse}")
        self.counters.resumed(download.resumed)
        return download.close()

    def _readable_pfn(self, path: str, replica: Replica) -> str:
        for pfn in replica.pfns:
            if urlsplit(pfn).scheme in READABLE:
                return pfn
        schemes = ", ".join(sorted({urlsplit(p).scheme + "://" for p in replica.pfns}))
        raise TransportError(f"cannot read {path} from {self.rse}: its replica is reached by "
                             f"{schemes or 'no protocol'}; fed reads file://, http(s):// and "
                             "davs://")

    def _read_file(self, path: str, source: Path, download: PartialDownload) -> None:
        try:
            with open(source, "rb") as f:
                f.seek(download.offset)
                while chunk := f.read(CHUNK):
                    download.write(chunk)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise MissingFileError(f"{path} is registered on {self.rse} but missing at "
                                   f"{source}") from None
        except OSError as exc:
            raise TransportError(f"cannot read {path} at {source}: {exc.strerror}") from None

    def _read_url(self, path: str, pfn: str, download: PartialDownload) -> None:
        url = "https" + pfn[len("davs"):] if pfn.startswith("davs:") else pfn
        headers = {"Range": f"bytes={download.offset}-"} if download.offset else {}
        try:
            with self._session.get(url, headers=headers, stream=True,
                                   timeout=self.session.settings.timeout) as response:
                if response.status_code == 404:
                    raise MissingFileError(f"{path} is registered on {self.rse} but missing at "
                                           f"{url} (HTTP 404)")
                if response.status_code == 206:
                    start = _RANGE.match(response.headers.get("Content-Range", ""))
                    if start is None or int(start.group(1)) != download.offset:
                        raise TransportError(f"{url}: the server answered another byte range "
                                             "than asked")
                elif response.status_code == 200:
                    if download.offset:
                        download.restart()  # no ranges there: from the start
                else:
                    raise TransportError(f"cannot read {path} at {url}: HTTP "
                                         f"{response.status_code} {response.reason}")
                for chunk in response.iter_content(CHUNK):
                    download.write(chunk)
        except requests.RequestException as exc:
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise TransportError(f"cannot read {path} at {url}: {detail}") from None

    @property
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.verify = self.session.settings.ca_cert
            session.headers["User-Agent"] = "federation"
            session.headers["Accept-Encoding"] = "identity"  # sizes are of the bytes stored
            self._local.session = session
            with self._lock:
                self._http.append(session)
        return session

    def list(self, prefix: str = "") -> Iterator[RemoteFile]:
        """The AVAILABLE replicas on the RSE under the directory ``prefix``: the scope's file
        names matching ``prefix/*``, then one bulk replica lookup per thousand."""
        return self._list(check_prefix(prefix))

    def _list(self, top: str) -> Iterator[RemoteFile]:
        names = [name for name in self.session.file_names(f"{top}/*" if top else "*")
                 if (not top or name.startswith(top + "/")) and self._listable(name)]
        found = self.session.replicas(self.rse, names)
        for name in names:
            replica = found.get(name)
            if replica is not None and replica.state == AVAILABLE:
                if not 0 <= replica.size <= MAX_SIZE:
                    raise TransportError(f"{self.describe()}: Rucio gives {name} an invalid "
                                         f"size {replica.size}")
                yield RemoteFile(name, replica.size)

    def _listable(self, name: str) -> bool:
        if all(safe_name(part) for part in name.split("/")):
            return True
        log.warning("%s: skipping the name %r, which no datastore path can have",
                    self.describe(), name)
        return False

    # -- writing -------------------------------------------------------------------------

    def put(self, local: Path, path: str) -> None:
        """Write the bytes at the RSE's write PFN (a temporary name, then renamed into
        place) and register the replica with its size, adler32 and md5."""
        name = _writable_name(path)
        try:
            source = open(local, "rb")  # noqa: SIM115 - opened first: nothing changes if not
        except OSError as exc:
            raise TransportError(f"cannot read {local}: {exc.strerror}") from None
        with source:
            target = self._local_pfn(path, name, "write")
            temp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:12]}")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(temp, "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
            except OSError as exc:
                temp.unlink(missing_ok=True)
                raise TransportError(f"cannot write {path} at {target}: {exc.strerror}") \
                    from None
        try:
            sums = file_sums(temp)
            register = self._make_room(path, name, sums.size, sums.adler32)
            os.replace(temp, target)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise TransportError(f"cannot write {path} at {target}: {exc.strerror}") from None
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        if register:
            self.session.add_replicas(self.rse, [RucioFile(name, sums.size, sums.adler32,
                                                           sums.md5)])

    def _make_room(self, path: str, name: str, size: int, adler32: str) -> bool:
        """Whether the file must be registered: not when the RSE has it with this content
        already. A replica with other content (or not available) is deleted first, as a
        file's size and checksums cannot change: TransportError if Rucio refuses."""
        found = self.session.replicas(self.rse, [name]).get(name)
        if found is None:
            return True
        if found.state == AVAILABLE and (found.size, found.adler32) == (size, adler32):
            return False
        if found.state == AVAILABLE:
            why = (f"it holds other content there ({found.size} bytes, adler32 "
                   f"{found.adler32}) and Rucio never changes a file's size or checksums")
            fix = "write it under a new name"
        elif found.state == BEING_DELETED:
            why = "it was deleted there and Rucio's reaper has not removed its replica yet"
            fix = "try again once the reaper has"
        else:
            why, fix = f"its replica there is {found.state}", "try again once Rucio is done"
        try:
            self.session.delete_replicas(self.rse, [name])
        except RucioError as exc:
            detail = str(exc).partition(f"cannot delete replicas on {self.rse}: ")[2]
            raise TransportError(f"cannot replace {path} on {self.rse}: {why}, and deleting "
                                 f"its replica failed ({detail or exc}); {fix}") from None
        return True

    def delete(self, path: str) -> None:
        """Mark the replica BEING_DELETED (Rucio's reaper removes it from the catalog) and
        remove its bytes; nothing if the RSE has no such file. A file that a replication
        rule keeps on the RSE is refused."""
        name = _name(path)
        found = self.session.replicas(self.rse, [name]).get(name) if name else None
        if found is None:
            return
        target = self._local_pfn(path, name, "delete")
        if found.state != BEING_DELETED:
            rules = self.session.protecting_rules(self.rse, name)
            if rules:
                raise TransportError(f"cannot delete {path} from {self.rse}: replication "
                                     f"rule {', '.join(rules)} keeps it there")
            self.session.mark_deleted(self.rse, [name])
        try:
            target.unlink(missing_ok=True)
        except OSError as exc:
            raise TransportError(f"cannot delete {path} at {target}: {exc.strerror}") from None

    def rename(self, src: str, dst: str) -> None:
        """A copy of ``src``'s bytes put at ``dst``, then ``src`` deleted (Rucio has no
        rename: a name is a file's identity)."""
        source, target = _name(src), _writable_name(dst)
        found = self._replica(source)
        if found is None:
            raise MissingFileError(f"{src} is missing at {self.describe()}")
        if source == target:
            return
        with tempfile.TemporaryDirectory(prefix="fed-rename-") as folder:
            copy = Path(folder) / "file"
            self._read(src, found, copy, False, None)
            self.put(copy, dst)
        self.delete(src)

    def _local_pfn(self, path: str, name: str, operation: str) -> Path:
        pfn = self.session.pfns(self.rse, [name], operation).get(name)
        if pfn is None or not pfn.startswith("file:"):
            scheme = urlsplit(pfn).scheme + "://" if pfn else "no protocol"
            raise TransportError(f"cannot {operation} {path} on {self.rse}: its {operation} "
                                 f"protocol is {scheme}; fed writes and deletes only through "
                                 "file:// (a POSIX RSE this machine mounts)")
        return _local_file(pfn)

    def close(self) -> None:
        with self._lock:
            for session in self._http:
                session.close()
            self._http.clear()


def _name(path: str) -> str | None:
    """The Rucio name of a datastore path, or None if it cannot have one (such a file is
    not on the site); TransportError for a path that escapes the root or is absolute."""
    checked = remote_join("", path)
    return None if why_unmappable(checked) is not None else checked


def _writable_name(path: str) -> str:
    checked = remote_join("", path)
    why = why_unmappable(checked)
    if why is not None:
        raise TransportError(f"cannot write {path} through Rucio: {why}")
    return checked


def _local_file(pfn: str) -> Path:
    """The local path of a ``file://`` PFN (on this machine: no host, or localhost)."""
    parts = urlsplit(pfn)
    if parts.netloc not in ("", "localhost"):
        raise TransportError(f"{pfn} is on {parts.netloc}, not on this machine")
    return Path(parts.path)
