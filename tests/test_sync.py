"""Reconciliation rules of the synchronizer, observed as a user would (library level).

Every test runs on SQLite and on PostgreSQL (NCSA and IN2P3 on the parametrized
database; Princeton and the laptop on SQLite), and through SFTP and HTTP: each
source then publishes its journal and is pulled from over a real sshd or nginx.
"""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
import yaml
from conftest import (
    HSC_RECORDS,
    insert_hsc_records,
    populate_ncsa,
    repo_state,
)

from federation.datastore.storage_classes import get_storage_class
from federation.errors import CollectionError, MissingDatasetError
from federation.model import CollectionType, DatasetRef, IdMode, make_dataset_id, ref_key
from federation.sync.report import SyncConflictError
from federation.timespan import Timespan

RUN2 = "HSC/runs/RC2/w_2024_01/DM-2"
HAS_ALL = ("HSC/raw/all", "HSC/raw/good", "HSC/calib", "HSC/calib/DM-1", "HSC/defaults",
           "HSC/calib/gen/DM-1")


# -- helpers ---------------------------------------------------------------------------


def state_of(fed, site: str) -> dict:
    with fed.butler(site) as b:
        return repo_state(b)


def last_seq(fed, site: str) -> int:
    with fed.butler(site) as b:
        return b.registry.db.last_seq()


def only_skips(report) -> bool:
    """A report that applied nothing: every count is a skip."""
    return all(key.endswith(" skip") for key in report.counts)


def count(report, kind: str, action: str) -> int:
    return report.counts.get(f"{kind} {action}", 0)


def raw_ref(butler, exposure: int, detector: int, collections="HSC/raw/all") -> DatasetRef:
    return butler.find_dataset("raw", instrument="HSC", exposure=exposure, detector=detector,
                               collections=collections)


def put_replica(butler, obj, dataset_type: str, run: str, *, owner: str = "NCSA",
                id_mode: str = "deterministic", version: int | None = None,
                **data_id) -> DatasetRef:
    """Write a dataset into a run owned by ``owner`` as if it had been replicated here
    (``version``: its creation version at the owner; default this site's journal entry)."""
    reg = butler.registry
    reg.collections.register(run, CollectionType.RUN, owner=owner)
    dtype = reg.get_dataset_type(dataset_type)
    full, key = reg.expand_data_id(dtype, data_id)
    required = {name: full[name] for name in dtype.dimensions.required}
    ref = DatasetRef(make_dataset_id(IdMode(id_mode), dtype.name, required, run), dtype, full,
                     run)
    staged = butler.datastore.stage_put(ref, obj, get_storage_class(dtype.storage_class))
    with reg.transaction():
        reg.datasets.insert(run, [(ref, staged.stored)], keys=[key], check_owner=False,
                            versions=None if version is None else [version])
        staged.commit()
    staged.finish()
    return ref


def setup_types(butler) -> None:
    insert_hsc_records(butler.registry)
    butler.registry.register_dataset_type("raw", ["exposure", "detector"], "NumpyArray")
    butler.registry.register_dataset_type("bias", ["detector"], "NumpyArray")


def set_keep_deleted(fed, site: str) -> None:
    path = fed.sites_dir / f"{site}.yaml"
    data = yaml.safe_load(path.read_text())
    data["keep_deleted"] = True
    path.write_text(yaml.safe_dump(data))


def tombstones(butler) -> dict[str, bool]:
    tomb = butler.registry.db.tables.dataset_tombstone
    with butler.registry.db.reading() as conn:
        rows = conn.execute(sa.select(tomb.c.dataset_id, tomb.c.kept)).all()
    return {str(i): bool(kept) for i, kept in rows}


def assert_conflict_refused(fed, src: str, dst: str, *kinds: str, **options):
    """A sync that fails on conflict applies nothing; returns the conflicts."""
    before, seq = state_of(fed, dst), last_seq(fed, dst)
    with pytest.raises(SyncConflictError) as info:
        fed.sync(src, dst, **options)
    assert state_of(fed, dst) == before
    assert last_seq(fed, dst) == seq
    conflicts = info.value.report.conflicts
    assert conflicts and any(c.kind in kinds for c in conflicts), conflicts
    return conflicts


