"""Personal overlays (the seeds' MyDB registries): a repository layered in SQL over a
release's registry, on SQLite (the release ATTACHed read-only) and PostgreSQL (a schema
beside the release's). Queries, gets and chain searches see both; writes land in the
overlay only; the release's registry and files stay as they were.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import fresh_schema, repo_state
from test_cli import fails, fed

from federation.butler import Butler
from federation.errors import CollectionError, ConfigError, ConflictError
from federation.model import DatasetRef
from federation.operations.overlay import create
from federation.registry.overlay_sql import ID_BASE
from federation.timespan import Timespan

RAW = {"instrument": "HSC", "exposure": 903334, "detector": 1}


@pytest.fixture
def overlay_db(backend, request):
    """Where the overlay's registry goes: None (SQLite, inside the overlay) or a schema of
    the release's PostgreSQL database, dropped afterwards."""
    if backend == "sqlite":
        yield None
        return
    with fresh_schema(request.getfixturevalue("pg_engine")) as url:
        yield url


@pytest.fixture
def overlay(ncsa, overlay_db, tmp_path) -> Path:
    """Alice's overlay over site NCSA (filled by populate_ncsa)."""
    made = create(tmp_path / "alice", "NCSA", db=overlay_db, site="alice", owns=["u/alice"],
                  sites_dir=ncsa.sites_dir)
    assert made.owns == ("u/alice",) and made.source.site == "NCSA"
    return made.root


def snapshot(fed_) -> tuple[dict, dict[str, tuple[int, int]]]:
    """The release site's registry state and every file under its root (size, mtime)."""
    root = fed_.root / "repos" / "NCSA"
    with fed_.butler("NCSA") as butler:
        state = repo_state(butler)
    files = {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
             for p in root.rglob("*") if p.is_file() and "registry.sqlite3" not in p.name}
    return state, files


def test_an_overlay_sees_the_release_and_writes_only_its_own(ncsa, overlay):
    before = snapshot(ncsa)
    with Butler(overlay, run="u/alice/run") as b:
        assert len(b.query_datasets("raw", "HSC/raw/all")) == 16
        assert len(b.query_datasets("raw", "HSC/raw/good")) == 4
        released = b.get("raw", RAW, collections="HSC/defaults")
        assert list(released) == [1] * 8
        # The release's file is read where it is: nothing was copied into the overlay.
        uri = b.get_uri("raw", RAW, collections="HSC/defaults")
        assert uri.startswith((ncsa.root / "repos" / "NCSA").as_uri())
        mine = b.put(np.arange(3), "raw", RAW)
        b.registry.register_collection("u/alice/defaults", "CHAINED")
        b.registry.collections.set_chain("u/alice/defaults", ["u/alice/run", "HSC/defaults"])
        chain = "u/alice/defaults"
        assert b.find_dataset("raw", RAW, collections=chain) == mine
        assert list(b.get("raw", RAW, collections=chain)) == [0, 1, 2]
        other = dict(RAW, exposure=903335)
        assert list(b.get("raw", other, collections=chain)) == [11] * 8
        found = b.query_datasets("raw", chain)
        assert len(found) == 16 and sum(r.run == "u/alice/run" for r in found) == 1
        assert len(b.query_datasets("raw", chain, find_first=False)) == 17
        assert len(b.query_datasets("raw", chain, where="detector = 1")) == 4
        bias = b.get("bias", detector=2, exposure=903334, instrument="HSC", collections=chain)
        assert list(bias) == [2.0] * 4
        # Its own collections are numbered far above the release's.
        assert b.registry.collections.lookup("u/alice/run")[0] > ID_BASE
        assert b.registry.collections.lookup("HSC/raw/all")[0] < ID_BASE
        b.registry.register_collection("u/alice/tagged", "TAGGED")
        b.registry.datasets.associate("u/alice/tagged", [mine, found[5]])
        assert len(b.query_datasets("raw", "u/alice/tagged")) == 2
        b.registry.register_collection("u/alice/calib", "CALIBRATION")
        biases = b.query_datasets("bias", "HSC/calib/gen/DM-1")
        b.registry.datasets.certify("u/alice/calib", biases,
                                    Timespan.from_values("2014-01-01", "2015-01-01"))
        assert len(b.registry.datasets.certifications("u/alice/calib")) == 4
        b.remove_collection("u/alice/calib")
        b.remove_collection("u/alice/tagged")
    own_files = [p for p in overlay.rglob("*") if p.is_file() and "registry" not in p.name
                 and p.name != "federation.yaml"]
    assert own_files and all("u/alice/run" in str(p) for p in own_files)
    assert snapshot(ncsa) == before  # registry state and files of the release untouched
    with ncsa.butler("NCSA") as release:
        assert not release.registry.collections.exists("u/alice/run")


