"""Releases travel: a sync selecting a release brings its collections, datasets, files,
manifest and verifications; the destination rebuilds the tree and must find the root, and
holds the release once it verified it. Several paths and a cycle, retractions, a tombstone
for a released dataset, a tampered manifest, release sites; over local, SFTP and HTTP
sources, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from conftest import populate_ncsa, repo_state
from test_cli import fails, fed

from federation.errors import RetractedReleaseWarning
from federation.timespan import Timespan

REACHES = ("local", "sftp", "http")


@pytest.fixture
def ncsa(federation):
    populate_ncsa(federation)
    fed("release", "create", repo(federation, "NCSA"), "DR1", "-c", "HSC/defaults")
    return federation


def repo(fed_, site: str) -> Path:
    return fed_.root / "repos" / site


def sites_for(fed_, reach: str, remote: tuple[str, ...] = ("NCSA",)) -> Path:
    """A sites directory from which ``remote`` sites are reached over ``reach`` (after
    publishing) and the others are local."""
    if reach == "local":
        return fed_.sites_dir
    folder = fed_.root / f"sites-{reach}"
    folder.mkdir(exist_ok=True)
    for definition in fed_.sites_dir.glob("*.yaml"):
        shutil.copy(definition, folder / definition.name)
    for name in remote:
        fed("publish", name, "--sites", fed_.sites_dir)
        shutil.copy(fed_.remote_dir / f"{name}.yaml", folder / f"{name}.yaml")
    return folder


def release_sync(fed_, source: str, destination: str, sites: Path, *extra, code=0):
    return fed("sync", source, destination, "--release", "DR1", "--sites", sites, *extra,
               code=code)


def statuses(sites: Path, name: str = "DR1") -> dict[str, str]:
    return {s["site"]: s["state"] for s in json.loads(
        fed("release", "status", name, "--sites", sites, "--json").stdout)}


def test_a_release_travels_whole_and_is_verified_on_arrival(ncsa, reach, tmp_path,
                                                            monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fed("release", "verify", repo(ncsa, "NCSA"), "DR1")
    sites = sites_for(ncsa, reach)
    out = release_sync(ncsa, "NCSA", "IN2P3", sites).stdout
    assert "release DR1 verified at IN2P3: complete, 20 files" in out
    with ncsa.butler("NCSA") as b:
        info = b.registry.releases.get("DR1")
    with ncsa.butler("IN2P3", collections="DR1") as b:
        held = b.registry.releases.get("DR1")
        assert (held.root, held.site, held.entries, held.counts) == \
            (info.root, "NCSA", 20, {"bias": 4, "raw": 16})
        assert b.get("raw", instrument="HSC", exposure=903334, detector=1)[0] == 1
        bias = b.find_dataset("bias", instrument="HSC", detector=2,
                              timespan=Timespan.from_values("2013-06-01", "2013-06-02"))
        assert bias is not None and b.get(bias) is not None
        names = {c.name for c in b.registry.collections.query()}
        # exactly the release: its collections and the runs its datasets live in
        assert names == {"DR1", "DR1/found", "DR1/calib", "HSC/raw/all", "HSC/calib/gen/DM-1"}
    fails("prune-datasets", repo(ncsa, "IN2P3"), "raw", "-c", "DR1", "--yes",
          match="owned by site 'NCSA'")
    # NCSA's own verification came with the release (read from what NCSA published, when
    # it is remote); both show as verified.
    assert statuses(sites) == {"NCSA": "verified", "IN2P3": "verified",
                               "Princeton": "absent", "laptop": "absent"}
    again = json.loads(release_sync(ncsa, "NCSA", "IN2P3", sites, "--json").stdout)
    assert not any(k.endswith((" insert", " apply", " update")) for k in again["counts"])
    diff = fed("release", "diff", "NCSA:DR1", "IN2P3:DR1", "--sites", sites).stdout
    assert "0 added, 0 removed, 0 changed" in diff


def test_several_paths_and_a_cycle_converge(ncsa, tmp_path):
    sites = ncsa.sites_dir
    release_sync(ncsa, "NCSA", "IN2P3", sites)
    release_sync(ncsa, "IN2P3", "Princeton", sites)
    direct = json.loads(release_sync(ncsa, "NCSA", "Princeton", sites, "--json").stdout)
    assert direct["counts"].get("release skip") == 1 and not direct["conflicts"]
    back = json.loads(release_sync(ncsa, "Princeton", "IN2P3", sites, "--json").stdout)
    assert not back["conflicts"]
    release_sync(ncsa, "Princeton", "NCSA", sites)  # its own release back: nothing changes
    # Verifications travel along: every site learns every other's.
    release_sync(ncsa, "Princeton", "IN2P3", sites)
    with ncsa.butler("IN2P3") as b:
        checkers = {c.site for c in b.registry.releases.checks("DR1")}
    assert checkers == {"IN2P3", "Princeton"}
    states = {}
    for site in ("NCSA", "IN2P3", "Princeton"):
        with ncsa.butler(site) as b:
            states[site] = (b.registry.releases.get("DR1").root,
                            sorted(str(r.id) for r in b.query_datasets(
                                None, ["DR1"], find_first=False)))
    assert states["NCSA"] == states["IN2P3"] == states["Princeton"]


def test_a_full_sync_and_a_bundle_carry_releases_too(ncsa):
    ncsa.sync("NCSA", "IN2P3")
    with ncsa.butler("IN2P3") as b:
        assert b.registry.releases.names() == ["DR1"]
    bundle = ncsa.root / "dr1.jsonl.gz"
    fed("export", "NCSA", "--since", "0", "--release", "DR1", "-o", bundle,
        "--sites", ncsa.sites_dir)
    fed("import", bundle, "laptop", "--files-from", repo(ncsa, "NCSA"),
        "--sites", ncsa.sites_dir)
    fed("release", "verify", repo(ncsa, "laptop"), "DR1")
    with ncsa.butler("laptop") as b, ncsa.butler("NCSA") as a:
        assert b.registry.releases.get("DR1").root == a.registry.releases.get("DR1").root
        assert b.registry.releases.get("DR1").check.complete


def test_a_retraction_travels_and_warns_everywhere(ncsa):
    sites = ncsa.sites_dir
    release_sync(ncsa, "NCSA", "IN2P3", sites)
    release_sync(ncsa, "IN2P3", "Princeton", sites)
    fed("release", "retract", repo(ncsa, "NCSA"), "DR1", "--reason", "bad flats")
    release_sync(ncsa, "NCSA", "IN2P3", sites)
    release_sync(ncsa, "IN2P3", "Princeton", sites)
    release_sync(ncsa, "Princeton", "laptop", sites)  # a first arrival, retracted already
    for site in ("IN2P3", "Princeton", "laptop"):
        searched = fed("query-datasets", repo(ncsa, site), "raw", "-c", "DR1")
        assert "warning: release 'DR1' has been retracted: bad flats" in searched.stderr
        with pytest.warns(RetractedReleaseWarning), \
                ncsa.butler(site, collections="DR1") as b:
            assert len(b.query_datasets("raw")) == 16


def test_bad_release_syncs_write_nothing(ncsa):
    sites = ncsa.sites_dir
    with ncsa.butler("IN2P3") as b:
        before = repo_state(b)
    fails("sync", "NCSA", "IN2P3", "--release", "DR9", "--sites", sites,
          match="NCSA has no release 'DR9'")
    fails("sync", "NCSA", "IN2P3", "--release", "DR1", "-c", "HSC/raw/all", "--sites", sites,
          match="without -c")
    with ncsa.butler("IN2P3") as b:
        assert repo_state(b) == before and b.registry.releases.names() == []


def test_a_tombstone_for_a_released_dataset_is_a_conflict(ncsa):
    """A site that lost the release (its registry restored from before it) deletes a
    dataset the release holds; where the release is held, the deletion is a conflict with
    both sides, and nothing is applied."""
    release_sync(ncsa, "NCSA", "IN2P3", ncsa.sites_dir)
    with ncsa.butler("NCSA") as b:
        db = b.registry.db
        with db.engine.begin() as conn:
            conn.execute(sa.delete(db.tables.release))  # as if restored from before DR1
        victim = b.find_dataset("raw", instrument="HSC", exposure=903334, detector=0,
                                collections="HSC/raw/all")
    fed("prune-datasets", repo(ncsa, "NCSA"), "raw", "-c", "HSC/raw/all", "--where",
        "exposure = 903334 AND detector = 0", "--yes")
    with ncsa.butler("IN2P3") as b:
        before = repo_state(b)
    refused = fed("sync", "NCSA", "IN2P3", "--sites", ncsa.sites_dir, "-c", "HSC/raw/all",
                  code=1)
    assert f"dataset {victim.id}: belongs to release 'DR1' here" in refused.stdout
    assert "source: deleted at NCSA" in refused.stdout
    assert "destination: held by release 'DR1'" in refused.stdout
    with ncsa.butler("IN2P3") as b:
        assert repo_state(b) == before


def test_a_manifest_that_does_not_hash_to_its_root_is_refused(ncsa):
    bundle = ncsa.root / "dr1.jsonl"
    fed("export", "NCSA", "--since", "0", "--release", "DR1", "-o", bundle,
        "--sites", ncsa.sites_dir)
    lines = bundle.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        data = json.loads(line)
        if data.get("kind") == "release_entries":
            entry = json.loads(data["lines"][0])
            entry["size"] += 1  # a forged entry
            data["lines"][0] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
            lines[i] = json.dumps(data, separators=(",", ":")) + "\n"
    body = lines[:-1]
    end = {"kind": "end", "lines": len(body),
           "sha256": hashlib.sha256("".join(body).encode()).hexdigest()}
    bundle.write_text("".join(body) + json.dumps(end, separators=(",", ":")) + "\n")
    with ncsa.butler("laptop") as b:
        before = repo_state(b)
    out = fed("import", bundle, "laptop", "--files-from", repo(ncsa, "NCSA"),
              "--sites", ncsa.sites_dir, code=1)
    assert "release DR1: its manifest hashes to" in out.stdout
    with ncsa.butler("laptop") as b:
        assert repo_state(b) == before and b.registry.releases.names() == []


def test_a_release_site_takes_releases_only_and_refuses_local_writes(ncsa):
    sites = ncsa.sites_dir
    (sites / "DataRelease.yaml").write_text(yaml.safe_dump({
        "name": "DataRelease", "registry": f"sqlite:///{ncsa.root / 'dr' / 'r.sqlite3'}",
        "root": str(ncsa.root / "dr"), "transport": "local", "role": "release"}))
    fed("site", "init", "DataRelease", "--sites", sites)
    dr = ncsa.root / "dr"
    with open_dr(dr) as b:
        before = repo_state(b)
    fails("sync", "NCSA", "DataRelease", "--sites", sites, match="release site")
    fails("sync", "NCSA", "DataRelease", "-c", "HSC/raw/all", "--sites", sites,
          match="takes only releases")
    with open_dr(dr) as b:
        assert repo_state(b) == before
    out = release_sync(ncsa, "NCSA", "DataRelease", sites).stdout
    assert "verified at DataRelease: complete" in out
    with open_dr(dr) as b:
        held = repo_state(b)
    fails("register-collection", dr, "mine", match="release site")
    fails("release", "create", dr, "DR2", "-c", "DR1", match="release site")
    fails("prune-datasets", dr, "raw", "-c", "DR1", "--yes", match="owned by site 'NCSA'")
    records = ncsa.root / "instrument.yaml"
    records.write_text(yaml.safe_dump({"instrument": [{"instrument": "LATISS"}]}))
    fails("insert-dimension-records", dr, records, match="release site")
    fed("release", "verify", dr, "DR1")  # its own verifications are written
    with open_dr(dr) as b:
        assert repo_state(b) == held
    bundle = ncsa.root / "all.jsonl.gz"
    fed("export", "NCSA", "--since", "0", "-o", bundle, "--sites", sites)
    fails("import", bundle, "DataRelease", "--files-from", repo(ncsa, "NCSA"),
          "--sites", sites, match="release site")


def open_dr(root: Path):
    from federation.butler import Butler

    return Butler(root)


def test_a_registry_of_schema_3_is_upgraded(ncsa):
    with ncsa.butler("laptop") as b:
        url = str(b.registry.db.engine.url)
        fed("release", "verify", repo(ncsa, "NCSA"), "DR1")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE release_check DROP COLUMN site"))
        conn.execute(sa.text("UPDATE meta SET value = '3' WHERE key = 'schema_version'"))
    engine.dispose()
    with ncsa.butler("laptop") as b:
        assert b.registry.releases.names() == []
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT value FROM meta WHERE key = 'schema_version'")
                            ).scalar() == "4"
        assert "site" in {c["name"] for c in sa.inspect(conn).get_columns("release_check")}
    engine.dispose()



@pytest.mark.parametrize("reach", ["sftp"], indirect=True)
def test_a_release_pushed_over_sftp_is_verified_when_received(ncsa, reach, tmp_path,
                                                              request):
    """NCSA pushes DR1 to IN2P3 reached over SFTP; IN2P3's operator receives it, and the
    receive ends with IN2P3 verifying it."""
    from test_remote import puller_view, server_for

    view = puller_view(ncsa, tmp_path, "IN2P3", "sftp", server_for(request, "sftp"))
    pushed = fed("sync", "NCSA", "IN2P3", "--release", "DR1", "--sites", view).stdout
    assert "IN2P3 verifies release DR1 when it receives it" in pushed
    received = fed("receive", "IN2P3", "--sites", ncsa.sites_dir).stdout
    assert "release DR1 verified at IN2P3: complete, 20 files" in received
    with ncsa.butler("IN2P3") as b:
        assert b.registry.releases.last_check("DR1").complete