REACHES = ("local", "sftp", "http")  # see conftest.pytest_generate_tests


@pytest.fixture
def fed(federation):
    populate_ncsa(federation)
    return federation


# -- 1. full sync, idempotence ---------------------------------------------------------


def test_full_sync_replicates_everything_and_rerun_is_noop(fed):
    report = fed.sync("NCSA", "IN2P3")
    assert not report.conflicts and not report.failed
    assert count(report, "dataset", "insert") == 20
    assert report.files == 20 and report.bytes > 0
    ncsa = state_of(fed, "NCSA")
    assert state_of(fed, "IN2P3") == ncsa
    assert set(HAS_ALL) <= set(ncsa["collections"])
    with fed.butler("IN2P3") as b:
        check = b.verify()
        assert check.ok and check.checked == 20 and check.held_elsewhere == 0
        assert b.exists("raw", instrument="HSC", exposure=903335, detector=2,
                        collections="HSC/raw/all")
        got = b.get("raw", instrument="HSC", exposure=903335, detector=2,
                    collections="HSC/raw/all")
        np.testing.assert_array_equal(got, np.full(8, 12))

    seq = last_seq(fed, "IN2P3")
    again = fed.sync("NCSA", "IN2P3")
    assert only_skips(again), again.counts
    assert again.files == 0 and again.bytes == 0 and not again.conflicts
    assert last_seq(fed, "IN2P3") == seq
    assert state_of(fed, "IN2P3") == ncsa


def test_incremental_sync_brings_only_new_changes(fed):
    fed.sync("NCSA", "IN2P3")
    with fed.butler("NCSA", run=RUN2) as b:
        b.registry.register_dataset_type("calexp", ["visit", "detector"], "NumpyArray")
        for detector in range(2):
            b.put(np.zeros(3), "calexp", instrument="HSC", visit=903334, detector=detector)
    report = fed.sync("NCSA", "IN2P3")
    assert count(report, "dataset", "insert") == 2
    assert count(report, "dataset", "skip") == 0
    assert count(report, "collection", "insert") == 1
    assert report.files == 2
    assert state_of(fed, "IN2P3") == state_of(fed, "NCSA")


# -- 2. identity is the UUID; conflicts --------------------------------------------------


def test_same_uuid_same_checksum_is_skipped(fed):
    with fed.butler("IN2P3") as b:
        setup_types(b)
        ref = put_replica(b, np.full(8, 10 * 1 + 2), "raw", "HSC/raw/all", instrument="HSC",
                          exposure=903335, detector=2)
    with fed.butler("NCSA") as b:
        assert raw_ref(b, 903335, 2).id == ref.id  # deterministic IDs agree
    report = fed.sync("NCSA", "IN2P3")
    assert not report.conflicts
    assert count(report, "dataset", "insert") == 19 and count(report, "dataset", "skip") == 1
    assert report.files == 19
    assert state_of(fed, "IN2P3") == state_of(fed, "NCSA")


