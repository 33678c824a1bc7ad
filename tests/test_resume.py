"""A download interrupted on the client's side resumes: `fed sync` killed outright (kill -9)
or stopped with Ctrl-C in the middle of a file keeps what arrived, and the next sync asks
only for the rest (over HTTP, with If-Range on the version it started). Through a real,
throttled nginx and sshd on loopback; SQLite only (the database plays no part).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_transport_faults import (
    in2p3_reads,
    network_sites,
    new_federation,
    pull,
    put_blob,
    random_bytes,
    staged,
)

from federation.sync.remote.outbox import publish

FED = Path(sys.executable).parent / "fed"
SIZE = 6 << 20


@pytest.fixture(params=["http", "sftp"])
def slow_site(request, tmp_path):
    """NCSA over a real server, and the sites directory reaching it: nginx throttled to
    2 MB/s; sshd at loopback speed (with a file large enough to stop it half-way)."""
    fed = new_federation(tmp_path)
    if request.param == "http":
        server = request.getfixturevalue("web_private")(tmp_path, limit_rate="2m")
        return "http", fed, network_sites(fed, "http", server), SIZE
    server = request.getfixturevalue("sshd_private")
    return "sftp", fed, network_sites(fed, "sftp", server), 24 * SIZE


def interrupt_midway(fed, sites: Path, dataset, how: signal.Signals) -> tuple[int, int]:
    """Start `fed sync NCSA IN2P3`, signal it once a partial download is under way; return
    (its exit status, the bytes it left)."""
    proc = subprocess.Popen([FED, "sync", "NCSA", "IN2P3", "--sites", str(sites)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    part = f"{dataset}.part"
    deadline = time.monotonic() + 60
    while staged(fed).get(part, 0) < (1 << 20):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no partial download appeared"
        time.sleep(0.02)
    proc.send_signal(how)
    code = proc.wait(timeout=60)
    assert "Traceback" not in proc.stderr.read()
    return code, staged(fed).get(part, 0)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_an_interrupted_download_resumes(slow_site, how):
    transport, fed, sites, size = slow_site
    data = random_bytes(size)
    blob = put_blob(fed, 0, data)
    publish(fed.site("NCSA"))
    code, partial = interrupt_midway(fed, sites, blob, how)
    assert code == (-9 if how == signal.SIGKILL else 130)
    assert (1 << 20) <= partial < size, "the partial download was not kept"
    if transport == "http":  # the version the partial belongs to, noted before any byte
        assert f"{blob}.part.etag" in staged(fed)
    report = pull(sites)
    assert not report.failed
    assert report.resumed_files == 1 and report.resumed_bytes >= partial
    assert in2p3_reads(fed, blob) == data
    assert not [name for name in staged(fed) if name.startswith(str(blob))]
