"""Two writers on one repository: a prune racing a re-ingest of the same data IDs, and a
trash emptied while a sync has files in flight. Invariant 1 (no record without its
verified file) holds throughout, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading

import numpy as np
from conftest import insert_hsc_records, populate_ncsa

from federation.butler import Butler
from federation.faults import hooked

RUN = "HSC/raw/all"
DATA_IDS = [{"instrument": "HSC", "exposure": 903334 + e, "detector": d}
            for e in range(2) for d in range(4)]


def test_a_prune_racing_a_reingest_never_deletes_the_new_files(repo):
    with Butler(repo, run=RUN) as b:
        insert_hsc_records(b.registry)
        b.registry.register_dataset_type("raw", ["exposure", "detector"], "NumpyArray")
        for data_id in DATA_IDS:
            b.put(np.full(4, 1.0), "raw", data_id, id_mode="deterministic")
    reingested: list = []
    errors: list[BaseException] = []

    def reingest() -> None:  # another process writing the same data IDs, at the same paths
        try:
            with Butler(repo, run=RUN) as other:
                for data_id in DATA_IDS[:4]:
                    reingested.append(other.put(np.full(4, 2.0), "raw", data_id,
                                                id_mode="deterministic"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    writer = threading.Thread(target=reingest)

    def race() -> None:  # the pruner has listed its trash: the re-ingest runs now
        if not writer.is_alive() and not reingested:
            writer.start()
            writer.join(timeout=3)  # with the trash emptied under the write lock, it waits

    with Butler(repo, run=RUN) as b, hooked("trash listed", race):
        assert b.remove(b.query_datasets("raw", RUN)) == len(DATA_IDS)
    writer.join(timeout=60)
    assert not writer.is_alive() and errors == []
    with Butler(repo, run=RUN) as b:
        report = b.verify()
        assert report.ok, report.problems
        assert report.checked == len(reingested) == 4
        assert [b.get(ref).tolist() for ref in reingested] == [[2.0] * 4] * 4


def test_a_file_deleted_under_a_sync_is_reported_not_referenced(federation):
    populate_ncsa(federation)
    root = federation.root / "repos" / "IN2P3"
    deleted: list[str] = []

    def empty_someone_elses_trash() -> None:
        victims = [p for p in (root / RUN).rglob("*") if p.is_file()]
        if deleted or not victims:  # once, when a batch's files are in place
            return
        victim = victims[0]
        victim.unlink()
        deleted.append(victim.relative_to(root).as_posix())

    with hooked("files fetched", empty_someone_elses_trash):
        report = federation.sync("NCSA", "IN2P3")
    assert [path for _, path, _ in report.failed] == deleted
    assert "deleted by another process" in report.failed[0][2]
    with federation.butler("IN2P3") as b:
        check = b.verify()
        assert check.ok, check.problems
        assert check.checked == 19
    again = federation.sync("NCSA", "IN2P3")  # the next sync brings it
    assert not again.failed and again.files == 1
    with federation.butler("IN2P3") as b:
        assert b.verify().checked == 20
