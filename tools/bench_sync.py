"""Sync benchmark: a full sync into an empty site against `rsync -a` and lsst.daf.butler.

Everything is measured in one run, side by side. The cost of creating files on
a disk can swing several-fold between runs (an SSD filesystem mounted with
``discard`` is slow for a while after many files are deleted), so every
comparison is interleaved (A B A B ..., alternating which of the two goes
first), repeated ``--repeat`` times and reported as medians, and every ratio is
the median of the ratios of the pairs. Before each timed run, what the previous
run created is removed, then ``os.sync()`` and a pause of ``--settle`` seconds
let those deletions land before the clock starts (default 10: on such a disk,
`rsync -a` of 5,000 files was seen 5-10x slower 2-5 s after deleting as many
files than 10 s after). The no-op runs, which create and delete nothing, are
separated by 1 s. Every timed figure has its CPU seconds (user + sys of the
process and its threads, children it waited for included) beside its wall
seconds.

Setup, for each N of ``--sizes`` (not timed): site definitions ``NCSA``
(source) and ``IN2P3`` (destination), both SQLite with local files; dimension
records for a synthetic HSC-like instrument (exposures x 100 detectors) for
N + 1% data IDs; the dataset type ``raw`` (exposure, detector; Bytes); N files
of 1 KiB random bytes put in with ``Butler.ingest(..., transfer="move")`` into
``HSC/raw/all`` at NCSA.

1. Full sync, one row per N:
   rsync   ``rsync -a`` of NCSA's datastore (the repository without its SQLite
           registry) into an empty directory, as a process: the floor for
           moving the files.
   full    ``sync_sites(NCSA, IN2P3, SyncOptions())`` into an empty destination,
           in a fresh subprocess of this script (the call is timed, interpreter
           start-up is not): read a snapshot of the source, copy every file to a
           temporary name, check its size and xxh3-128 checksum, rename it into
           place, import the records, advance the cursor. The destination must
           then hold N datasets and N files. Peak RSS is the subprocess's.
   LSST    lsst.daf.butler's ``Butler.transfer_from(..., transfer="copy")`` on
           equivalent data (N ~1 KiB JSON files ingested with transfer="move"
           into a source repository) into an empty repository; once per N, in
           its own subprocess, the disk settled after its setup.
   ``--repeat`` interleaved pairs (rsync, full); full/rsync is the median of the
   pair ratios, ms/dataset the median full seconds / N, LSST/ours the
   transfer_from seconds / the median full seconds.
2. No-op and delta, at the largest N. After one more rsync and full sync (not
   timed): ``fed sync NCSA IN2P3`` as a whole process (interpreter start-up and
   imports included) against ``rsync -a`` of the same source into its already
   synced copy, ``--repeat`` interleaved pairs; the fed no-op must change
   nothing. Then 1% more datasets are ingested at NCSA (not timed) and the sync
   is run again in a subprocess: it must bring exactly those.
3. Memory: a records-only sync (``Selection(files=False)``) of ``--records-n``
   datasets into an empty destination, in its own subprocess: peak RSS,
   seconds, CPU seconds, datasets/s. Its source's dataset and file rows are
   inserted directly with ``registry.datasets.insert`` in chunks of 50,000; no
   file is created and the file records (path, size, checksum) are fabricated.
   A records-only sync never reads the files, so this is a fair input.

Targets (the exit status is 1 when one is missed): full sync <= 1.5x rsync at
each N; ours >= 4x faster than transfer_from at each N (skipped when
lsst.daf.butler is not installed); ms/dataset of the largest N within 1.25x of
the smallest N's; fed's no-op faster than rsync's (median pair ratio < 1);
delta < 5% of the full sync; peak RSS < 300 MiB for the records-only sync and
for the full and delta syncs; and every destination holds what it must.

Run it from the repository root with the project's virtualenv::

    .venv/bin/python tools/bench_sync.py                 # N = 20000, 100000; 1M records
    .venv/bin/python tools/bench_sync.py --sizes 2000,5000 --repeat 2 --records-n 20000
    .venv/bin/python tools/bench_sync.py --sizes 20000 --records-n 0 --profile full --json
    .venv/bin/python tools/bench_sync.py --sizes 1000 --records-n 0 --butler-source 1000

``--butler-source SIZES`` adds the rows of ``bench_butler_source.py``: ``fed sync``
from a daf_butler repository, daf_butler's ``transfer_from`` and ``rsync -a``.

``--workdir`` defaults to a temporary directory that is removed at the end; a
directory given explicitly is emptied first and kept. ``--profile PHASE`` runs
one phase under cProfile and prints its top functions to stderr: for ``full``
the extra, untimed full sync made before the no-op runs; for ``delta`` and
``records`` the timed run itself (its figures then include profiler overhead).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import bench_butler_source
import sync_fixtures as fx
from benchlib import log, remove, run_measured, settle
from sync_report import evaluate, print_report

NOOP_SETTLE_S = 1.0
RSYNC_EXCLUDED = ("registry.sqlite3*", "federation.yaml", ".federation-*")
CHILD_PHASES = ("build", "full", "add", "delta", "records-build", "records", "lsst")


# -- subprocesses ----------------------------------------------------------------------


def child_phase(args: argparse.Namespace) -> dict[str, Any]:
    """Run one phase in this (child) process; its result is printed as JSON."""
    base, name, n = Path(args.workdir), args.child, args.n
    profile = args.profile is not None and args.profile == name
    if name == "build":
        return fx.build_source(base, n)
    if name == "add":
        return {"seconds": fx.ingest(base / fx.SOURCE, base / "incoming", n, fx.delta_count(n))}
    if name == "records-build":
        return fx.build_records_source(base, n)
    if name == "lsst":
        return fx.lsst_transfer(base, n, args.settle)
    return fx.run_sync(base, with_files=name != "records", profile=profile, label=name)


def run_child(args: argparse.Namespace, name: str, base: Path, n: int,
              profile: str | None = None) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).absolute()), "--child", name, "--n", str(n),
            "--workdir", str(base), "--settle", str(args.settle)]
    if profile:
        argv += ["--profile", profile]
    proc = run_measured(argv, capture_stderr=False)
    lines = proc["stdout"].strip().splitlines()
    if proc["returncode"] != 0 or not lines:
        return {"error": f"{name} (N={n:,}): subprocess exited with status "
                         f"{proc['returncode']}"}
    return json.loads(lines[-1])


def rsync(source: Path, target: Path) -> dict[str, Any]:
    """`rsync -a` of the source datastore (repository minus registry) into ``target``."""
    argv = ["rsync", "-a", *(f"--exclude={e}" for e in RSYNC_EXCLUDED), f"{source}/",
            f"{target}/"]
    proc = run_measured(argv)
    if proc["returncode"] != 0:
        return {"error": f"rsync exited {proc['returncode']}: {proc['stderr'].strip()[:200]}"}
    files = sum(1 for p in target.rglob("*") if p.is_file())
    return {"seconds": proc["seconds"], "cpu_seconds": proc["cpu_seconds"], "files": files}


def fed_noop(base: Path) -> dict[str, Any]:
    """``fed sync NCSA IN2P3`` as a whole process; it must change nothing."""
    fed = Path(sys.executable).parent / "fed"
    argv = [str(fed) if fed.exists() else "fed", "sync", fx.SOURCE, fx.DESTINATION,
            "--sites", str(base / fx.SITES), "--json"]
    proc = run_measured(argv, cwd=base)
    if proc["returncode"] != 0:
        return {"error": f"fed sync exited {proc['returncode']}: "
                         f"{proc['stderr'].strip()[-200:]}"}
    try:
        report = json.loads(proc["stdout"])
    except ValueError:
        return {"error": f"fed sync --json printed no JSON: {proc['stdout'].strip()[:200]}"}
    changed = report["files"] > 0 or any(not k.endswith(" skip") for k in report["counts"])
    return {"seconds": proc["seconds"], "cpu_seconds": proc["cpu_seconds"],
            "peak_rss_mib": proc["peak_rss_mib"], "changed": changed}


# -- phases (parent) -------------------------------------------------------------------


def fresh_targets(base: Path, settle_s: float) -> None:
    """Remove the rsync copy and the destination, make an empty destination, let it settle."""
    remove(base / fx.RSYNC_COPY)
    fx.create_destination(base)
    settle(settle_s)


def full_pairs(args: argparse.Namespace, base: Path, n: int) -> dict[str, list]:
    """``--repeat`` interleaved (rsync, full) pairs, each into an empty target."""
    runs: dict[str, list] = {"rsync": [], "full": []}
    for k in range(args.repeat):
        for name in ("rsync", "full") if k % 2 == 0 else ("full", "rsync"):
            fresh_targets(base, args.settle)
            log(f"  pair {k + 1}/{args.repeat}: {name} ...")
            if name == "rsync":
                result = rsync(base / fx.SOURCE, base / fx.RSYNC_COPY)
            else:
                result = run_child(args, "full", base, n)
            runs[name].append(result)
            log(f"    {shown(result)}")
    remove(base / fx.RSYNC_COPY, base / fx.DESTINATION)
    settle(args.settle)
    return runs


def lsst_phase(args: argparse.Namespace, base: Path, n: int) -> dict[str, Any]:
    if not lsst_available():
        return {"skipped": "lsst.daf.butler is not installed"}
    log(f"  lsst.daf.butler transfer_from, N={n:,} ...")
    result = run_child(args, "lsst", base, n)
    remove(base / "lsst-src", base / "lsst-dst", base / "lsst-incoming")
    settle(args.settle)
    log(f"    {shown(result)}")
    return result


def noop_and_delta(args: argparse.Namespace, base: Path, n: int) -> dict[str, Any]:
    """Interleaved whole-process no-ops (fed, rsync) over synced copies, then the delta."""
    log("  synced copies for the no-op runs (not timed) ...")
    fresh_targets(base, args.settle)
    setup = {"rsync": rsync(base / fx.SOURCE, base / fx.RSYNC_COPY)}
    settle(args.settle)
    profile = "full" if args.profile == "full" else None
    setup["full"] = run_child(args, "full", base, n, profile=profile)
    log(f"    {shown(setup)}")
    runs: dict[str, list] = {"fed": [], "rsync": []}
    if not any("error" in r for r in setup.values()):
        for k in range(args.repeat):
            for name in ("fed", "rsync") if k % 2 == 0 else ("rsync", "fed"):
                settle(min(args.settle, NOOP_SETTLE_S))  # no-ops create and delete nothing
                result = (fed_noop(base) if name == "fed"
                          else rsync(base / fx.SOURCE, base / fx.RSYNC_COPY))
                runs[name].append(result)
                log(f"  no-op {k + 1}/{args.repeat}: {name} {shown(result)}")
    log(f"  add {fx.delta_count(n):,} datasets at {fx.SOURCE} (not timed) ...")
    added = run_child(args, "add", base, n)
    settle(args.settle)
    delta = run_child(args, "delta", base, n, profile=args.profile) if "error" not in added \
        else added
    log(f"  delta: {shown(delta)}")
    return {"noop_setup": setup, "noop": runs, "delta": delta}


def bench_size(args: argparse.Namespace, workdir: Path, n: int, largest: bool
               ) -> dict[str, Any]:
    """Every phase at one N, in its own directory, removed at the end."""
    base = workdir / f"n{n}"
    fx.write_sites(base)
    log(f"N={n:,}: {n:,} files of {fx.FILE_SIZE} bytes ingested at {fx.SOURCE} "
        "(transfer=move, not timed) ...")
    result: dict[str, Any] = {"n": n, "build": run_child(args, "build", base, n)}
    try:
        if "error" not in result["build"]:
            result.update(full_pairs(args, base, n))
            result["lsst"] = lsst_phase(args, base, n)
            if largest:
                result.update(noop_and_delta(args, base, n))
    finally:
        remove(base)
        settle(args.settle)
    return result


def bench_records(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """A records-only sync of ``--records-n`` datasets (fabricated file records)."""
    base, n = workdir / "records", args.records_n
    fx.write_sites(base)
    log(f"records-only: {n:,} dataset rows inserted at {fx.SOURCE} (no files, not timed) ...")
    try:
        built = run_child(args, "records-build", base, n)
        if "error" in built:
            return built
        fx.create_destination(base)
        settle(args.settle)
        result = run_child(args, "records", base, n, profile=args.profile)
        log(f"  {shown(result)}")
    finally:
        remove(base)
    return result | {"n": n, "build_seconds": built["seconds"]}


def lsst_available() -> bool:
    try:
        return importlib.util.find_spec("lsst.daf.butler") is not None
    except (ImportError, ValueError):
        return False


def shown(result: Any) -> Any:
    """A result for the progress log: floats rounded, per-kind counts left out."""
    if isinstance(result, dict):
        return {k: shown(v) for k, v in result.items() if k != "counts"}
    return round(result, 3) if isinstance(result, float) else result


# -- parent ----------------------------------------------------------------------------


def run_all(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sizes = sorted(set(args.sizes))
    results: dict[str, Any] = {"sizes": [], "records": None,
                               "load_average": [os.getloadavg()[0]]}
    if shutil.which("rsync") is None:
        sys.exit("rsync is not installed")
    for n in sizes:
        results["sizes"].append(bench_size(args, workdir, n, largest=n == sizes[-1]))
    if args.records_n:
        results["records"] = bench_records(args, workdir)
    if args.butler_source:  # fed sync from a daf_butler repository: bench_butler_source.py
        results["butler_source"] = bench_butler_source.run(args.butler_source, args.repeat,
                                                           args.settle, workdir)
    results["load_average"].append(os.getloadavg()[0])
    return results


def parent(args: argparse.Namespace) -> int:
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="fed-bench-sync-") if temporary else args.workdir)
    workdir = workdir.absolute()
    if not temporary:
        remove(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = run_all(args, workdir)
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = evaluate(results)
    failed = [r for r in rows["targets"] if r["status"] == "FAIL"]
    butler_rows = results.get("butler_source")
    if butler_rows and bench_butler_source.checks(butler_rows):
        failed.append({"target": "fed sync from a daf_butler source"})
    if args.json:
        print(json.dumps({"repeat": args.repeat, "settle_seconds": args.settle,
                          "results": results, "rows": rows, "ok": not failed}, indent=2))
    else:
        print_report(rows, results, repeat=args.repeat, settle_s=args.settle)
        if butler_rows:
            bench_butler_source.report(butler_rows)
        print("\n" + ("all targets met" if not failed else
                      f"{len(failed)} target(s) missed: " +
                      "; ".join(r["target"] for r in failed)))
    return 1 if failed else 0


def sizes_list(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers")
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark a full sync against rsync and lsst.daf.butler transfer_from, "
                    "the no-op and delta syncs, and the memory of a records-only sync.")
    parser.add_argument("--sizes", type=sizes_list, default=[20000, 100000],
                        help="datasets at the source, comma-separated (default 20000,100000)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="interleaved pairs per comparison; medians reported (default 3)")
    parser.add_argument("--records-n", type=int, default=1_000_000,
                        help="datasets of the records-only sync (default 1000000; 0 skips it)")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds to wait after os.sync() before each timed run "
                             "(default 10)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="work directory (default: a temporary one, removed at the end)")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument("--profile", choices=["full", "delta", "records"], default=None,
                        help="run one phase under cProfile; top functions go to stderr")
    parser.add_argument("--butler-source", type=sizes_list, default=None, metavar="SIZES",
                        help="also: fed sync from a daf_butler repository of these sizes vs "
                             "transfer_from and rsync (tools/bench_butler_source.py)")
    parser.add_argument("--child", choices=CHILD_PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeat < 1 or args.records_n < 0 or args.settle < 0:
        parser.error("--repeat must be positive, --records-n and --settle not negative")
    if args.child:
        try:
            result = child_phase(args)
        except Exception as exc:  # reported by the parent as a failed row
            log(f"{args.child}: {type(exc).__name__}: {exc}")
            raise
        print(json.dumps(result))
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
