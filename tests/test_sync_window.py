"""One window per sync: a change written at the source while a sync runs is in this
sync or in the next one, never skipped, and a conflict is never applied under
``--on-conflict fail``.

A writer at the source acts at named points of a running sync (between its
planning and applying passes, or while it plans), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
import uuid

import numpy as np
import pytest
from conftest import populate_ncsa, repo_state
from test_sync import put_replica

from federation.faults import hooked
from federation.sync.bundle.export import export_bundle
from federation.sync.bundle.importer import import_bundle
from federation.sync.options import SyncOptions
from federation.sync.report import SyncConflictError
from federation.sync.selection import Selection

POINTS = ["sync planned", "batch planned"]


@pytest.fixture
def fed(federation):
    populate_ncsa(federation)
    return federation


class Writer:
    """Writes at NCSA each time it is called: a new dataset type, a new run, datasets."""

    def __init__(self, fed) -> None:
        self.fed = fed
        self.calls = 0
        self.numbers = itertools.count(1)

    def __call__(self) -> None:
        self.calls += 1
        n = next(self.numbers)
        with self.fed.butler("NCSA") as b:
            b.registry.register_dataset_type(f"calexp{n}", ["visit", "detector"], "NumpyArray")
            run = f"HSC/runs/RC2/w_2026_49/DM-{n}"
            for detector in range(2):
                b.put(np.full(3, n), f"calexp{n}", run=run, instrument="HSC", visit=903334,
                      detector=detector)


def once(hook):
    """A hook that acts the first time only (a point may be passed many times)."""
    done = []

    def run():
        if not done:
            done.append(True)
            hook()
    return run


def state(fed, site):
    with fed.butler(site) as b:
        return repo_state(b)


def assert_cursor_is_true(fed, cursor: int) -> None:
    """Everything NCSA journaled up to ``cursor`` (and still holds) is at IN2P3."""
    with fed.butler("NCSA") as src:
        ids, types = set(), set()
        for entry in src.registry.db.entries(0, upto=cursor):
            if entry.kind == "dataset":
                ids.add(entry.change.id)
            elif entry.kind == "dataset_type":
                types.add(entry.change.name)
        live = {str(i) for i in src.registry.datasets.versions([uuid.UUID(i) for i in ids])}
    with fed.butler("IN2P3") as dst:
        here = {str(i) for i in dst.registry.datasets.versions([uuid.UUID(i) for i in live])}
        known = {t.name for t in dst.registry.dataset_types.query()}
    assert live <= here, f"{len(live - here)} dataset(s) up to entry {cursor} never arrived"
    assert types <= known, f"dataset type(s) {types - known} up to entry {cursor} never arrived"


def head(fed, site="NCSA") -> int:
    with fed.butler(site) as b:
        return b.registry.db.last_seq()


@pytest.mark.parametrize("point", POINTS)
def test_writer_during_a_first_snapshot(fed, point):
    writer = Writer(fed)
    before = head(fed)
    with hooked(point, once(writer)):
        report = fed.sync("NCSA", "IN2P3")
    assert writer.calls == 1
    assert_cursor_is_true(fed, report.cursor)
    assert report.cursor == before  # the window closed before the writer wrote
    again = fed.sync("NCSA", "IN2P3")
    assert again.cursor == head(fed)
    assert state(fed, "IN2P3") == state(fed, "NCSA")


@pytest.mark.parametrize("point", POINTS)
def test_writer_during_an_incremental_sync(fed, point):
    writer = Writer(fed)
    fed.sync("NCSA", "IN2P3")
    writer()
    before = head(fed)
    with hooked(point, once(writer)):
        report = fed.sync("NCSA", "IN2P3")
    assert writer.calls == 2
    assert_cursor_is_true(fed, report.cursor)
    assert report.cursor == before
    fed.sync("NCSA", "IN2P3")
    assert state(fed, "IN2P3") == state(fed, "NCSA")


def test_new_runs_appearing_while_syncs_run(fed):
    writer = Writer(fed)
    fed.sync("NCSA", "IN2P3")
    for _ in range(6):
        writer()  # so that every sync has batches to plan
        with hooked("sync planned", once(writer)), hooked("batch planned", once(writer)):
            report = fed.sync("NCSA", "IN2P3")
        assert_cursor_is_true(fed, report.cursor)
    assert writer.calls == 18
    fed.sync("NCSA", "IN2P3")
    assert state(fed, "IN2P3") == state(fed, "NCSA")


@pytest.mark.parametrize("point", POINTS)
def test_a_conflict_written_during_a_sync_is_never_applied(fed, point):
    fed.sync("NCSA", "IN2P3")
    with fed.butler("IN2P3") as b:  # IN2P3 holds a replica NCSA is about to contradict
        b.registry.register_dataset_type("flat", ["detector"], "NumpyArray")
        put_replica(b, np.full(4, -1.0), "flat", "HSC/calib/gen/DM-2", instrument="HSC",
                    detector=0, id_mode="random")  # NCSA's flat will want the same slot
    fired = []

    def contradict():
        fired.append(True)
        with fed.butler("NCSA", run="HSC/calib/gen/DM-2") as b:
            b.registry.register_dataset_type("flat", ["detector"], "NumpyArray")
            b.put(np.full(4, 1.0), "flat", instrument="HSC", detector=0,
                  id_mode="deterministic")
            b.registry.register_dataset_type("fringe", ["detector"], "NumpyArray")

    with fed.butler("IN2P3") as b:
        b.registry.register_dataset_type("fringe", ["exposure", "detector"], "NumpyArray")
    with fed.butler("NCSA") as b:  # something to sync, so that batches are planned
        b.registry.collections.set_doc("HSC/calib", "new doc")
    with hooked(point, once(contradict)):
        report = fed.sync("NCSA", "IN2P3")  # its window ends before the contradiction
    assert fired and not report.conflicts
    with fed.butler("IN2P3") as b:
        assert b.registry.collections.get("HSC/calib").doc == "new doc"
    before = state(fed, "IN2P3")
    with pytest.raises(SyncConflictError) as info:  # ... so the next sync reports it
        fed.sync("NCSA", "IN2P3")
    kinds = {c.kind for c in info.value.report.conflicts}
    assert kinds == {"dataset", "dataset type"}, info.value.report.conflicts
    assert state(fed, "IN2P3") == before


def test_writer_during_an_export_lands_in_this_bundle_or_the_next(fed, tmp_path):
    writer = Writer(fed)
    first = tmp_path / "first.jsonl.gz"
    with hooked("export batch written", once(writer)):
        result = export_bundle(fed.site("NCSA"), first, since=0, selection=Selection())
    assert writer.calls == 1
    root = fed.root / "repos" / "NCSA"
    report = import_bundle(first, fed.site("IN2P3"), SyncOptions(), files_from=root,
                           sites=fed.sites())
    assert report.cursor == result.header.to_seq
    assert_cursor_is_true(fed, report.cursor)
    second = tmp_path / "second.jsonl.gz"
    export_bundle(fed.site("NCSA"), second, since=result.header.to_seq, selection=Selection())
    import_bundle(second, fed.site("IN2P3"), SyncOptions(), files_from=root, sites=fed.sites())
    assert state(fed, "IN2P3") == state(fed, "NCSA")
