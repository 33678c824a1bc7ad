"""The sync log: every sync, import, receive, publish and push is recorded where it wrote,
with who, when, what, the cursor range, counts, files and how it ended; `fed log` shows it.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import time

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import repo_state
from test_bundles import export, import_, sites
from test_cli import fails, fed
from test_sync import put_replica, setup_types

from federation.sync.report import SyncConflictError


def entries(fed_, site: str) -> list:
    with fed_.butler(site) as b:
        return b.registry.log.entries()


def test_a_sync_is_logged_at_the_destination(ncsa):
    before = time.time()
    report = ncsa.sync("NCSA", "IN2P3", collections=["HSC/raw/*"])
    (entry,) = entries(ncsa, "IN2P3")
    assert entry.operation == "sync" and entry.result == "ok"
    assert (entry.source, entry.destination) == ("NCSA", "IN2P3")
    assert entry.user == f"{getpass.getuser()}@{socket.gethostname()}"
    assert before <= entry.started <= entry.ended <= time.time()
    assert entry.selection["collections"] == ["HSC/raw/*"]
    assert entry.cursor_from is None and entry.cursor_to == report.cursor
    assert entry.counts["dataset insert"] == report.counts["dataset insert"] == 16
    assert entry.files == report.files == 16 and entry.bytes == report.bytes > 0
    assert entry.conflicts == entry.failures == 0
    assert entries(ncsa, "NCSA") == []  # a pull writes nothing at its source

    with ncsa.butler("NCSA", run="HSC/raw/all") as b:
        b.put(np.zeros(8), "raw", instrument="HSC", exposure=903334, detector=0,
              run="HSC/raw/extra")
    ncsa.sync("NCSA", "IN2P3", collections=["HSC/raw/*"])
    second = entries(ncsa, "IN2P3")[-1]
    assert (second.cursor_from, second.cursor_to) == (report.cursor, report.cursor + 2)
    assert second.counts["dataset insert"] == 1


def test_dry_runs_are_not_logged(ncsa):
    ncsa.sync("NCSA", "IN2P3", dry_run=True)
    assert entries(ncsa, "IN2P3") == []


def test_a_refused_sync_is_logged_as_a_conflict(ncsa):
    with ncsa.butler("NCSA") as b:
        ref = b.find_dataset("raw", instrument="HSC", exposure=903335, detector=2,
                             collections="HSC/raw/all")
        (version,) = b.registry.datasets.versions([ref.id]).values()
    with ncsa.butler("IN2P3") as b:
        setup_types(b)
        put_replica(b, np.full(8, -1), "raw", "HSC/raw/all", instrument="HSC",
                    exposure=903335, detector=2, version=version)
    with pytest.raises(SyncConflictError):
        ncsa.sync("NCSA", "IN2P3")
    entry = entries(ncsa, "IN2P3")[-1]
    assert entry.result == "conflict" and entry.conflicts == 1
    assert str(ref.id) in entry.message
    assert entry.cursor_to == entry.cursor_from  # the cursor did not move


def test_a_failed_file_is_logged(ncsa):
    with ncsa.butler("NCSA") as b:
        ref = b.find_dataset("raw", instrument="HSC", exposure=903336, detector=1,
                             collections="HSC/raw/all")
        path = b.datastore.path_of(b.registry.datasets.file(ref.id)[0])
    path.write_bytes(b"corrupted")
    report = ncsa.sync("NCSA", "IN2P3")
    assert len(report.failed) == 1
    entry = entries(ncsa, "IN2P3")[-1]
    assert entry.result == "failed" and entry.failures == 1
    assert "does not match its record" in entry.message


def test_export_import_publish_and_the_cli(ncsa, tmp_path):
    bundle = export(ncsa, tmp_path / "b.jsonl.gz", "0", "--with-files", tmp_path / "files")
    import_(ncsa, bundle, "--files-from", tmp_path / "files")
    (entry,) = entries(ncsa, "IN2P3")
    assert entry.operation == "import" and entry.result == "ok" and entry.files == 20
    fed("publish", "NCSA", *sites(ncsa))
    (published,) = entries(ncsa, "NCSA")
    assert published.operation == "publish" and published.result == "ok"
    assert published.cursor_from == 0 and published.cursor_to > 0

    shown = fed("log", "IN2P3", *sites(ncsa)).stdout
    assert "import" in shown and "NCSA -> IN2P3" in shown and " ok" in shown
    every = json.loads(fed("log", "--json", *sites(ncsa)).stdout)
    by_site = {s["site"]: s for s in every}
    assert {"NCSA", "IN2P3", "Princeton", "laptop"} <= set(by_site)
    assert [e["operation"] for e in by_site["NCSA"]["entries"]] == ["publish"]
    assert by_site["IN2P3"]["entries"][0]["counts"]["dataset insert"] == 20
    assert by_site["Princeton"]["entries"] == []
    future = json.loads(fed("log", "IN2P3", "--since", "2999-01-01", "--json",
                            *sites(ncsa)).stdout)
    assert future[0]["entries"] == []
    recent = json.loads(fed("log", "IN2P3", "--since", "1h", "--json", *sites(ncsa)).stdout)
    assert len(recent[0]["entries"]) == 1
    fails("log", "IN2P3", "--since", "yesterday-ish", *sites(ncsa), match="--since")
    fails("log", "Nowhere", *sites(ncsa), match="unknown site")


def test_an_interrupted_sync_is_marked_by_the_next_one(ncsa):
    with ncsa.butler("IN2P3") as b:  # as a sync killed with SIGKILL leaves its entry
        from federation.registry.sync_log import LogEntry

        b.registry.log.start(LogEntry("sync", "NCSA", "IN2P3"))
    ncsa.sync("NCSA", "IN2P3")
    first, second = entries(ncsa, "IN2P3")
    assert first.result == "interrupted" and second.result == "ok"


def test_ctrl_c_inside_a_registry_write_is_logged_at_once(ncsa):
    """Ctrl-C landing inside a database call of the applying pass: the batch's write ends
    (committed or rolled back) before the interrupt is raised, so noting "interrupted" in
    the log does not wait on a write lock the interrupted call left behind (the 60 s
    busy timeout), and the next sync completes the job."""
    sent: list[str] = []

    def interrupt(_conn, _cursor, statement, *_args) -> None:
        if not sent and statement.lstrip().upper().startswith("INSERT INTO COLLECTION "):
            sent.append(statement)
            os.kill(os.getpid(), signal.SIGINT)

    sa.event.listen(sa.engine.Engine, "after_cursor_execute", interrupt)
    try:
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            ncsa.sync("NCSA", "IN2P3")
        took = time.monotonic() - started
    finally:
        sa.event.remove(sa.engine.Engine, "after_cursor_execute", interrupt)
    assert sent, "no collection insert was interrupted"
    assert took < 30, f"the interrupted sync took {took:.0f} s to stop"
    (first,) = entries(ncsa, "IN2P3")
    assert first.result == "interrupted"
    ncsa.sync("NCSA", "IN2P3")
    with ncsa.butler("NCSA") as src, ncsa.butler("IN2P3") as dst:
        assert repo_state(dst) == repo_state(src)
