"""What a user sees when the network between sites misbehaves, through a real sshd and nginx.

IN2P3 pulls from NCSA the way another machine would: NCSA publishes its journal to its
outbox, and IN2P3 reaches NCSA's outbox and datastore over SFTP or HTTP on loopback.
Servers die in the middle of a transfer, files and bundles are altered on the server as an
attacker (or a broken disk) would alter them, credentials and host keys are wrong, and URLs
lead nowhere. Every sync must end with a clear message or a failed file, never import
something that does not match its record, never write outside the destination's root, and
resume interrupted downloads instead of starting over. SQLite only: the database plays no
part in these faults.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import paramiko
import pytest
import yaml
from click.testing import CliRunner, Result
from conftest import Federation, insert_hsc_records, remote_block

from federation.butler import FileDataset
from federation.cli.main import cli
from federation.datastore.checksum import CHUNK
from federation.errors import FederationError, InputError
from federation.operations.sync import sync_sites as sync
from federation.sites import list_sites, load_site
from federation.sync.fetcher import STAGING
from federation.sync.options import SyncOptions
from federation.sync.progress import Progress
from federation.sync.remote.outbox import INDEX, publish, sha256_of
from federation.sync.report import Report
from federation.sync.selection import Selection

RUN = "HSC/raw/blobs"  # a run of NCSA's (it owns HSC/raw)
#: Few, short retries: a dead server is given up on in about a second.
FAST = {"retries": 2, "retry_deadline": 3, "timeout": 5}
PASSWD = b"root:x:0:0:"  # what /etc/passwd starts with


# -- helpers -------------------------------------------------------------------------


def new_federation(root: Path) -> Federation:
    """The four sites, NCSA holding the HSC dimension records and a "blob" dataset type."""
    fed = Federation(root, {})
    with fed.butler("NCSA", run=RUN) as ncsa:
        insert_hsc_records(ncsa.registry)
        ncsa.registry.register_dataset_type("blob", ["detector"], "Bytes")
    return fed


def put_blob(fed: Federation, detector: int, data: bytes) -> uuid.UUID:
    """Store ``data`` at NCSA as the blob of ``detector``; returns its dataset ID."""
    with fed.butler("NCSA", run=RUN) as ncsa:
        return ncsa.put(data, "blob", instrument="HSC", detector=detector).id


def ncsa_file(fed: Federation, dataset_id: uuid.UUID) -> Path:
    """Where NCSA's datastore keeps a dataset's file."""
    with fed.butler("NCSA") as ncsa:
        return ncsa.datastore.path_of(ncsa.registry.datasets.file(dataset_id)[0])


def random_bytes(size: int, seed: int = 1) -> bytes:
    return np.random.default_rng(seed).bytes(size)


def network_sites(fed: Federation, transport: str, server, *, name: str = "net",
                  **settings) -> Path:
    """The sites directory of IN2P3's machine: the local sites, and NCSA reached over
    ``transport`` through ``server`` (``settings`` override the ``sftp:``/``http:`` block;
    without a server they are the whole block)."""
    folder = fed.root / name
    shutil.copytree(fed.sites_dir, folder)
    block = remote_block(transport, server, fed.root / "repos" / "NCSA") if server else {}
    block = block | FAST | settings
    (folder / "NCSA.yaml").write_text(yaml.safe_dump({
        "name": "NCSA", "transport": transport, "owns": Federation.OWNS["NCSA"],
        transport: block}))
    return folder


def pull(sites: Path, progress: Progress | None = None) -> Report:
    """Sync NCSA into IN2P3 through the library, as IN2P3's machine sees the sites."""
    return sync(load_site("NCSA", sites), load_site("IN2P3", sites),
                SyncOptions(Selection.make()), sites=list_sites(sites), progress=progress)


