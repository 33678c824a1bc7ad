"""Deletion benchmark: what past and present deletions cost a sync, on SQLite and PostgreSQL.

1. history: a source with ``--live`` datasets and ``--deleted`` past deletions (datasets
   ingested, then pruned); a first sync into a new, empty replica. The replica never
   held the deleted datasets: it only records their tombstones (so that no stale path
   brings them back), in bulk. Target: under 3 s for 900 live and 19,200 deleted.
2. removals: a replica holding ``--removals`` datasets (records and ~1 KiB files) whose
   source prunes them all; the sync that deletes them there (records, then files).
   Targets: >= 2,000 removals/s on SQLite, >= 1,000/s on PostgreSQL.

Each timed sync runs in its own subprocess; wall and CPU seconds are printed side by
side. PostgreSQL needs a server (``--postgres URL``, default the local one on
127.0.0.1:5432); ``--backends sqlite`` skips it.

    .venv/bin/python tools/bench_deletions.py
    .venv/bin/python tools/bench_deletions.py --backends sqlite --removals 2000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchlib import dimension_records, log, print_rows

RUN = "HSC/raw/all"
HISTORY_LIMIT_S = 3.0
REMOVALS_PER_S = {"sqlite": 2000.0, "postgresql": 1000.0}
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def write_sites(workdir: Path, urls: dict[str, str | None]) -> Path:
    import yaml

    sites = workdir / "sites"
    sites.mkdir(parents=True, exist_ok=True)
    for name, owns in (("NCSA", ["HSC"]), ("IN2P3", ["u/in2p3"])):
        root = workdir / name
        url = urls.get(name) or f"sqlite:///{root / 'registry.sqlite3'}"
        (sites / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": name, "registry": url, "root": str(root), "owns": owns}))
    return sites


def ingest(butler, start: int, count: int, incoming: Path) -> list:
    """``count`` ~1 KiB raws, data IDs start .. start+count-1 (100 detectors per exposure)."""
    from federation.butler import FileDataset

    incoming.mkdir(parents=True, exist_ok=True)
    datasets = []
    for i in range(start, start + count):
        path = incoming / f"{i}.raw"
        path.write_bytes(os.urandom(1024))
        datasets.append(FileDataset(path, "raw", {"instrument": "HSC",
                                                  "exposure": 903334 + i // 100,
                                                  "detector": i % 100}))
    refs = butler.ingest(datasets, run=RUN, transfer="move")
    shutil.rmtree(incoming, ignore_errors=True)
    return refs


def build(workdir: Path, urls: dict[str, str | None], live: int, deleted: int,
          held: int) -> None:
    """Child: NCSA with ``live`` + ``deleted`` raws (the latter pruned), IN2P3 empty."""
    from federation.butler import Butler
    from federation.sites import load_site

    sites = write_sites(workdir, urls)
    for name in ("NCSA", "IN2P3"):
        site = load_site(name, sites)
        Butler.create(site.root, db=urls.get(name), site=name)
    with Butler(workdir / "NCSA", run=RUN) as b:
        for dimension, records in dimension_records(live + deleted + held).items():
            b.registry.insert_dimension_records(dimension, records)
        b.registry.register_dataset_type("raw", ["exposure", "detector"], "Bytes")
        doomed = ingest(b, 0, deleted, workdir / "incoming")
        for start in range(0, len(doomed), 2000):  # pruned in steps, as people do
            b.remove(doomed[start:start + 2000])
        ingest(b, deleted, live, workdir / "incoming")
        if held:
            ingest(b, deleted + live, held, workdir / "incoming")


def prune_held(workdir: Path, held_from: int) -> int:
    """Child: NCSA prunes the raws numbered ``held_from`` and after."""
    from federation.butler import Butler

    with Butler(workdir / "NCSA", run=RUN) as b:
        refs = [r for r in b.query_datasets("raw", RUN)
                if (r.data_id["exposure"] - 903334) * 100 + r.data_id["detector"] >= held_from]
        b.remove(refs)
        return len(refs)


def timed_sync(workdir: Path) -> dict[str, Any]:
    """Child: one sync NCSA -> IN2P3, timed."""
    from federation.operations.sync import sync
    from federation.sync.options import SyncOptions

    start, cpu = time.perf_counter(), time.process_time()
    report = sync("NCSA", "IN2P3", SyncOptions(), sites_dir=workdir / "sites")
    if report.conflicts or report.failed:
        raise SystemExit(f"sync: {len(report.conflicts)} conflicts, {len(report.failed)} "
                         "failed files")
    return {"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu,
            "counts": dict(report.counts), "files": report.files}


def child(args: argparse.Namespace) -> dict[str, Any]:
    workdir, urls = Path(args.workdir), json.loads(args.urls)
    if args.child == "build":
        build(workdir, urls, args.live, args.deleted, args.held)
        return {}
    if args.child == "prune":
        return {"pruned": prune_held(workdir, args.live + args.deleted)}
    if args.child != "sync":
        raise SystemExit(f"unknown phase {args.child}")
    return timed_sync(workdir)


def run_child(args: argparse.Namespace, name: str, workdir: Path, urls: dict, **sizes
              ) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).absolute()), "--child", name,
            "--workdir", str(workdir), "--urls", json.dumps(urls)]
    for key, value in sizes.items():
        argv += [f"--{key}", str(value)]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: child exited with status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fresh_urls(backend: str, postgres: str) -> tuple[dict[str, str | None], list[str]]:
    """Database URLs for both sites (None: SQLite); PostgreSQL gets two new schemas."""
    if backend == "sqlite":
        return {}, []
    import sqlalchemy as sa

    engine = sa.create_engine(postgres, isolation_level="AUTOCOMMIT")
    schemas = [f"fed_bench_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with engine.connect() as conn:
        for schema in schemas:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    base = sa.engine.make_url(postgres)
    urls = {name: base.update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
            for name, schema in zip(("NCSA", "IN2P3"), schemas, strict=True)}
    return urls, schemas


def drop_schemas(postgres: str, schemas: list[str]) -> None:
    if not schemas:
        return
    import sqlalchemy as sa

    engine = sa.create_engine(postgres, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for schema in schemas:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def scenario(args: argparse.Namespace, backend: str, *, live: int, deleted: int, held: int,
             prune: bool) -> tuple[dict[str, Any], int]:
    """Build a pair of sites, sync once (and, with ``prune``, prune the held datasets at
    the source and sync again); returns the last sync's figures and what was pruned."""
    urls, schemas = fresh_urls(backend, args.postgres)
    workdir = Path(tempfile.mkdtemp(prefix="fed-bench-del-"))
    sizes = {"live": live, "deleted": deleted, "held": held}
    try:
        run_child(args, "build", workdir, urls, **sizes)
        result = run_child(args, "sync", workdir, urls, **sizes)
        pruned = 0
        if prune:
            pruned = run_child(args, "prune", workdir, urls, **sizes)["pruned"]
            result = run_child(args, "sync", workdir, urls, **sizes)
        return result, pruned
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        drop_schemas(args.postgres, schemas)


