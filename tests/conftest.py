"""Shared fixtures: every repository test runs on SQLite and on a real PostgreSQL.

PostgreSQL tests use a fresh schema per test on the server named by
``FED_TEST_POSTGRES_URL`` (default: the local server on 127.0.0.1:5432).
When the server cannot be reached they fail under CI (``CI`` set) and are
skipped elsewhere.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from federation.butler import Butler

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


@pytest.fixture
def pg_url(pg_engine):
    """A URL to an empty schema of its own on the PostgreSQL server."""
    schema = f"fed_test_{uuid.uuid4().hex[:12]}"
    with pg_engine.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.engine.make_url(PG_URL).update_query_dict(
        {"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with pg_engine.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request) -> str | None:
    """None for the embedded SQLite default, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_url")


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