def test_same_uuid_different_checksum_is_a_conflict(fed):
    """The same creation (UUID and version) with other bytes: a damaged or forged copy."""
    with fed.butler("NCSA") as b:
        ncsa = raw_ref(b, 903335, 2)
        (version,) = b.registry.datasets.versions([ncsa.id]).values()
    with fed.butler("IN2P3") as b:
        setup_types(b)
        ref = put_replica(b, np.full(8, -1), "raw", "HSC/raw/all", instrument="HSC",
                          exposure=903335, detector=2, version=version)
    conflicts = assert_conflict_refused(fed, "NCSA", "IN2P3", "dataset")
    (conflict,) = [c for c in conflicts if c.kind == "dataset"]
    assert conflict.subject == str(ref.id)
    with fed.butler("NCSA") as b:
        theirs = b.registry.datasets.file(ref.id)[0].checksum
    with fed.butler("IN2P3") as b:
        ours = b.registry.datasets.file(ref.id)[0].checksum
    assert theirs != ours
    assert theirs in conflict.source and ours in conflict.destination
    assert str(ref.id) in str(conflict)

    seq = last_seq(fed, "IN2P3")
    plan = fed.sync("NCSA", "IN2P3", dry_run=True)  # a dry run lists conflicts in full
    assert [c.to_dict() for c in plan.conflicts] == [conflict.to_dict()]
    assert count(plan, "dataset", "insert") == 19 and last_seq(fed, "IN2P3") == seq

    report = fed.sync("NCSA", "IN2P3", on_conflict="skip")
    assert len(report.conflicts) == 1
    assert count(report, "dataset", "insert") == 19
    with fed.butler("IN2P3") as b:  # the divergent replica is never overwritten
        assert b.registry.datasets.file(ref.id)[0].checksum == ours
        np.testing.assert_array_equal(b.get(ref), np.full(8, -1))
        assert b.verify().ok
        assert len(b.query_datasets("raw", "HSC/raw/all")) == 16


def test_different_uuid_in_the_same_slot_is_a_conflict(fed):
    with fed.butler("IN2P3") as b:
        setup_types(b)
        ref = put_replica(b, np.full(8, 12), "raw", "HSC/raw/all", id_mode="random",
                          instrument="HSC", exposure=903335, detector=2)
    conflicts = assert_conflict_refused(fed, "NCSA", "IN2P3", "dataset")
    with fed.butler("NCSA") as b:
        theirs = raw_ref(b, 903335, 2).id
    (conflict,) = [c for c in conflicts if c.kind == "dataset"]
    assert conflict.source == str(theirs) and conflict.destination == str(ref.id)
    assert "HSC/raw/all" in conflict.subject

    report = fed.sync("NCSA", "IN2P3", on_conflict="skip")
    assert len(report.conflicts) == 1
    with fed.butler("IN2P3") as b:
        assert raw_ref(b, 903335, 2).id == ref.id
        assert b.registry.datasets.get(theirs) is None
        assert len(b.query_datasets("raw", "HSC/raw/all")) == 16


# -- 3. ownership ------------------------------------------------------------------------


def test_destination_refuses_changes_to_collections_it_owns(fed):
    with fed.butler("IN2P3", run="u/in2p3/x") as b:
        setup_types(b)
        mine = b.put(np.ones(2), "bias", instrument="HSC", detector=0)
    with fed.butler("NCSA") as b:  # a diverging copy of IN2P3's run appears at NCSA
        put_replica(b, np.zeros(2), "bias", "u/in2p3/x", owner="IN2P3", id_mode="random",
                    instrument="HSC", detector=1)
    conflicts = assert_conflict_refused(fed, "NCSA", "IN2P3", "dataset", "collection")
    assert any("u/in2p3/x" in str(c) and "IN2P3" in str(c) for c in conflicts)

    report = fed.sync("NCSA", "IN2P3", on_conflict="skip")
    assert report.conflicts and count(report, "dataset", "insert") == 20
    with fed.butler("IN2P3") as b:
        assert [r.id for r in b.query_datasets("bias", "u/in2p3/x")] == [mine.id]
        assert b.registry.collections.owner("u/in2p3/x") == "IN2P3"


def test_local_writes_into_replicated_collections_are_refused(fed):
    fed.sync("NCSA", "IN2P3")
    with fed.butler("IN2P3") as b, pytest.raises(CollectionError, match="NCSA"):
        b.put(np.zeros(8), "raw", run="HSC/raw/all", instrument="HSC", exposure=903334,
              detector=0, id_mode="random")
    with fed.butler("IN2P3") as b, pytest.raises(CollectionError, match="NCSA"):
        b.registry.datasets.associate("HSC/raw/good", [raw_ref(b, 903334, 2)])
    with fed.butler("IN2P3") as b, pytest.raises(CollectionError, match="NCSA"):
        b.registry.collections.set_chain("HSC/defaults", ["HSC/raw/all"])
    assert state_of(fed, "IN2P3") == state_of(fed, "NCSA")


