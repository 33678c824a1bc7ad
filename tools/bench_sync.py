"""Sync benchmark: one site into an empty one, against `rsync -a` of the same files.

What is measured (each sync phase runs in a fresh subprocess of this script,
so its wall time, CPU time and peak RSS are its own):

1. setup (not timed): site definitions for ``NCSA`` (source) and ``IN2P3``
   (destination), both SQLite, in the work directory; N + 1% files of ~1 KiB
   random bytes; dimension records for a synthetic HSC-like instrument
   (exposures x 100 detectors) and the dataset type ``raw`` (exposure,
   detector; Bytes); a bulk ``butler.ingest(..., transfer="move")`` of N files
   into ``HSC/raw/all`` at NCSA.
2. rsync: ``rsync -a`` of NCSA's datastore directory (the repository without
   its SQLite registry) into an empty directory: the floor for moving the files.
3. full: ``federation.sync.engine.sync(NCSA, IN2P3)`` into the empty
   destination: plan, read the snapshot, copy every file to a temporary name,
   check its size and xxh3-128 checksum, rename it into place, import the
   records and advance the cursor. Afterwards (not timed) the destination must
   hold N datasets and N files.
4. noop: the same sync again, which must change nothing (median of
   ``--repeat`` runs in one subprocess).
5. delta: 1% more datasets are ingested at NCSA (not timed), then the sync is
   run again; it must bring exactly those.
6. If ``lsst.daf.butler`` is importable (``pip install lsst-daf-butler``), its
   ``Butler.transfer_from`` is timed on equivalent data (N ~1 KiB files
   ingested with ``transfer="move"`` into a source repository, transferred with
   ``transfer="copy"`` into an empty one); otherwise the row says it was
   skipped.

Targets: full sync <= 1.5 x rsync; no-op < 0.5 s; delta < 5% of full; peak
RSS of every sync subprocess < 300 MiB. The exit status is 1 when one is
missed.

Run it from the repository root with the project's virtualenv::

    .venv/bin/python tools/bench_sync.py               # N = 100000
    .venv/bin/python tools/bench_sync.py --n 10000 --json
    .venv/bin/python tools/bench_sync.py --n 10000 --profile full

``--workdir`` defaults to a temporary directory that is removed at the end; a
directory given explicitly is emptied first and kept. ``--profile PHASE`` runs
that phase under cProfile and prints the top functions to stderr (its timing
then includes profiler overhead).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import Profiled, dimension_records, log, print_rows

DETECTORS = 100
FIRST_EXPOSURE = 903334
FILE_SIZE = 1024
RUN = "HSC/raw/all"
NIGHT_NS = 1_371_470_400 * 10**9  # 2013-06-17T12:00:00Z
NIGHT = 20130617
SOURCE, DESTINATION = "NCSA", "IN2P3"

FULL_VS_RSYNC = 1.5
NOOP_LIMIT_S = 0.5
DELTA_VS_FULL = 0.05
RSS_LIMIT_MIB = 300.0


def delta_count(n: int) -> int:
    return max(1, n // 100)


def data_ids(start: int, count: int) -> list[tuple[int, int]]:
    """(exposure, detector) pairs number start .. start+count-1, 100 detectors per exposure."""
    return [(FIRST_EXPOSURE + i // DETECTORS, i % DETECTORS) for i in range(start, start + count)]


class Timer:
    """Wall and CPU seconds of a block."""

    def __enter__(self) -> Timer:
        self.cpu = time.process_time()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
        self.cpu = time.process_time() - self.cpu


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- setup ---------------------------------------------------------------------------


def write_sites(workdir: Path) -> Path:
    import yaml

    sites = workdir / "sites"
    sites.mkdir(parents=True, exist_ok=True)
    owns = {SOURCE: ["HSC/raw", "HSC/calib", "HSC/runs"], DESTINATION: ["u/in2p3"]}
    for name in (SOURCE, DESTINATION):
        (sites / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": name, "registry": f"sqlite:///../{name}/registry.sqlite3",
            "root": f"../{name}", "transport": "local", "owns": owns[name]}))
    return sites


def write_files(directory: Path, ids: list[tuple[int, int]]) -> list[Path]:
    paths = []
    made: set[Path] = set()
    for exposure, detector in ids:
        path = directory / str(exposure) / f"{detector:03d}.raw"
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(os.urandom(FILE_SIZE))
        paths.append(path)
    return paths


def ingest(repo: Path, incoming: Path, start: int, count: int) -> float:
    """Write ``count`` files and ingest them (transfer=move) at the source; seconds taken."""
    from federation.butler import Butler, FileDataset

    begin = time.perf_counter()
    ids = data_ids(start, count)
    paths = write_files(incoming, ids)
    with Butler(repo) as butler:
        butler.ingest([FileDataset(p, "raw", {"instrument": "HSC", "exposure": e,
                                              "detector": d})
                       for p, (e, d) in zip(paths, ids, strict=True)],
                      run=RUN, transfer="move")
    shutil.rmtree(incoming, ignore_errors=True)
    return time.perf_counter() - begin


def build_source(workdir: Path, n: int) -> dict[str, Any]:
    """Child: the source repository with N datasets (records for N + 1% data IDs)."""
    from federation.butler import Butler
    from federation.sites import load_site

    site = load_site(SOURCE, workdir / "sites")
    Butler.create(site.root, site=SOURCE)
    with Butler(site.root) as butler:
        for dimension, records in dimension_records(n + delta_count(n)).items():
            butler.registry.insert_dimension_records(dimension, records)
        butler.registry.register_dataset_type("raw", ["exposure", "detector"], "Bytes")
    seconds = ingest(site.root, workdir / "incoming", 0, n)
    return {"seconds": seconds}


# -- sync phases (children) ------------------------------------------------------------


def run_sync(workdir: Path, profile: bool, label: str):
    from federation.sites import list_sites, load_site
    from federation.sync.engine import SyncOptions, sync

    sites_dir = workdir / "sites"
    src, dst = load_site(SOURCE, sites_dir), load_site(DESTINATION, sites_dir)
    gc.collect()
    with Profiled(profile, label), Timer() as timer:
        report = sync(src, dst, SyncOptions(), sites=list_sites(sites_dir))
    if report.failed or report.conflicts:
        raise SystemExit(f"{label}: {len(report.failed)} failed files, "
                         f"{len(report.conflicts)} conflicts")
    return timer, report


def count_destination(workdir: Path) -> tuple[int, int]:
    from federation.butler import Butler

    root = workdir / DESTINATION
    with Butler(root) as butler:
        datasets = len(butler.query_datasets("raw", [RUN]))
    files = sum(1 for p in (root / RUN).rglob("*") if p.is_file())
    return datasets, files


def phase(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir)
    name = args.child
    if name == "build":
        return build_source(workdir, args.n)
    if name == "add":
        root = workdir / SOURCE
        return {"seconds": ingest(root, workdir / "incoming", args.n, delta_count(args.n))}
    if name == "lsst":
        return lsst_transfer(workdir, args.n)
    runs = args.repeat if name == "noop" else 1
    timings = []
    for i in range(runs):
        timer, report = run_sync(workdir, args.profile == name and i == 0, name)
        timings.append((timer.seconds, timer.cpu, report))
    seconds = statistics.median(t[0] for t in timings)
    cpu = statistics.median(t[1] for t in timings)
    report = timings[-1][2]
    rss = peak_rss_mib()
    datasets, files = count_destination(workdir)
    return {"seconds": seconds, "cpu_seconds": cpu, "all_seconds": [t[0] for t in timings],
            "peak_rss_mib": rss, "files": report.files, "bytes": report.bytes,
            "counts": dict(report.counts), "dest_datasets": datasets, "dest_files": files}


def lsst_transfer(workdir: Path, n: int) -> dict[str, Any]:
    """Time lsst.daf.butler's transfer_from on N ~1 KiB files (only if it is installed)."""
    from lsst.daf.butler import Butler, DatasetRef, DatasetType, FileDataset

    src_root, dst_root = workdir / "lsst-src", workdir / "lsst-dst"
    Butler.makeRepo(str(src_root))
    Butler.makeRepo(str(dst_root))
    source = Butler.from_config(str(src_root), writeable=True, run=RUN)
    registry = source.registry
    registry.insertDimensionData("instrument", {
        "name": "HSC", "detector_max": n + 1, "visit_max": 21474800, "exposure_max": 21474800,
        "class_name": "lsst.obs.subaru.HyperSuprimeCam"})
    registry.insertDimensionData("detector", *[
        {"instrument": "HSC", "id": d, "full_name": f"d{d}", "purpose": "SCIENCE"}
        for d in range(n)])
    dataset_type = DatasetType("raw_json", ["instrument", "detector"], "StructuredDataDict",
                               universe=source.dimensions)
    registry.registerDatasetType(dataset_type)
    registry.registerRun(RUN)
    incoming = workdir / "lsst-incoming"
    incoming.mkdir()
    datasets = []
    for d in range(n):
        path = incoming / f"{d:07d}.json"
        path.write_text(json.dumps({"detector": d, "pad": os.urandom(500).hex()}))
        ref = DatasetRef(dataset_type, {"instrument": "HSC", "detector": d}, run=RUN)
        datasets.append(FileDataset(path=str(path), refs=[ref],
                                    formatter="lsst.daf.butler.formatters.json.JsonFormatter"))
    source.ingest(*datasets, transfer="move")
    refs = list(registry.queryDatasets("raw_json", collections=RUN))
    destination = Butler.from_config(str(dst_root), writeable=True)
    gc.collect()
    with Timer() as timer:
        moved = destination.transfer_from(source, refs, transfer="copy",
                                          register_dataset_types=True,
                                          transfer_dimensions=True)
    return {"seconds": timer.seconds, "cpu_seconds": timer.cpu, "count": len(list(moved)),
            "peak_rss_mib": peak_rss_mib()}


