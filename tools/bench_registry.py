"""Registry and butler benchmark on SQLite and PostgreSQL.

What is measured, per backend (each backend runs in a fresh subprocess of this
script, so its peak RSS is its own):

1. setup (not timed): a new repository (PostgreSQL: a fresh schema on the
   server, dropped at the end), dimension records for a synthetic HSC-like
   instrument (``ceil(N / 100)`` exposures x 100 detectors, so N datasets are
   N distinct data IDs) and the dataset types ``raw`` and ``raw_put``
   (exposure, detector; storage class Bytes).
2. files (not timed): N files of 1 KiB random bytes, written once by the
   parent and shared by all backends.
3. ingest: ``butler.ingest([FileDataset, ...], run="HSC/raw/all",
   transfer="direct")`` -- dataset and file records plus xxh3 checksums of the
   files already on disk. Reported as datasets/s. SQL statements issued during
   the ingest are counted with a ``before_cursor_execute`` listener on
   ``butler.registry.db.engine`` (an executemany counts once); the bulk path
   FAILs if it issues N/10 statements or more.
4. query: ``butler.query_datasets("raw", ["HSC/raw/all"])`` returning all N
   refs with their data IDs; rows/s.
5. puts: ``--puts`` calls of ``butler.put(b"x" * 1024, "raw_put", ...)`` for
   distinct data IDs into a new run; puts/s.
6. peak RSS: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at the end of the
   backend's subprocess.

Also measured: wall time of ``python -c "import federation"`` and of
``fed --help`` (median of 5 subprocess runs each, interpreter start included).

Targets: ingest >= 20000/s (SQLite), >= 10000/s (PostgreSQL); query >= 100000
rows/s; puts >= 1000/s on SQLite (PostgreSQL puts are reported only); import
and ``fed --help`` < 0.5 s. The exit status is 1 when any target is missed.

Run it from the repository root with the project's virtualenv::

    .venv/bin/python tools/bench_registry.py --n 100000
    .venv/bin/python tools/bench_registry.py --n 20000 --backends sqlite --json
    .venv/bin/python tools/bench_registry.py --n 20000 --profile ingest

``--workdir`` defaults to a temporary directory that is removed at the end; a
directory given explicitly is kept (its generated files are reused by later
runs), only the repositories made inside it are removed. ``--profile PHASE``
runs that phase under cProfile and prints the top functions to stderr (the
phase's timing then includes profiler overhead).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchlib import Profiled, dimension_records, log, print_rows

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DETECTORS = 100
FIRST_EXPOSURE = 903334
FILE_SIZE = 1024
RAW_RUN = "HSC/raw/all"
PUT_RUN = "bench/puts"
IN_ROOT_RUN = "bench/in_root"
IN_ROOT_FILES = 1000
NIGHT_NS = 1_371_470_400 * 10**9  # 2013-06-17T12:00:00Z
NIGHT = 20130617

TARGETS = {  # (backend or "*", phase) -> minimum rate
    ("sqlite", "ingest"): 20000.0,
    ("postgresql", "ingest"): 10000.0,
    ("*", "query"): 100000.0,
    ("sqlite", "puts"): 1000.0,
}
STARTUP_LIMIT_S = 0.5
UNITS = {"ingest": "datasets/s", "query": "rows/s", "puts": "puts/s"}


def data_ids(count: int) -> list[tuple[int, int]]:
    """(exposure, detector) pairs: exposure-major, 100 detectors per exposure."""
    return [(FIRST_EXPOSURE + i // DETECTORS, i % DETECTORS) for i in range(count)]


def file_path(files_dir: Path, exposure: int, detector: int) -> Path:
    return files_dir / str(exposure) / f"{detector:03d}.raw"


# -- parent ------------------------------------------------------------------------


def write_files(files_dir: Path, n: int) -> float:
    """Write N 1 KiB random files (skipped when a previous run left them complete)."""
    marker = files_dir / f".complete-{n}"
    if marker.exists():
        return 0.0
    start = time.perf_counter()
    made: set[Path] = set()
    for exposure, detector in data_ids(n):
        path = file_path(files_dir, exposure, detector)
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(os.urandom(FILE_SIZE))
    marker.touch()
    return time.perf_counter() - start


def median_wall(argv: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_child(args: argparse.Namespace, backend: str, workdir: Path, files_dir: Path
              ) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).absolute()), "--child", backend,
            "--n", str(args.n), "--puts", str(args.puts), "--pg-url", args.pg_url,
            "--workdir", str(workdir), "--files-dir", str(files_dir)]
    if args.profile:
        argv += ["--profile", args.profile]
    log(f"[{backend}] running in a subprocess ...")
    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"backend": backend, "error": f"child exited with status {proc.returncode}"}
    return json.loads(lines[-1])


def evaluate(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows (with PASS/FAIL) for one backend's child result."""
    backend = result["backend"]
    if "error" in result:
        return [{"backend": backend, "phase": "run", "seconds": None, "rate": None,
                 "unit": "", "target": "completes", "status": "FAIL",
                 "detail": result["error"]}]
    rows = []
    for phase in ("ingest", "query", "puts"):
        seconds, count = result[phase]["seconds"], result[phase]["count"]
        rate = count / seconds if seconds > 0 else math.inf
        target = TARGETS.get((backend, phase), TARGETS.get(("*", phase)))
        status = "report" if target is None else ("PASS" if rate >= target else "FAIL")
        rows.append({"backend": backend, "phase": phase, "seconds": seconds,
                     "cpu_seconds": result[phase]["cpu_seconds"], "rate": rate,
                     "unit": UNITS[phase], "count": count,
                     "target": "-" if target is None else f">= {target:,.0f}/s",
                     "status": status})
    statements, limit = result["ingest"]["statements"], result["n"] / 10
    rows.append({"backend": backend, "phase": "ingest SQL statements", "seconds": None,
                 "rate": None, "unit": "", "value": statements,
                 "executemany": result["ingest"]["executemany"],
                 "target": f"< {limit:,.0f} (N/10)",
                 "status": "PASS" if statements < limit else "FAIL"})
    inroot = result["ingest_in_root"]
    limit = inroot["count"] / 10
    rows.append({"backend": backend,
                 "phase": f"ingest SQL statements, {inroot['count']:,} files in repo root",
                 "seconds": None, "rate": None, "unit": "", "value": inroot["statements"],
                 "executemany": inroot["executemany"], "target": f"< {limit:,.0f} (N/10)",
                 "status": "PASS" if inroot["statements"] < limit else "FAIL"})
    floor = result["file_floor"]
    floor_rate = floor["count"] / floor["seconds"] if floor["seconds"] > 0 else math.inf
    rows.append({"backend": backend, "phase": "1 KiB file write+rename alone (floor)",
                 "seconds": floor["seconds"], "cpu_seconds": floor["cpu_seconds"],
                 "rate": floor_rate, "unit": "files/s", "count": floor["count"], "target": "-",
                 "status": "report"})
    put_rate = result["puts"]["count"] / result["puts"]["seconds"]
    rows.append({"backend": backend, "phase": "puts / file floor", "seconds": None,
                 "rate": None, "unit": "", "value": round(put_rate / floor_rate, 2),
                 "target": "-", "status": "report"})
    rows.append({"backend": backend, "phase": "SQL statements per put", "seconds": None,
                 "rate": None, "unit": "", "value": result["puts"]["statements_per_put"],
                 "target": "-", "status": "report"})
    rows.append({"backend": backend, "phase": "peak RSS (MiB)", "seconds": None, "rate": None,
                 "unit": "", "value": result["peak_rss_mib"], "target": "-",
                 "status": "report"})
    return rows


