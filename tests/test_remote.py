"""Remote sites from the command line: definitions, publish, pull, push + receive, progress.

Sources are reached through a real sshd or nginx on loopback (tests/servers.py).
Each test builds two views of the federation, as two machines would have them:
``fed.sites_dir`` (every site local: the machine that runs it) and a puller's
view where NCSA is reached over the network.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import populate_ncsa, remote_block, repo_state
from test_cli import fails, fed

from federation.errors import ConfigError
from federation.sites import load_site, parse_site
from federation.sync.remote.outbox import INDEX, OutboxIndex
from federation.sync.site_access import open_site


@pytest.fixture
def db_url() -> None:
    """SQLite only: these tests are about transports, not databases."""
    return None


def puller_view(federation, tmp_path: Path, name: str, transport: str, server) -> Path:
    """A sites directory where site ``name`` is reached over ``transport``."""
    view = tmp_path / f"view-{transport}"
    shutil.copytree(federation.sites_dir, view)
    definition = yaml.safe_load((view / f"{name}.yaml").read_text())
    (view / f"{name}.yaml").write_text(yaml.safe_dump({
        "name": name, "transport": transport, "owns": definition["owns"],
        transport: remote_block(transport, server, Path(definition["root"]))}))
    return view


def server_for(request, transport: str):
    return request.getfixturevalue({"sftp": "sshd_server", "http": "web_server"}[transport])


# -- site definitions --------------------------------------------------------------------


@pytest.mark.parametrize(("block", "message"), [
    ({"transport": "sftp"}, "needs a 'sftp:' mapping"),
    ({"transport": "sftp", "sftp": {"root": "/data"}}, "'sftp: host' is required"),
    ({"transport": "sftp", "sftp": {"host": "h", "root": "data"}}, "absolute path"),
    ({"transport": "sftp", "sftp": {"host": "h", "root": "/d", "port": 0}}, "positive integer"),
    ({"transport": "sftp", "sftp": {"host": "h", "root": "/d", "password": "x"}},
     "unknown key(s) in 'sftp:': password"),
    ({"transport": "http", "http": {}}, "'http: url' is required"),
    ({"transport": "local", "registry": "sqlite:///r", "root": "r", "sftp": {"host": "h"}},
     "needs 'transport: sftp'"),
])
def test_invalid_remote_definitions_are_refused(tmp_path, db_url, block, message):
    with pytest.raises(ConfigError) as info:
        parse_site({"name": "NCSA"} | block, tmp_path / "NCSA.yaml")
    assert message in str(info.value)


def test_remote_site_is_listed_and_checked(federation, tmp_path, request, db_url):
    populate_ncsa(federation)
    view = puller_view(federation, tmp_path, "NCSA", "sftp", server_for(request, "sftp"))
    listing = fed("site", "list", "--sites", view).stdout
    assert "sftp://127.0.0.1:" in listing and "(published bundles)" in listing
    assert "nothing published yet" in fed("site", "check", "NCSA", "--sites", view).stdout
    fed("publish", "NCSA", "--sites", federation.sites_dir)
    checked = fed("site", "check", "NCSA", "--sites", view).stdout
    assert "published up to journal entry" in checked and "in 1 bundles" in checked
    # the registry of a remote site is never opened directly
    with pytest.raises(ConfigError, match="read only through the bundles it publishes"):
        open_site(load_site("NCSA", view))


# -- publish ----------------------------------------------------------------------------


def test_publish_writes_contiguous_bundles_and_an_index(federation, db_url):
    populate_ncsa(federation)
    sites = federation.sites_dir
    first = json.loads(fed("publish", "NCSA", "--sites", sites, "--json").stdout)
    assert first["bundle"]["from_seq"] == 0 and first["bundle"]["to_seq"] > 0
    again = fed("publish", "NCSA", "--sites", sites).stdout
    assert "nothing new" in again
    with federation.butler("NCSA", run="HSC/raw/all") as b:
        b.put(np.arange(3), "raw", instrument="HSC", exposure=903334, detector=3,
              run="HSC/runs/extra")
    second = json.loads(fed("publish", "NCSA", "--sites", sites, "--json").stdout)
    assert second["bundle"]["from_seq"] == first["bundle"]["to_seq"]
    outbox = Path(first["outbox"])
    index = OutboxIndex.parse((outbox / INDEX).read_bytes(), "index")
    assert [b.name for b in index.bundles] == [first["bundle"]["name"], second["bundle"]["name"]]
    assert all((outbox / b.name).is_file() for b in index.bundles)
    shown = fed("bundle", "show", outbox / second["bundle"]["name"]).stdout
    assert "integrity" in shown and "ok" in shown


def test_publish_refuses_a_remote_definition(federation, tmp_path, request, db_url):
    view = puller_view(federation, tmp_path, "NCSA", "http", server_for(request, "http"))
    fails("publish", "NCSA", "--sites", view, match="publish it on the machine that runs")


# -- pulling through the CLI ----------------------------------------------------------------


@pytest.mark.parametrize("transport", ["sftp", "http"])
def test_cli_pull_reports_and_converges(federation, tmp_path, request, transport, db_url):
    populate_ncsa(federation)
    view = puller_view(federation, tmp_path, "NCSA", transport, server_for(request, transport))
    fails("sync", "NCSA", "IN2P3", "--sites", view, match="has published nothing")
    fed("publish", "NCSA", "--sites", federation.sites_dir)
    report = json.loads(fed("sync", "NCSA", "IN2P3", "--sites", view, "--json").stdout)
    assert report["files"] == 20 and report["counts"]["dataset insert"] == 20
    assert report["resumed"] == {"files": 0, "bytes": 0}
    with federation.butler("NCSA") as a, federation.butler("IN2P3") as b:
        assert repo_state(a) == repo_state(b)
        assert b.verify().ok and b.verify().checked == 20
        assert report["cursor"] == a.registry.db.last_seq()
    again = fed("sync", "NCSA", "IN2P3", "--sites", view).stdout
    assert "files transferred" not in again


# -- pushing -------------------------------------------------------------------------------


def test_push_to_an_sftp_site_then_receive(federation, tmp_path, request, db_url):
    """The laptop pushes its user run; NCSA's operator receives it from the inbox."""
    populate_ncsa(federation)
    federation.sync("NCSA", "laptop")
    with federation.butler("laptop", run="u/alice/DM-9") as b:
        for detector in range(3):
            b.put(np.full(5, detector), "raw", instrument="HSC", exposure=903335,
                  detector=detector)
    view = puller_view(federation, tmp_path, "NCSA", "sftp", server_for(request, "sftp"))
    plan = fed("sync", "laptop", "NCSA", "--sites", view, "-c", "u/alice/*", "--dry-run").stdout
    assert "push" in plan
    pushed = json.loads(fed("sync", "laptop", "NCSA", "--sites", view, "-c", "u/alice/*",
                            "--json").stdout)
    assert pushed["files"] == 3 and pushed["counts"]["dataset push"] == 3
    inbox = federation.site("NCSA").inbox
    assert len(list(inbox.glob("*.bundle"))) == 1
    again = json.loads(fed("sync", "laptop", "NCSA", "--sites", view, "-c", "u/alice/*",
                           "--json").stdout)
    assert again["files"] == 0 and not again["counts"]

    received = fed("receive", "NCSA", "--sites", federation.sites_dir).stdout
    assert "dataset" in received and "insert" in received
    assert not list(inbox.glob("*.bundle")) and len(list((inbox / "done").iterdir())) == 1
    with federation.butler("NCSA") as b:
        refs = b.query_datasets("raw", "u/alice/DM-9")
        assert len(refs) == 3 and b.verify(refs).ok
        np.testing.assert_array_equal(b.get(refs[0]), np.full(5, refs[0].data_id["detector"]))
    assert "inbox is empty" in fed("receive", "NCSA", "--sites", federation.sites_dir).stdout