def test_writes_touching_release_rows_are_refused(ncsa, overlay):
    before = snapshot(ncsa)
    with Butler(overlay, run="u/alice/run") as b:
        refs = b.query_datasets("raw", "HSC/raw/all")
        with pytest.raises(CollectionError, match="owned by site 'NCSA'"):
            b.remove(refs[:1])
        with pytest.raises(CollectionError, match="owned by site 'NCSA'"):
            b.remove_runs(["HSC/raw/all"], unlink_chains=True)
        with pytest.raises(CollectionError, match="owned by site 'NCSA'"):
            b.registry.collections.set_chain("HSC/defaults", ["HSC/raw/all"])
        with pytest.raises(CollectionError, match="owned by site 'NCSA'"):
            b.disassociate("HSC/raw/good", refs)
        with pytest.raises(CollectionError, match="outside the prefixes"):
            b.registry.register_run("HSC/raw/mine")
        # Below the registry's own checks, the database itself refuses.
        t = b.registry.db.tables
        for statement in (sa.delete(t.dataset).where(t.dataset.c.id == refs[0].id),
                          sa.update(t.collection).where(t.collection.c.name == "HSC/defaults")
                          .values(doc="mine"),
                          sa.delete(t.dimensions["detector"])):
            with pytest.raises(CollectionError, match="read-only release"):
                with b.registry.transaction() as conn:
                    conn.execute(statement)
        # A release's UUID cannot be taken again, nor a release's collection name.
        again = DatasetRef(refs[0].id, refs[0].dataset_type, refs[0].data_id, "u/alice/run")
        b.registry.register_run("u/alice/run")
        with pytest.raises(ConflictError, match="already exists"):
            b.registry.datasets.insert("u/alice/run", [(again, None)])
        with pytest.raises(b.registry.db.integrity_errors):
            with b.registry.transaction() as conn:
                conn.execute(sa.insert(t.collection).values(
                    name="HSC/raw/all", type="RUN", owner_site="alice"))
    assert snapshot(ncsa) == before


def test_an_overlay_over_a_release_by_name_from_the_cli(ncsa, overlay_db, tmp_path):
    from federation.operations.release import create as freeze

    freeze(ncsa.root / "repos" / "NCSA", "DR1", ["HSC/defaults"])
    target = tmp_path / "bob"
    db = ["--db", overlay_db] if overlay_db else []
    out = fed("create", target, "--over", "DR1", "--site", "bob", "--owns", "u/bob",
              "--sites", ncsa.sites_dir, *db).stdout
    assert "over release DR1 at site NCSA" in out and "u/bob" in out
    listed = fed("query-datasets", target, "raw", "-c", "DR1", "--where", "detector = 2").stdout
    assert listed.count("HSC/raw/all") == 4
    fails("create", tmp_path / "x", "--over", "DR9", "--sites", ncsa.sites_dir,
          match="neither a site")
    fails("create", tmp_path / "x", "--over", "NCSA", "--site", "NCSA", "--sites",
          ncsa.sites_dir, match="site name of its own")
    fails("create", tmp_path / "x", "--over", "NCSA", "--owns", "HSC/mine", "--sites",
          ncsa.sites_dir, match="under u/")
    fails("create", tmp_path / "x", "--over", "NCSA:DR9", "--sites", ncsa.sites_dir,
          match="holds no release 'DR9'")
    assert not (tmp_path / "x").exists()
    # A release's datasets are read-only through the overlay, by name too.
    with Butler(target) as b:
        with pytest.raises(CollectionError, match="release 'DR1'"):
            b.disassociate("DR1/found", b.query_datasets("raw", "DR1/found"))


