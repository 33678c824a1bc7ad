"""Pull-through reads: a dataset synced records-only is fetched on read, verified, kept.

IN2P3 (on SQLite and on PostgreSQL) holds NCSA's raws records-only; with
``cache: pull_through: true`` its Butler fetches a file on first read from the site
holding it (through that site's transport), checks size and xxh3-128, keeps it, and
reads it locally from then on. Offline, the one-line error names the site holding
the file; a corrupt copy is refused and nothing changes. Two processes reading the
same file fetch it once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from servers import free_port
from test_cli import fails
from test_remote import puller_view, server_for

from federation.butler import Butler
from federation.cache import CacheConfig
from federation.errors import MissingDatasetError
from federation.operations.cache import open_butler
from federation.registry.cache import CacheEntries

RAW = "HSC/raw/all"
ONE = {"instrument": "HSC", "exposure": 903335, "detector": 2}
EXPECTED = np.full(8, 12)  # populate_ncsa: 10 * (exposure index 1) + detector 2


def root(fed_, site: str) -> Path:
    return fed_.root / "repos" / site


def records_only(fed_, site: str = "IN2P3", sites: Path | None = None, **config) -> Path:
    """NCSA's raws synced to ``site`` without their files; pull-through on there."""
    fed_.sync("NCSA", site, collections=[RAW], files=False)
    repo = root(fed_, site)
    CacheConfig(pull_through=True, sites=sites or fed_.sites_dir, **config).save(repo)
    return repo


def held(fed_, site: str, data_id=ONE) -> tuple[Path, str | None]:
    """The path a dataset's file has at ``site`` and the site holding it (None: there)."""
    with fed_.butler(site, collections=RAW) as b:
        ref = b.find_dataset("raw", data_id)
        stored, holder = b.registry.datasets.file(ref.id)
        return b.datastore.path_of(stored), holder


def registry_state(fed_, site: str) -> tuple:
    with fed_.butler(site) as b:
        files = sorted((str(i), s.path, h) for i, s, h in b.registry.datasets.iter_files())
        return files, CacheEntries(b.registry.db).totals()


def take_offline(fed_, site: str = "NCSA") -> Path:
    """Move a site's repository away: its definition names a root that is not there."""
    away = root(fed_, site).with_name(f"{site}-away")
    root(fed_, site).rename(away)
    return away


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


# -- reading through --------------------------------------------------------------------


def test_a_read_fetches_verifies_and_keeps_the_file_then_reads_locally(ncsa):
    repo = records_only(ncsa)
    path, holder = held(ncsa, "IN2P3")
    assert holder == "NCSA" and not path.exists()
    with open_butler(repo, collections=RAW) as b:
        assert not b.exists("raw", ONE) and b.exists("raw", ONE).held_at == "NCSA"
        assert np.array_equal(b.get("raw", ONE), EXPECTED)
        assert b.exists("raw", ONE)
    assert held(ncsa, "IN2P3") == (path, None) and path.is_file()
    with ncsa.butler("NCSA", collections=RAW) as src:
        assert path.read_bytes() == Path(src.get_uri("raw", ONE)[7:]).read_bytes()
    with ncsa.butler("IN2P3") as b:
        entries = CacheEntries(b.registry.db).least_recent()
        assert [(e.path, e.source) for e in entries] == [(str(path.relative_to(repo)), "NCSA")]
        assert b.verify().ok
    take_offline(ncsa)  # no network from here on: the second read is local
    with open_butler(repo, collections=RAW) as b:
        assert np.array_equal(b.get("raw", ONE), EXPECTED)
        assert b.get_uri("raw", ONE) == path.as_uri()
    with Butler(repo, collections=RAW) as b:  # a plain Butler reads it too: it is here
        assert np.array_equal(b.get("raw", ONE), EXPECTED)


def test_get_uri_reads_through_and_other_datasets_stay_held_elsewhere(ncsa):
    repo = records_only(ncsa)
    with open_butler(repo, collections=RAW) as b:
        uri = b.get_uri("raw", ONE)
        assert Path(uri[7:]).is_file()
        others = [r for r in b.query_datasets("raw") if r.data_id["exposure"] != 903335
                  or r.data_id["detector"] != 2]
        assert len(others) == 15
        assert all(b.exists(r).held_at == "NCSA" for r in others)


def test_without_pull_through_a_file_held_elsewhere_is_not_fetched(ncsa):
    repo = records_only(ncsa)
    CacheConfig(pull_through=False, sites=ncsa.sites_dir).save(repo)
    before = registry_state(ncsa, "IN2P3")
    for opened in (lambda: open_butler(repo, collections=RAW),
                   lambda: Butler(repo, collections=RAW)):
        with opened() as b, pytest.raises(MissingDatasetError, match="held at site 'NCSA'"):
            b.get("raw", ONE)
    assert registry_state(ncsa, "IN2P3") == before
    fails("cache", "fetch", repo, "-c", RAW, match="pull-through reads are off")