def fed_cli(*args, code: int) -> Result:
    """Run `fed ARGS` in-process: it must exit with ``code`` and never show a traceback."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"fed {' '.join(map(str, args))} raised:\n"
                             + "".join(traceback.format_exception(*result.exc_info)))
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def cli_error(*args) -> str:
    """Run a `fed` command that must fail with exactly one ``error: ...`` line; returns it."""
    result = fed_cli(*args, code=1)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def in2p3_root(fed: Federation) -> Path:
    return fed.root / "repos" / "IN2P3"


def staged(fed: Federation) -> dict[str, int]:
    """What waits in IN2P3's staging area: name -> size."""
    staging = in2p3_root(fed) / STAGING
    return {p.name: p.stat().st_size for p in staging.iterdir()} if staging.is_dir() else {}


def assert_sound(fed: Federation) -> None:
    """Every file IN2P3's registry records is there and matches its checksum."""
    with fed.butler("IN2P3") as in2p3:
        report = in2p3.verify()
        assert report.ok, report.problems


def in2p3_has(fed: Federation, dataset_id: uuid.UUID) -> bool:
    """Whether IN2P3 knows the dataset at all (a record, with or without its file)."""
    with fed.butler("IN2P3") as in2p3:
        return in2p3.registry.datasets.get(dataset_id) is not None


def in2p3_reads(fed: Federation, dataset_id: uuid.UUID) -> bytes:
    """The dataset's content, read from IN2P3's own datastore."""
    with fed.butler("IN2P3") as in2p3:
        ref = in2p3.registry.datasets.get(dataset_id)
        assert ref is not None and in2p3.exists(ref), f"{dataset_id} is not at IN2P3"
        return in2p3.get(ref)


def in2p3_untouched(fed: Federation) -> bool:
    """Nothing was ever applied to IN2P3: an empty journal, no datasets, no collections."""
    with fed.butler("IN2P3") as in2p3:
        return (in2p3.registry.db.last_seq() == 0
                and not list(in2p3.registry.datasets.iter_files())
                and not in2p3.registry.collections.query())


