"""A dataset deleted at its owner and re-created with the same deterministic UUID."""

import numpy as np
from conftest import populate_ncsa, repo_state

REACHES = ("local", "sftp", "http")  # see conftest.pytest_generate_tests


def test_recreated_dataset_reaches_replicas_but_stale_paths_do_not_resurrect(federation):
    populate_ncsa(federation)
    federation.sync("NCSA", "IN2P3")
    federation.sync("IN2P3", "Princeton")
    raw = {"instrument": "HSC", "exposure": 903334, "detector": 2}
    with federation.butler("NCSA", run="HSC/raw/all") as ncsa:
        old = ncsa.find_dataset("raw", raw, collections="HSC/raw/all")
        ncsa.remove([old])
    federation.sync("NCSA", "Princeton")  # Princeton learns of the deletion first
    with federation.butler("Princeton") as princeton:
        assert princeton.registry.datasets.get(old.id) is None
    federation.sync("IN2P3", "Princeton")  # IN2P3 is stale: it still has the raw
    with federation.butler("Princeton") as princeton:
        assert princeton.registry.datasets.get(old.id) is None  # not resurrected
    with federation.butler("NCSA", run="HSC/raw/all") as ncsa:  # re-ingested, fixed
        new = ncsa.put(np.full(8, -1), "raw", raw, id_mode="deterministic")
    assert new.id == old.id
    federation.sync("NCSA", "IN2P3")
    federation.sync("IN2P3", "Princeton")
    with federation.butler("NCSA") as a, federation.butler("Princeton") as b:
        assert repo_state(a) == repo_state(b)
        assert b.get(new).tolist() == [-1] * 8


def test_slot_freed_in_one_batch_and_reused_in_a_later_one(federation, monkeypatch):
    """Planning every batch before applying any still sees earlier batches' removals."""
    import federation.sync.reader as reader

    populate_ncsa(federation)
    federation.sync("NCSA", "IN2P3")
    raw = {"instrument": "HSC", "exposure": 903335, "detector": 3}
    with federation.butler("NCSA", run="HSC/raw/all") as ncsa:
        old = ncsa.find_dataset("raw", raw, collections="HSC/raw/all")
        ncsa.remove([old])
        new = ncsa.put(np.full(8, 7), "raw", raw)  # a random UUID in the freed slot
    monkeypatch.setattr(reader, "BATCH", 1)  # the removal and the put: two batches
    report = federation.sync("NCSA", "IN2P3")
    assert not report.conflicts
    with federation.butler("NCSA") as a, federation.butler("IN2P3") as b:
        assert repo_state(a) == repo_state(b)
        assert b.get(new).tolist() == [7] * 8 and b.registry.datasets.get(old.id) is None