def test_collection_under_a_prefix_another_site_owns_is_a_conflict(fed):
    with fed.butler("NCSA", run="u/in2p3/stolen") as b:
        b.put(np.zeros(2), "bias", instrument="HSC", detector=0)
    for destination in ("IN2P3", "Princeton"):
        conflicts = assert_conflict_refused(fed, "NCSA", destination, "collection")
        (conflict,) = [c for c in conflicts if c.kind == "collection"]
        assert conflict.subject == "u/in2p3/stolen" and "IN2P3" in conflict.reason
        assert "NCSA" in conflict.source and "IN2P3" in conflict.destination
    report = fed.sync("NCSA", "Princeton", on_conflict="skip")
    assert report.conflicts
    with fed.butler("Princeton") as b:
        assert not b.registry.collections.exists("u/in2p3/stolen")
        assert len(b.query_datasets("raw", "HSC/raw/all")) == 16


# -- 4. transitive and multi-path ----------------------------------------------------------


def test_transitive_sync_equals_direct_sync(fed):
    fed.sync("NCSA", "IN2P3")
    fed.sync("IN2P3", "Princeton")
    fed.sync("NCSA", "laptop")
    princeton, laptop = state_of(fed, "Princeton"), state_of(fed, "laptop")
    assert princeton == laptop == state_of(fed, "NCSA")

    seq = last_seq(fed, "Princeton")
    report = fed.sync("NCSA", "Princeton")  # the same datasets by a second path
    assert only_skips(report) and report.files == 0 and not report.conflicts
    report = fed.sync("laptop", "Princeton")  # and by a third
    assert only_skips(report) and report.files == 0 and not report.conflicts
    assert last_seq(fed, "Princeton") == seq
    assert state_of(fed, "Princeton") == laptop
    with fed.butler("Princeton") as b:
        assert b.verify().ok and b.verify().checked == 20


def test_out_of_order_paths_converge(fed):
    fed.sync("NCSA", "IN2P3")
    with fed.butler("NCSA") as b:
        reg = b.registry
        reg.collections.set_chain("HSC/defaults", ["HSC/calib", "HSC/raw/all"])
        reg.collections.set_doc("HSC/calib", "Recommended calibrations, v2")
        reg.datasets.disassociate("HSC/raw/good", [raw_ref(b, 903334, 1)])
        reg.datasets.decertify("HSC/calib/DM-1", reg.get_dataset_type("bias"),
                               Timespan.from_values("2013-06-01", "2013-07-01"))
    fed.sync("NCSA", "Princeton")
    ncsa = state_of(fed, "NCSA")
    assert state_of(fed, "Princeton") == ncsa
    assert state_of(fed, "IN2P3") != ncsa

    report = fed.sync("IN2P3", "Princeton")  # a stale path: nothing goes back in time
    assert not report.conflicts
    assert state_of(fed, "Princeton") == ncsa
    princeton = state_of(fed, "Princeton")
    assert princeton["collections"]["HSC/defaults"][3] == ("HSC/calib", "HSC/raw/all")
    assert princeton["collections"]["HSC/calib"][2] == "Recommended calibrations, v2"
    assert len(princeton["tags"]["HSC/raw/good"]) == 3

    fed.sync("NCSA", "IN2P3")
    assert state_of(fed, "IN2P3") == ncsa
    seq = last_seq(fed, "Princeton")
    report = fed.sync("IN2P3", "Princeton")
    assert only_skips(report), report.counts
    assert report.files == 0 and last_seq(fed, "Princeton") == seq
    assert state_of(fed, "Princeton") == ncsa


# -- 5. deletions ----------------------------------------------------------------------------


def make_run2(fed) -> list[DatasetRef]:
    with fed.butler("NCSA", run=RUN2) as b:
        b.registry.register_dataset_type("calexp", ["visit", "detector"], "NumpyArray")
        return [b.put(np.full(3, d), "calexp", instrument="HSC", visit=903334, detector=d)
                for d in range(3)]