def file_floor(directory: Path, count: int, payload: bytes) -> dict[str, float]:
    """Time writing + renaming ``count`` files alone: the floor under any atomic put."""
    directory.mkdir(parents=True, exist_ok=True)
    with Timer() as timer:
        for i in range(count):
            temp = directory / f".f{i}.tmp"
            temp.write_bytes(payload)
            os.replace(temp, directory / f"f{i}")
    shutil.rmtree(directory, ignore_errors=True)
    return timer.stats(count)


def startup_rows(import_s: float, help_s: float, python_s: float) -> list[dict[str, Any]]:
    rows = []
    for phase, seconds in (("import federation", import_s), ("fed --help", help_s)):
        rows.append({"backend": "-", "phase": phase, "seconds": seconds, "rate": None,
                     "unit": "", "target": f"< {STARTUP_LIMIT_S} s",
                     "status": "PASS" if seconds < STARTUP_LIMIT_S else "FAIL"})
    rows.append({"backend": "-", "phase": "python -c pass (baseline)", "seconds": python_s,
                 "rate": None, "unit": "", "target": "-", "status": "report"})
    return rows


def print_table(rows: list[dict[str, Any]], n: int, puts: int, load: list[float]) -> None:
    header = ("backend", "phase", "seconds", "CPU s", "rate / value", "target", "result")
    body = []
    for row in rows:
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.3f}"
        cpu = "" if row.get("cpu_seconds") is None else f"{row['cpu_seconds']:.3f}"
        if row.get("rate") is not None:
            rate = f"{row['rate']:,.0f} {row['unit']}"
        elif "value" in row:
            value = row["value"]
            rate = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
            if "executemany" in row:
                rate += f" ({row['executemany']} executemany)"
        else:
            rate = row.get("detail", "")
        body.append((row["backend"], row["phase"], seconds, cpu, rate, row["target"],
                     row["status"]))
    print_rows(f"registry benchmark: N={n:,} datasets, {puts:,} puts; load average "
               f"{load[0]:.2f} at start, {load[1]:.2f} at end (other processes skew wall times)",
               header, body)


