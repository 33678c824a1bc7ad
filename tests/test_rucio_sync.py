"""Syncs whose files move through a real Rucio server (see rucio_federation.py).

FTS cannot run here: the TransferAgent of rucio_federation.py stands in for it and for
Rucio's conveyor, copying the bytes of replicating locks. Everything else is Rucio's:
the tests check Rucio's own rule, lock and replica state besides the registries.
"""

from __future__ import annotations

import subprocess
import time

from conftest import populate_ncsa, repo_state
from rucio_federation import RucioFederation, rucio_fed  # noqa: F401  (fixture)
from rucio_server import rucio_server  # noqa: F401  (fixture)

from federation.datastore.checksum import file_checksum


def stored_files(fed: RucioFederation, site: str) -> dict[str, tuple[int, str]]:
    """Every file the site's registry records, with what is on disk at its path."""
    with fed.butler(site) as b:
        found = {}
        for _, stored, _ in b.registry.datasets.iter_files():
            found[stored.path] = file_checksum(fed.repo(site) / stored.path)
            assert found[stored.path] == (stored.size, stored.checksum), stored.path
        return found


def test_three_sites_converge_through_rucio(rucio_fed: RucioFederation) -> None:  # noqa: F811
    populate_ncsa(rucio_fed)
    with rucio_fed.agent.running():
        first = rucio_fed.fed("sync", "NCSA", "IN2P3")
        rucio_fed.fed("sync", "IN2P3", "Princeton")  # A -> B -> C
        rucio_fed.fed("sync", "NCSA", "Princeton")  # and A -> C
    assert "error" not in first.stderr
    with rucio_fed.butler("NCSA") as a, rucio_fed.butler("IN2P3") as b, \
            rucio_fed.butler("Princeton") as c:
        assert repo_state(a) == repo_state(b) == repo_state(c)
    files = stored_files(rucio_fed, "NCSA")
    assert len(files) == 20
    assert stored_files(rucio_fed, "IN2P3") == files == stored_files(rucio_fed, "Princeton")
    # Rucio's own view: every file available on each RSE, each held by fed's rule there.
    for site in ("NCSA", "IN2P3", "Princeton"):
        assert {rucio_fed.replica_state(site, name) for name in files} == {"AVAILABLE"}
        rules = [r for r in rucio_fed.rules(site) if r["comments"] == f"fed: files of {site}"]
        assert sorted(r["name"] for r in rules) == sorted(files)
        assert {r["state"] for r in rules} == {"OK"}
    assert rucio_fed.agent.copied == 40  # each file moved once to IN2P3 and to Princeton
    # A second sync finds nothing to do.
    again = rucio_fed.fed("sync", "NCSA", "IN2P3", "--json")
    assert '"files": 0' in again.stdout


def test_no_wait_returns_and_a_later_sync_imports_what_arrived(
        rucio_fed: RucioFederation) -> None:  # noqa: F811
    populate_ncsa(rucio_fed)
    waiting = rucio_fed.fed("sync", "NCSA", "IN2P3", "--no-wait", check=False)
    assert waiting.returncode == 1
    assert "Rucio has not brought it yet" in waiting.stdout + waiting.stderr
    with rucio_fed.butler("IN2P3") as b:
        assert not list(b.registry.datasets.iter_files())
    assert len(rucio_fed.rules("IN2P3")) == 20  # asked for, replicating
    rucio_fed.agent.run_once()
    rucio_fed.fed("sync", "NCSA", "IN2P3", "--no-wait")
    with rucio_fed.butler("NCSA") as a, rucio_fed.butler("IN2P3") as b:
        assert repo_state(a) == repo_state(b)
    assert len(rucio_fed.rules("IN2P3")) == 20  # the retry reused the rules


def test_a_replica_that_does_not_match_its_record_is_not_imported(
        rucio_fed: RucioFederation) -> None:  # noqa: F811
    populate_ncsa(rucio_fed)
    with rucio_fed.butler("NCSA") as b:
        paths = sorted(stored.path for _, stored, _ in b.registry.datasets.iter_files())
    # The copy at IN2P3 goes bad after the transfer's own check (storage at fault).
    rucio_fed.agent.corrupt = {paths[0]}
    with rucio_fed.agent.running():
        done = rucio_fed.fed("sync", "NCSA", "IN2P3", check=False)
    assert done.returncode == 1
    assert "does not match its record" in done.stdout + done.stderr
    imported = stored_files(rucio_fed, "IN2P3")
    assert paths[0] not in imported and len(imported) == 19


def test_a_corrupted_source_replica_leaves_the_rule_stuck_with_rucios_reason(
        rucio_fed: RucioFederation) -> None:  # noqa: F811
    populate_ncsa(rucio_fed)
    rucio_fed.fed("rucio", "register", "NCSA")
    with rucio_fed.butler("NCSA") as b:
        path = sorted(stored.path for _, stored, _ in b.registry.datasets.iter_files())[0]
    source = rucio_fed.repo("NCSA") / path
    source.write_bytes(bytes(b ^ 0xFF for b in source.read_bytes()))  # bit rot at NCSA
    rucio_fed.agent.stuck_reason = rucio_fed.mark_stuck
    with rucio_fed.agent.running():
        done = rucio_fed.fed("sync", "NCSA", "IN2P3", check=False)
    assert done.returncode == 1
    assert "is stuck" in done.stdout and "checksum mismatch" in done.stdout
    assert path not in stored_files(rucio_fed, "IN2P3")
    [rule] = [r for r in rucio_fed.rules("IN2P3") if r["name"] == path]
    assert rule["state"] == "STUCK"