def delete_some(fed) -> list[DatasetRef]:
    """NCSA removes two raws and the whole of RUN2; returns the removed refs."""
    with fed.butler("NCSA") as b:
        gone = [raw_ref(b, 903336, 0), raw_ref(b, 903336, 1)]  # detector 1 is tagged
        b.remove(gone)
        gone += b.registry.datasets.run_refs(RUN2)
        b.remove_runs([RUN2])
    return gone


def file_paths(fed, site: str, refs) -> list:
    with fed.butler(site) as b:
        return [b.datastore.path_of(b.registry.datasets.file(r.id)[0]) for r in refs]


def test_deletions_propagate_transitively(fed):
    make_run2(fed)
    fed.sync("NCSA", "IN2P3")
    fed.sync("IN2P3", "Princeton")
    with fed.butler("NCSA") as b:
        victims = [raw_ref(b, 903336, 0), raw_ref(b, 903336, 1),
                   *b.registry.datasets.run_refs(RUN2)]
    paths = {site: file_paths(fed, site, victims) for site in ("IN2P3", "Princeton")}
    assert all(p.exists() for ps in paths.values() for p in ps)
    delete_some(fed)

    report = fed.sync("NCSA", "IN2P3")
    assert count(report, "dataset_removal", "apply") == 5
    assert count(report, "collection_removal", "apply") == 1
    fed.sync("IN2P3", "Princeton")
    ncsa = state_of(fed, "NCSA")
    for site in ("IN2P3", "Princeton"):
        assert state_of(fed, site) == ncsa
        assert not any(p.exists() for p in paths[site])
        with fed.butler(site) as b:
            assert all(b.registry.datasets.get(r.id) is None for r in victims)
            assert not b.registry.collections.exists(RUN2)
            assert b.verify().ok
            assert set(tombstones(b)) == {str(r.id) for r in victims}
            assert len(b.query_datasets("raw", "HSC/raw/good")) == 3
    report = fed.sync("NCSA", "IN2P3")
    assert only_skips(report)


def test_keep_deleted_site_keeps_and_marks_data(fed):
    make_run2(fed)
    set_keep_deleted(fed, "IN2P3")
    fed.sync("NCSA", "IN2P3")
    victims = delete_some(fed)
    fed.sync("NCSA", "IN2P3")
    with fed.butler("IN2P3") as b:
        marks = tombstones(b)
        assert marks == {str(r.id): True for r in victims}
        for ref in victims:
            assert b.registry.datasets.get(ref.id) is not None
            assert b.exists(ref)
            np.testing.assert_array_equal(b.get(ref), b.get(ref))
        assert b.registry.collections.exists(RUN2)
        assert b.verify().ok and b.verify().checked == 23
    report = fed.sync("NCSA", "IN2P3")
    assert only_skips(report)
    # A site syncing from the archive still learns of the deletions.
    fed.sync("IN2P3", "Princeton")
    with fed.butler("Princeton") as b:
        assert all(b.registry.datasets.get(ref.id) is None for ref in victims)
        assert tombstones(b) == {str(r.id): False for r in victims}


def test_stale_path_does_not_resurrect_deleted_datasets(fed):
    make_run2(fed)
    fed.sync("NCSA", "IN2P3")
    fed.sync("NCSA", "Princeton")
    victims = delete_some(fed)
    fed.sync("NCSA", "Princeton")
    fed.sync("NCSA", "laptop")  # a fresh site: learns of the deletions from the snapshot
    ncsa = state_of(fed, "NCSA")
    for site in ("Princeton", "laptop"):
        report = fed.sync("IN2P3", site)  # IN2P3 still holds the deleted datasets
        assert not report.conflicts
        assert count(report, "dataset", "insert") == 0, report.counts
        assert state_of(fed, site) == ncsa
        with fed.butler(site) as b:
            assert all(b.registry.datasets.get(r.id) is None for r in victims)
            assert not b.registry.collections.exists(RUN2)
            assert b.verify().ok


