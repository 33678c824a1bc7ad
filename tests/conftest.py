"""Shared fixtures: every repository test runs on SQLite and on a real PostgreSQL.

PostgreSQL tests use a fresh schema per test on the server named by
``FED_TEST_POSTGRES_URL`` (default: the local server on 127.0.0.1:5432).
When the server cannot be reached they fail under CI (``CI`` set) and are
skipped elsewhere.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from federation.butler import Butler

pytest_plugins = ["servers"]  # real sshd and nginx, for the SFTP and HTTP transports

PG_URL = os.environ.get(
    "FED_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")

HSC_RECORDS = {
    "instrument": [{"instrument": "HSC", "detector_max": 112, "visit_max": 21474800,
                    "class_name": "lsst.obs.subaru.HyperSuprimeCam"}],
    "physical_filter": [
        {"instrument": "HSC", "physical_filter": "HSC-R", "band": "r"},
        {"instrument": "HSC", "physical_filter": "HSC-I", "band": "i"},
    ],
    "day_obs": [{"instrument": "HSC", "day_obs": 20130617,
                 "timespan_begin": "2013-06-17T12:00:00", "timespan_end": "2013-06-18T12:00:00"}],
    "detector": [{"instrument": "HSC", "detector": d, "full_name": f"1_{d:02d}",
                  "purpose": "SCIENCE"} for d in range(4)],
    "exposure": [
        {"instrument": "HSC", "exposure": 903334 + i, "physical_filter": f,
         "day_obs": 20130617, "obs_id": f"HSCA{903334 + i}", "exposure_time": 30.0,
         "observation_type": "science",
         "timespan_begin": f"2013-06-17T13:{i:02d}:00",
         "timespan_end": f"2013-06-17T13:{i:02d}:30"}
        for i, f in enumerate(["HSC-R", "HSC-R", "HSC-R", "HSC-I"])
    ],
    "visit": [
        {"instrument": "HSC", "visit": 903334 + i, "physical_filter": f, "day_obs": 20130617,
         "timespan_begin": f"2013-06-17T13:{i:02d}:00",
         "timespan_end": f"2013-06-17T13:{i:02d}:30"}
        for i, f in enumerate(["HSC-R", "HSC-R", "HSC-R", "HSC-I"])
    ],
}


def insert_hsc_records(registry) -> None:
    """A small HSC-like set of dimension records: 4 exposures/visits x 4 detectors."""
    for dimension, records in HSC_RECORDS.items():
        registry.insert_dimension_records(dimension, records)


@pytest.fixture(autouse=True)
def no_ambient_policies(monkeypatch, tmp_path_factory) -> None:
    """Commands that read ./policies by default (fed drop's min_copies) do not see the
    project's shipped examples: a test names the policies it means."""
    monkeypatch.setenv("FED_POLICIES", str(tmp_path_factory.getbasetemp() / "no-policies"))


@pytest.fixture(scope="session")
def pg_engine():
    engine = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        message = f"PostgreSQL not reachable at {PG_URL}: {str(exc).splitlines()[0]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    yield engine
    engine.dispose()


@contextmanager
def fresh_schema(pg_engine) -> Iterator[str]:
    """A URL to a new, empty schema on the PostgreSQL server, dropped afterwards."""
    schema = f"fed_test_{uuid.uuid4().hex[:12]}"
    with pg_engine.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.engine.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with pg_engine.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def pg_url(pg_engine):
    """A URL to an empty schema of its own on the PostgreSQL server."""
    with fresh_schema(pg_engine) as url:
        yield url


@pytest.fixture
def other_db_url(request, db_url):
    """A second, independent database of the same kind as ``db_url`` (None: SQLite)."""
    if db_url is None:
        yield None
        return
    with fresh_schema(request.getfixturevalue("pg_engine")) as url:
        yield url


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture
def backend(request) -> str:
    """The database a repository test runs on: the embedded SQLite, or a real PostgreSQL
    (every test that uses it runs on both; see :func:`pytest_generate_tests`)."""
    return request.param


@pytest.fixture
def db_url(backend: str, request) -> str | None:
    """None for the embedded SQLite default, or a URL to a fresh PostgreSQL schema."""
    return request.getfixturevalue("pg_url") if backend == "postgresql" else None


@pytest.fixture
def reach(request) -> str:
    """How a sync reaches its source: ``local`` (a repository on this machine), or, in
    modules that list ``REACHES``, also ``sftp`` and ``http`` (the source publishes its
    journal and is pulled from over a real sshd or nginx on loopback)."""
    return getattr(request, "param", "local")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests that use ``backend`` run on SQLite and PostgreSQL. A module with
    ``REACHES = ("local", "sftp", "http")`` runs them on both backends with local sources,
    and on SQLite through each network transport (the database and the transport are
    independent)."""
    if "backend" not in metafunc.fixturenames:
        return
    given = {name for mark in metafunc.definition.iter_markers("parametrize")
             for name in ([mark.args[0]] if isinstance(mark.args[0], str) else mark.args[0])}
    if "db_url" in given or "backend" in given:
        return
    reaches = getattr(metafunc.module, "REACHES", None)
    if not reaches or "reach" not in metafunc.fixturenames or "reach" in given:
        metafunc.parametrize("backend", BACKENDS, indirect=True)
        return
    cases = [pytest.param("sqlite", "local", id="sqlite-local"),
             pytest.param("postgresql", "local", id="postgresql-local",
                          marks=pytest.mark.postgres)] if "local" in reaches else []
    cases += [pytest.param("sqlite", r, id=f"sqlite-{r}") for r in reaches if r != "local"]
    metafunc.parametrize(("backend", "reach"), cases, indirect=True)


@pytest.fixture
def repo(tmp_path: Path, db_url: str | None) -> Path:
    """An empty repository of site NCSA, on SQLite and on PostgreSQL."""
    return Butler.create(tmp_path / "repo", db=db_url, site="NCSA")


@pytest.fixture
def butler(repo: Path):
    """A Butler on a repository holding the HSC dimension records, writing to HSC/raw/all."""
    with Butler(repo, run="HSC/raw/all") as b:
        insert_hsc_records(b.registry)
        yield b


# -- federations of sites ------------------------------------------------------------


class Federation:
    """Site definitions for NCSA, IN2P3, Princeton and a laptop, with their repositories.

    NCSA and IN2P3 use the parametrized database (SQLite or PostgreSQL);
    Princeton and the laptop use SQLite, as in the shipped examples.

    With ``transport`` sftp or http, every sync reads its source the way another
    machine would: the source publishes its journal to its outbox, and the sync
    pulls through a second definition of the source that reaches it over the
    network (``remote_sites/``), served by a real sshd or nginx on loopback.
    """

    OWNS = {"NCSA": ["HSC/raw", "HSC/calib", "HSC/runs", "HSC/defaults", "refcats", "skymaps"],
            "IN2P3": ["HSC/runs-in2p3", "u/in2p3"], "Princeton": ["u/princeton"],
            "laptop": ["u/alice"]}

    def __init__(self, root: Path, urls: dict[str, str | None], transport: str = "local",
                 server=None) -> None:
        import yaml

        self.root = root
        self.transport = transport
        self.sites_dir = root / "sites"
        self.sites_dir.mkdir(parents=True)
        self.remote_dir = root / "remote_sites"
        self.remote_dir.mkdir()
        for name, owns in self.OWNS.items():
            repo = root / "repos" / name
            url = urls.get(name) or f"sqlite:///{repo / 'registry.sqlite3'}"
            (self.sites_dir / f"{name}.yaml").write_text(yaml.safe_dump({
                "name": name, "registry": url, "root": str(repo), "transport": "local",
                "owns": owns, "keep_deleted": False}))
            Butler.create(repo, db=urls.get(name), site=name)
            if transport != "local":
                (self.remote_dir / f"{name}.yaml").write_text(yaml.safe_dump({
                    "name": name, "transport": transport, "owns": owns,
                    transport: remote_block(transport, server, repo)}))

    def site(self, name: str):
        from federation.sites import load_site

        return load_site(name, self.sites_dir)

    def sites(self):
        from federation.sites import list_sites

        return list_sites(self.sites_dir)

    def butler(self, name: str, **kwargs) -> Butler:
        return Butler(self.root / "repos" / name, **kwargs)

    def remote_site(self, name: str):
        """The definition another machine uses to reach site ``name`` over the network."""
        from federation.sites import load_site

        return load_site(name, self.remote_dir)

    def sync(self, source: str, destination: str, **options):
        """Run a sync through the library (options: selection fields and SyncOptions).

        Through a network transport, the source first publishes what is new.
        """
        from federation.operations.sync import sync_sites as sync
        from federation.sync.options import SyncOptions
        from federation.sync.remote.outbox import publish
        from federation.sync.selection import Selection

        selection = Selection.make(options.pop("collections", None),
                                   options.pop("dataset_types", None),
                                   options.pop("where", None), options.pop("bind", None),
                                   options.pop("files", True))
        src = self.site(source)
        if self.transport != "local":
            publish(src)
            src = self.remote_site(source)
        return sync(src, self.site(destination), SyncOptions(selection, **options),
                    sites=self.sites())


def remote_block(transport: str, server, repo: Path) -> dict:
    """The ``sftp:``/``http:`` block reaching ``repo`` through a test server."""
    if transport == "sftp":
        return {"host": server.host, "port": server.port, "user": server.user,
                "key_file": str(server.user_key), "known_hosts": str(server.known_hosts),
                "root": str(repo), "retries": 3, "retry_deadline": 10}
    return {"url": server.url_for(repo), "retries": 3, "retry_deadline": 10}


def populate_ncsa(fed: Federation) -> None:
    """NCSA: raws (4 exposures x 4 detectors), a certified bias, a chain and a tag."""
    import numpy as np

    from federation.timespan import Timespan

    with fed.butler("NCSA", run="HSC/raw/all") as b:
        insert_hsc_records(b.registry)
        b.registry.register_dataset_type("raw", ["exposure", "detector"], "NumpyArray")
        b.registry.register_dataset_type("bias", ["detector"], "NumpyArray")
        for i, exposure in enumerate(range(903334, 903338)):
            for detector in range(4):
                b.put(np.full(8, 10 * i + detector), "raw", instrument="HSC",
                      exposure=exposure, detector=detector, id_mode="deterministic")
        for detector in range(4):
            b.put(np.full(4, float(detector)), "bias", run="HSC/calib/gen/DM-1",
                  instrument="HSC", detector=detector)
        reg = b.registry
        reg.register_collection("HSC/calib/DM-1", "CALIBRATION")
        reg.datasets.certify("HSC/calib/DM-1", b.query_datasets("bias", "HSC/calib/gen/DM-1"),
                             Timespan.from_values("2013-01-01", "2014-01-01"))
        reg.register_collection("HSC/calib", "CHAINED", doc="Recommended calibrations")
        reg.collections.set_chain("HSC/calib", ["HSC/calib/DM-1"])
        reg.register_collection("HSC/defaults", "CHAINED")
        reg.collections.set_chain("HSC/defaults", ["HSC/raw/all", "HSC/calib"])
        reg.register_collection("HSC/raw/good", "TAGGED")
        reg.datasets.associate("HSC/raw/good", b.query_datasets("raw", "HSC/raw/all",
                                                                where="detector = 1"))


def repo_state(butler: Butler) -> dict:
    """Everything a user could observe in a repository, site-independent, for comparisons."""
    reg = butler.registry
    state: dict = {"collections": {}, "datasets": {}, "tags": {}, "calibs": {}}
    for coll in reg.collections.query():
        state["collections"][coll.name] = (str(coll.type), coll.owner_site, coll.doc,
                                           tuple(coll.children))
        if str(coll.type) == "TAGGED":
            state["tags"][coll.name] = sorted(
                str(r.id) for r in butler.query_datasets(None, [coll.name]))
        if str(coll.type) == "CALIBRATION":
            state["calibs"][coll.name] = sorted(
                (str(r.id), ts.begin, ts.end) for r, ts in reg.datasets.certifications(coll.name))
    runs = [c.name for c in reg.collections.query() if str(c.type) == "RUN"]
    for ref in (butler.query_datasets(None, runs, find_first=False) if runs else []):
        found = reg.datasets.file(ref.id)
        checksum = found[0].checksum if found else None
        state["datasets"][str(ref.id)] = (ref.dataset_type.name, ref.run,
                                          tuple(sorted(ref.required_data_id.items())), checksum)
    state["types"] = sorted(str(t) for t in reg.dataset_types.query())
    return state


@pytest.fixture
def federation(tmp_path: Path, db_url: str | None, reach: str, request) -> Federation:
    """Four sites; NCSA and IN2P3 on the parametrized database."""
    urls = {"NCSA": db_url}
    if db_url is not None:
        urls["IN2P3"] = request.getfixturevalue("pg_url_2")
    server = {"local": None, "sftp": "sshd_server", "http": "web_server"}[reach]
    if server is not None:
        server = request.getfixturevalue(server)
    return Federation(tmp_path, urls, reach, server)


@pytest.fixture
def ncsa(federation: Federation) -> Federation:
    """The four sites, NCSA filled by :func:`populate_ncsa`."""
    populate_ncsa(federation)
    return federation


def write_policies(tmp_path: Path, **flows: dict) -> Path:
    """A policies directory with one policy, ``t``, of the given flows."""
    import yaml

    folder = tmp_path / "policies"
    folder.mkdir(exist_ok=True)
    (folder / "t.yaml").write_text(yaml.safe_dump(
        {"flows": [{"name": name} | fields for name, fields in flows.items()]}))
    return folder


@pytest.fixture
def pg_url_2(pg_engine):
    """A second PostgreSQL schema, for a second site on the same server."""
    with fresh_schema(pg_engine) as url:
        yield url