def test_a_deletion_removes_the_rule_and_the_reaper_leaves_no_dangling_record(
        rucio_fed: RucioFederation) -> None:  # noqa: F811
    populate_ncsa(rucio_fed)
    with rucio_fed.agent.running():
        rucio_fed.fed("sync", "NCSA", "IN2P3")
    with rucio_fed.butler("NCSA") as b:
        [gone] = b.query_datasets("raw", "HSC/raw/all", where="exposure = 903334 AND "
                                  "detector = 0")
        path = b.registry.datasets.file(gone.id)[0].path
        b.remove([gone])
    done = rucio_fed.fed("sync", "NCSA", "IN2P3")
    assert "removed 1 Rucio rule(s) on " + rucio_fed.rse("IN2P3") in done.stdout
    # NCSA deleted the file itself: its own rule for it goes too (no dangling replica).
    assert "removed 1 Rucio rule(s) on " + rucio_fed.rse("NCSA") in done.stdout
    [own] = [r for r in rucio_fed.rules("NCSA") if r["name"] == path]
    assert own["expires_at"] is not None
    [rule] = [r for r in rucio_fed.rules("IN2P3") if r["name"] == path]
    assert rule["expires_at"] is not None  # Rucio keeps a removed rule an hour, then drops it
    with rucio_fed.butler("IN2P3") as b:
        assert b.registry.datasets.get(gone.id) is None
    # An hour later (made a second here), Rucio's judge-cleaner and reaper do their part.
    rucio_fed.client.update_replication_rule(rule["id"], {"lifetime": 1})
    time.sleep(2)
    rucio_fed.server.run_daemon("rucio-judge-cleaner", "--run-once")
    rucio_fed.server.run_daemon("rucio-reaper", "--run-once", "--rses", rucio_fed.rse("IN2P3"))
    assert rucio_fed.replica_state("IN2P3", path) is None
    assert not (rucio_fed.repo("IN2P3") / path).exists()
    with rucio_fed.butler("IN2P3") as b:  # no record left pointing at the removed file
        assert path not in {s.path for _, s, _ in b.registry.datasets.iter_files()}
    assert len(stored_files(rucio_fed, "IN2P3")) == 19


def test_the_server_going_down_mid_sync_is_one_line_and_a_rerun_completes(
        rucio_fed: RucioFederation) -> None:  # noqa: F811
    populate_ncsa(rucio_fed)
    sync = subprocess.Popen([rucio_fed.fed_path, "sync", "NCSA", "IN2P3"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=rucio_fed.env)
    deadline = time.monotonic() + 60
    while len(rucio_fed.rules("IN2P3")) < 20 and time.monotonic() < deadline:
        time.sleep(0.2)  # the sync has asked for every file, and waits
    rucio_fed.server.stop_gunicorn()
    try:
        out, err = sync.communicate(timeout=120)
    finally:
        rucio_fed.server.start_gunicorn()
    assert sync.returncode == 1
    [line] = err.strip().splitlines()
    assert line.startswith("error: Rucio at ") and "did not answer" in line
    with rucio_fed.butler("IN2P3") as b:
        assert not list(b.registry.datasets.iter_files())
    with rucio_fed.agent.running():
        rucio_fed.fed("sync", "NCSA", "IN2P3")
    with rucio_fed.butler("NCSA") as a, rucio_fed.butler("IN2P3") as b:
        assert repo_state(a) == repo_state(b)


def test_wrong_credentials_are_one_line_and_nothing_is_written(
        rucio_fed: RucioFederation) -> None:  # noqa: F811
    populate_ncsa(rucio_fed)
    rucio_fed.write_site("IN2P3", password="not-the-password")
    done = rucio_fed.fed("sync", "NCSA", "IN2P3", check=False)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: Rucio at ") and "could not authenticate" in line
    assert "Traceback" not in done.stderr
    with rucio_fed.butler("IN2P3") as b:
        assert not list(b.registry.datasets.iter_files())
        assert not [c for c in b.registry.collections.query()]
    assert not rucio_fed.rules("IN2P3")


def test_an_archive_keeps_its_rules_when_the_source_deletes(
        rucio_fed: RucioFederation) -> None:  # noqa: F811
    populate_ncsa(rucio_fed)
    import yaml

    definition = rucio_fed.sites_dir / "IN2P3.yaml"
    definition.write_text(yaml.safe_dump(yaml.safe_load(definition.read_text())
                                         | {"keep_deleted": True}))
    with rucio_fed.agent.running():
        rucio_fed.fed("sync", "NCSA", "IN2P3")
    with rucio_fed.butler("NCSA") as b:
        gone = b.query_datasets("raw", "HSC/raw/all", where="exposure = 903334")
        paths = {b.registry.datasets.file(ref.id)[0].path for ref in gone}
        b.remove(gone)
    rucio_fed.fed("sync", "NCSA", "IN2P3")
    kept = {r["name"]: r for r in rucio_fed.rules("IN2P3")}
    assert paths <= set(kept) and all(kept[p]["expires_at"] is None for p in paths)
    assert len(stored_files(rucio_fed, "IN2P3")) == 20


def test_site_check_logs_in_and_checks_the_rse_mapping(
        rucio_fed: RucioFederation) -> None:  # noqa: F811
    done = rucio_fed.fed("site", "check", "NCSA")
    assert f"Rucio account root on {rucio_fed.rse('NCSA')}" in done.stdout
    rucio_fed.client.add_rse_attribute(rucio_fed.rse("NCSA"), "lfn2pfn_algorithm", "hash")
    wrong = rucio_fed.fed("site", "check", "NCSA", check=False)
    assert wrong.returncode == 1
    assert "identity mapping" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1