def test_a_slot_freed_and_rewritten_at_the_source_is_replaced_not_a_conflict(fed):
    fed.sync("NCSA", "IN2P3")
    with fed.butler("NCSA", run="HSC/raw/all") as b:
        old = raw_ref(b, 903334, 3)
        b.remove([old])  # and written again, same bytes, same file path, a new UUID
        new = b.put(np.full(8, 3), "raw", instrument="HSC", exposure=903334, detector=3)
    report = fed.sync("NCSA", "IN2P3")
    assert not report.conflicts
    assert count(report, "dataset_removal", "apply") == 1
    assert count(report, "dataset", "insert") == 1
    assert state_of(fed, "IN2P3") == state_of(fed, "NCSA")
    with fed.butler("IN2P3") as b:
        assert raw_ref(b, 903334, 3).id == new.id
        assert b.registry.datasets.get(old.id) is None
        np.testing.assert_array_equal(b.get(new), np.full(8, 3))
        assert b.verify().ok


# -- 6. dataset type and dimension record differences --------------------------------------


def test_differing_dataset_type_is_a_conflict_never_overwritten(fed):
    with fed.butler("IN2P3") as b:
        insert_hsc_records(b.registry)
        b.registry.register_dataset_type("bias", ["detector"], "JSON")
    conflicts = assert_conflict_refused(fed, "NCSA", "IN2P3", "dataset type")
    (conflict,) = [c for c in conflicts if c.kind == "dataset type"]
    assert conflict.subject == "bias"
    assert "NumpyArray" in conflict.source and "JSON" in conflict.destination

    report = fed.sync("NCSA", "IN2P3", on_conflict="skip")
    assert report.conflicts
    with fed.butler("IN2P3") as b:
        assert b.registry.get_dataset_type("bias").storage_class == "JSON"
        assert len(b.query_datasets("raw", "HSC/raw/all")) == 16
        assert b.verify().ok


def test_differing_dimension_record_is_a_conflict_never_overwritten(fed):
    with fed.butler("IN2P3") as b:
        records = HSC_RECORDS
        changed = [dict(r) for r in records["exposure"]]
        changed[0]["exposure_time"] = 15.0
        for dimension, rows in records.items():
            b.registry.insert_dimension_records(
                dimension, changed if dimension == "exposure" else rows)
    conflicts = assert_conflict_refused(fed, "NCSA", "IN2P3", "dimension record")
    (conflict,) = [c for c in conflicts if c.kind == "dimension record"]
    assert "903334" in conflict.subject
    assert conflict.source["exposure_time"] == 30.0
    assert conflict.destination["exposure_time"] == 15.0

    fed.sync("NCSA", "IN2P3", on_conflict="skip")
    with fed.butler("IN2P3") as b:
        (record,) = b.query_dimension_records("exposure", where="exposure = 903334")
        assert record["exposure_time"] == 15.0
        assert b.verify().ok


# -- 7. selection ------------------------------------------------------------------------------


def test_collection_glob_brings_chain_children_and_runs(fed):
    report = fed.sync("NCSA", "IN2P3", collections=["HSC/calib"])
    assert not report.conflicts
    st = state_of(fed, "IN2P3")
    assert set(st["collections"]) == {"HSC/calib", "HSC/calib/DM-1", "HSC/calib/gen/DM-1"}
    assert {ref[0] for ref in st["datasets"].values()} == {"bias"} and len(st["datasets"]) == 4
    assert st["calibs"] == state_of(fed, "NCSA")["calibs"]
    with fed.butler("IN2P3") as b:
        assert b.verify().ok and b.verify().checked == 4
        assert b.query_dimension_records("exposure") == []

    report = fed.sync("NCSA", "laptop", collections=["HSC/raw/*"])
    st = state_of(fed, "laptop")
    assert set(st["collections"]) == {"HSC/raw/all", "HSC/raw/good"}
    assert len(st["datasets"]) == 16 and len(st["tags"]["HSC/raw/good"]) == 4

    fed.sync("NCSA", "Princeton", dataset_types=["bias"])  # tags of raws bring no raws
    with fed.butler("Princeton") as b:
        assert [t.name for t in b.registry.dataset_types.query()] == ["bias"]
        assert len(b.query_datasets("bias", "HSC/calib/gen/DM-1")) == 4
        assert b.query_datasets("bias", "HSC/raw/good") == []
        assert b.verify().ok and b.verify().checked == 4