def test_push_to_an_http_site_is_refused(federation, tmp_path, request, db_url):
    view = puller_view(federation, tmp_path, "NCSA", "http", server_for(request, "http"))
    fails("sync", "laptop", "NCSA", "--sites", view, match="read-only over http")


# -- progress -----------------------------------------------------------------------------


def test_progress_is_line_oriented_off_a_terminal():
    from federation.cli.transfer_progress import TransferProgress

    out = io.StringIO()
    with TransferProgress("NCSA -> IN2P3", stream=out, tty=False, interval=0) as progress:
        progress.planned(4, 4_000_000)
        progress.advance(0, 1_000_000)
        progress.advance(1, 0)
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("NCSA -> IN2P3: 1/4 files, 1.0 MB/4.0 MB, ")
    assert "B/s, ETA" in lines[-1]
    quiet = io.StringIO()
    with TransferProgress("x", stream=quiet, tty=False) as progress:  # under 10 s: silent
        progress.advance(1, 10)
    assert quiet.getvalue() == ""


def test_progress_draws_a_bar_on_a_terminal():
    from federation.cli.transfer_progress import TransferProgress

    out = io.StringIO()
    with TransferProgress("NCSA -> IN2P3", stream=out, tty=True) as progress:
        progress.planned(2, 2000)
        progress.advance(0, 1000)
        progress.advance(1, 0)
    drawn = out.getvalue()
    assert "NCSA -> IN2P3" in drawn and "files" in drawn and "kB" in drawn


# -- servers that only speak SFTP ---------------------------------------------------------


def test_pull_from_an_sftp_only_account(federation, tmp_path, request, db_url):
    """Small files normally stream through one `tar` run on the server; an account that may
    run no commands (ForceCommand internal-sftp) still gets every file, over SFTP alone."""
    populate_ncsa(federation)
    view = puller_view(federation, tmp_path, "NCSA", "sftp",
                       request.getfixturevalue("sshd_sftp_only"))
    fed("publish", "NCSA", "--sites", federation.sites_dir)
    report = json.loads(fed("sync", "NCSA", "IN2P3", "--sites", view, "--json").stdout)
    assert report["files"] == 20 and not report["failed_files"]
    with federation.butler("NCSA") as a, federation.butler("IN2P3") as b:
        assert repo_state(a) == repo_state(b)
        assert b.verify().ok and b.verify().checked == 20