# -- parent ----------------------------------------------------------------------------


def run_child(args: argparse.Namespace, name: str, workdir: Path) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).absolute()), "--child", name, "--n", str(args.n),
            "--workdir", str(workdir), "--repeat", str(args.repeat)]
    if args.profile:
        argv += ["--profile", args.profile]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"{name}: child exited with status {proc.returncode}"}
    return json.loads(lines[-1])


def time_rsync(source: Path, target: Path) -> dict[str, Any]:
    """`rsync -a` of the source datastore (repository minus registry) into an empty dir."""
    if shutil.which("rsync") is None:
        return {"error": "rsync is not installed"}
    excluded = ["registry.sqlite3*", "federation.yaml", ".federation-*"]
    argv = ["rsync", "-a", *(f"--exclude={e}" for e in excluded), f"{source}/", f"{target}/"]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": f"rsync exited {proc.returncode}: {proc.stderr.strip()[:200]}"}
    files = sum(1 for p in target.rglob("*") if p.is_file())
    shutil.rmtree(target, ignore_errors=True)
    return {"seconds": seconds, "files": files}


def lsst_available() -> bool:
    try:
        return importlib.util.find_spec("lsst.daf.butler") is not None
    except (ImportError, ValueError):
        return False


def evaluate(n: int, results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def row(name, seconds=None, cpu=None, rate=None, value="", target="-", status="report"):
        rows.append({"phase": name, "seconds": seconds, "cpu_seconds": cpu, "rate": rate,
                     "value": value, "target": target, "status": status})

    for name in ("rsync", "full", "noop", "delta"):
        if "error" in results.get(name, {}):
            row(name, value=results[name]["error"], target="completes", status="FAIL")
    rsync, full = results.get("rsync", {}), results.get("full", {})
    noop, delta = results.get("noop", {}), results.get("delta", {})
    d = delta_count(n)
    if "seconds" in rsync:
        row("rsync -a of the datastore (files only)", rsync["seconds"], None,
            rsync["files"] / rsync["seconds"], f"{rsync['files']:,} files")
    if "seconds" in full:
        ok = full["dest_datasets"] == n and full["dest_files"] == n and full["files"] == n
        row("full sync (records + files + xxh3 verify)", full["seconds"], full["cpu_seconds"],
            n / full["seconds"],
            f"{full['dest_datasets']:,} datasets, {full['dest_files']:,} files at destination",
            f"= {n:,}", "PASS" if ok else "FAIL")
        if "seconds" in rsync:
            ratio = full["seconds"] / rsync["seconds"]
            row("full sync / rsync", value=f"{ratio:.2f}x", target=f"<= {FULL_VS_RSYNC}x",
                status="PASS" if ratio <= FULL_VS_RSYNC else "FAIL")
    if "seconds" in noop:
        changed = noop["files"] or any(not k.endswith(" skip") for k in noop["counts"])
        row(f"no-op resync (median of {len(noop['all_seconds'])})", noop["seconds"],
            noop["cpu_seconds"], None, "changed something!" if changed else "nothing changed",
            f"< {NOOP_LIMIT_S} s",
            "PASS" if noop["seconds"] < NOOP_LIMIT_S and not changed else "FAIL")
    if "seconds" in delta:
        ok = delta["files"] == d and delta["dest_datasets"] == n + d
        row(f"delta resync (+{d:,} datasets = 1%)", delta["seconds"], delta["cpu_seconds"],
            d / delta["seconds"], f"{delta['files']:,} files moved", f"= {d:,}",
            "PASS" if ok else "FAIL")
        if "seconds" in full:
            ratio = delta["seconds"] / full["seconds"]
            row("delta / full", value=f"{ratio:.1%}", target=f"< {DELTA_VS_FULL:.0%}",
                status="PASS" if ratio < DELTA_VS_FULL else "FAIL")
    rss = {k: results[k]["peak_rss_mib"] for k in ("full", "noop", "delta")
           if "peak_rss_mib" in results.get(k, {})}
    if rss:
        worst = max(rss, key=rss.get)
        row("peak RSS of a sync subprocess (MiB)", value=f"{rss[worst]:,.0f} ({worst}); "
            + ", ".join(f"{k} {v:,.0f}" for k, v in rss.items()),
            target=f"< {RSS_LIMIT_MIB:.0f}",
            status="PASS" if rss[worst] < RSS_LIMIT_MIB else "FAIL")
    lsst = results.get("lsst", {})
    if "seconds" in lsst:
        row("lsst.daf.butler transfer_from (copy)", lsst["seconds"], lsst["cpu_seconds"],
            lsst["count"] / lsst["seconds"], f"{lsst['count']:,} datasets, "
            f"RSS {lsst['peak_rss_mib']:,.0f} MiB")
        if "seconds" in full:
            row("full sync / lsst transfer_from",
                value=f"{full['seconds'] / lsst['seconds']:.2f}x")
    else:
        row("lsst.daf.butler transfer_from", value=lsst.get(
            "error", "skipped: lsst.daf.butler is not installed "
                     "(pip install lsst-daf-butler enables it)"))
    return rows


def print_table(rows: list[dict[str, Any]], n: int, load: list[float]) -> None:
    header = ("phase", "seconds", "CPU s", "datasets/s", "detail", "target", "result")
    body = []
    for r in rows:
        body.append((r["phase"], "" if r["seconds"] is None else f"{r['seconds']:.3f}",
                     "" if r["cpu_seconds"] is None else f"{r['cpu_seconds']:.3f}",
                     "" if r["rate"] is None else f"{r['rate']:,.0f}", r["value"],
                     r["target"], r["status"]))
    print_rows(f"sync benchmark: N={n:,} datasets of {FILE_SIZE} bytes, SQLite -> SQLite, "
               f"local files; {os.cpu_count()} CPUs; load average {load[0]:.2f} at start, "
               f"{load[1]:.2f} at end", header, body)


def parent(args: argparse.Namespace) -> int:
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="fed-bench-sync-") if temporary else args.workdir)
    workdir = workdir.absolute()
    if not temporary:
        shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    try:
        write_sites(workdir)
        log(f"setup: {args.n:,} files of {FILE_SIZE} bytes ingested at {SOURCE} "
            "(transfer=move, not timed) ...")
        built = run_child(args, "build", workdir)
        if "error" in built:
            sys.exit(built["error"])
        log(f"  {built['seconds']:.1f} s")
        from federation.butler import Butler

        Butler.create(workdir / DESTINATION, site=DESTINATION)
        load_start = os.getloadavg()[0]

        log("rsync -a of the source datastore into an empty directory ...")
        results["rsync"] = time_rsync(workdir / SOURCE, workdir / "rsync-copy")
        log(f"  {results['rsync']}")
        for name in ("full", "noop", "add", "delta"):
            log(f"{name} ..." if name != "add" else
                f"add {delta_count(args.n):,} datasets at {SOURCE} (not timed) ...")
            results[name] = run_child(args, name, workdir)
            shown = {k: v for k, v in results[name].items() if k != "counts"}
            log(f"  {shown}")
        if lsst_available():
            log("lsst.daf.butler transfer_from ...")
            results["lsst"] = run_child(args, "lsst", workdir)
        load = [load_start, os.getloadavg()[0]]
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = evaluate(args.n, results)
    failed = [r for r in rows if r["status"] == "FAIL"]
    if args.json:
        print(json.dumps({"n": args.n, "results": results, "load_average": load, "rows": rows,
                          "ok": not failed}, indent=2))
    else:
        print_table(rows, args.n, load)
        print("\n" + ("all targets met" if not failed else
                      f"{len(failed)} target(s) missed: " +
                      ", ".join(r["phase"] for r in failed)))
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark a full, a no-op and a 1% delta sync against rsync.")
    parser.add_argument("--n", type=int, default=100000,
                        help="datasets at the source (default 100000)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="no-op syncs to run; the median is reported (default 3)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="work directory (default: a temporary one, removed at the end)")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument("--profile", choices=["full", "noop", "delta"], default=None,
                        help="run one phase under cProfile; top functions go to stderr")
    parser.add_argument("--child", choices=["build", "full", "noop", "add", "delta", "lsst"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.n < 1 or args.repeat < 1:
        parser.error("--n and --repeat must be positive")
    if args.child:
        try:
            result = phase(args)
        except Exception as exc:  # reported by the parent as a failed row
            log(f"{args.child}: {type(exc).__name__}: {exc}")
            raise
        print(json.dumps(result))
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