def test_where_selection_brings_what_the_datasets_need(fed):
    report = fed.sync("NCSA", "laptop", collections=["HSC/raw/all"], dataset_types=["raw"],
                      where="exposure = 903334")
    assert not report.conflicts and report.files == 4
    with fed.butler("laptop") as b:
        refs = b.query_datasets("raw", "HSC/raw/all")
        assert sorted((r.data_id["exposure"], r.data_id["detector"]) for r in refs) == [
            (903334, d) for d in range(4)]
        assert [r["exposure"] for r in b.query_dimension_records("exposure")] == [903334]
        assert {r["physical_filter"] for r in b.query_dimension_records("physical_filter")} \
            == {"HSC-R"}
        assert b.registry.collections.owner("HSC/raw/all") == "NCSA"
        np.testing.assert_array_equal(b.get(refs[1]), np.full(8, refs[1].data_id["detector"]))
        assert b.verify().ok


def test_cursor_per_selection_and_wider_selection_snapshots(fed):
    narrow = {"collections": ["HSC/raw/all"], "where": "exposure = 903334"}
    fed.sync("NCSA", "laptop", **narrow)
    with fed.butler("laptop") as b:
        assert len(b.query_datasets("raw", "HSC/raw/all")) == 4

    report = fed.sync("NCSA", "laptop", collections=["HSC/raw/*"])  # wider: a snapshot
    assert count(report, "dataset", "insert") == 12 and count(report, "dataset", "skip") == 4
    assert report.files == 12
    with fed.butler("laptop") as b:
        assert len(b.query_datasets("raw", "HSC/raw/all")) == 16
        assert len(b.query_datasets("raw", "HSC/raw/good")) == 4

    with fed.butler("NCSA") as b:  # new data: an incremental sync brings just those
        b.registry.insert_dimension_records("exposure", [dict(
            HSC_RECORDS["exposure"][0], exposure=903338,
            obs_id="HSCA903338")])
        new = [b.put(np.zeros(8), "raw", run="HSC/raw/all", instrument="HSC",
                     exposure=903338, detector=d, id_mode="deterministic") for d in range(2)]
    report = fed.sync("NCSA", "laptop", collections=["HSC/raw/*"])
    assert count(report, "dataset", "insert") == 2 and count(report, "dataset", "skip") == 0
    assert report.files == 2
    report = fed.sync("NCSA", "laptop", **narrow)  # the narrow cursor: nothing it selects
    assert count(report, "dataset", "insert") == 0 and report.files == 0
    with fed.butler("laptop") as b:
        assert {r.id for r in b.query_datasets("raw", "HSC/raw/all",
                                               where="exposure = 903338")} == {
            r.id for r in new}


# -- 8. records only ---------------------------------------------------------------------------


