"""Benchmark: a personal overlay layered over a release of N datasets (default 100,000).

Builds a release site with the registry's bulk APIs (N raws in ``HSC/raw/all``, a tag of a
tenth of them, 100 certified biases, the chains ``HSC/calib`` and ``HSC/defaults``),
then times, on SQLite or PostgreSQL (or both):

- creating an overlay over it (``fed create REPO --over SITE`` as a library call; the
  median of several creations);
- typical reads through the overlay and the same reads on the release itself: a
  query by type + collection with a `where` on a dimension (a RUN, a TAGGED collection
  and a chain), lookups of one dataset by data ID (in a RUN, through a chain, and a
  calibration through a chain), and a ``get`` through a chain. Through the overlay the
  chain is the user's ``u/alice/defaults`` = [``u/alice/run`` (100 datasets of the
  user), ``HSC/defaults``] and, to isolate the views' cost, the release's own
  ``HSC/defaults``.

Prints medians of wall and CPU seconds of R repeats and the overlay/release ratios.

    .venv/bin/python tools/bench_overlay.py [--n 100000] [--backend sqlite|postgresql|both]
        [--repeats 7] [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    DETECTORS,
    FIRST_EXPOSURE,
    cpu_seconds,
    dimension_records,
    log,
    print_rows,
)

PG_URL = os.environ.get("FED_TEST_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
CHUNK = 20_000
HEADER = ("backend", "operation", "release wall", "release CPU", "overlay wall", "overlay CPU",
          "wall ratio", "CPU ratio", "same (wall)")


def build_release(root: Path, db: str | None, n: int) -> Path:
    """A release site ``NCSA`` with N raws (records only: their files are never read), 100
    biases with real files, a tag, a calibration collection and the usual chains."""
    import yaml

    from federation.butler import Butler
    from federation.model import DatasetRef, StoredFile, make_dataset_id
    from federation.timespan import Timespan

    repo = root / "repos" / "NCSA"
    Butler.create(repo, db=db, site="NCSA")
    (root / "sites").mkdir(parents=True, exist_ok=True)
    (root / "sites" / "NCSA.yaml").write_text(yaml.safe_dump({
        "name": "NCSA", "registry": db or f"sqlite:///{repo / 'registry.sqlite3'}",
        "root": str(repo), "transport": "local", "owns": ["HSC"]}))
    with Butler(repo, run="HSC/calib/gen/DM-1") as butler:
        reg = butler.registry
        for dimension, records in dimension_records(n).items():
            reg.insert_dimension_records(dimension, records)
        reg.register_dataset_type("raw", ["exposure", "detector"], "Bytes")
        reg.register_dataset_type("bias", ["detector"], "Bytes")
        raw = reg.get_dataset_type("raw")
        reg.register_run("HSC/raw/all")
        tagged = []
        for start in range(0, n, CHUNK):
            entries, keys = [], []
            for i in range(start, min(n, start + CHUNK)):
                exposure, detector = FIRST_EXPOSURE + i // DETECTORS, i % DETECTORS
                data_id, key = reg.expand_data_id(raw, {"instrument": "HSC",
                                                        "exposure": exposure,
                                                        "detector": detector})
                ref = DatasetRef(make_dataset_id("random", "raw", {}, None), raw, data_id,
                                 "HSC/raw/all")
                entries.append((ref, StoredFile(f"HSC/raw/all/raw/{exposure}/{detector}.dat",
                                                "bytes", 1024, "0" * 32)))
                keys.append(key)
                if i % 10 == 0:
                    tagged.append(ref)
            reg.datasets.insert("HSC/raw/all", entries, keys=keys)
        reg.register_collection("HSC/raw/good", "TAGGED")
        reg.datasets.associate("HSC/raw/good", tagged)
        biases = [butler.put(f"bias {d}".encode(), "bias", instrument="HSC", detector=d)
                  for d in range(DETECTORS)]
        reg.register_collection("HSC/calib/DM-1", "CALIBRATION")
        reg.datasets.certify("HSC/calib/DM-1", biases,
                             Timespan.from_values("2013-01-01", "2014-01-01"))
        reg.register_collection("HSC/calib", "CHAINED")
        reg.collections.set_chain("HSC/calib", ["HSC/calib/DM-1"])
        reg.register_collection("HSC/defaults", "CHAINED")
        reg.collections.set_chain("HSC/defaults", ["HSC/raw/all", "HSC/calib"])
    return repo


def fill_overlay(overlay: Path) -> None:
    """The user's own work: 100 raws re-made in ``u/alice/run`` and the chain
    ``u/alice/defaults`` = [u/alice/run, HSC/defaults]."""
    from federation.butler import Butler

    with Butler(overlay, run="u/alice/run") as butler:
        for detector in range(DETECTORS):
            butler.put(b"mine", "raw", instrument="HSC", exposure=FIRST_EXPOSURE + 1,
                       detector=detector)
        butler.registry.register_collection("u/alice/defaults", "CHAINED")
        butler.registry.collections.set_chain("u/alice/defaults",
                                              ["u/alice/run", "HSC/defaults"])


def measure(action: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Median wall and CPU seconds of ``action`` over ``repeats`` runs (after one
    warm-up run), and its last result."""
    result = action()
    walls, cpus = [], []
    for _ in range(repeats):
        cpu, start = cpu_seconds(), time.perf_counter()
        result = action()
        walls.append(time.perf_counter() - start)
        cpus.append(cpu_seconds() - cpu)
    return statistics.median(walls), statistics.median(cpus), result


