"""The contract every transport keeps, checked against real servers.

One suite, parametrized over the kinds of site: a local directory, an SFTP site (a real
OpenSSH sshd on loopback), a web site (a real nginx on loopback, read-only: the write tests
check the refusal instead), the in-memory test double, and a Rucio RSE (the real Rucio server
of rucio_server.py; its files read from disk, or over HTTP from nginx). A new transport joins
by adding one entry to SITES: a :class:`Site` that opens the transport and, as the server's
administrator would, places and inspects files behind it.

After the contract: what is Rucio's own (the reaper, rules, bulk lookups), then web servers
whose listings lie. The in-memory transport's faults are in test_transport_retries.py, the
settings of each kind in test_transport_settings.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import random
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from rucio_server import RucioServer, rucio_server  # noqa: F401  (fixture)

import federation.transport.sftp as sftp_module
from federation.datastore.checksum import CHUNK, bytes_checksum, file_checksum
from federation.rucio.settings import RucioSettings
from federation.rucio.transport import RucioTransport
from federation.transport.base import (
    FetchRequest,
    MissingFileError,
    RemoteFile,
    Transport,
    TransportError,
)
from federation.transport.memory import MemoryTransport
from federation.transport.retry import RetryPolicy
from federation.transport.settings import HTTPSettings, LocalSettings, SFTPSettings

FAST = RetryPolicy(attempts=2, initial=0.05, maximum=0.1, deadline=5.0)


def blob(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# -- the sites under test ------------------------------------------------------------------


class Site:
    """One kind of site: opens its transport, and reaches behind it to place and inspect
    files (here: the directory ``root`` that the server serves)."""

    writable = True  # put, delete and rename work (else they must be refused)
    replaces = True  # put and rename replace a file with other content (else refused)
    resumes = True  # fetch(resume=True) keeps the bytes of a partial local file
    reads_absolute = False  # absolute paths read files outside the root (in-place ingests)
    #: names the server side can hold that no datastore path can have
    unsafe_names: tuple[str, ...] = ("back\\slash", "new\nline")
    kind = ""  # its name in SITES

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self.opened: list[Transport] = []

    def open(self) -> Transport:
        """A new transport to the site (closed at the end of the test)."""
        self.opened.append(self.make())
        return self.opened[-1]

    def make(self) -> Transport:
        raise NotImplementedError

    def place(self, path: str, data: bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def link(self, path: str, target: str) -> None:
        (self.root / path).symlink_to(target)

    def read(self, path: str) -> bytes | None:
        target = self.root / path
        return target.read_bytes() if target.is_file() else None

    def names(self) -> set[str]:
        """Every file on the server side, temporary names included."""
        return {p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                if p.is_file()}

    def contacts(self) -> int | None:
        """Round trips to the server so far (None: there is no server to count)."""
        return None


class LocalSite(Site):
    resumes = False
    reads_absolute = True

    def make(self) -> Transport:
        return LocalSettings.at(self.root).open()


class SFTPSite(Site):
    def __init__(self, root: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(root)
        self.server, self.connects = server, 0
        connect = sftp_module.connect

        def counted(settings):
            self.connects += 1
            return connect(settings)
        monkeypatch.setattr(sftp_module, "connect", counted)

    def make(self) -> Transport:
        return SFTPSettings(self.server.host, str(self.root), port=self.server.port,
                            user=self.server.user, key_file=self.server.user_key,
                            known_hosts=self.server.known_hosts, timeout=10, retry=FAST).open()

    def contacts(self) -> int:
        return self.connects


class HTTPSite(Site):
    writable = False
    resumes = False  # without the ETag of an interrupted transfer, it starts over

    def __init__(self, root: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(root)
        self.server, self.requests = server, 0
        request = requests.Session.request

        def counted(session, *args, **kwargs):
            self.requests += 1
            return request(session, *args, **kwargs)
        monkeypatch.setattr(requests.Session, "request", counted)

    def make(self) -> Transport:
        return HTTPSettings(self.server.url_for(self.root), timeout=10, retry=FAST).open()

    def contacts(self) -> int:
        return self.requests


class MemorySite(Site):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.files: dict[str, bytes] = {}

    def make(self) -> Transport:
        return MemoryTransport(self.files)

    def place(self, path: str, data: bytes) -> None:
        self.files[path] = data

    def read(self, path: str) -> bytes | None:
        return self.files.get(path)

    def names(self) -> set[str]:
        return set(self.files)

    def contacts(self) -> int:
        return sum(t.contacts for t in self.opened)


class RucioSite(Site):
    """A POSIX RSE of the test Rucio server whose identity lfn2pfn puts a file's replica at
    ROOT/SCOPE/NAME (scope and RSE named at random per test). Its administrator writes files
    there and registers them with the server's client (as root). With ``web``, nginx serves
    ROOT and the RSE's preferred read protocol is http://: readers fetch over HTTP, writes
    still go through file://.

    Rucio's generic permission policy (the test server's, and Rucio's default) grants
    ``delete_replicas`` to no account, and a registered file's size and checksums never
    change: a file cannot be replaced with other content, so put and rename over one must
    be refused and keep it (``replaces``). Rucio's schema takes no backslash or newline in
    a name, but takes names with empty, "." or ".." parts (``unsafe_names``).
    """

    replaces = False
    unsafe_names = ("/abs", "a//b", "up/../x", "dot/./x")

    def __init__(self, root: Path, server: RucioServer, web=None) -> None:
        super().__init__(root)
        tag = uuid.uuid4().hex[:8]
        self.server, self.scope, self.rse = server, f"contract{tag}", f"CONTRACT_{tag.upper()}"
        self.files = root / self.scope
        self.client = server.client()
        self.client.add_scope("root", self.scope)
        self.client.add_rse(self.rse, deterministic=True, rse_type="DISK")
        both = ("lan", "wan")
        self.client.add_protocol(self.rse, {
            "scheme": "file", "hostname": "localhost", "port": 0, "prefix": f"{root}/",
            "impl": "rucio.rse.protocols.posix.Default",
            "domains": {d: {"read": 2 if web else 1, "write": 1, "delete": 1} for d in both}})
        if web is not None:
            url = urlsplit(web.url_for(root))
            self.client.add_protocol(self.rse, {
                "scheme": "http", "hostname": url.hostname, "port": url.port,
                "prefix": url.path, "impl": "rucio.rse.protocols.webdav.Default",
                "domains": {d: {"read": 1, "write": None, "delete": None} for d in both}})
        self.client.add_rse_attribute(self.rse, "lfn2pfn_algorithm", "identity")
        self.client.set_local_account_limit("root", self.rse, -1)

    def settings(self) -> RucioSettings:
        return RucioSettings(url=self.server.url, account="root", scope=self.scope,
                             rse=self.rse, username=self.server.username,
                             password=self.server.password, timeout=20)

    def make(self) -> Transport:
        return self.settings().open("contract")

    def place(self, path: str, data: bytes) -> None:
        if not path.startswith("/") and posixpath.normpath(path) == path:
            super().place(f"{self.scope}/{path}", data)  # names no file can have: registered
        self.client.add_replicas(self.rse, [{
            "scope": self.scope, "name": path, "bytes": len(data), "adler32": adler32(data),
            "md5": hashlib.md5(data).hexdigest()}])

    def replicas(self) -> dict[str, tuple[str, int, str]]:
        """Every replica on the RSE: its state, size and adler32, by name."""
        names = list(self.client.list_dids(self.scope, {"name": "*"}, did_type="file"))
        if not names:
            return {}
        return {r["name"]: (r["states"][self.rse], r["bytes"], r["adler32"])
                for r in self.client.list_replicas(
                    [{"scope": self.scope, "name": n} for n in names],
                    rse_expression=self.rse, all_states=True)}

    def read(self, path: str) -> bytes | None:
        """The file's bytes on disk, which its replica must match (None: neither exists)."""
        data = super().read(f"{self.scope}/{path}")
        replica = self.replicas().get(path)
        if replica is None or replica[0] != "AVAILABLE":
            assert data is None, f"{path} is on disk without an available replica: {replica}"
            return None
        assert data is not None, f"{path} has an available replica but no file on disk"
        assert replica[1:] == (len(data), adler32(data)), f"{path}: {replica} on disk differs"
        return data

    def names(self) -> set[str]:
        """Files on disk (temporary names included) and replicas not being deleted; every
        available replica must have its file."""
        disk = {os.path.relpath(p, self.files) for p in self.root.rglob("*") if p.is_file()}
        listed = {name: state for name, (state, _, _) in self.replicas().items()
                  if state != "BEING_DELETED"}
        missing = {name for name, state in listed.items()
                   if state == "AVAILABLE" and name not in disk}
        assert not missing, f"available replicas without their file: {missing}"
        return disk | set(listed)

    def contacts(self) -> int:
        return sum(t.session.calls for t in self.opened)