def test_no_files_imports_datasets_held_at_source(fed):
    report = fed.sync("NCSA", "IN2P3", files=False)
    assert report.files == 0 and count(report, "dataset", "insert") == 20
    with fed.butler("IN2P3") as b:
        ref = raw_ref(b, 903335, 2)
        stored, held_at = b.registry.datasets.file(ref.id)
        assert held_at == "NCSA"
        existence = b.exists(ref)
        assert not existence and existence.registered and existence.held_at == "NCSA"
        assert str(existence) == "held at site NCSA"
        assert not b.datastore.path_of(stored).exists()
        with pytest.raises(MissingDatasetError, match="NCSA"):
            b.get(ref)
        check = b.verify()
        assert check.ok and check.checked == 0 and check.held_elsewhere == 20
    fed.sync("IN2P3", "Princeton")  # still held at NCSA, one hop further
    with fed.butler("Princeton") as b:
        assert b.registry.datasets.file(ref.id)[1] == "NCSA"
        with pytest.raises(MissingDatasetError, match="NCSA"):
            b.get(ref)
        assert b.verify().ok and b.verify().held_elsewhere == 20

    report = fed.sync("NCSA", "IN2P3")
    assert report.files == 20 and not report.failed
    with fed.butler("IN2P3") as b:
        assert b.registry.datasets.file(ref.id)[1] is None
        assert b.exists(ref)
        np.testing.assert_array_equal(b.get(ref), np.full(8, 12))
        check = b.verify()
        assert check.ok and check.checked == 20 and check.held_elsewhere == 0
    assert state_of(fed, "IN2P3") == state_of(fed, "NCSA")
    assert fed.sync("NCSA", "IN2P3").files == 0


# -- 9. calibrations and tags ------------------------------------------------------------------


def test_calibrations_and_tags_propagate(fed):
    fed.sync("NCSA", "IN2P3")
    with fed.butler("IN2P3") as b:
        got = b.get("bias", instrument="HSC", detector=1, exposure=903334,
                    collections="HSC/calib")
        np.testing.assert_array_equal(got, np.full(4, 1.0))

    with fed.butler("NCSA", run="HSC/calib/gen/DM-3") as b:
        reg = b.registry
        bias = reg.get_dataset_type("bias")
        new = b.put(np.full(4, 42.0), "bias", instrument="HSC", detector=1)
        window = Timespan.from_values("2013-06-17T13:00:00", "2013-06-17T13:02:00")
        reg.datasets.decertify("HSC/calib/DM-1", bias, window, data_id_keys=[ref_key(new)])
        reg.datasets.certify("HSC/calib/DM-1", [new], window)
        reg.datasets.disassociate("HSC/raw/good", [raw_ref(b, 903334, 1)])
        reg.datasets.associate("HSC/raw/good", [raw_ref(b, 903334, 2)])
    fed.sync("NCSA", "IN2P3")
    assert state_of(fed, "IN2P3") == state_of(fed, "NCSA")
    with fed.butler("IN2P3") as b:
        inside = b.get("bias", instrument="HSC", detector=1, exposure=903334,
                       collections="HSC/calib")
        np.testing.assert_array_equal(inside, np.full(4, 42.0))
        after = b.get("bias", instrument="HSC", detector=1, exposure=903337,
                      collections="HSC/calib")
        np.testing.assert_array_equal(after, np.full(4, 1.0))
        other = b.get("bias", instrument="HSC", detector=2, exposure=903334,
                      collections="HSC/calib")
        np.testing.assert_array_equal(other, np.full(4, 2.0))
        tagged = {(r.data_id["exposure"], r.data_id["detector"])
                  for r in b.query_datasets("raw", "HSC/raw/good")}
        assert (903334, 1) not in tagged and (903334, 2) in tagged and len(tagged) == 4
    fed.sync("IN2P3", "Princeton")
    assert state_of(fed, "Princeton") == state_of(fed, "NCSA")


# -- 10. dry run ----------------------------------------------------------------------------------


def test_dry_run_plans_and_changes_nothing(fed):
    before, seq = state_of(fed, "IN2P3"), last_seq(fed, "IN2P3")
    plan = fed.sync("NCSA", "IN2P3", dry_run=True)
    assert count(plan, "dataset", "insert") == 20
    assert count(plan, "collection", "insert") == 6
    assert count(plan, "dataset_type", "insert") == 2
    assert plan.files == 0 and not plan.conflicts
    assert state_of(fed, "IN2P3") == before and last_seq(fed, "IN2P3") == seq
    with fed.butler("IN2P3") as b:
        assert list(b.datastore.root.rglob("*.npy")) == []
    # a dry run does not advance the cursor: the real sync still brings everything
    report = fed.sync("NCSA", "IN2P3")
    assert count(report, "dataset", "insert") == 20
