"""Federations used both ways and along several paths: re-created datasets reach every
replica by every path (never a false conflict, never a dead edge), and a site receiving
its own data back skips it. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import insert_hsc_records, populate_ncsa, repo_state
from test_sync import set_keep_deleted

EXPOSURE = 903334
RAWS = [{"instrument": "HSC", "exposure": EXPOSURE, "detector": d} for d in range(4)]


@pytest.fixture
def fed(federation):
    populate_ncsa(federation)
    return federation


def state(fed, site: str) -> dict:
    with fed.butler(site) as b:
        return repo_state(b)


def raws_of(fed, site: str) -> dict[str, list[float]]:
    """The exposure's raws at a site: UUID -> content."""
    with fed.butler(site) as b:
        refs = b.query_datasets("raw", "HSC/raw/all", where=f"exposure = {EXPOSURE}")
        return {str(r.id): b.get(r).tolist() for r in refs if b.exists(r)}


def recreate_exposure(fed, value: float = -5.0) -> dict[str, list[float]]:
    """NCSA prunes the exposure's raws and ingests them again: same UUIDs, new bytes."""
    with fed.butler("NCSA", run="HSC/raw/all") as b:
        old = b.query_datasets("raw", "HSC/raw/all", where=f"exposure = {EXPOSURE}")
        b.remove(old)
        new = [b.put(np.full(8, value), "raw", raw, id_mode="deterministic") for raw in RAWS]
    assert {r.id for r in new} == {r.id for r in old}
    return raws_of(fed, "NCSA")


def assert_same(fed, *sites: str) -> None:
    ncsa = state(fed, "NCSA")
    for site in sites:
        assert state(fed, site) == ncsa, site


# -- a re-created dataset never kills an edge --------------------------------------------


def test_recreation_through_another_path_then_directly(fed):
    fed.sync("NCSA", "IN2P3")
    fed.sync("IN2P3", "Princeton")
    fed.sync("NCSA", "Princeton")
    new = recreate_exposure(fed)
    fed.sync("NCSA", "IN2P3")
    fed.sync("IN2P3", "Princeton")  # Princeton gets the new version second hand ...
    assert raws_of(fed, "Princeton") == new
    report = fed.sync("NCSA", "Princeton")  # ... and the direct edge still works
    assert not report.conflicts and report.files == 0
    assert not fed.sync("NCSA", "Princeton", on_conflict="skip").conflicts
    assert_same(fed, "IN2P3", "Princeton")


def test_recreation_seen_by_two_selections_on_one_edge(fed):
    fed.sync("NCSA", "Princeton", collections=["HSC/raw/*"])
    fed.sync("NCSA", "Princeton", collections=["HSC/defaults"])
    new = recreate_exposure(fed)
    fed.sync("NCSA", "Princeton", collections=["HSC/raw/*"])
    assert raws_of(fed, "Princeton") == new
    report = fed.sync("NCSA", "Princeton", collections=["HSC/defaults"])
    assert not report.conflicts
    assert raws_of(fed, "Princeton") == new


# -- re-creations arriving through snapshots are not conflicts ---------------------------


def test_first_sync_from_another_source_brings_the_recreation(fed):
    fed.sync("NCSA", "IN2P3")
    fed.sync("IN2P3", "Princeton")  # Princeton holds the old version
    new = recreate_exposure(fed)
    report = fed.sync("NCSA", "Princeton")  # a first sync: a snapshot of NCSA
    assert not report.conflicts
    assert raws_of(fed, "Princeton") == new
    report = fed.sync("IN2P3", "Princeton")  # IN2P3 is stale: nothing changes back
    assert not report.conflicts and raws_of(fed, "Princeton") == new
    with fed.butler("Princeton") as b:
        assert b.verify().ok


def test_new_selection_brings_the_recreation(fed):
    fed.sync("NCSA", "laptop", collections=["HSC/raw/all"], where=f"exposure = {EXPOSURE}")
    new = recreate_exposure(fed)
    report = fed.sync("NCSA", "laptop", collections=["HSC/defaults"])  # new selection
    assert not report.conflicts
    assert raws_of(fed, "laptop") == new


def test_chain_gaining_a_child_brings_the_recreation(fed):
    with fed.butler("NCSA") as b:
        b.registry.collections.set_chain("HSC/defaults", ["HSC/calib"])
    fed.sync("NCSA", "Princeton", collections=["HSC/defaults"])
    fed.sync("NCSA", "Princeton", collections=["HSC/raw/all"])
    new = recreate_exposure(fed)
    with fed.butler("NCSA") as b:
        b.registry.collections.set_chain("HSC/defaults", ["HSC/raw/all", "HSC/calib"])
    report = fed.sync("NCSA", "Princeton", collections=["HSC/defaults"])
    assert not report.conflicts
    assert raws_of(fed, "Princeton") == new


