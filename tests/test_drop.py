"""`fed drop`: a site frees its disk only where other sites hold verified copies.

Files are dropped (records kept, held at another site) when enough other sites
hold a copy verified now: hashed, or vouched for by a release verification
recorded after the file arrived; copies that are one file on disk count once.
Every refusal writes nothing. On SQLite and PostgreSQL, through local sites and
through sites reached over SFTP and HTTP (real sshd and nginx).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from servers import free_port
from test_cli import fails, fed, snapshot
from test_remote import puller_view, server_for

from federation.errors import MissingDatasetError
from federation.operations.drop import DropRequest, drop

RAW = "HSC/raw/all"
FED = str(Path(sys.executable).with_name("fed"))


def root(fed_, site: str) -> Path:
    return fed_.root / "repos" / site


def fed_drop(fed_, site: str, *args, code: int = 0, sites: Path | None = None):
    return fed("drop", site, "--sites", sites or fed_.sites_dir, "--yes", *args, code=code)


def as_json_drop(fed_, site: str, *args, code: int = 0, sites: Path | None = None) -> dict:
    return json.loads(fed_drop(fed_, site, *args, "--json", code=code, sites=sites).stdout)


def raws(fed_, site: str, where: str = "exposure = 903334") -> list:
    with fed_.butler(site) as b:
        return sorted(b.query_datasets("raw", RAW, where=where), key=lambda r: str(r.id))


def file_of(fed_, site: str, ref) -> tuple[Path, str | None]:
    """Where a dataset's file is at a site, and the site holding it (None: there)."""
    with fed_.butler(site) as b:
        stored, held = b.registry.datasets.file(ref.id)
        return b.datastore.path_of(stored), held


def state(fed_, site: str) -> tuple:
    """All a refused drop must leave as it was: journal, datasets, collections, every
    file, where each file is held, and the sync log."""
    with fed_.butler(site) as b:
        held = sorted((str(i), h) for i, _, h in b.registry.datasets.iter_files())
        log = [(e.operation, e.result) for e in b.registry.log.entries()]
    return snapshot(root(fed_, site)), held, log


