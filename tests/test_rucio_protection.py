"""What Rucio protects for a federation: releases locked at every holding site, and a
policy's ``min_copies`` as a rule for that many copies (real Rucio server; the transfer
agent of rucio_federation.py stands in for FTS)."""

from __future__ import annotations

from conftest import populate_ncsa, write_policies
from rucio_federation import RucioFederation, rucio_fed  # noqa: F401  (fixture)
from rucio_server import rucio_server  # noqa: F401  (fixture)


def test_a_release_through_rucio_is_locked_at_every_holding_site(
        rucio_fed: RucioFederation) -> None:  # noqa: F811
    populate_ncsa(rucio_fed)
    rucio_fed.fed("release", "create", str(rucio_fed.repo("NCSA")), "DR1", "-c",
                  "HSC/defaults")
    with rucio_fed.agent.running():
        done = rucio_fed.fed("sync", "NCSA", "IN2P3", "--release", "DR1")
    assert "release DR1 locked in Rucio on " + rucio_fed.rse("IN2P3") in done.stdout
    container = "releases/DR1"
    for site in ("NCSA", "IN2P3"):
        [rule] = [r for r in rucio_fed.rules(site) if r["name"] == container]
        assert rule["locked"] and rule["state"] == "OK"
    # Rucio itself refuses to remove a locked rule: the release stays.
    [rule] = [r for r in rucio_fed.rules("IN2P3") if r["name"] == container]
    client = rucio_fed.server.client()
    try:
        client.delete_replication_rule(rule["id"], purge_replicas=True)
    except Exception as exc:  # noqa: BLE001 - rucio's AccessDenied / UnsupportedOperation
        assert "locked" in str(exc).lower()
    else:
        raise AssertionError("Rucio removed a locked rule")
    files = {f["name"] for f in client.list_files(rucio_fed.scope, container)}
    with rucio_fed.butler("IN2P3") as b:
        release = b.registry.releases.find("DR1")
        assert release is not None and len(files) == release.entries == 20


def test_min_copies_becomes_a_rucio_rule_for_that_many_copies(
        rucio_fed: RucioFederation, tmp_path) -> None:  # noqa: F811
    populate_ncsa(rucio_fed)
    folder = write_policies(tmp_path, raw={"from": "NCSA", "to": ["IN2P3", "Princeton"],
                                           "collections": ["HSC/raw/*"], "min_copies": 2})
    with rucio_fed.agent.running():
        rucio_fed.fed("federate", "--once", "--policies", str(folder),
                      "--state", str(tmp_path / "state.json"))
    expression = "|".join(sorted(rucio_fed.rse(s) for s in ("NCSA", "IN2P3", "Princeton")))
    kept = [r for r in rucio_fed.client.list_replication_rules(
        filters={"scope": rucio_fed.scope, "rse_expression": expression})]
    assert [(r["name"], r["copies"], r["state"]) for r in kept] == [
        ("runs/HSC/raw/all", 2, "OK")]


def test_a_drop_removes_the_sites_rules_for_the_files_it_dropped(
        rucio_fed: RucioFederation) -> None:  # noqa: F811
    populate_ncsa(rucio_fed)
    with rucio_fed.agent.running():
        rucio_fed.fed("sync", "NCSA", "IN2P3")
    done = rucio_fed.fed("drop", "IN2P3", "-c", "HSC/raw/all", "--yes")
    assert "removed 16 Rucio rule(s)" in done.stdout
    rules = {r["name"]: r for r in rucio_fed.rules("IN2P3")}
    raws = [name for name in rules if "/raw/" in name]
    assert len(raws) == 16 and all(rules[n]["expires_at"] is not None for n in raws)
    assert all(r["expires_at"] is None for n, r in rules.items() if n not in raws)