def measure(args: argparse.Namespace, backend: str) -> list[tuple]:
    log(f"{backend}: {args.live:,} live datasets and {args.deleted:,} past deletions ...")
    first, _ = scenario(args, backend, live=args.live, deleted=args.deleted, held=0,
                        prune=False)
    rows = [(backend, f"first sync: {args.live:,} live, {args.deleted:,} past deletions",
             f"{first['seconds']:.2f}", f"{first['cpu']:.2f}", "",
             f"< {HISTORY_LIMIT_S:.0f} s",
             "PASS" if first["seconds"] < HISTORY_LIMIT_S else "FAIL")]
    log(f"{backend}: {args.removals:,} datasets synced, then pruned at the source ...")
    removal, pruned = scenario(args, backend, live=0, deleted=0, held=args.removals,
                               prune=True)
    rate = pruned / removal["seconds"]
    target = REMOVALS_PER_S[backend]
    rows.append((backend, f"sync of {pruned:,} removals (records + files)",
                 f"{removal['seconds']:.2f}", f"{removal['cpu']:.2f}", f"{rate:,.0f}/s",
                 f">= {target:,.0f}/s", "PASS" if rate >= target else "FAIL"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--live", type=int, default=900)
    parser.add_argument("--deleted", type=int, default=19200)
    parser.add_argument("--removals", type=int, default=10000)
    parser.add_argument("--postgres", default=os.environ.get("FED_TEST_POSTGRES_URL",
                                                             PG_DEFAULT))
    parser.add_argument("--child", choices=["build", "prune", "sync"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--urls", help=argparse.SUPPRESS)
    parser.add_argument("--held", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    rows = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        rows += measure(args, backend)
    print_rows(f"deletion benchmark ({os.cpu_count()} CPUs, load average "
               f"{os.getloadavg()[0]:.2f})",
               ("backend", "what", "seconds", "CPU s", "rate", "target", "result"), rows)
    return 1 if any(r[-1] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