def parent(args: argparse.Namespace) -> int:
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgresql"}
    if unknown:
        sys.exit(f"unknown backend(s): {', '.join(sorted(unknown))}")
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="fed-bench-") if temporary else args.workdir)
    workdir = workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        files_dir = workdir / "files"
        log(f"writing {args.n:,} files of {FILE_SIZE} bytes under {files_dir} (not timed) ...")
        log(f"  done in {write_files(files_dir, args.n):.1f} s")

        load_start = os.getloadavg()[0]
        log("timing `import federation` and `fed --help` (median of 5) ...")
        python = sys.executable
        fed = str(Path(python).parent / "fed")
        python_s = median_wall([python, "-c", "pass"])
        import_s = median_wall([python, "-c", "import federation"])
        help_s = median_wall([fed, "--help"])

        results = [run_child(args, backend, workdir, files_dir) for backend in backends]
        load = [load_start, os.getloadavg()[0]]
        rows = startup_rows(import_s, help_s, python_s)
        for result in results:
            rows.extend(evaluate(result))
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)

    failed = [r for r in rows if r["status"] == "FAIL"]
    if args.json:
        print(json.dumps({"n": args.n, "puts": args.puts, "backends": results,
                          "startup": {"import_federation_s": import_s, "fed_help_s": help_s,
                                      "python_baseline_s": python_s},
                          "load_average": load, "rows": rows, "ok": not failed}, indent=2))
    else:
        print_table(rows, args.n, args.puts, load)
        for result in results:
            if "error" in result:
                continue
            statements, n = result["ingest"]["statements"], result["n"]
            if statements >= n / 10:
                print(f"FAIL: {result['backend']} bulk ingest issued {statements:,} SQL "
                      f"statements for {n:,} datasets (must be < N/10 = {n / 10:,.0f})")
            inroot = result["ingest_in_root"]
            if inroot["statements"] >= inroot["count"] / 10:
                print(f"FAIL: {result['backend']} bulk ingest of {inroot['count']:,} files lying "
                      f"under the repository root (transfer=direct) issued "
                      f"{inroot['statements']:,} SQL statements {inroot['statement_kinds']}")
        print("\n" + ("all targets met" if not failed else
                      f"{len(failed)} target(s) missed: " +
                      ", ".join(f"{r['backend']}/{r['phase']}" for r in failed)))
    return 1 if failed else 0


# -- child: one backend ----------------------------------------------------------


class StatementCounter:
    """Counts statements sent to a registry database.

    SQLAlchemy executions are seen by a ``before_cursor_execute`` listener;
    the registry's bulk inserts (one driver ``executemany`` or ``COPY`` each,
    bypassing SQLAlchemy) are counted by wrapping ``Database.bulk_insert``.
    An executemany or COPY counts once.
    """

    def __init__(self, db) -> None:
        self.db = db
        self.engine = db.engine
        self.statements = 0
        self.executemany = 0
        self.kinds: dict[str, int] = {}

    def __call__(self, conn, cursor, statement, parameters, context, executemany) -> None:
        words = statement.split()
        kind = " ".join(words[:3]) if words[:1] == ["INSERT"] else " ".join(words[:1])
        self._count(kind, bool(executemany))

    def _count(self, kind: str, many: bool) -> None:
        self.statements += 1
        self.executemany += many
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    def __enter__(self) -> StatementCounter:
        import sqlalchemy as sa

        sa.event.listen(self.engine, "before_cursor_execute", self)
        original = self.db.bulk_insert

        def counted(table, columns, rows, **options):
            if rows:
                self._count(f"bulk INSERT INTO {table.name}", True)
            return original(table, columns, rows, **options)

        self.db.bulk_insert = counted
        return self

    def __exit__(self, *exc) -> None:
        import sqlalchemy as sa

        sa.event.remove(self.engine, "before_cursor_execute", self)
        del self.db.bulk_insert


