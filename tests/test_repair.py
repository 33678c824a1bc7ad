"""`fed repair`: missing and corrupt files replaced by verified copies from other sites.

From a site on this machine and from sites reached over SFTP and HTTP (real sshd and
nginx), on SQLite and PostgreSQL. A good file is never overwritten; when no site has a
good copy, nothing changes for that dataset and the repair says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import populate_ncsa
from servers import free_port
from test_audit import corrupt, log_of, paths, root
from test_cli import fails, fed, repo_files
from test_remote import puller_view, server_for

RAW = "HSC/raw/all"


@pytest.fixture
def in2p3(federation):
    """NCSA's raws synced to IN2P3 (files too)."""
    populate_ncsa(federation)
    federation.sync("NCSA", "IN2P3", collections=[RAW])
    return federation


def repair(fed_, site: str, *args, code: int = 0, sites: Path | None = None) -> dict:
    out = fed("repair", site, "--sites", sites or fed_.sites_dir, "--json", *args,
              code=code).stdout
    return json.loads(out)


def damage(fed_, site: str) -> tuple[str, str, bytes]:
    """One file of exposure 903334 deleted, one corrupted: their paths, the good bytes."""
    r = root(fed_, site)
    (_, gone), (_, bad), *_ = paths(fed_, site)
    good = (r / bad).read_bytes()
    (r / gone).unlink()
    corrupt(r / bad)
    return gone, bad, good


def sound(fed_, site: str) -> bool:
    with fed_.butler(site) as b:
        return b.verify().ok


def test_missing_and_corrupt_files_come_back_from_another_site(in2p3):
    gone, bad, good = damage(in2p3, "IN2P3")
    r = root(in2p3, "IN2P3")
    intact = r / paths(in2p3, "IN2P3")[2][1]
    inode = intact.stat().st_ino
    found = repair(in2p3, "IN2P3", "--from", "NCSA")
    assert sorted(f["path"] for f in found["repaired"]) == sorted([gone, bad])
    assert not found["unrepaired"] and found["ok"] and found["checked"] == 16
    assert {f["source"] for f in found["repaired"]} == {"NCSA"}
    assert (r / bad).read_bytes() == good and (r / gone).is_file() and sound(in2p3, "IN2P3")
    kept = next(f["kept"] for f in found["repaired"] if f["path"] == bad)
    assert kept.startswith(".federation-quarantine/") and (r / kept).read_bytes() != good
    assert intact.stat().st_ino == inode  # a good file is never rewritten
    assert not list((r / ".federation-staging").glob("*"))
    assert log_of(in2p3, "IN2P3")[-1] == ("repair", "ok")
    with in2p3.butler("IN2P3") as b:
        entry = b.registry.log.entries()[-1]
        assert (entry.source, entry.files, entry.counts) == ("NCSA", 2, {"file repaired": 2})
    text = fed("repair", "IN2P3", "--from", "NCSA", "--sites", in2p3.sites_dir).stdout
    assert "16 files checked, nothing to repair" in text


def test_a_bad_replica_is_refused_and_nothing_changes(in2p3):
    gone, bad, _ = damage(in2p3, "IN2P3")
    ncsa = root(in2p3, "NCSA")
    corrupt(ncsa / bad)
    (ncsa / gone).write_bytes(b"not it")
    r = root(in2p3, "IN2P3")
    before = repo_files(r), (r / bad).read_bytes()
    found = repair(in2p3, "IN2P3", "--from", "NCSA", code=1)
    assert not found["repaired"] and sorted(f["path"] for f in found["unrepaired"]) == \
        sorted([gone, bad])
    attempts = {f["path"]: f["attempts"] for f in found["unrepaired"]}
    assert "checksum mismatch" in attempts[bad][0]["how"]
    assert "size mismatch" in attempts[gone][0]["how"]
    assert (repo_files(r), (r / bad).read_bytes()) == before  # nothing written, nothing lost
    assert log_of(in2p3, "IN2P3")[-1] == ("repair", "failed")
    text = fed("repair", "IN2P3", "--from", "NCSA", "--sites", in2p3.sites_dir, code=1).stdout
    assert f"no site has a good copy (NCSA: {bad} from NCSA does not match" in text
    assert "nothing changed for it" in text
    # a second site with a good copy: tried next
    in2p3.sync("IN2P3", "Princeton", collections=[RAW])  # second hand: IN2P3's, so damaged
    found = repair(in2p3, "IN2P3", "--from", "NCSA", "--from", "Princeton", code=1)
    assert [a["how"] for a in found["unrepaired"][0]["attempts"]][1] == "not held"


def test_the_next_site_with_a_good_copy_is_used(in2p3):
    in2p3.sync("NCSA", "Princeton", collections=[RAW])
    gone, bad, good = damage(in2p3, "IN2P3")
    corrupt(root(in2p3, "NCSA") / bad)
    found = repair(in2p3, "IN2P3", "--from", "NCSA", "--from", "Princeton")
    by_path = {f["path"]: f for f in found["repaired"]}
    assert by_path[bad]["source"] == "Princeton" and by_path[gone]["source"] == "NCSA"
    assert [(a["site"], a["good"]) for a in by_path[bad]["attempts"]] == \
        [("NCSA", False), ("Princeton", True)]
    assert (root(in2p3, "IN2P3") / bad).read_bytes() == good and sound(in2p3, "IN2P3")