def test_an_unreachable_release_is_one_line(ncsa, overlay, backend):
    if backend == "sqlite":
        registry = ncsa.root / "repos" / "NCSA" / "registry.sqlite3"
        registry.rename(registry.with_suffix(".away"))
        fails("query-datasets", overlay, "raw", "-c", "HSC/raw/all",
              match=["cannot reach the release registry", "site NCSA", "no database file"])
        with pytest.raises(ConfigError, match="cannot reach the release registry"):
            Butler(overlay)
        registry.with_suffix(".away").rename(registry)
    else:  # the overlay lives in the release's database: the server down is one error
        config = overlay / "federation.yaml"
        text = config.read_text()
        config.write_text(text.replace("127.0.0.1:5432", "127.0.0.1:9"))
        fails("query-datasets", overlay, "raw", "-c", "HSC/raw/all",
              match="cannot open registry database")
        config.write_text(text)
    with Butler(overlay) as b:
        assert len(b.query_datasets("raw", "HSC/raw/all")) == 16


def test_a_rebuilt_release_is_refused(ncsa, overlay, backend):
    with ncsa.butler("NCSA") as release:
        t = release.registry.db.tables
        with release.registry.transaction() as conn:
            conn.execute(sa.update(t.meta).where(t.meta.c.key == "instance").values(value="x"))
    with pytest.raises(ConfigError, match="was rebuilt"):
        Butler(overlay)


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from federation.butler import Butler
    repo, run = sys.argv[1], sys.argv[2]
    for detector in range(4):
        for exposure in (903334, 903335, 903336):
            with Butler(repo, run=run) as b:
                b.put(np.arange(detector + 1), "raw", instrument="HSC", exposure=exposure,
                      detector=detector)
""")


def test_two_processes_write_to_an_overlay_at_once(ncsa, overlay):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(overlay), run], env=env,
                                stderr=subprocess.PIPE, text=True)
               for run in ("u/alice/a", "u/alice/b")]
    for writer in writers:
        assert writer.wait(timeout=300) == 0, writer.stderr.read()
    with Butler(overlay) as b:
        assert len(b.query_datasets("raw", ["u/alice/a"])) == 12
        assert len(b.query_datasets("raw", ["u/alice/b"])) == 12
        assert len(b.query_datasets("raw", ["u/alice/b", "HSC/raw/all"])) == 16
        for ref in b.query_datasets("raw", "u/alice/a"):
            assert len(b.get(ref)) == ref.data_id["detector"] + 1


def test_reads_through_an_overlay_match_the_release_at_scale(tmp_path, db_url, overlay_db):
    """The benchmark's reads (tools/bench_overlay.py), at a smaller size: through the
    overlay they find what they find on the release itself."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from bench_overlay import build_release, fill_overlay, reads

    n = 2000
    release = build_release(tmp_path, db_url, n)
    made = create(tmp_path / "alice", "NCSA", db=overlay_db, site="alice", owns=["u/alice"],
                  sites_dir=tmp_path / "sites")
    fill_overlay(made.root)
    with Butler(release) as on_release, Butler(made.root) as on_overlay:
        base, same = reads(on_release, "HSC/defaults", n), reads(on_overlay, "HSC/defaults", n)
        mine = reads(on_overlay, "u/alice/defaults", n)
        for name, action in base.items():
            assert same[name]() == action(), name
        assert mine["query chain, where detector = 42"]() == n // 100
        found = on_overlay.query_datasets("raw", "u/alice/defaults", where="detector = 42")
        assert sum(r.run == "u/alice/run" for r in found) == 1


@pytest.mark.postgres
def test_a_postgres_overlay_is_a_schema_of_the_release_database(tmp_path, pg_engine, pg_url):
    """Without --db the overlay gets a new schema beside the release's; another database
    is refused (views cannot reach it)."""
    from conftest import Federation, populate_ncsa

    from federation.config import RepoConfig
    from federation.registry.overlay import search_path_schema

    fed_ = Federation(tmp_path / "fed", {"NCSA": pg_url})
    populate_ncsa(fed_)
    made = create(tmp_path / "alice", "NCSA", site="alice", sites_dir=fed_.sites_dir)
    schema = search_path_schema(RepoConfig.load(made.root).db_url)
    try:
        assert schema.startswith("fed_overlay_") and made.owns[0].startswith("u/")
        with Butler(made.root) as b:
            assert len(b.query_datasets("raw", "HSC/raw/all")) == 16
        other = sa.engine.make_url(pg_url).set(database="template1").render_as_string(
            hide_password=False)
        with pytest.raises(ConfigError, match="same database"):
            create(tmp_path / "bob", "NCSA", db=other, site="bob", sites_dir=fed_.sites_dir)
        assert not (tmp_path / "bob").exists()
    finally:
        with pg_engine.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