def adler32(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


SITES: dict[str, Callable[[pytest.FixtureRequest, Path], Site]] = {
    "local": lambda request, root: LocalSite(root),
    "sftp": lambda request, root: SFTPSite(root, request.getfixturevalue("sshd_server"),
                                           request.getfixturevalue("monkeypatch")),
    "http": lambda request, root: HTTPSite(root, request.getfixturevalue("web_server"),
                                           request.getfixturevalue("monkeypatch")),
    "memory": lambda request, root: MemorySite(root),
    "rucio": lambda request, root: RucioSite(root, request.getfixturevalue("rucio_server")),
    "rucio_http": lambda request, root: RucioSite(root, request.getfixturevalue("rucio_server"),
                                                  request.getfixturevalue("web_server")),
}


#: sites whose server sends each directory listing whole (the others walk as they list)
WHOLE_LISTINGS = ["sftp", "http"]
#: sites whose server side can hold symbolic links
LINKS = ["local", "sftp", "http"]


def open_site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    made = SITES[request.param](request, tmp_path / "site")
    made.kind = request.param
    yield made
    for transport in made.opened:
        transport.close()


@pytest.fixture(params=list(SITES))
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    yield from open_site(request, tmp_path)


@pytest.fixture(params=WHOLE_LISTINGS)
def listing_site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    yield from open_site(request, tmp_path)


@pytest.fixture(params=LINKS)
def linking_site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    yield from open_site(request, tmp_path)


def refused(site: Site, write: Callable[[], object]) -> bool:
    """On a read-only site, ``write`` must fail with one line saying so (then True)."""
    if site.writable:
        return False
    with pytest.raises(TransportError) as info:
        write()
    assert "read-only" in str(info.value) and "\n" not in str(info.value)
    return True


def refuses_replacing(site: Site, write: Callable[[], object]) -> bool:
    """On a site that cannot replace a file with other content, ``write`` (over one) must fail
    with one line saying so (then True)."""
    if site.replaces:
        return False
    with pytest.raises(TransportError) as info:
        write()
    assert "cannot replace" in str(info.value) and "\n" not in str(info.value)
    return True


# -- the contract -------------------------------------------------------------------------


def test_stat_gives_the_size_of_a_file_and_none_for_anything_else(site):
    site.place("a/file.dat", b"x" * 1234)
    site.place("empty", b"")
    t = site.open()
    assert t.stat("a/file.dat") == RemoteFile("a/file.dat", 1234)
    assert t.stat("empty") == RemoteFile("empty", 0)
    assert t.stat("missing") is None and t.stat("a/missing/deeper") is None
    assert t.stat("a") is None  # a directory is not a file of the site
    assert t.exists("a/file.dat") and not t.exists("missing")


def test_get_and_fetch_deliver_the_file_with_its_size_and_checksum(site, tmp_path):
    files = {"d/big.bin": blob(3 * CHUNK + 123), "d/small": b"abc", "zero": b""}
    for path, data in files.items():
        site.place(path, data)
    t = site.open()
    out = tmp_path / "out"
    for path, data in files.items():
        out.write_bytes(b"stale" * 100_000)  # an older, longer file is overwritten
        arrived: list[int] = []
        got = t.fetch(path, out, on_bytes=arrived.append)
        assert got == file_checksum(out) == (len(data), bytes_checksum(data))
        assert sum(arrived) == len(data)
        assert t.fetch(path, out, size=len(data)) == got
        t.get(path, tmp_path / "copy")
        assert (tmp_path / "copy").read_bytes() == data


def test_fetch_with_resume_continues_a_partial_download(site, tmp_path):
    data = blob(2 * CHUNK + 77)
    site.place("big", data)
    local = tmp_path / "big.part"
    local.write_bytes(data[:CHUNK + 5])
    t = site.open()
    arrived: list[int] = []
    assert t.fetch("big", local, resume=True, on_bytes=arrived.append) == \
        (len(data), bytes_checksum(data))
    assert local.read_bytes() == data
    if site.resumes:
        assert sum(arrived) == len(data) - CHUNK - 5
        assert (t.counters.resumed_files, t.counters.resumed_bytes) == (1, CHUNK + 5)
    local.write_bytes(data + b"more than the file")  # longer than the file: start over
    assert t.fetch("big", local, resume=True) == (len(data), bytes_checksum(data))


def test_fetch_many_yields_every_request_once_with_its_result_or_error(site, tmp_path):
    files = {f"many/{i:02d}.dat": blob(100 + i, seed=i) for i in range(6)}
    for path, data in files.items():
        site.place(path, data)
    wanted = [FetchRequest(path, tmp_path / f"out{i}", len(data))
              for i, (path, data) in enumerate(files.items())]
    wanted += [FetchRequest("many/missing", tmp_path / "m", 10),
               FetchRequest("../escape", tmp_path / "e", 10)]
    outcomes = list(site.open().fetch_many(wanted))
    assert Counter(request for request, _ in outcomes) == Counter(wanted)
    results = {request.path: (request, result) for request, result in outcomes}
    for path, data in files.items():
        request, result = results[path]
        assert result == (len(data), bytes_checksum(data)) and request.local.read_bytes() == data
    assert isinstance(results["many/missing"][1], MissingFileError)
    assert isinstance(results["../escape"][1], TransportError)


def test_read_bytes_returns_a_small_file_and_refuses_one_over_the_limit(site):
    site.place("index.json", b'{"a": 1}')
    site.place("huge", blob(3 * CHUNK))
    t = site.open()
    assert t.read_bytes("index.json") == t.read_bytes("index.json", limit=8) == b'{"a": 1}'
    with pytest.raises(TransportError, match="larger than 7 bytes"):
        t.read_bytes("index.json", limit=7)
    with pytest.raises(TransportError, match="larger than 100 bytes"):
        t.read_bytes("huge", limit=100)
    with pytest.raises(MissingFileError):
        t.read_bytes("nothing.json")


def test_a_missing_file_is_a_missing_file_error_and_leaves_no_local_file(site, tmp_path):
    t = site.open()
    out = tmp_path / "out"
    for call in (lambda: t.get("no/such", out), lambda: t.fetch("no/such", out),
                 lambda: t.fetch("no/such", out, resume=True)):
        with pytest.raises(MissingFileError):
            call()
        assert not out.exists()


def test_put_stores_a_file_and_replaces_an_older_one(site, tmp_path):
    local = tmp_path / "new.dat"
    local.write_bytes(blob(5000))
    t = site.open()
    if refused(site, lambda: t.put(local, "a/b/new.dat")):
        assert site.names() == set()
        return
    t.put(local, "a/b/new.dat")
    assert site.read("a/b/new.dat") == local.read_bytes()
    first = local.read_bytes()
    local.write_bytes(b"shorter")
    if refuses_replacing(site, lambda: t.put(local, "a/b/new.dat")):
        assert site.read("a/b/new.dat") == first and t.stat("a/b/new.dat").size == 5000
        assert site.names() == {"a/b/new.dat"}
        return
    t.put(local, "a/b/new.dat")
    assert site.read("a/b/new.dat") == b"shorter" and t.stat("a/b/new.dat").size == 7
    assert site.names() == {"a/b/new.dat"}  # no temporary name left behind


def test_a_reader_never_sees_a_half_written_file(site, tmp_path):
    old, new = blob(1000, seed=1), blob(6 << 20, seed=2)
    site.place("shared.dat", old)
    local = tmp_path / "new"
    local.write_bytes(new)
    writer, reader = site.open(), site.open()
    if refused(site, lambda: writer.put(local, "shared.dat")):
        assert site.read("shared.dat") == old
        return
    if refuses_replacing(site, lambda: writer.put(local, "shared.dat")):
        assert site.read("shared.dat") == old and reader.stat("shared.dat").size == len(old)
        assert site.names() == {"shared.dat"}
        return
    seen: set[int | None] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            found = reader.stat("shared.dat")
            seen.add(found.size if found else None)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        writer.put(local, "shared.dat")
    finally:
        done.set()
        watcher.join(30)
    assert seen and seen <= {len(old), len(new)}, seen
    assert site.read("shared.dat") == new and site.names() == {"shared.dat"}


def test_a_failed_put_keeps_the_old_file_and_leaves_no_temporary_name(site, tmp_path):
    site.place("kept.dat", b"old")
    with pytest.raises(TransportError):
        site.open().put(tmp_path / "no-such-local-file", "kept.dat")
    assert site.read("kept.dat") == b"old" and site.names() == {"kept.dat"}


def test_delete_removes_a_file_and_does_nothing_when_it_is_gone(site):
    site.place("d/gone.dat", b"x")
    site.place("d/stays.dat", b"y")
    t = site.open()
    if refused(site, lambda: t.delete("d/gone.dat")):
        assert site.read("d/gone.dat") == b"x"
        return
    t.delete("d/gone.dat")
    t.delete("d/gone.dat")
    t.delete("never/was/here")
    assert site.names() == {"d/stays.dat"}


def test_rename_replaces_the_target_and_creates_its_directory(site):
    site.place("staging/a.part", b"new")
    site.place("final/a", b"old")
    t = site.open()
    if refused(site, lambda: t.rename("staging/a.part", "final/a")):
        assert site.read("final/a") == b"old"
        return
    if refuses_replacing(site, lambda: t.rename("staging/a.part", "final/a")):
        assert site.read("final/a") == b"old" and site.read("staging/a.part") == b"new"
        assert site.names() == {"staging/a.part", "final/a"}
        t.rename("staging/a.part", "final/b")  # the rest of the contract, to a new name
        assert site.read("final/b") == b"new" and site.read("staging/a.part") is None
        t.rename("final/b", "deeper/new/dir/a")
        assert site.names() == {"final/a", "deeper/new/dir/a"}
        with pytest.raises(MissingFileError):
            t.rename("staging/a.part", "x")
        assert site.names() == {"final/a", "deeper/new/dir/a"}
        return
    t.rename("staging/a.part", "final/a")
    assert site.read("final/a") == b"new" and site.read("staging/a.part") is None
    t.rename("final/a", "deeper/new/dir/a")
    assert site.names() == {"deeper/new/dir/a"}
    with pytest.raises(MissingFileError):
        t.rename("staging/a.part", "x")
    assert site.names() == {"deeper/new/dir/a"}


TREE = {"top.txt": 3, "d1/b.bin": 1000, "d1/d2/empty": 0, "d1/d2/d3/e": 5, "other/f": 7}


def test_list_walks_nested_directories_with_sizes(site):
    for path, size in TREE.items():
        site.place(path, blob(size))
    t = site.open()
    under = {prefix: {RemoteFile(p, s) for p, s in TREE.items() if p.startswith(prefix)}
             for prefix in ("", "d1/", "d1/d2/d3/")}
    assert set(t.list()) == under[""] and len(list(t.list())) == len(TREE)
    assert set(t.list("d1")) == set(t.list("d1/")) == under["d1/"]
    assert set(t.list("d1/d2/d3")) == under["d1/d2/d3/"]
    assert list(t.list("nowhere")) == [] and list(t.list("top.txt")) == []


def test_list_leaves_out_names_no_datastore_path_can_have(site):
    site.place("ok.dat", b"1")
    for size, name in enumerate(site.unsafe_names, start=2):
        site.place(name, b"x" * size)
    assert list(site.open().list()) == [RemoteFile("ok.dat", 1)]


def test_every_transport_says_whether_it_holds_listings_whole(site):
    """The two lists above follow what the transports say of themselves."""
    assert (site.open().max_listing is not None) == (site.kind in WHOLE_LISTINGS)


def test_a_directory_listing_larger_than_the_cap_is_refused(listing_site):
    site = listing_site
    t = site.open()
    for i in range(40):
        site.place(f"many/{'x' * 40}{i:03d}", b"")
    t.max_listing = 1000
    with pytest.raises(TransportError, match="larger than 1000 bytes"):
        list(t.list("many"))


def test_a_link_loop_on_the_server_does_not_trap_a_listing(linking_site):
    site = linking_site
    site.place("loop/file", b"1")
    site.link("loop/again", ".")
    start = time.monotonic()
    try:
        found = set(site.open().list("loop"))
    except TransportError as exc:  # a web server follows the link: refused at the depth limit
        assert "directory loop" in str(exc)
    else:
        assert found == {RemoteFile("loop/file", 1)}  # links to directories are not walked
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("path", ["../outside/secret", "a/../../outside/secret", "SECRET",
                                  "/etc/passwd"])
def test_paths_escaping_the_root_are_refused_without_contacting_the_server(site, tmp_path,
                                                                            path):
    secret = tmp_path / "outside" / "secret"
    secret.parent.mkdir()
    secret.write_bytes(b"secret")
    path = str(secret) if path == "SECRET" else path
    site.place("inside", b"in")
    local = tmp_path / "payload"
    local.write_bytes(b"payload")
    t = site.open()
    calls = [lambda: list(t.list(path))]
    if not (site.reads_absolute and path.startswith("/")):
        calls += [lambda: t.stat(path), lambda: t.get(path, tmp_path / "got"),
                  lambda: t.fetch(path, tmp_path / "got"), lambda: t.read_bytes(path)]
    if path != "/etc/passwd":  # never aim a write at a real system file, even to be refused
        calls += [lambda: t.put(local, path), lambda: t.delete(path),
                  lambda: t.rename("inside", path), lambda: t.rename(path, "stolen")]
    for call in calls:
        with pytest.raises(TransportError):
            call()
    assert secret.read_bytes() == b"secret" and not (tmp_path / "got").exists()
    assert site.names() == {"inside"} and sorted(secret.parent.iterdir()) == [secret]
    assert site.contacts() in (None, 0)


# -- what is Rucio's own ---------------------------------------------------------------------


@pytest.fixture
def rucio_site(rucio_server: RucioServer, tmp_path: Path) -> Iterator[RucioSite]:  # noqa: F811
    made = RucioSite(tmp_path / "site", rucio_server)
    yield made
    for transport in made.opened:
        transport.close()


def test_rucio_settings_open_the_transport_of_the_site_rse(rucio_site):
    t = rucio_site.open()
    assert isinstance(t, RucioTransport) and t.session.site == "contract"
    assert t.describe() == f"rucio://{rucio_site.rse} ({rucio_site.server.url})"
    assert (t.writable, t.batches, t.parallel) == (True, False, 4)


def test_rucio_reads_over_http_when_the_rse_prefers_it(rucio_server, web_server,  # noqa: F811
                                                      tmp_path, monkeypatch):
    site = RucioSite(tmp_path / "site", rucio_server, web_server)
    data = blob(CHUNK + 10)
    site.place("served.dat", data)
    urls: list[str] = []
    request = requests.Session.request

    def counted(session, method, url, *args, **kwargs):
        urls.append(url)
        return request(session, method, url, *args, **kwargs)
    monkeypatch.setattr(requests.Session, "request", counted)
    t = site.open()
    try:
        assert t.fetch("served.dat", tmp_path / "out") == (len(data), bytes_checksum(data))
    finally:
        t.close()
    assert [u for u in urls if u.startswith(web_server.url)] == \
        [web_server.url_for(site.root) + f"{site.scope}/served.dat"]


def test_rucio_looks_replicas_up_in_bulk(rucio_site, tmp_path):
    files = {f"bulk/{i:02d}.dat": blob(10 + i, seed=i) for i in range(12)}
    for path, data in files.items():
        rucio_site.place(path, data)
    t = rucio_site.open()
    assert t.stat("bulk/00.dat") == RemoteFile("bulk/00.dat", 10)  # logged in from here on
    before = t.session.calls
    wanted = [FetchRequest(path, tmp_path / f"out{i}", len(data))
              for i, (path, data) in enumerate(files.items())]
    assert all(isinstance(result, tuple) for _, result in t.fetch_many(wanted))
    assert t.session.calls == before + 1  # one lookup for the group
    assert len(set(t.list("bulk"))) == 12
    assert t.session.calls == before + 3  # the names, then one lookup


def test_rucio_putting_the_same_content_again_keeps_the_replica(rucio_site, tmp_path):
    local = tmp_path / "same"
    local.write_bytes(b"same bytes")
    t = rucio_site.open()
    t.put(local, "d/same")
    t.put(local, "d/same")
    assert rucio_site.read("d/same") == b"same bytes" and rucio_site.names() == {"d/same"}


def test_rucio_a_deleted_name_takes_other_content_once_the_reaper_removed_it(rucio_site,
                                                                            tmp_path):
    """Deleting marks the replica BEING_DELETED; Rucio's reaper removes it from the catalog,
    after which the name is free for other content (before, put says why it waits)."""
    rucio_site.place("again.dat", b"first")
    t = rucio_site.open()
    t.delete("again.dat")
    assert rucio_site.replicas()["again.dat"][0] == "BEING_DELETED"
    assert t.stat("again.dat") is None and rucio_site.read("again.dat") is None
    local = tmp_path / "second"
    local.write_bytes(b"second, longer")
    with pytest.raises(TransportError, match="reaper has not removed its replica yet"):
        t.put(local, "again.dat")
    rucio_site.server.run_daemon("rucio-reaper", "--run-once", "--rses", rucio_site.rse,
                                 "--delay-seconds", "0")
    assert "again.dat" not in rucio_site.replicas()
    t.put(local, "again.dat")
    assert rucio_site.read("again.dat") == b"second, longer"
    assert t.stat("again.dat") == RemoteFile("again.dat", 14)


def test_rucio_a_file_a_rule_keeps_on_the_rse_is_not_deleted(rucio_site):
    rucio_site.place("kept/by/rule", b"precious")
    rucio_site.client.add_replication_rule([{"scope": rucio_site.scope, "name": "kept/by/rule"}],
                                           1, rucio_site.rse)
    t = rucio_site.open()
    with pytest.raises(TransportError, match="replication rule .* keeps it there"):
        t.delete("kept/by/rule")
    assert rucio_site.read("kept/by/rule") == b"precious"
    assert rucio_site.replicas()["kept/by/rule"][0] == "AVAILABLE"


def test_rucio_paths_rucio_names_cannot_be_are_no_files_of_the_site(rucio_site, tmp_path):
    local = tmp_path / "f"
    local.write_bytes(b"x")
    t = rucio_site.open()
    assert t.stat("with space") is None and t.stat("runs/RUN") is None
    with pytest.raises(MissingFileError):
        t.fetch("with space", tmp_path / "out")
    with pytest.raises(TransportError, match="cannot hold ' '"):
        t.put(local, "with space")
    with pytest.raises(TransportError, match="reserved"):
        t.put(local, "runs/f")
    assert rucio_site.names() == set()


def test_rucio_a_replica_reached_only_by_another_protocol_is_refused_naming_it(rucio_site,
                                                                              tmp_path):
    client, rse = rucio_site.client, f"{rucio_site.rse}_FAR"
    client.add_rse(rse, deterministic=True, rse_type="DISK")
    client.add_protocol(rse, {
        "scheme": "mock", "hostname": "storage.example", "port": 0, "prefix": "/data/",
        "impl": "rucio.rse.protocols.mock.Default",
        "domains": {d: {"read": 1, "write": 1, "delete": 1} for d in ("lan", "wan")}})
    client.add_rse_attribute(rse, "lfn2pfn_algorithm", "identity")
    client.add_replicas(rse, [{"scope": rucio_site.scope, "name": "far", "bytes": 4,
                               "adler32": adler32(b"data"),
                               "md5": hashlib.md5(b"data").hexdigest()}])
    t = dataclasses.replace(rucio_site.settings(), rse=rse).open("contract")
    rucio_site.opened.append(t)
    local = tmp_path / "f"
    local.write_bytes(b"x")
    for call in (lambda: t.fetch("far", tmp_path / "out"), lambda: t.put(local, "near"),
                 lambda: t.delete("far")):
        with pytest.raises(TransportError, match="mock://") as info:
            call()
        assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists() and t.stat("far") == RemoteFile("far", 4)


# -- web servers whose listings cannot be trusted ------------------------------------------


def served_listing(web_server, tmp_path: Path, body: str) -> Transport:
    """A site whose directory "lies/" answers ``body`` as its listing (nginx serves a
    directory's index.html before its own index)."""
    (tmp_path / "site" / "lies").mkdir(parents=True)
    (tmp_path / "site" / "lies" / "index.html").write_text(body)
    return HTTPSettings(web_server.url_for(tmp_path / "site"), retry=FAST).open()


def test_a_web_server_listing_unsafe_names_has_them_skipped(web_server, tmp_path):
    bad = ["../up", "a/b", "..", ".", "", "nul\0", "tab\t", "back\\slash", 7, None, "x" * 256]
    entries = [{"name": name, "type": "file", "size": 1} for name in bad] + [
        {"name": "..", "type": "directory"}, {"name": "dev", "type": "other"},
        {"name": "ok", "type": "file", "size": 3}]
    t = served_listing(web_server, tmp_path, json.dumps(entries))
    assert list(t.list("lies")) == [RemoteFile("lies/ok", 3)]


@pytest.mark.parametrize("size", [-1, "12", 1.5, True, None, 2 ** 64])
def test_a_web_server_listing_an_impossible_size_is_refused(web_server, tmp_path, size):
    t = served_listing(web_server, tmp_path, json.dumps([{"name": "f", "type": "file",
                                                          "size": size}]))
    with pytest.raises(TransportError, match="invalid size"):
        list(t.list("lies"))


@pytest.mark.parametrize("body", ['{"not": "a list"}', "<html>Index of /</html>", "[1, 2]",
                                  "[" * 100_000])
def test_a_web_server_listing_that_is_not_a_json_index_is_refused(web_server, tmp_path, body):
    t = served_listing(web_server, tmp_path, body)
    with pytest.raises(TransportError, match="not a JSON index|malformed entry"):
        list(t.list("lies"))


def test_a_web_server_without_listings_says_how_to_enable_them(web_private, tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    t = HTTPSettings(web_private(tmp_path, listing=False).url, retry=FAST).open()
    with pytest.raises(TransportError) as info:
        list(t.list())
    assert "autoindex_format json" in str(info.value) and "\n" not in str(info.value)
    assert t.stat("f") == RemoteFile("f", 1)  # files are still served
