"""A source rebuilt under the same site name is another repository instance: a replica
never resumes its old cursor on it silently; ``--reset-cursor`` re-plans from a
snapshot, comparing contents, every difference a conflict. On SQLite and PostgreSQL,
locally and through a published outbox over SFTP.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import populate_ncsa, repo_state

from federation.butler import Butler
from federation.errors import ConfigError
from federation.sync.report import SyncConflictError

REACHES = ("local", "sftp")  # see conftest.pytest_generate_tests


def rebuild_ncsa(fed, db_url) -> None:
    """NCSA's repository is thrown away and made again, with the same raws (deterministic
    UUIDs) but new biases (random UUIDs)."""
    root = fed.root / "repos" / "NCSA"
    shutil.rmtree(root)
    if db_url is not None:
        engine = sa.create_engine(db_url)
        meta = sa.MetaData()
        meta.reflect(engine)
        meta.drop_all(engine)
        engine.dispose()
    Butler.create(root, db=db_url, site="NCSA")
    populate_ncsa(fed)


def test_a_rebuilt_source_stops_the_sync_naming_both_instances(federation, db_url):
    populate_ncsa(federation)
    federation.sync("NCSA", "IN2P3")
    with federation.butler("NCSA") as b:
        old = b.registry.instance
    rebuild_ncsa(federation, db_url)
    with federation.butler("NCSA") as b:
        new = b.registry.instance
    with federation.butler("IN2P3") as b:
        before, seq = repo_state(b), b.registry.db.last_seq()
    with pytest.raises(ConfigError) as info:
        federation.sync("NCSA", "IN2P3")
    message = str(info.value)
    assert old[:12] in message and new[:12] in message and "--reset-cursor" in message
    with federation.butler("IN2P3") as b:
        assert repo_state(b) == before and b.registry.db.last_seq() == seq

    with pytest.raises(SyncConflictError) as info:  # the biases differ: conflicts
        federation.sync("NCSA", "IN2P3", reset_cursor=True)
    conflicts = info.value.report.conflicts
    assert conflicts and all(c.kind in ("dataset", "calib_slot", "tag") for c in conflicts)
    report = federation.sync("NCSA", "IN2P3", reset_cursor=True, on_conflict="skip")
    assert report.conflicts and report.counts.get("dataset skip") == 16  # the same raws
    assert not federation.sync("NCSA", "IN2P3", on_conflict="skip").conflicts  # followed now
    with federation.butler("NCSA", run="HSC/raw/all") as b:  # and new changes arrive
        b.put(np.full(8, 3.0), "raw", instrument="HSC", exposure=903337, detector=0,
              run="HSC/raw/more")
    federation.sync("NCSA", "IN2P3", on_conflict="skip")
    with federation.butler("IN2P3") as b:
        assert len(b.query_datasets("raw", "HSC/raw/more")) == 1
