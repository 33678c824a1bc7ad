"""`fed diff`: two sites compared for a selection, group by group (collections, chains,
tagged members, calibration ranges, datasets, dimension records, releases); agreeing
groups confirmed by their Merkle roots, a shared release's frozen collections by its
root; remote sites read from what they published. SQLite and PostgreSQL; SFTP and HTTP."""

from __future__ import annotations

import json
import shutil

import sqlalchemy as sa
from conftest import populate_ncsa
from test_cli import fails, fed

from federation.timespan import Timespan

REACHES = ("local", "sftp", "http")


def run_diff(fed_, *args, code=0, sites=None):
    return fed("diff", *args, "--sites", sites or fed_.sites_dir, code=code)


def as_json(fed_, *args, code=0, sites=None) -> dict:
    return json.loads(run_diff(fed_, *args, "--json", code=code, sites=sites).stdout)


def differences(found: dict) -> set[tuple[str, str, str]]:
    return {(d["group"], d["key"], d["kind"]) for d in found["differences"]}


def test_sites_that_agree_are_confirmed_by_their_roots(federation, reach, tmp_path,
                                                       monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    populate_ncsa(federation)
    fed("release", "create", federation.root / "repos" / "NCSA", "DR1", "-c", "HSC/defaults")
    federation.sync("NCSA", "IN2P3")
    sites = federation.sites_dir
    if reach != "local":  # NCSA read over the network, from what it published
        sites = tmp_path / "view"
        shutil.copytree(federation.sites_dir, sites)
        fed("publish", "NCSA", "--sites", federation.sites_dir)
        shutil.copy(federation.remote_dir / "NCSA.yaml", sites / "NCSA.yaml")
    out = run_diff(federation, "NCSA", "IN2P3", sites=sites).stdout
    assert "NCSA and IN2P3 hold the same" in out
    found = as_json(federation, "NCSA", "IN2P3", sites=sites)
    assert found["same"] and not found["differences"]
    groups = {g["group"]: g for g in found["groups"]}
    assert groups["datasets HSC/raw/all"]["a"] == groups["datasets HSC/raw/all"]["b"] == 16
    assert groups["tags DR1/found"]["confirmed"] == "release DR1"  # not read at all
    assert groups["records exposure"]["same"]
    # After NCSA changes things, the differences are named, from NCSA's new publication.
    with federation.butler("NCSA", run="HSC/raw/all") as b:
        b.registry.collections.set_doc("HSC/raw/all", "new words")
        b.registry.datasets.disassociate("HSC/raw/good", b.query_datasets(
            "raw", "HSC/raw/good", where="exposure = 903334 AND detector = 1"))
    if reach != "local":
        fed("publish", "NCSA", "--sites", federation.sites_dir)
    found = as_json(federation, "NCSA", "IN2P3", code=1, sites=sites)
    kinds = differences(found)
    assert ("collections", "HSC/raw/all", "differs") in kinds
    untagged = [d for d in found["differences"] if d["group"] == "tags HSC/raw/good"]
    assert len(untagged) == 1 and untagged[0]["kind"] == "only at B"


def test_every_kind_of_difference_is_named(federation):
    populate_ncsa(federation)
    federation.sync("NCSA", "IN2P3")
    with federation.butler("NCSA", run="HSC/raw/all") as b:
        b.registry.collections.set_chain("HSC/defaults", ["HSC/raw/all"])
        b.registry.insert_dimension_records("detector", [
            {"instrument": "HSC", "detector": 77, "full_name": "x77"}])
        b.registry.datasets.decertify("HSC/calib/DM-1", b.registry.get_dataset_type("bias"),
                                      Timespan.from_values("2013-06-01", "2013-07-01"))
        b.registry.register_run("HSC/raw/extra")
    with federation.butler("IN2P3") as b:  # a file record altered behind the registry's back
        db = b.registry.db
        raw = b.find_dataset("raw", instrument="HSC", exposure=903335, detector=2,
                             collections="HSC/raw/all")
        with db.engine.begin() as conn:
            conn.execute(sa.update(db.tables.file).where(db.tables.file.c.dataset_id == raw.id)
                         .values(checksum="0" * 32))
    found = as_json(federation, "NCSA", "IN2P3", code=1)
    kinds = differences(found)
    assert ("collections", "HSC/defaults", "differs") in kinds
    assert ("collections", "HSC/raw/extra", "only at A") in kinds
    assert ("datasets HSC/raw/all", str(raw.id), "differs") in kinds
    assert any(g == "calib HSC/calib/DM-1" and k.startswith("bias@") and kind == "differs"
               for g, k, kind in kinds)
    assert any(g == "records detector" and "77" in k and kind == "only at A"
               for g, k, kind in kinds)
    changed = next(d for d in found["differences"] if d["key"] == str(raw.id))
    assert changed["a"]["checksum"] != changed["b"]["checksum"] == "0" * 32
    text = run_diff(federation, "NCSA", "IN2P3", code=1).stdout
    assert "NCSA and IN2P3 differ" in text and f"{raw.id}: differs" in text
    # Narrowed to one collection and type, only that is compared.
    narrowed = as_json(federation, "NCSA", "IN2P3", "-c", "HSC/raw/all", "-t", "bias")
    assert narrowed["same"] and {g["group"] for g in narrowed["groups"]} == \
        {"collections", "releases", "datasets HSC/raw/all"}


def test_bad_diffs_are_refused(federation):
    populate_ncsa(federation)
    fails("diff", "NCSA", "Elsewhere", "--sites", federation.sites_dir, match="unknown site")
    fails("diff", "NCSA", "NCSA", "--sites", federation.sites_dir, match="itself")
    fails("diff", "NCSA", "IN2P3", "-c", "nothing/*", "--sites", federation.sites_dir,
          match="no collection matches 'nothing/*'")