def reads(butler, chain: str, n: int) -> dict[str, Callable[[], Any]]:
    """The reads timed, each returning something comparable between the two sides."""
    exposures = [FIRST_EXPOSURE + (i * 7919) % (n // DETECTORS) for i in range(100)]
    night = {"instrument": "HSC", "exposure": FIRST_EXPOSURE + 2}

    def find_many(collections: str) -> int:
        return sum(butler.find_dataset("raw", instrument="HSC", exposure=e, detector=42,
                                       collections=collections) is not None for e in exposures)

    return {
        "query RUN, where detector = 42": lambda: len(butler.query_datasets(
            "raw", "HSC/raw/all", where="detector = 42")),
        "query TAGGED, where detector = 40": lambda: len(butler.query_datasets(
            "raw", "HSC/raw/good", where="detector = 40")),
        "query chain, where detector = 42": lambda: len(butler.query_datasets(
            "raw", chain, where="detector = 42")),
        "query chain, where exposure.physical_filter": lambda: len(butler.query_datasets(
            "raw", chain, where="exposure.physical_filter = 'HSC-R' AND detector < 10")),
        "find x100 by data ID in RUN": lambda: find_many("HSC/raw/all"),
        "find x100 by data ID via chain": lambda: find_many(chain),
        "find bias via chain (calibration)": lambda: str(butler.find_dataset(
            "bias", detector=7, collections=chain, **night).id) is not None,
        "get bias via chain": lambda: butler.get("bias", detector=7, collections=chain,
                                                  **night),
    }


def run_backend(backend: str, n: int, repeats: int, workdir: Path, pg_url: str
                ) -> list[tuple]:
    from federation.butler import Butler
    from federation.operations.overlay import create

    root = Path(tempfile.mkdtemp(prefix=f"overlay-{backend}-", dir=workdir))
    schema = None
    made: list[Path] = []
    try:
        db = None
        if backend == "postgresql":
            from bench_registry import make_pg_schema

            schema, db = make_pg_schema(pg_url)
        log(f"[{backend}] building a release of {n:,} datasets ...")
        start = time.perf_counter()
        release = build_release(root, db, n)
        if db is not None:
            analyze(db)  # as autovacuum would soon: fresh tables have no statistics
        log(f"[{backend}]   {time.perf_counter() - start:.1f} s")
        rows: list[tuple] = []

        def create_one() -> None:
            target = root / f"alice-{len(made)}"
            create(target, "NCSA", site="alice", owns=["u/alice"], sites_dir=root / "sites")
            made.append(target)

        wall, cpu, _ = measure(create_one, repeats)
        rows.append((backend, "create overlay (library call)", "", "", f"{wall:.3f}",
                     f"{cpu:.3f}", "", "", ""))
        fed = str(Path(sys.executable).with_name("fed"))

        def create_by_cli() -> None:
            target = root / f"alice-{len(made)}"
            subprocess.run([fed, "create", str(target), "--over", "NCSA", "--site", "alice",
                            "--sites", str(root / "sites")], check=True, capture_output=True)
            made.append(target)

        wall, cpu, _ = measure(create_by_cli, min(repeats, 3))
        rows.append((backend, "create overlay (fed create --over, whole process)", "", "",
                     f"{wall:.3f}", f"{cpu:.3f}", "", "", ""))
        overlay = made[0]
        fill_overlay(overlay)
        if db is not None:
            from federation.config import RepoConfig

            analyze(RepoConfig.load(overlay).db_url)
        with Butler(release) as on_release, Butler(overlay) as on_overlay:
            base = reads(on_release, "HSC/defaults", n)
            layered = reads(on_overlay, "u/alice/defaults", n)
            same = reads(on_overlay, "HSC/defaults", n)
            for name in base:
                r_wall, r_cpu, r_result = measure(base[name], repeats)
                o_wall, o_cpu, o_result = measure(layered[name], repeats)
                s_wall, _, s_result = measure(same[name], repeats)
                if s_result != r_result and not isinstance(r_result, bytes):
                    raise SystemExit(f"{name}: the overlay found {s_result}, the release "
                                     f"{r_result}")
                rows.append((backend, name, f"{r_wall:.4f}", f"{r_cpu:.4f}", f"{o_wall:.4f}",
                             f"{o_cpu:.4f}", f"{o_wall / r_wall:.2f}x",
                             f"{o_cpu / r_cpu:.2f}x" if r_cpu else "-",
                             f"{s_wall / r_wall:.2f}x"))
        return rows
    finally:
        if schema is not None:
            from bench_registry import drop_pg_schema

            _drop_overlays(pg_url, made)
            drop_pg_schema(pg_url, schema)
        shutil.rmtree(root, ignore_errors=True)


def analyze(url: str) -> None:
    """PostgreSQL: gather the planner's statistics of every table of the URL's schema."""
    import sqlalchemy as sa

    from federation.registry.database import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            for name in sa.inspect(conn).get_table_names():
                conn.exec_driver_sql(f'ANALYZE "{name}"')
            conn.commit()
    finally:
        engine.dispose()


def _drop_overlays(pg_url: str, overlays: list[Path]) -> None:
    """The schemas of the overlays the benchmark made beside the release's."""
    import sqlalchemy as sa

    from federation.config import RepoConfig
    from federation.registry.overlay import search_path_schema

    engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for overlay in overlays:
                name = search_path_schema(RepoConfig.load(overlay).db_url)
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="datasets in the release")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    args = parser.parse_args()
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    rows = []
    for backend in backends:
        found = run_backend(backend, args.n, args.repeats, Path(args.workdir), args.pg_url)
        print_rows(f"[{backend}]", HEADER, found)
        rows += found
    print_rows(f"overlay over a release of {args.n:,} datasets: medians of {args.repeats} "
               "runs (seconds); ratios = overlay (user's chain) / release; same = overlay "
               "running the release's own query / release (CPU: this process's only; "
               "PostgreSQL's work is in the wall time)",
               HEADER, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