class ByteCounter(Progress):
    """Counts the bytes that arrive over the network."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bytes = 0

    def advance(self, files: int, nbytes: int) -> None:
        with self.lock:
            self.bytes += nbytes


class KillServerMidway(ByteCounter):
    """Kills the server (SIGKILL, like a crash) once more than ``after`` bytes arrived."""

    def __init__(self, server, after: int) -> None:
        super().__init__()
        self.server = server
        self.after = after
        self.killed = False

    def advance(self, files: int, nbytes: int) -> None:
        with self.lock:
            self.bytes += nbytes
            if self.bytes > self.after and not self.killed:
                self.killed = True
                self.server.stop()


# -- 1, 2: a server dies in the middle of a transfer -----------------------------------


def check_interrupted_transfer_resumes(fed: Federation, sites: Path, server, size: int) -> None:
    data = random_bytes(size)
    big = put_blob(fed, 0, data)
    publish(fed.site("NCSA"))

    killer = KillServerMidway(server, after=CHUNK)
    first = pull(sites, progress=killer)
    assert killer.killed, "the transfer finished before the server could be killed"
    assert [i for i, _, _ in first.failed] == [str(big)], first.failed
    assert "gave up after 2 attempts" in first.failed[0][2], first.failed
    assert not in2p3_has(fed, big)  # nothing refers to a file that did not arrive
    assert_sound(fed)
    partial = staged(fed).get(f"{big}.part", 0)
    assert CHUNK < partial < size, staged(fed)  # what arrived is kept for the next run

    server.start()
    counter = ByteCounter()
    second = pull(sites, progress=counter)
    assert second.failed == []
    assert (second.files, second.bytes) == (1, size)
    assert (second.resumed_files, second.resumed_bytes) == (1, partial)
    assert counter.bytes == size - partial  # only the rest came over the network
    assert in2p3_reads(fed, big) == data
    assert_sound(fed)
    assert not any(name.endswith(".part") for name in staged(fed))


def test_sftp_server_killed_mid_transfer_resumes(tmp_path, sshd_private):
    """sshd dies after 1 MB of a 32 MB file: the sync gives up quickly and reports the file
    failed, imports nothing that refers to it and keeps the partial download; once sshd is
    back, the next sync fetches only the rest, and the file arrives intact.

    (32 MB: on loopback, SFTP read-ahead has up to ~10 MB in flight when the server dies.)"""
    fed = new_federation(tmp_path)
    sites = network_sites(fed, "sftp", sshd_private)
    check_interrupted_transfer_resumes(fed, sites, sshd_private, 32 << 20)


def test_http_server_killed_mid_transfer_resumes(tmp_path, web_private):
    """nginx (throttled to 2 MB/s) dies after 1 MB of a 6 MB file: the file is reported
    failed and the partial download kept; once nginx is back, an If-Range request continues
    the download where it stopped."""
    fed = new_federation(tmp_path)
    server = web_private(tmp_path, limit_rate="2m")
    sites = network_sites(fed, "http", server)
    check_interrupted_transfer_resumes(fed, sites, server, 6 << 20)


def test_sftp_server_dying_as_a_download_starts_prints_no_traceback(
        tmp_path, sshd_private, monkeypatch):
    """sshd dies just as the download of a large file starts (its read-ahead requests still
    going out): `fed sync` reports the file failed and exits 1, and the terminal shows the
    report only, no traceback from a background thread."""
    fed = new_federation(tmp_path)
    big = tmp_path / "big.dat"
    with open(big, "wb") as handle:  # sparse: costs no disk and reads fast
        handle.truncate(256 << 20)
    with fed.butler("NCSA", run=RUN) as ncsa:
        ncsa.ingest([FileDataset(big, "blob", {"instrument": "HSC", "detector": 0})],
                    transfer="move")
    publish(fed.site("NCSA"))
    sites = network_sites(fed, "sftp", sshd_private)

    read_many = paramiko.SFTPFile.readv

    def read_ahead_then_die(handle, chunks, *args, **kwargs):
        reads = read_many(handle, chunks, *args, **kwargs)
        first = next(reads)  # the read-ahead requests are going out
        sshd_private.stop()
        yield first
        yield from reads

    monkeypatch.setattr(paramiko.SFTPFile, "readv", read_ahead_then_die)
    # What an uncaught exception in a thread does outside pytest: print it to stderr.
    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)
    result = fed_cli("sync", "NCSA", "IN2P3", "--sites", sites, code=1)
    assert [line for line in result.stdout.splitlines() if line.startswith("failed: ")]
    errors = result.stderr.strip().splitlines()  # one line saying so, no traceback
    assert len(errors) == 1 and errors[0].startswith("error: 1 file(s) did not arrive"), \
        result.stderr
    assert_sound(fed)


# -- 3: a file corrupted on the server ---------------------------------------------------


@pytest.fixture(params=["sftp", "http"])
def site_transport(request) -> str:
    return request.param


@pytest.fixture
def shared_server(request, site_transport):
    """The session's sshd or nginx (never stopped)."""
    return request.getfixturevalue({"sftp": "sshd_server", "http": "web_server"}
                                   [site_transport])


def test_corrupted_file_on_the_server_is_not_imported(tmp_path, site_transport, shared_server):
    """A file whose bytes changed on the server (same size) fails its checksum: it is reported
    as not matching its record and not imported; the other files arrive."""
    fed = new_federation(tmp_path)
    good = {put_blob(fed, d, random_bytes(1000, seed=d)): random_bytes(1000, seed=d)
            for d in (1, 2)}
    bad = put_blob(fed, 3, random_bytes(1000, seed=3))
    publish(fed.site("NCSA"))
    path = ncsa_file(fed, bad)
    damaged = bytearray(path.read_bytes())
    damaged[500] ^= 0xFF
    path.write_bytes(bytes(damaged))

    report = pull(network_sites(fed, site_transport, shared_server))
    assert [i for i, _, _ in report.failed] == [str(bad)], report.failed
    assert "does not match its record" in report.failed[0][2]
    assert not in2p3_has(fed, bad)
    for dataset_id, data in good.items():
        assert in2p3_reads(fed, dataset_id) == data
    assert_sound(fed)
    assert not staged(fed)  # a download that failed its checksum is not kept
    assert not any(p.is_file() and p.read_bytes() == bytes(damaged)
                   for p in in2p3_root(fed).rglob("*"))