def corrupt(path: Path) -> None:
    """Same size, other bytes."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


# -- dropping ---------------------------------------------------------------------------


def test_a_drop_frees_files_held_verified_elsewhere(ncsa):
    ncsa.sync("NCSA", "IN2P3", collections=[RAW])
    out = fed_drop(ncsa, "IN2P3", "-c", RAW, "--where", "exposure = 903334").stdout
    assert "dropped 4 files" in out and "held at NCSA (4)" in out
    dropped = raws(ncsa, "IN2P3")
    assert len(dropped) == 4  # the records stay
    with ncsa.butler("IN2P3") as b:
        for ref in dropped:
            path, held = file_of(ncsa, "IN2P3", ref)
            assert held == "NCSA" and not path.exists()
            assert b.exists(ref).held_at == "NCSA"
        with pytest.raises(MissingDatasetError, match="held at site 'NCSA'"):
            b.get(dropped[0])
        kept = raws(ncsa, "IN2P3", "exposure = 903335")
        assert b.get(kept[0]) is not None and b.exists(kept[0])
        entry = b.registry.log.entries()[-1]
        assert (entry.operation, entry.result, entry.files) == ("drop", "ok", 4)
        assert entry.counts == {"dataset drop": 4} and entry.message == "now held at NCSA (4)"
    assert "4 held at other sites" in fed("verify", root(ncsa, "IN2P3")).stdout
    again = fed_drop(ncsa, "IN2P3", "-c", RAW, "--where", "exposure = 903334").stdout
    assert "nothing dropped" in again and "4 selected datasets have no file here" in again
    # An incremental sync leaves them where they are; a snapshot (a selection of its own,
    # or --reset-cursor) brings them back.
    fed_drop(ncsa, "IN2P3", "-c", RAW, "--where", "exposure = 903335")
    ncsa.sync("NCSA", "IN2P3", collections=[RAW])
    assert all(file_of(ncsa, "IN2P3", r)[1] == "NCSA" for r in dropped)
    ncsa.sync("NCSA", "IN2P3", collections=[RAW], where="exposure = 903334")
    assert all(file_of(ncsa, "IN2P3", r)[1] is None for r in dropped)
    assert all(file_of(ncsa, "IN2P3", r)[1] == "NCSA" for r in kept)
    ncsa.sync("NCSA", "IN2P3", collections=[RAW], reset_cursor=True)
    with ncsa.butler("IN2P3") as b:
        assert all(file_of(ncsa, "IN2P3", r)[1] is None for r in dropped + kept)
        assert b.get(dropped[0]) is not None and b.verify().ok and b.verify().checked == 16


def test_fewer_verified_copies_than_asked_keeps_them_and_writes_nothing(ncsa):
    ncsa.sync("NCSA", "IN2P3", collections=[RAW])
    before = state(ncsa, "IN2P3")
    out = fed_drop(ncsa, "IN2P3", "-c", RAW, "--min-copies", "2", code=1).stdout
    assert "kept 16 datasets: fewer than 2 verified copies at other sites" in out
    assert "NCSA: hashed; not held at Princeton, laptop" in out
    assert "nothing dropped from IN2P3" in out
    assert state(ncsa, "IN2P3") == before
    # A second copy, second hand at Princeton: now two.
    ncsa.sync("IN2P3", "Princeton", collections=[RAW])
    found = as_json_drop(ncsa, "IN2P3", "-c", RAW, "--min-copies", "2")
    assert len(found["dropped"]) == 16 and not found["kept"] and found["done"]
    assert found["held_at"] == {"NCSA": 16}
    assert {c["site"] for c in found["dropped"][0]["copies"] if c["verified"]} == \
        {"NCSA", "Princeton"}


def test_a_policy_flow_raises_the_copies_what_it_carries_needs(ncsa, tmp_path):
    """A flow's min_copies applies to the datasets it carries (by run and type, or by
    release): --min-copies 1 is not enough for them, and the output names the flow."""
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "replicas.yaml").write_text(yaml.safe_dump({"flows": [
        {"name": "raws", "from": "NCSA", "to": ["IN2P3", "Princeton"],
         "collections": "HSC/raw/*", "dataset_types": "raw", "min_copies": 2},
        {"name": "elsewhere", "from": "NCSA", "to": "IN2P3", "collections": "HSC/calib/*",
         "min_copies": 3, "enabled": False}]}))
    ncsa.sync("NCSA", "IN2P3", collections=[RAW, "HSC/calib"])
    before = state(ncsa, "IN2P3")
    found = as_json_drop(ncsa, "IN2P3", "--policies", folder, code=1)
    kept = {k["dataset"].split("@")[0] for k in found["kept"]}
    assert kept == {"raw"} and len(found["kept"]) == 16
    assert {(k["needs"], k["needs_because"]) for k in found["kept"]} == {(2, "replicas/raws")}
    out = fed_drop(ncsa, "IN2P3", "--policies", folder, "-c", RAW, "--dry-run", code=1).stdout
    assert "fewer than 2 verified copies" in out and "2 (replicas/raws)" in out
    # The biases (a disabled flow asks for 3: not applied) need the one copy NCSA holds.
    assert {d["dataset"].split("@")[0] for d in found["dropped"]} == {"bias"}
    assert state(ncsa, "IN2P3")[1] != before[1]  # the biases went; the raws stayed
    with ncsa.butler("IN2P3") as b:
        assert all(h is None for _, _, h in b.registry.datasets.iter_files(
            [r.id for r in b.query_datasets("raw", RAW)]))


def test_a_dry_run_checks_and_writes_nothing(ncsa):
    ncsa.sync("NCSA", "laptop", collections=[RAW])
    before = state(ncsa, "laptop")
    out = fed("drop", "laptop", "--sites", ncsa.sites_dir, "-t", "raw", "--dry-run").stdout
    assert "would drop 16 files" in out and "held at NCSA (16)" in out
    found = json.loads(fed("drop", "laptop", "--sites", ncsa.sites_dir, "--dry-run",
                           "--json").stdout)
    assert found["dry_run"] and not found["done"] and len(found["dropped"]) == 16
    assert found["bytes"] == sum(d["size"] for d in found["dropped"])
    assert state(ncsa, "laptop") == before


def test_a_corrupt_or_missing_copy_does_not_count(ncsa):
    ncsa.sync("NCSA", "laptop", collections=[RAW])
    refs = raws(ncsa, "NCSA")
    corrupt(file_of(ncsa, "NCSA", refs[0])[0])
    file_of(ncsa, "NCSA", refs[1])[0].unlink()
    found = as_json_drop(ncsa, "laptop", "-c", RAW, "--where", "exposure = 903334", code=1)
    kept = {d["id"]: d for d in found["kept"]}
    assert set(kept) == {str(refs[0].id), str(refs[1].id)}
    ncsa_how = {i: [c["how"] for c in d["copies"] if c["site"] == "NCSA"][0]
                for i, d in kept.items()}
    assert ncsa_how[str(refs[0].id)].startswith("checksum mismatch")
    assert ncsa_how[str(refs[1].id)] == "its file is missing"
    assert {d["id"] for d in found["dropped"]} == {str(refs[2].id), str(refs[3].id)}
    for ref in refs[:2]:
        path, held = file_of(ncsa, "laptop", ref)
        assert held is None and path.is_file()
    out = fed_drop(ncsa, "laptop", "-c", RAW, "--where", "exposure = 903334", code=1).stdout
    assert "kept 2 datasets" in out and "checksum mismatch" in out


def test_copies_that_are_one_file_count_once(ncsa):
    """A: the laptop's file is a hard link of NCSA's (NCSA's copy is the laptop's own
    file). B: IN2P3's file is a hard link of NCSA's (two sites, one copy). C: three files."""
    for site in ("laptop", "IN2P3"):
        ncsa.sync("NCSA", site, collections=[RAW], where="exposure = 903334")
    a, b, c = raws(ncsa, "NCSA")[:3]
    for site, ref in (("laptop", a), ("IN2P3", b)):
        linked = file_of(ncsa, site, ref)[0]
        linked.unlink()
        os.link(file_of(ncsa, "NCSA", ref)[0], linked)
    found = as_json_drop(ncsa, "laptop", "-c", RAW, "--where", "exposure = 903334",
                         "--min-copies", "2", code=1)
    kept = {d["id"]: d for d in found["kept"]}
    assert set(kept) == {str(a.id), str(b.id)}
    assert kept[str(a.id)]["verified_copies"] == 1
    assert any(x["site"] == "NCSA" and not x["verified"] and "same file as ours" in x["how"]
               for x in kept[str(a.id)]["copies"])
    assert kept[str(b.id)]["verified_copies"] == 1  # IN2P3 and NCSA: one file
    assert sum(x["verified"] for x in kept[str(b.id)]["copies"]) == 2
    assert str(c.id) in {d["id"] for d in found["dropped"]}
    assert file_of(ncsa, "laptop", a)[0].is_file() and file_of(ncsa, "NCSA", a)[0].is_file()
    # One other copy is enough by default: A's at IN2P3 (NCSA's is the laptop's own file).
    found = as_json_drop(ncsa, "laptop", "-c", RAW, "--where", "exposure = 903334")
    assert {d["id"] for d in found["dropped"]} == {str(a.id), str(b.id)}
    assert file_of(ncsa, "NCSA", a)[0].is_file()  # NCSA's file (the link) stays


def test_a_copy_changed_while_the_drop_checks_does_not_count(ncsa):
    ncsa.sync("NCSA", "laptop", collections=[RAW], where="exposure = 903334")
    refs = raws(ncsa, "NCSA")
    theirs = file_of(ncsa, "NCSA", refs[0])[0]

    def meanwhile(result) -> None:  # NCSA's file replaced after it was checked
        spare = theirs.with_name("spare")
        spare.write_bytes(theirs.read_bytes())
        os.replace(spare, theirs)

    result = drop(DropRequest("laptop", (RAW,), where="exposure = 903334"),
                  sites_dir=ncsa.sites_dir, confirm=meanwhile)
    assert [c.ref.id for c in result.kept] == [refs[0].id]
    assert [c.how for c in result.kept[0].copies if c.site == "NCSA"] == [
        "changed at the site while the drop was checking it"]
    assert len(result.dropped) == 3 and result.done
    assert file_of(ncsa, "laptop", refs[0])[1] is None


# -- releases ------------------------------------------------------------------------------


def test_the_last_verified_copy_of_a_released_dataset_is_never_dropped(ncsa):
    fed("release", "create", root(ncsa, "NCSA"), "DR1", "-c", RAW,
        "--where", "exposure = 903334")
    before = state(ncsa, "NCSA")
    out = fed_drop(ncsa, "NCSA", "--release", "DR1", code=1).stdout
    assert "kept 4 datasets" in out and "DR1" in out and "nothing dropped" in out
    assert state(ncsa, "NCSA") == before
    # Once IN2P3 holds them, verified, they may leave NCSA ...
    ncsa.sync("NCSA", "IN2P3", collections=[RAW], where="exposure = 903334")
    found = as_json_drop(ncsa, "NCSA", "--release", "DR1", "--where", "detector = 0",
                         "--dry-run")
    assert [d["dataset"] for d in found["dropped"]] == [
        "raw@{instrument='HSC', detector=0, exposure=903334} [HSC/raw/all]"]
    found = as_json_drop(ncsa, "NCSA", "--release", "DR1")
    assert len(found["dropped"]) == 4 and found["dropped"][0]["release"] == "DR1"
    assert found["held_at"] == {"IN2P3": 4}
    # NCSA no longer holds DR1 whole: its verifications say so, here and where they travel.
    with ncsa.butler("NCSA") as b:
        check = b.registry.releases.last_check("DR1")
    assert not check.complete and (check.files, check.missing) == (0, 4)
    states = {s["site"]: s["state"] for s in json.loads(
        fed("release", "status", "DR1", "--sites", ncsa.sites_dir, "--json").stdout)}
    assert states["NCSA"] == "incomplete"
    # ... and IN2P3's copies are then the last ones: never dropped.
    before = state(ncsa, "IN2P3")
    fed_drop(ncsa, "IN2P3", "-c", RAW, code=1)
    assert state(ncsa, "IN2P3") == before


def test_a_release_verification_there_vouches_for_its_files(ncsa):
    fed("release", "create", root(ncsa, "NCSA"), "DR1", "-c", RAW,
        "--where", "exposure = 903334")
    ncsa.sync("NCSA", "laptop", collections=[RAW], where="exposure = 903334")
    fed("release", "verify", root(ncsa, "NCSA"), "DR1", "-j", "1")
    refs = raws(ncsa, "NCSA")
    with ncsa.butler("NCSA") as b:  # a file that arrived after the check: not vouched for
        with b.registry.db.transaction() as conn:
            d = b.registry.db.tables.dataset
            conn.execute(sa.update(d).where(d.c.id == refs[0].id).values(
                ingest_date=time.time() + 3600))

    def ncsa_how(found: dict) -> dict[str, str]:
        return {d["id"]: [c["how"] for c in d["copies"] if c["site"] == "NCSA"][0]
                for d in found["dropped"] + found["kept"]}

    hows = ncsa_how(as_json_drop(ncsa, "laptop", "--dry-run"))
    assert hows.pop(str(refs[0].id)) == "hashed"
    assert all(h.startswith("release DR1 verified there") for h in hows.values()), hows
    # An incomplete verification vouches for nothing: every file is hashed.
    corrupt(file_of(ncsa, "NCSA", refs[1])[0])
    fed("release", "verify", root(ncsa, "NCSA"), "DR1", "-j", "1", code=1)
    found = as_json_drop(ncsa, "laptop", "--dry-run", code=1)
    hows = ncsa_how(found)
    assert hows.pop(str(refs[1].id)).startswith("checksum mismatch")
    assert set(hows.values()) == {"hashed"}
    assert [d["id"] for d in found["kept"]] == [str(refs[1].id)]


# -- sites reached over the network -----------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("transport", ["sftp", "http"])
def test_a_site_over_the_network_is_verified_through_its_transport(ncsa, tmp_path, request,
                                                                   transport):
    ncsa.sync("NCSA", "laptop", collections=[RAW], where="exposure IN (903334, 903335)")
    view = puller_view(ncsa, tmp_path, "NCSA", transport, server_for(request, transport))
    refs = raws(ncsa, "NCSA")
    corrupt(file_of(ncsa, "NCSA", refs[0])[0])
    before = state(ncsa, "laptop")
    found = as_json_drop(ncsa, "laptop", "-c", RAW, "--dry-run", code=1, sites=view)
    assert [d["id"] for d in found["kept"]] == [str(refs[0].id)]
    assert any(c["how"].startswith("checksum mismatch") for c in found["kept"][0]["copies"])
    assert len(found["dropped"]) == 7
    assert {c["how"] for d in found["dropped"] for c in d["copies"] if c["verified"]} == \
        {f"read over {transport.upper()} and hashed"}
    assert state(ncsa, "laptop") == before
    found = as_json_drop(ncsa, "laptop", "-c", RAW, code=1, sites=view)
    assert len(found["dropped"]) == 7 and found["held_at"] == {"NCSA": 7}
    assert file_of(ncsa, "laptop", refs[0])[1] is None
    fails("drop", "NCSA", "--sites", view, "--yes", match=f"reached over {transport}")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_unreachable_site_holds_nothing(ncsa, tmp_path):
    ncsa.sync("NCSA", "laptop", collections=[RAW], where="exposure = 903334")
    view = tmp_path / "view"
    view.mkdir()
    for site in ("laptop", "IN2P3"):
        (view / f"{site}.yaml").write_text((ncsa.sites_dir / f"{site}.yaml").read_text())
    (view / "NCSA.yaml").write_text(yaml.safe_dump({
        "name": "NCSA", "transport": "http", "owns": ["HSC/raw"],
        "http": {"url": f"http://127.0.0.1:{free_port()}/repo/", "retries": 1}}))
    before = state(ncsa, "laptop")
    out = fed_drop(ncsa, "laptop", code=1, sites=view).stdout
    assert "kept 4 datasets" in out and "note: site NCSA could not be checked" in out
    assert state(ncsa, "laptop") == before


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "match"), [
    (["nowhere"], "unknown site 'nowhere'"),
    (["IN2P3", "--min-copies", "0"], "--min-copies must be at least 1"),
    (["IN2P3", "--release", "DR9"], "no release 'DR9'"),
    (["IN2P3", "--where", "exposure =="], "cannot parse where expression"),
    (["IN2P3", "-c", "HSC/nothing*"], "nothing at IN2P3 matches -c 'HSC/nothing*'"),
    (["IN2P3", "-t", "flat"], "flat"),
    (["IN2P3", "--bind", "novalue"], "--bind"),
])
def test_bad_input_is_one_line_and_writes_nothing(ncsa, args, match):
    ncsa.sync("NCSA", "IN2P3", collections=[RAW])
    before = state(ncsa, "IN2P3")
    fails("drop", "--sites", ncsa.sites_dir, "--yes", *args, match=match)
    assert state(ncsa, "IN2P3") == before


def test_help_explains_the_rule():
    out = fed("drop", "--help").stdout
    for word in ("SITE", "--min-copies", "--release", "--dry-run", "--where", "--sites",
                 "--json", "Verified now", "count once", "held at"):
        assert word in out, word


def test_a_drop_asks_before_deleting(ncsa):
    ncsa.sync("NCSA", "laptop", collections=[RAW], where="exposure = 903334")
    before = state(ncsa, "laptop")
    result = fed("drop", "laptop", "--sites", ncsa.sites_dir, code=2)
    assert "pass --yes" in result.stderr
    assert state(ncsa, "laptop") == before


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_drop_killed_after_its_commit_is_finished_by_the_next(ncsa):
    ncsa.sync("NCSA", "laptop", collections=[RAW], where="exposure = 903334")
    refs = raws(ncsa, "laptop")
    paths = [file_of(ncsa, "laptop", r)[0] for r in refs]
    env = os.environ | {"FED_FAULT_KILL_AT": "trash listed"}
    killed = subprocess.run([FED, "drop", "laptop", "--sites", str(ncsa.sites_dir), "--yes"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    # Committed, files not deleted yet: every record held here still has its file.
    assert all(file_of(ncsa, "laptop", r)[1] == "NCSA" for r in refs)
    with ncsa.butler("laptop") as b:
        assert b.verify().ok and b.verify().held_elsewhere == 4
    assert "nothing dropped" in fed_drop(ncsa, "laptop").stdout
    assert not any(p.exists() for p in paths)