class Timer:
    """Wall and CPU seconds of a block, and the garbage collections run during it."""

    def __enter__(self) -> Timer:
        self.gc_before = [g["collections"] for g in gc.get_stats()]
        self.cpu = time.process_time()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
        self.cpu = time.process_time() - self.cpu
        self.gc = [g["collections"] - b for g, b in zip(gc.get_stats(), self.gc_before,
                                                         strict=True)]

    def stats(self, count: int) -> dict[str, Any]:
        return {"seconds": self.seconds, "cpu_seconds": self.cpu, "count": count,
                "gc_collections": self.gc}

    def describe(self, count: int, unit: str) -> str:
        return (f"{self.seconds:.2f} s wall, {self.cpu:.2f} s CPU, "
                f"{count / self.seconds:,.0f} {unit}, gc collections per generation {self.gc}")


def make_pg_schema(pg_url: str) -> tuple[str, str]:
    """A fresh schema on the server, and a URL whose search_path is that schema."""
    import sqlalchemy as sa

    schema = f"fed_bench_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    finally:
        engine.dispose()
    url = sa.engine.make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return schema, url.render_as_string(hide_password=False)


def drop_pg_schema(pg_url: str, schema: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        engine.dispose()


def child(args: argparse.Namespace) -> int:
    backend = args.child
    repo = Path(args.workdir) / f"repo-{backend}-{uuid.uuid4().hex[:8]}"
    schema = None
    try:
        db = None
        if backend == "postgresql":
            schema, db = make_pg_schema(args.pg_url)
        result = run_backend(args, backend, repo, db)
    finally:
        shutil.rmtree(repo, ignore_errors=True)
        if schema is not None:
            drop_pg_schema(args.pg_url, schema)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))
    return 0


def run_backend(args: argparse.Namespace, backend: str, repo: Path, db: str | None
                ) -> dict[str, Any]:
    from federation.butler import Butler, FileDataset

    n, puts = args.n, args.puts
    files_dir = Path(args.files_dir)
    result: dict[str, Any] = {"backend": backend, "n": n, "n_puts": puts}
    profile = args.profile

    log(f"[{backend}] setup: repository, dimension records, dataset types ...")
    start = time.perf_counter()
    Butler.create(repo, db=db, site="BENCH")
    butler = Butler(repo)
    try:
        registry = butler.registry
        for dimension, records in dimension_records(max(n, puts)).items():
            registry.insert_dimension_records(dimension, records)
        registry.register_dataset_type("raw", ["exposure", "detector"], "Bytes")
        registry.register_dataset_type("raw_put", ["exposure", "detector"], "Bytes")
        result["setup_s"] = time.perf_counter() - start
        log(f"[{backend}]   {result['setup_s']:.2f} s")

        datasets = [FileDataset(file_path(files_dir, e, d), "raw",
                                {"instrument": "HSC", "exposure": e, "detector": d})
                    for e, d in data_ids(n)]
        log(f"[{backend}] ingest {n:,} files (transfer=direct) ...")
        with StatementCounter(registry.db) as counter, \
                Profiled(profile == "ingest", f"{backend} ingest"), Timer() as timer:
            refs = butler.ingest(datasets, run=RAW_RUN, transfer="direct")
        if len(refs) != n:
            raise SystemExit(f"ingest returned {len(refs)} refs, expected {n}")
        result["ingest"] = {**timer.stats(n), "statements": counter.statements,
                            "executemany": counter.executemany,
                            "statement_kinds": dict(sorted(counter.kinds.items()))}
        log(f"[{backend}]   {timer.describe(n, 'datasets/s')}")
        log(f"[{backend}]   {counter.statements} SQL statements: {counter.kinds}")
        del datasets, refs

        log(f"[{backend}] query all {n:,} raw datasets ...")
        with Profiled(profile == "query", f"{backend} query"), Timer() as timer:
            found = butler.query_datasets("raw", [RAW_RUN])
        check_query(found, n)
        result["query"] = timer.stats(len(found))
        log(f"[{backend}]   {timer.describe(len(found), 'rows/s')}")
        del found

        result["ingest_in_root"] = ingest_in_root(butler, backend, repo, min(n, IN_ROOT_FILES))

        log(f"[{backend}] {puts:,} single puts ...")
        payload = b"x" * FILE_SIZE
        ids = data_ids(max(n, puts))
        with Profiled(profile == "puts", f"{backend} puts"), Timer() as timer:
            for exposure, detector in ids[:puts]:
                butler.put(payload, "raw_put", run=PUT_RUN, instrument="HSC",
                           exposure=exposure, detector=detector)
        result["puts"] = timer.stats(puts)
        log(f"[{backend}]   {timer.describe(puts, 'puts/s')}")
        result["file_floor"] = file_floor(repo / "bench-floor", puts, payload)

        # Statements per put, counted outside the timed loop on a few more puts.
        extra = ids[puts:puts + 10] if len(ids) >= puts + 10 else []
        with StatementCounter(registry.db) as counter:
            for exposure, detector in extra:
                butler.put(payload, "raw_put", run=PUT_RUN, instrument="HSC",
                           exposure=exposure, detector=detector)
        per_put = counter.statements / len(extra) if extra else None
        result["puts"]["statements_per_put"] = per_put
        result["puts"]["statement_kinds_10_puts"] = dict(sorted(counter.kinds.items()))
    finally:
        butler.close()
    return result