# -- 4, 5: bundles altered on the server -------------------------------------------------


def rewrite_bundle(fed: Federation, change: Callable[[list[dict]], None], *,
                   update_index: bool = True) -> None:
    """Rewrite NCSA's last published bundle as someone controlling the server could.

    ``change`` edits the decoded lines (header, states, batch ends; not the trailer); the
    trailer is recomputed, so the bundle stays self-consistent, and unless ``update_index``
    is false so are its size and SHA-256 in the outbox index.
    """
    outbox = fed.site("NCSA").outbox
    index = json.loads((outbox / INDEX).read_text())
    entry = index["bundles"][-1]
    path = outbox / entry["name"]
    lines = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    assert lines[-1]["kind"] == "end"
    body = lines[:-1]
    change(body)
    raw = b"".join((json.dumps(line, separators=(",", ":")) + "\n").encode() for line in body)
    trailer = {"kind": "end", "lines": len(body), "sha256": hashlib.sha256(raw).hexdigest()}
    path.write_bytes(gzip.compress(raw + (json.dumps(trailer) + "\n").encode()))
    if update_index:
        entry["size"], entry["sha256"] = sha256_of(path)
        (outbox / INDEX).write_text(json.dumps(index, indent=1) + "\n")


def set_file_path(dataset_id: uuid.UUID, path: str) -> Callable[[list[dict]], None]:
    def change(lines: list[dict]) -> None:
        found = [line for line in lines
                 if line.get("kind") == "dataset" and line["id"] == str(dataset_id)]
        assert found, f"dataset {dataset_id} is not in the bundle"
        for line in found:
            line["file"]["path"] = path
    return change


def assert_nothing_read_outside(fed: Federation) -> None:
    """No file anywhere under IN2P3's root holds what /etc/passwd holds."""
    leaked = [p for p in in2p3_root(fed).rglob("*") if p.is_file() and PASSWD in p.read_bytes()]
    assert not leaked, leaked


def test_relative_path_escaping_the_root_is_refused(tmp_path, site_transport, shared_server):
    """A published bundle whose file path climbs out of the datastore ("../../../etc/passwd")
    is refused as a whole, with a message saying the path escapes the root: nothing is applied
    and nothing is fetched."""
    fed = new_federation(tmp_path)
    put_blob(fed, 1, b"fine")
    evil = put_blob(fed, 2, b"evil")
    publish(fed.site("NCSA"))
    rewrite_bundle(fed, set_file_path(evil, "../../../etc/passwd"))

    with pytest.raises(FederationError, match="escapes the datastore root"):
        pull(network_sites(fed, site_transport, shared_server))
    assert in2p3_untouched(fed)
    assert_nothing_read_outside(fed)


def test_absolute_path_in_a_bundle_is_never_fetched(tmp_path, site_transport, shared_server):
    """A published bundle naming "/etc/passwd" as a dataset's file is refused whole, before
    anything is fetched or written: that path is never read, and no dataset of the bundle
    arrives."""
    fed = new_federation(tmp_path)
    fine = put_blob(fed, 1, b"fine")
    evil = put_blob(fed, 2, b"evil")
    publish(fed.site("NCSA"))
    rewrite_bundle(fed, set_file_path(evil, "/etc/passwd"))

    with pytest.raises(InputError, match="'/etc/passwd' escapes the datastore root"):
        pull(network_sites(fed, site_transport, shared_server))
    assert not in2p3_has(fed, evil) and not in2p3_has(fed, fine)
    assert_sound(fed)
    assert_nothing_read_outside(fed)