def test_an_archive_accepts_the_recreation(fed):
    set_keep_deleted(fed, "Princeton")
    fed.sync("NCSA", "Princeton")
    with fed.butler("NCSA", run="HSC/raw/all") as b:
        b.remove(b.query_datasets("raw", "HSC/raw/all", where=f"exposure = {EXPOSURE}"))
    fed.sync("NCSA", "Princeton")  # the archive keeps the deleted raws
    assert len(raws_of(fed, "Princeton")) == 4
    with fed.butler("NCSA", run="HSC/raw/all") as b:
        for raw in RAWS:
            b.put(np.full(8, -7.0), "raw", raw, id_mode="deterministic")
    new = raws_of(fed, "NCSA")
    for _ in range(2):  # the first sync takes it, the next one finds nothing to do
        report = fed.sync("NCSA", "Princeton")
        assert not report.conflicts
        assert raws_of(fed, "Princeton") == new
    report = fed.sync("NCSA", "IN2P3")  # and a site syncing from scratch agrees
    assert raws_of(fed, "IN2P3") == new


# -- a site receiving its own data back skips it ----------------------------------------


def put_own(fed, site: str, run: str, value: float) -> None:
    with fed.butler(site, run=run) as b:
        insert_hsc_records(b.registry)  # the same records every site has (or will get)
        b.registry.register_dataset_type("calexp", ["visit", "detector"], "NumpyArray")
        for detector in range(2):
            b.put(np.full(3, value), "calexp", instrument="HSC", visit=903334,
                  detector=detector)


def test_processing_runs_travel_both_ways(fed):
    fed.sync("NCSA", "IN2P3")
    put_own(fed, "IN2P3", "u/in2p3/proc/1", 1.0)
    put_own(fed, "NCSA", "HSC/runs/RC2/w_2026_49/DM-1", 2.0)
    for _ in range(2):
        assert not fed.sync("IN2P3", "NCSA").conflicts  # IN2P3's run reaches NCSA ...
        assert not fed.sync("NCSA", "IN2P3").conflicts  # ... and comes back: skipped
    assert state(fed, "IN2P3") == state(fed, "NCSA")
    with fed.butler("IN2P3") as b:
        assert b.registry.collections.owner("u/in2p3/proc/1") == "IN2P3"


def test_laptop_pushes_its_outputs_then_pulls(fed):
    fed.sync("NCSA", "laptop", collections=["HSC/raw/all"], where=f"exposure = {EXPOSURE}")
    put_own(fed, "laptop", "u/alice/try1", 3.0)
    assert not fed.sync("laptop", "NCSA", collections=["u/alice/*"]).conflicts
    report = fed.sync("NCSA", "laptop")  # everything, its own outputs included
    assert not report.conflicts
    with fed.butler("laptop") as b:
        assert len(b.query_datasets("calexp", "u/alice/try1")) == 2


def test_three_sites_in_a_ring(fed):
    put_own(fed, "IN2P3", "u/in2p3/proc/2", 4.0)
    put_own(fed, "Princeton", "u/princeton/proc/1", 5.0)
    for _ in range(2):
        for src, dst in (("NCSA", "IN2P3"), ("IN2P3", "Princeton"), ("Princeton", "NCSA")):
            report = fed.sync(src, dst)
            assert not report.conflicts, (src, dst, report.conflicts)
    assert state(fed, "IN2P3") == state(fed, "NCSA") == state(fed, "Princeton")


def test_a_tag_of_a_dataset_deleted_since_comes_back_quietly(fed):
    """NCSA tags an exposure, Princeton replicates it, NCSA prunes the exposure; Princeton,
    not yet told, sends NCSA its (older) membership back: skipped, not refused, since the
    dataset it names is gone at NCSA. The deletion then reaches Princeton."""
    fed.sync("NCSA", "Princeton")
    with fed.butler("NCSA") as b:
        tagged = b.query_datasets("raw", "HSC/raw/good", where=f"exposure = {EXPOSURE}")
        assert tagged
        b.remove(tagged)
    report = fed.sync("Princeton", "NCSA")
    assert not report.conflicts, report.conflicts
    assert not fed.sync("NCSA", "Princeton").conflicts
    assert_same(fed, "Princeton")
    with fed.butler("Princeton") as b:
        assert not b.query_datasets("raw", "HSC/raw/good", where=f"exposure = {EXPOSURE}")


def test_a_tag_of_a_dataset_recreated_since_comes_back_quietly(fed):
    """As above, but NCSA has ingested the exposure again (same UUIDs) since: Princeton's old
    membership names a dataset NCSA holds again, in a newer creation; it is recognized as
    older than NCSA's own knowledge of the tag, not refused as a change to NCSA's tag."""
    fed.sync("NCSA", "Princeton")
    recreate_exposure(fed)
    report = fed.sync("Princeton", "NCSA")
    assert not report.conflicts, report.conflicts
    assert not fed.sync("NCSA", "Princeton").conflicts
    assert_same(fed, "Princeton")
    with fed.butler("NCSA") as b:  # the new creation is not tagged: NCSA never tagged it
        assert not b.query_datasets("raw", "HSC/raw/good", where=f"exposure = {EXPOSURE}")