def ingest_in_root(butler, backend: str, repo: Path, count: int) -> dict[str, Any]:
    """Count SQL statements of a direct ingest whose files lie under the repository root.

    Not timed. Per-file checks that only apply to such files (is this source a
    registered dataset's own file?) must be batched too.
    """
    from federation.butler import FileDataset

    files_dir = repo / "incoming"
    write_files(files_dir, count)
    butler.registry.register_dataset_type("raw_in_root", ["exposure", "detector"], "Bytes")
    datasets = [FileDataset(file_path(files_dir, e, d), "raw_in_root",
                            {"instrument": "HSC", "exposure": e, "detector": d})
                for e, d in data_ids(count)]
    log(f"[{backend}] statement count of a direct ingest of {count:,} files under the "
        "repository root ...")
    with StatementCounter(butler.registry.db) as counter:
        butler.ingest(datasets, run=IN_ROOT_RUN, transfer="direct")
    log(f"[{backend}]   {counter.statements} SQL statements: {counter.kinds}")
    return {"count": count, "statements": counter.statements,
            "executemany": counter.executemany,
            "statement_kinds": dict(sorted(counter.kinds.items()))}


def check_query(refs: list, n: int) -> None:
    """All N refs came back, each with a complete data ID."""
    if len(refs) != n:
        raise SystemExit(f"query returned {len(refs)} refs, expected {n}")
    wanted = {"instrument", "exposure", "detector", "physical_filter", "band", "day_obs"}
    for ref in (refs[0], refs[-1]):
        missing = wanted - set(ref.data_id)
        if missing:
            raise SystemExit(f"query ref {ref} lacks data ID keys {sorted(missing)}")
    pairs = {(ref.data_id["exposure"], ref.data_id["detector"]) for ref in refs}
    if len(pairs) != n:
        raise SystemExit(f"query returned {len(pairs)} distinct data IDs, expected {n}")


# -- entry point -------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark bulk ingest, queries and single puts on SQLite and PostgreSQL.")
    parser.add_argument("--n", type=int, default=100000,
                        help="datasets to ingest and query (default 100000)")
    parser.add_argument("--puts", type=int, default=2000,
                        help="single butler.put calls to time (default 2000)")
    parser.add_argument("--backends", default="sqlite,postgresql",
                        help="comma-separated: sqlite, postgresql (default both)")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL,
                        help=f"PostgreSQL server; fresh schema (default {DEFAULT_PG_URL})")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="work directory (default: a temporary one, removed at the end)")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument("--profile", choices=["ingest", "query", "puts"], default=None,
                        help="run one phase under cProfile; top functions go to stderr")
    parser.add_argument("--child", choices=["sqlite", "postgresql"], help=argparse.SUPPRESS)
    parser.add_argument("--files-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.n < 1 or args.puts < 1:
        parser.error("--n and --puts must be positive")
    return child(args) if args.child else parent(args)


if __name__ == "__main__":
    sys.exit(main())