def test_tampered_bundle_is_refused(tmp_path, site_transport, shared_server):
    """A bundle changed on the server without its index entry (here: a dataset's file moved
    to another dataset's path) does not match the index: the sync stops with a clear error and
    applies nothing. Once the genuine bundle is back, the sync goes through."""
    fed = new_federation(tmp_path)
    first = put_blob(fed, 1, b"first")
    second = put_blob(fed, 2, b"second")
    publish(fed.site("NCSA"))
    outbox = fed.site("NCSA").outbox
    genuine = {p.name: p.read_bytes() for p in outbox.glob("*.bundle")}
    with fed.butler("NCSA") as ncsa:
        other_path = ncsa.registry.datasets.file(second)[0].path
    rewrite_bundle(fed, set_file_path(first, other_path), update_index=False)
    sites = network_sites(fed, site_transport, shared_server)

    with pytest.raises(FederationError, match="does not match its index entry"):
        pull(sites)
    assert in2p3_untouched(fed)

    for name, data in genuine.items():
        (outbox / name).write_bytes(data)
    report = pull(sites)
    assert report.failed == []
    assert in2p3_reads(fed, first) == b"first" and in2p3_reads(fed, second) == b"second"
    assert_sound(fed)


# -- 6, 7: SSH credentials and host keys ---------------------------------------------------


def published_federation(root: Path) -> Federation:
    fed = new_federation(root)
    put_blob(fed, 1, b"payload")
    publish(fed.site("NCSA"))
    return fed


def host_fingerprint(server) -> str:
    """The server's host key fingerprint, as ssh-keygen -l prints it."""
    keytype, b64 = server.host_key_pub.split()[:2]
    return paramiko.PKey.from_type_string(keytype, base64.b64decode(b64)).fingerprint


def test_wrong_key_is_one_clear_line(tmp_path, sshd_server):
    """A key the server does not accept: `fed sync` says authentication failed, in one line."""
    fed = published_federation(tmp_path)
    sites = network_sites(fed, "sftp", sshd_server, key_file=str(sshd_server.wrong_key))
    line = cli_error("sync", "NCSA", "IN2P3", "--sites", sites)
    assert "authentication failed" in line.lower(), line
    assert str(sshd_server.wrong_key) in line
    assert in2p3_untouched(fed)


def test_unknown_host_key_then_trust(tmp_path, sshd_server):
    """An unknown host key stops the sync, naming the key's fingerprint and `fed site trust`.
    A wrong --fingerprint trusts nothing; `fed site trust NCSA --yes` records the key, and the
    sync then works."""
    fed = published_federation(tmp_path)
    known_hosts = tmp_path / "ssh" / "known_hosts"  # does not exist yet
    sites = network_sites(fed, "sftp", sshd_server, known_hosts=str(known_hosts))
    fingerprint = host_fingerprint(sshd_server)

    line = cli_error("sync", "NCSA", "IN2P3", "--sites", sites)
    assert "not known" in line and fingerprint in line and "fed site trust" in line, line
    assert in2p3_untouched(fed)

    line = cli_error("site", "trust", "NCSA", "--fingerprint", "SHA256:wrong", "--sites", sites)
    assert "does not match" in line and "nothing trusted" in line, line
    assert not known_hosts.exists()

    trusted = fed_cli("site", "trust", "NCSA", "--yes", "--sites", sites, code=0)
    assert fingerprint in trusted.stdout
    assert f"[{sshd_server.host}]:{sshd_server.port}" in known_hosts.read_text()

    fed_cli("sync", "NCSA", "IN2P3", "--sites", sites, code=0)
    assert not in2p3_untouched(fed)
    assert_sound(fed)