def test_offline_the_error_names_the_site_holding_the_file(ncsa):
    repo = records_only(ncsa)
    take_offline(ncsa)
    before = registry_state(ncsa, "IN2P3")
    path, _ = held(ncsa, "IN2P3")
    with open_butler(repo, collections=RAW) as b:
        with pytest.raises(MissingDatasetError) as caught:
            b.get("raw", ONE)
    message = str(caught.value)
    assert "\n" not in message
    assert "held at site NCSA, which could not be reached (site NCSA: no repository at" \
        in message
    assert "no other site gave it (Princeton: not held; laptop: not held)" in message
    assert registry_state(ncsa, "IN2P3") == before and not path.exists()
    fails("cache", "fetch", repo, "-c", RAW, "--where", "exposure = 903335 AND detector = 2",
          match=["cannot read raw@", "held at site NCSA, which could not be reached"])
    assert registry_state(ncsa, "IN2P3") == before


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_offline_over_http_names_the_site(ncsa, tmp_path):
    view = tmp_path / "view"
    view.mkdir()
    for site in ("IN2P3", "laptop"):
        (view / f"{site}.yaml").write_text((ncsa.sites_dir / f"{site}.yaml").read_text())
    (view / "NCSA.yaml").write_text(yaml.safe_dump({
        "name": "NCSA", "transport": "http", "owns": ["HSC/raw"],
        "http": {"url": f"http://127.0.0.1:{free_port()}/repo/", "retries": 0}}))
    repo = records_only(ncsa, sites=view)
    before = registry_state(ncsa, "IN2P3")
    line = fails("cache", "fetch", repo, "-c", RAW, "--where",
                 "exposure = 903335 AND detector = 2",
                 match="held at site NCSA, which could not be reached (")
    assert "laptop: not held" in line
    assert registry_state(ncsa, "IN2P3") == before


@pytest.mark.parametrize("transport", ["http", "sftp"])
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_site_over_the_network_is_read_through_its_transport(ncsa, tmp_path, request,
                                                               transport):
    view = puller_view(ncsa, tmp_path, "NCSA", transport, server_for(request, transport))
    repo = records_only(ncsa, sites=view)
    with open_butler(repo, collections=RAW) as b:
        assert np.array_equal(b.get("raw", ONE), EXPECTED)
    assert held(ncsa, "IN2P3")[1] is None
    with ncsa.butler("IN2P3") as b:
        assert [e.source for e in CacheEntries(b.registry.db).least_recent()] == ["NCSA"]


def test_a_corrupt_copy_is_refused_and_nothing_changes(ncsa):
    repo = records_only(ncsa)
    corrupt(held(ncsa, "NCSA")[0])
    before = registry_state(ncsa, "IN2P3")
    path, _ = held(ncsa, "IN2P3")
    with open_butler(repo, collections=RAW) as b:
        with pytest.raises(MissingDatasetError) as caught:
            b.get("raw", ONE)
    assert "held at site NCSA, which did not give a good copy (" in str(caught.value)
    assert "does not match its record (checksum mismatch" in str(caught.value)
    assert registry_state(ncsa, "IN2P3") == before and not path.exists()
    staging = repo / ".federation-staging"
    assert not staging.exists() or not any(staging.iterdir())


def test_another_site_gives_the_file_when_the_holder_is_offline(ncsa):
    ncsa.sync("NCSA", "IN2P3", collections=[RAW])  # IN2P3 holds the files
    repo = records_only(ncsa, site="laptop")
    assert held(ncsa, "laptop")[1] == "NCSA"
    take_offline(ncsa)
    with open_butler(repo, collections=RAW) as b:
        assert np.array_equal(b.get("raw", ONE), EXPECTED)
    assert held(ncsa, "laptop")[1] is None
    with ncsa.butler("laptop") as b:
        assert [e.source for e in CacheEntries(b.registry.db).least_recent()] == ["IN2P3"]


def test_a_copy_with_another_checksum_at_a_site_is_not_asked_for(ncsa):
    repo = records_only(ncsa)
    with ncsa.butler("NCSA", collections=RAW) as b:
        ref = b.find_dataset("raw", ONE)
        b.registry.datasets.remove([ref])  # NCSA no longer holds it: no site has it
        b.empty_trash()
    with open_butler(repo, collections=RAW) as b, pytest.raises(MissingDatasetError) as caught:
        b.get("raw", ONE)
    assert "held at site NCSA, which did not give a good copy (not held)" in str(caught.value)


# -- concurrent readers --------------------------------------------------------------------

READER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path

    import federation.cache.pull as pull
    from federation.operations.cache import open_butler

    repo, log, go = sys.argv[1:4]
    download = pull.Fetcher.download

    def counted(self, states, *args, **kwargs):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(0.5)  # the other reader arrives while this one fetches
        return download(self, states, *args, **kwargs)

    pull.Fetcher.download = counted
    Path(f"{go}.{os.getpid()}.ready").touch()
    while not Path(go).exists():
        time.sleep(0.01)
    with open_butler(repo, collections="HSC/raw/all") as b:
        print(b.get("raw", instrument="HSC", exposure=903335, detector=2).tolist())
""")


def test_two_readers_of_the_same_file_fetch_it_once(ncsa, tmp_path):
    repo = records_only(ncsa)
    script, log, go = tmp_path / "reader.py", tmp_path / "fetches.log", tmp_path / "go"
    script.write_text(READER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    readers = [subprocess.Popen([sys.executable, str(script), str(repo), str(log), str(go)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env) for _ in range(2)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.*.ready"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # both readers started: they ask for the file at the same moment
    go.touch()
    outputs = [r.communicate(timeout=120) for r in readers]
    for reader, (out, err) in zip(readers, outputs, strict=True):
        assert reader.returncode == 0, err
        assert out.strip() == str(EXPECTED.tolist())
    assert len(log.read_text().split()) == 1  # one fetch between them
    assert held(ncsa, "IN2P3")[1] is None
    with ncsa.butler("IN2P3") as b:
        assert CacheEntries(b.registry.db).totals().files == 1
        assert b.verify().ok