def test_a_file_found_good_before_placing_is_not_overwritten(in2p3):
    """The file here is mended while the copy travels: the copy is dropped, not placed."""
    from federation.faults import hooked

    _, bad, good = damage(in2p3, "IN2P3")
    (root(in2p3, "IN2P3") / paths(in2p3, "IN2P3")[0][1]).write_bytes(b"")  # the other: lost
    target = root(in2p3, "IN2P3") / bad
    inode = target.stat().st_ino

    def mend() -> None:
        with open(target, "r+b") as out:
            out.write(good)

    with hooked("file verified", mend):
        found = repair(in2p3, "IN2P3", "--from", "NCSA")
    assert [f["path"] for f in found["fine"]] == [bad]
    assert target.stat().st_ino == inode and target.read_bytes() == good
    assert len(found["repaired"]) == 1 and sound(in2p3, "IN2P3")


def test_a_dry_run_verifies_copies_and_changes_nothing(in2p3):
    gone, bad, _ = damage(in2p3, "IN2P3")
    r = root(in2p3, "IN2P3")
    before = repo_files(r), (r / bad).read_bytes(), log_of(in2p3, "IN2P3")
    found = repair(in2p3, "IN2P3", "--from", "NCSA", "--dry-run")
    assert found["dry_run"] and sorted(f["path"] for f in found["repaired"]) == \
        sorted([gone, bad])
    assert all("dry run: not placed" in f["attempts"][-1]["how"] for f in found["repaired"])
    assert (repo_files(r), (r / bad).read_bytes(), log_of(in2p3, "IN2P3")) == before
    text = fed("repair", "IN2P3", "--from", "NCSA", "--dry-run", "--sites",
               in2p3.sites_dir).stdout
    assert "would repair 2 of 2" in text


def test_files_held_elsewhere_are_not_missing(in2p3):
    in2p3.sync("NCSA", "laptop", collections=[RAW], files=False)
    found = repair(in2p3, root(in2p3, "laptop"), "--from", "NCSA")
    assert found["checked"] == 0 and not found["repaired"] and not found["unrepaired"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("transport", ["sftp", "http"])
def test_repair_from_a_site_over_the_network(in2p3, tmp_path, request, transport):
    view = puller_view(in2p3, tmp_path, "NCSA", transport, server_for(request, transport))
    gone, bad, good = damage(in2p3, "IN2P3")
    (_, third), = paths(in2p3, "IN2P3", where="exposure = 903335 AND detector = 0")
    corrupt(root(in2p3, "IN2P3") / third)
    corrupt(root(in2p3, "NCSA") / third)  # bad there too
    found = repair(in2p3, "IN2P3", "--from", "NCSA", code=1, sites=view)
    assert sorted(f["path"] for f in found["repaired"]) == sorted([gone, bad])
    assert found["repaired"][0]["attempts"][-1]["how"] == \
        f"fetched over {transport}, verified and placed"
    (refused,) = found["unrepaired"]
    assert refused["path"] == third and "does not match" in refused["attempts"][0]["how"]
    assert (root(in2p3, "IN2P3") / bad).read_bytes() == good


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_unreachable_site_is_passed_over(in2p3, tmp_path):
    view = tmp_path / "view"
    view.mkdir()
    for site in ("IN2P3", "Princeton"):
        (view / f"{site}.yaml").write_text((in2p3.sites_dir / f"{site}.yaml").read_text())
    (view / "NCSA.yaml").write_text(yaml.safe_dump({
        "name": "NCSA", "transport": "http", "owns": ["HSC/raw"],
        "http": {"url": f"http://127.0.0.1:{free_port()}/repo/", "retries": 1}}))
    in2p3.sync("NCSA", "Princeton", collections=[RAW])
    gone, bad, _ = damage(in2p3, "IN2P3")
    found = repair(in2p3, "IN2P3", "--from", "NCSA", "--from", "Princeton", sites=view)
    assert {f["source"] for f in found["repaired"]} == {"Princeton"}
    first = found["repaired"][0]["attempts"][0]
    assert first["site"] == "NCSA" and not first["good"]
    assert sound(in2p3, "IN2P3")


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "match"), [
    (["IN2P3", "--from", "nowhere"], "unknown site 'nowhere'"),
    (["IN2P3", "--from", "IN2P3"], "--from IN2P3: that is the repository being repaired"),
    (["nowhere", "--from", "NCSA"], "unknown site 'nowhere'"),
    (["IN2P3", "--from", "NCSA", "-c", "HSC/nothing*"], "nothing at IN2P3 matches"),
])
def test_bad_input_is_one_line_and_writes_nothing(in2p3, args, match):
    damage(in2p3, "IN2P3")
    r = root(in2p3, "IN2P3")
    before = repo_files(r), log_of(in2p3, "IN2P3")
    fails("repair", "--sites", in2p3.sites_dir, *args, match=match)
    assert (repo_files(r), log_of(in2p3, "IN2P3")) == before


def test_help_explains_the_rule():
    out = fed("repair", "--help").stdout
    for word in ("--from", "never overwritten", "no site has a good copy", "--dry-run",
                 "--json", "SFTP", "HTTP", "verified"):
        assert word in out, word