def test_trust_with_the_right_fingerprint(tmp_path, sshd_server):
    """`fed site trust --fingerprint` with the operators' fingerprint records the key."""
    fed = published_federation(tmp_path)
    known_hosts = tmp_path / "known_hosts"
    sites = network_sites(fed, "sftp", sshd_server, known_hosts=str(known_hosts))
    fed_cli("site", "trust", "NCSA", "--fingerprint", host_fingerprint(sshd_server),
            "--sites", sites, code=0)
    fed_cli("sync", "NCSA", "IN2P3", "--sites", sites, code=0)


def test_changed_host_key_is_refused(tmp_path, sshd_server):
    """A host key that differs from the recorded one: the error says it CHANGED, shows both
    fingerprints, and nothing is applied."""
    fed = published_federation(tmp_path)
    sites = network_sites(fed, "sftp", sshd_server,
                          known_hosts=str(sshd_server.other_known_hosts))
    line = cli_error("sync", "NCSA", "IN2P3", "--sites", sites)
    assert "CHANGED" in line and host_fingerprint(sshd_server) in line, line
    assert in2p3_untouched(fed)


# -- 8: HTTP errors and unreachable servers ------------------------------------------------


def http_sites(fed: Federation, url: str) -> Path:
    return network_sites(fed, "http", None, url=url)


def test_http_forbidden_is_access_denied(tmp_path, web_server):
    """A URL the web server refuses (403): one line saying access was denied."""
    fed = published_federation(tmp_path)
    sites = http_sites(fed, web_server.url + "forbidden/NCSA/")
    line = cli_error("sync", "NCSA", "IN2P3", "--sites", sites)
    assert "access denied (HTTP 403" in line, line
    assert in2p3_untouched(fed)


def test_http_redirects_are_followed(tmp_path, web_server):
    """A base URL that answers 301 (a site that moved): the index, bundles and files are
    fetched from where it points."""
    fed = new_federation(tmp_path)
    data = random_bytes(100_000)
    dataset_id = put_blob(fed, 1, data)
    publish(fed.site("NCSA"))
    url = web_server.url_for(fed.root / "repos" / "NCSA")
    moved = web_server.url + "moved/" + url.removeprefix(web_server.url)
    report = pull(http_sites(fed, moved))
    assert report.failed == [] and report.files == 1
    assert in2p3_reads(fed, dataset_id) == data
    assert_sound(fed)


def test_nothing_published_says_fed_publish(tmp_path, site_transport, shared_server):
    """A site that never published: the error says so and tells to run `fed publish`."""
    fed = new_federation(tmp_path)
    put_blob(fed, 1, b"payload")
    sites = network_sites(fed, site_transport, shared_server)
    line = cli_error("sync", "NCSA", "IN2P3", "--sites", sites)
    assert "has published nothing" in line and "fed publish NCSA" in line, line
    assert in2p3_untouched(fed)


@pytest.mark.parametrize("transport", ["sftp", "http"])
def test_unreachable_server_fails_quickly(tmp_path, transport, request):
    """Nothing listening any more (the server is down): with retries 2 and a 3 s deadline the
    sync gives up within seconds, with one line saying it could not connect."""
    fed = published_federation(tmp_path)
    if transport == "sftp":
        server = request.getfixturevalue("sshd_private")
    else:
        server = request.getfixturevalue("web_private")(tmp_path)
    sites = network_sites(fed, transport, server)
    server.stop()
    start = time.monotonic()
    line = cli_error("sync", "NCSA", "IN2P3", "--sites", sites)
    elapsed = time.monotonic() - start
    refused = {"sftp": "cannot connect to", "http": "Connection refused"}[transport]
    assert refused in line and "gave up after 2 attempts" in line, line
    assert elapsed < 5, f"took {elapsed:.1f} s"
    assert in2p3_untouched(fed)
