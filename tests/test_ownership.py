"""A collection is born only at the site that owns its prefix: a repository refuses to
create one outside its site's prefixes (command line and Butler API), and a destination
refuses incoming collections whose owner does not own their prefix. On SQLite and
PostgreSQL.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from conftest import insert_hsc_records, populate_ncsa
from test_cli import fails, fed

from federation.butler import Butler
from federation.errors import CollectionError
from federation.model import CollectionType
from federation.sync.report import SyncConflictError


def test_a_repository_creates_collections_only_below_its_prefixes(tmp_path, db_url):
    repo = tmp_path / "laptop"
    args = ["--db", db_url] if db_url else []
    fed("create", repo, "--site", "laptop", "--owns", "u/alice", *args)
    fed("register-collection", repo, "u/alice/best")
    fails("register-collection", repo, "u/bob/evil",
          match=["u/bob/evil", "outside the prefixes site laptop owns", "u/alice"])
    fails("register-collection", repo, "HSC/raw/all", match="outside the prefixes")
    fails("register-collection", repo, "u/alicee", match="outside the prefixes")
    with Butler(repo, run="u/alice/run") as b:
        insert_hsc_records(b.registry)
        b.registry.register_dataset_type("bias", ["detector"], "NumpyArray")
        b.put(np.zeros(2), "bias", instrument="HSC", detector=0)
        with pytest.raises(CollectionError, match="outside the prefixes"):
            b.put(np.zeros(2), "bias", run="HSC/calib/gen/x", instrument="HSC", detector=0)
        names = {c.name for c in b.registry.collections.query()}
    assert names == {"u/alice/best", "u/alice/run"}


def test_site_init_records_what_the_site_owns(tmp_path):
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "IN2P3.yaml").write_text(yaml.safe_dump({
        "name": "IN2P3", "registry": "sqlite:///../IN2P3/registry.sqlite3",
        "root": "../IN2P3", "owns": ["HSC/runs-in2p3", "u/in2p3"]}))
    fed("site", "init", "IN2P3", "--sites", sites)
    repo = tmp_path / "IN2P3"
    fed("register-collection", repo, "u/in2p3/tags")
    fails("register-collection", repo, "HSC/raw/all", match="owns (HSC/runs-in2p3, u/in2p3)")


def test_a_destination_refuses_collections_born_outside_their_owners_prefixes(federation):
    populate_ncsa(federation)
    with federation.butler("laptop") as b:  # a repository that did not check (older tools)
        insert_hsc_records(b.registry)
        b.registry.register_dataset_type("bias", ["detector"], "NumpyArray")
        for run in ("u/alice/mine", "u/bob/evil"):
            b.registry.collections.register(run, CollectionType.RUN)
            b.put(np.zeros(2), "bias", run=run, instrument="HSC", detector=1)
    with pytest.raises(SyncConflictError) as info:
        federation.sync("laptop", "NCSA")
    (conflict,) = [c for c in info.value.report.conflicts if c.kind == "collection"]
    assert conflict.subject == "u/bob/evil" and "does not own its prefix" in conflict.reason
    report = federation.sync("laptop", "NCSA", on_conflict="skip")
    with federation.butler("NCSA") as b:
        assert b.registry.collections.exists("u/alice/mine")
        assert not b.registry.collections.exists("u/bob/evil")
    assert report.conflicts
