"""Benchmark: ``fed sync`` from an LSST butler (daf_butler) repository, side by side with
daf_butler's own ``Butler.transfer_from`` and ``rsync -a`` of the files.

Setup, for each N of ``--sizes`` (not timed): an lsst.daf.butler repository with N
~1 KiB JSON datasets (``raw_json``, instrument x detector) ingested with
transfer="move" into ``HSC/raw/all`` (``sync_fixtures.lsst_source``); site
definitions ``LSST`` (``kind: daf_butler``) and ``DEST`` (a fed repository in
daf_butler's universe, SQLite, made empty before each timed run).

Rows, each into an empty target, ``--repeat`` interleaved rounds, medians:

   rsync          ``rsync -a`` of the butler repository minus its registry (the floor
                  for moving the files), as a process;
   fed sync       ``sync("LSST", "DEST", SyncOptions())`` in a fresh subprocess (the
                  call is timed, interpreter start-up and imports are not): the
                  selection through daf_butler's queries, a daf_butler export, every
                  file copied and hashed (xxh3-128) and the registry written in one
                  transaction, the cursor saved. DEST must then hold N datasets;
   transfer_from  daf_butler's ``Butler.transfer_from(refs, transfer="copy",
                  register_dataset_types=True, transfer_dimensions=True)`` into a
                  fresh daf_butler repository, in a fresh subprocess (the call timed);
   no-op          ``fed sync LSST DEST`` again, as a whole process (start-up
                  included): it must change nothing; and the same call in-process;
   delta          1% more datasets ingested at the source (not timed), then the
                  re-sync in a subprocess: it must bring exactly those.

Every figure has its CPU seconds (user + sys, threads and waited-for children)
beside its wall seconds; ratios are against the median rsync.

Run it from the repository root (``bench_sync.py --butler-source N,...`` runs it too)::

    .venv/bin/python tools/bench_butler_source.py --sizes 1000
    .venv/bin/python tools/bench_butler_source.py --sizes 1000,5000 --repeat 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchlib import Timer, fmt, log, median, peak_rss_mib, print_rows, remove, run_measured
from benchlib import settle as settle_disk

SOURCE, DESTINATION = "LSST", "DEST"
LSST_SRC, LSST_DST, COPY = "lsst-src", "lsst-dst", "rsync-copy"
RSYNC_EXCLUDED = ("gen3.sqlite3*", "butler.yaml")
CHILDREN = ("build", "fed", "lsst", "add")


# -- children (each in its own subprocess) ---------------------------------------------


def write_sites(base: Path) -> Path:
    import yaml

    sites = base / "sites"
    sites.mkdir(parents=True, exist_ok=True)
    (sites / f"{SOURCE}.yaml").write_text(yaml.safe_dump(
        {"name": SOURCE, "kind": "daf_butler", "root": f"../{LSST_SRC}"}))
    (sites / f"{DESTINATION}.yaml").write_text(yaml.safe_dump(
        {"name": DESTINATION, "registry": f"sqlite:///../{DESTINATION}/registry.sqlite3",
         "root": f"../{DESTINATION}"}))
    return sites


def create_destination(base: Path) -> None:
    from federation.butler import Butler
    from federation.dimensions import daf_butler as daf_butler_universe

    remove(base / DESTINATION)
    Butler.create(base / DESTINATION, site=DESTINATION, universe=daf_butler_universe.load(None))


def child_build(base: Path, n: int) -> dict[str, Any]:
    import sync_fixtures as fx

    with Timer() as timer:
        fx.lsst_source(base / LSST_SRC, base / "lsst-incoming", n)
    return {"seconds": timer.seconds}


def child_add(base: Path, n: int) -> dict[str, Any]:
    """1% more datasets (detectors n .. n + n/100 - 1) ingested at the source."""
    from lsst.daf.butler import Butler, DatasetRef, FileDataset

    count = max(1, n // 100)
    source = Butler.from_config(str(base / LSST_SRC), writeable=True, run="HSC/raw/all")
    registry = source.registry
    registry.insertDimensionData("detector", *[
        {"instrument": "HSC", "id": d, "full_name": f"d{d}", "purpose": "SCIENCE"}
        for d in range(n, n + count)], skip_existing=True)
    dataset_type = registry.getDatasetType("raw_json")
    incoming = base / "lsst-incoming"
    incoming.mkdir(exist_ok=True)
    datasets = []
    for d in range(n, n + count):
        path = incoming / f"{d:07d}.json"
        path.write_text(json.dumps({"detector": d, "pad": os.urandom(500).hex()}))
        ref = DatasetRef(dataset_type, {"instrument": "HSC", "detector": d}, run="HSC/raw/all")
        datasets.append(FileDataset(path=str(path), refs=[ref],
                                    formatter="lsst.daf.butler.formatters.json.JsonFormatter"))
    source.ingest(*datasets, transfer="move")
    remove(incoming)
    return {"added": count}


def child_fed(base: Path) -> dict[str, Any]:
    import lsst.daf.butler  # noqa: F401  (imported before the clock, as for transfer_from)

    from federation.butler import Butler
    from federation.operations.sync import sync
    from federation.sync.options import SyncOptions

    with Timer() as timer:
        report = sync(SOURCE, DESTINATION, SyncOptions(), sites_dir=base / "sites")
    with Butler(base / DESTINATION) as dst:
        held = len(dst.query_datasets("*", "*", find_first=False))
    return {"seconds": timer.seconds, "cpu_seconds": timer.cpu, "peak_rss_mib": peak_rss_mib(),
            "files": report.files, "bytes": report.bytes, "counts": dict(report.counts),
            "dest_datasets": held}


def child_lsst(base: Path) -> dict[str, Any]:
    from lsst.daf.butler import Butler

    remove(base / LSST_DST)
    source = Butler.from_config(str(base / LSST_SRC))
    refs = list(source.registry.queryDatasets("raw_json", collections="HSC/raw/all"))
    Butler.makeRepo(str(base / LSST_DST))
    destination = Butler.from_config(str(base / LSST_DST), writeable=True)
    with Timer() as timer:
        moved = destination.transfer_from(source, refs, transfer="copy",
                                          register_dataset_types=True,
                                          transfer_dimensions=True)
    return {"seconds": timer.seconds, "cpu_seconds": timer.cpu, "count": len(list(moved)),
            "peak_rss_mib": peak_rss_mib()}


# -- parent ------------------------------------------------------------------------------


def run_child(name: str, base: Path, n: int) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).absolute()), "--child", name, "--n", str(n),
            "--workdir", str(base)]
    proc = run_measured(argv, capture_stderr=False)
    lines = proc["stdout"].strip().splitlines()
    if proc["returncode"] != 0 or not lines:
        return {"error": f"{name} (N={n:,}): subprocess exited {proc['returncode']}"}
    return json.loads(lines[-1])


def rsync(base: Path) -> dict[str, Any]:
    remove(base / COPY)
    argv = ["rsync", "-a", *(f"--exclude={e}" for e in RSYNC_EXCLUDED), f"{base / LSST_SRC}/",
            f"{base / COPY}/"]
    proc = run_measured(argv)
    if proc["returncode"] != 0:
        return {"error": f"rsync exited {proc['returncode']}: {proc['stderr'][:200]}"}
    return {"seconds": proc["seconds"], "cpu_seconds": proc["cpu_seconds"]}


def fed_noop(base: Path) -> dict[str, Any]:
    """``fed sync LSST DEST`` as a whole process; it must change nothing."""
    fed = Path(sys.executable).parent / "fed"
    argv = [str(fed), "sync", SOURCE, DESTINATION, "--sites", str(base / "sites"), "--json"]
    proc = run_measured(argv, cwd=base)
    if proc["returncode"] != 0:
        return {"error": f"fed sync exited {proc['returncode']}: {proc['stderr'][-200:]}"}
    report = json.loads(proc["stdout"])
    changed = report["files"] > 0 or any(not k.endswith(" skip") for k in report["counts"])
    return {"seconds": proc["seconds"], "cpu_seconds": proc["cpu_seconds"], "changed": changed}


def bench_size(base: Path, n: int, repeat: int, settle_s: float) -> dict[str, Any]:
    write_sites(base)
    log(f"N={n:,}: building the daf_butler source (not timed) ...")
    result: dict[str, Any] = {"n": n, "build": run_child("build", base, n),
                              "rsync": [], "fed": [], "lsst": []}
    order = ("rsync", "fed", "lsst")
    for k in range(repeat):
        for name in order[k % 3:] + order[:k % 3]:
            if name == "fed":
                create_destination(base)
            settle_disk(settle_s)
            found = rsync(base) if name == "rsync" else run_child(name, base, n)
            result[name].append(found)
            log(f"  round {k + 1}/{repeat} {name}: {_shown(found)}")
    remove(base / COPY, base / LSST_DST)
    last = result["fed"][-1]
    result["fed_ok"] = last.get("dest_datasets") == n
    settle_disk(min(settle_s, 1.0))
    result["noop"] = [fed_noop(base) for _ in range(repeat)]
    result["noop_call"] = run_child("fed", base, n)
    log(f"  no-op: {_shown(result['noop'])}; in-process {_shown(result['noop_call'])}")
    result["add"] = run_child("add", base, n)
    settle_disk(settle_s)
    result["delta"] = run_child("fed", base, n)
    log(f"  delta: {_shown(result['delta'])}")
    return result


def _shown(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shown(v) for k, v in value.items() if k != "counts"}
    if isinstance(value, list):
        return [_shown(v) for v in value]
    return round(value, 3) if isinstance(value, float) else value


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    return median([r[key] for r in runs if key in r])


def rows(results: list[dict[str, Any]]) -> list[tuple]:
    """One table: row, N, wall s, CPU s, x rsync (wall), ms/dataset."""
    body = []
    for result in results:
        n = result["n"]
        floor = _median(result["rsync"], "seconds")
        entries = [("rsync -a", result["rsync"]), ("fed sync (daf_butler source)", result["fed"]),
                   ("daf_butler transfer_from", result["lsst"]),
                   ("fed sync no-op (whole process)", result["noop"]),
                   ("fed sync no-op (call)", [result["noop_call"]]),
                   (f"fed sync delta (+{max(1, n // 100)})", [result["delta"]])]
        for label, runs in entries:
            wall, cpu = _median(runs, "seconds"), _median(runs, "cpu_seconds")
            ratio = None if wall is None or not floor else wall / floor
            per = None if wall is None or label.startswith("fed sync no-op") else wall / n * 1e3
            body.append((label, f"{n:,}", fmt(wall), fmt(cpu), fmt(ratio, ".2f", "x"),
                         fmt(per, ".3f")))
    return body


def checks(results: list[dict[str, Any]]) -> list[str]:
    """What must hold: DEST holds N, the no-op changed nothing, the delta brought 1%."""
    failed = []
    for result in results:
        n = result["n"]
        if not result.get("fed_ok"):
            failed.append(f"N={n}: DEST does not hold {n} datasets after the sync")
        if any(r.get("changed") or "error" in r for r in result["noop"]):
            failed.append(f"N={n}: the no-op re-sync changed something (or failed)")
        if result["delta"].get("counts", {}).get("dataset insert") != max(1, n // 100):
            failed.append(f"N={n}: the delta did not bring exactly {max(1, n // 100)} datasets")
    return failed


def run(sizes: list[int], repeat: int, settle_s: float, workdir: Path) -> list[dict[str, Any]]:
    if shutil.which("rsync") is None:
        sys.exit("rsync is not installed")
    results = []
    for n in sorted(set(sizes)):
        base = workdir / f"butler-source-n{n}"
        try:
            results.append(bench_size(base, n, repeat, settle_s))
        finally:
            remove(base)
    return results


def report(results: list[dict[str, Any]], as_json: bool = False) -> int:
    failed = checks(results)
    if as_json:
        print(json.dumps({"results": results, "failed": failed}, indent=2))
    else:
        print_rows("fed sync from an LSST butler repository (medians; ratio: wall / rsync)",
                   ("row", "N", "wall s", "CPU s", "x rsync", "ms/dataset"), rows(results))
        print("\n" + ("all checks passed" if not failed else "; ".join(failed)))
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000",
                        help="datasets at the source, comma-separated (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per row (default 3)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds after os.sync() before each timed run (default 3)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=CHILDREN, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        base = args.workdir
        found = {"build": lambda: child_build(base, args.n), "add": lambda: child_add(base, args.n),
                 "fed": lambda: child_fed(base), "lsst": lambda: child_lsst(base)}[args.child]()
        print(json.dumps(found))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fed-bench-butler-")).absolute()
    try:
        results = run(sizes, args.repeat, args.settle, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return report(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
