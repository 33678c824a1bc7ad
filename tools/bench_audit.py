"""Audit benchmark: hashing throughput against xxhsum, and dark-file detection at scale.

1. Throughput: a repository of ``--files`` files of ``--kib`` KiB (default 2,000 x
   1 MiB, ingested; not timed), then, in interleaved rounds (each round starting with
   another method), ``fed``'s whole audit (``--restart``: every file hashed on every
   core, the held-elsewhere phase, the dark walk, the sync log) against ``xxhsum -H2``
   (Debian's xxhash package) over the same files, once as one process and once on
   every core (``xargs -P``). Page cache warm. Medians of ``--repeat`` rounds: wall
   and CPU seconds (children included), MiB/s, and the median of the per-round
   throughput ratios.
2. Dark files: a datastore of ``--dark-n`` files (default 1,000,000: empty files,
   100 per directory, their records inserted in bulk; slow to build on a slow disk,
   not timed) with ``--planted`` files no record names, then the dark-file detection
   alone (one walk, one streaming read of the recorded paths, a set difference):
   seconds, CPU seconds, peak RSS, the SQL queries it ran (a constant, whatever N).

Targets (exit status 1 when missed): audit throughput >= 0.8x ``xxhsum -H2`` on every
core (the one-process figure is shown beside it); dark detection finds exactly the
planted files with at most 2 queries (the file records' paths, the trash's).

    python tools/bench_audit.py [--files 2000] [--kib 1024] [--repeat 5]
                                [--dark-n 1000000] [--planted 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import Timer, log, peak_rss_mib, print_rows, run_measured

RUN = "HSC/raw/all"


def throughput_child(workdir: Path, files: int, kib: int, repeat: int) -> dict:
    """The repository (built, not timed), then interleaved rounds of the audit and of
    xxhsum (one process, every core) over the same files."""
    import sync_fixtures

    from federation.butler import Butler, FileDataset
    from federation.operations.audit import AuditRequest, audit

    sync_fixtures.write_sites(workdir)
    root = sync_fixtures.empty_source(workdir, files)
    incoming = workdir / "incoming"
    datasets = []
    for exposure, detector in sync_fixtures.data_ids(0, files):
        path = incoming / str(exposure) / f"{detector:03d}.raw"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(kib << 10))
        datasets.append(FileDataset(path, "raw", {"instrument": "HSC", "exposure": exposure,
                                                  "detector": detector}))
    with Butler(root) as butler:
        butler.ingest(datasets, run=RUN, transfer="move")
        paths = [str(butler.datastore.path_of(butler.registry.datasets.file(r.id)[0]))
                 for r in butler.query_datasets("raw", RUN)]
    listing = workdir / "paths.txt"
    listing.write_text("\n".join(paths))
    cores = os.cpu_count() or 1
    per_call = max(1, -(-len(paths) // (4 * cores)))
    commands = {"xxhsum": ["sh", "-c", f"xargs -a {listing} xxhsum -H2 > /dev/null"],
                "xxhsum -P": ["sh", "-c", f"xargs -a {listing} -P {cores} -n {per_call} "
                                          "xxhsum -H2 > /dev/null"]}
    subprocess.run(commands["xxhsum"], check=True)  # the page cache warm
    request = AuditRequest(str(root), restart=True)
    audit(request)
    runs: dict[str, list[tuple[float, float]]] = {"fed audit": [], **{k: [] for k in commands}}
    order = ["fed audit", *commands]
    for round_ in range(repeat):
        for method in order[round_ % len(order):] + order[:round_ % len(order)]:
            if method == "fed audit":
                with Timer() as timer:
                    found = audit(request)
                assert found.ok and found.hashed == files, "the audit found problems"
                runs[method].append((timer.seconds, timer.cpu))
            else:
                done = run_measured(commands[method])
                assert done["returncode"] == 0, done["stderr"]
                runs[method].append((done["seconds"], done["cpu_seconds"]))
    ours = [s for s, _ in runs["fed audit"]]
    return {"mib": files * kib / 1024, "cores": cores,
            "median": {m: statistics.median(s for s, _ in r) for m, r in runs.items()},
            "cpu": {m: statistics.median(c for _, c in r) for m, r in runs.items()},
            "ratio": {m: statistics.median(t / o for o, (t, _) in zip(ours, runs[m],
                                                                        strict=True))
                      for m in commands}}


def dark_child(workdir: Path, n: int, planted: int) -> dict:
    """A datastore of ``n`` recorded empty files and ``planted`` dark ones (built, not
    timed), then the dark-file detection in a process of its own (its RSS its own)."""
    import sync_fixtures

    from federation.butler import Butler
    from federation.registry.audits import AuditReads

    with Timer() as build:
        sync_fixtures.write_sites(workdir)
        sync_fixtures.build_records_source(workdir, n)
        root = workdir / sync_fixtures.SOURCE
        made: set[str] = set()
        with Butler(root) as butler:
            for page in AuditReads(butler.registry.db).pages(here=None):
                for record in page:
                    folder = record.path.rpartition("/")[0]
                    if folder not in made:
                        os.makedirs(root / folder, exist_ok=True)
                        made.add(folder)
                    os.close(os.open(root / record.path, os.O_CREAT | os.O_WRONLY, 0o644))
        for i in range(planted):
            path = root / RUN / "raw" / f"stray-{i % 10}" / f"dark-{i}.raw"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    log(f"built {n:,} files and {planted} dark ones in {build.seconds:.0f} s")
    out = subprocess.run([sys.executable, __file__, "--child", "detect", "--workdir",
                          str(workdir)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"detection failed:\n{out.stderr}")
    return json.loads(out.stdout.splitlines()[-1]) | {"build_s": build.seconds}


def detect_child(workdir: Path) -> dict:
    """The dark-file detection alone, timed, its SQL queries counted."""
    import sqlalchemy as sa
    import sync_fixtures

    from federation.audit.dark import find_dark, own_entries
    from federation.butler import Butler
    from federation.registry.audits import AuditReads

    with Butler(workdir / sync_fixtures.SOURCE) as butler:
        statements = []
        sa.event.listen(butler.registry.db.engine, "before_cursor_execute",
                        lambda *args: statements.append(args[2]))
        root = butler.datastore.root
        own = own_entries(root, root / "registry.sqlite3")
        with Timer() as timer:
            dark, walked = find_dark(root, AuditReads(butler.registry.db), own)
    return {"seconds": timer.seconds, "cpu_seconds": timer.cpu, "rss_mib": peak_rss_mib(),
            "walked": walked, "dark": len(dark),
            "statements": sum(s.lstrip().upper().startswith("SELECT") for s in statements)}


def child(args: argparse.Namespace, phase: str, what: str) -> dict:
    """Run one phase in a fresh process of this script, in a temporary directory."""
    log(f"{what} ...")
    with tempfile.TemporaryDirectory(prefix="fed-bench-audit-") as tmp:
        out = subprocess.run([sys.executable, __file__, "--child", phase, "--workdir", tmp,
                              "--files", str(args.files), "--kib", str(args.kib),
                              "--repeat", str(args.repeat), "--dark-n", str(args.dark_n),
                              "--planted", str(args.planted)],
                             capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{phase} failed:\n{out.stderr}")
    return json.loads(out.stdout.splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000, help="files audited (0: skip)")
    parser.add_argument("--kib", type=int, default=1024, help="size of each, KiB")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--dark-n", type=int, default=1_000_000,
                        help="files of the datastore walked for dark files (0: skip)")
    parser.add_argument("--planted", type=int, default=100, help="dark files among them")
    parser.add_argument("--child", choices=["throughput", "dark", "detect"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "throughput":
        print(json.dumps(throughput_child(args.workdir, args.files, args.kib, args.repeat)))
        return 0
    if args.child == "dark":
        print(json.dumps(dark_child(args.workdir, args.dark_n, args.planted)))
        return 0
    if args.child == "detect":
        print(json.dumps(detect_child(args.workdir)))
        return 0
    rows, results = [], []
    if args.files and shutil.which("xxhsum") is None:
        log("xxhsum is not installed (Debian: apt install xxhash): throughput skipped")
    elif args.files:
        found = child(args, "throughput", f"audit of {args.files:,} files of {args.kib} KiB "
                      "against xxhsum -H2")
        mib = found["mib"]
        for method, label in (("fed audit", f"fed audit ({found['cores']} processes)"),
                              ("xxhsum", "xxhsum -H2, one process"),
                              ("xxhsum -P", f"xxhsum -H2, xargs -P {found['cores']}")):
            seconds = found["median"][method]
            ratio = found["ratio"].get(method)
            rows.append((label, f"{args.files:,}", f"{seconds:.3f}",
                         f"{found['cpu'][method]:.3f}", f"{mib / seconds:,.0f} MiB/s",
                         "" if ratio is None else f"audit {ratio:.2f}x"))
        best = found["ratio"]["xxhsum -P"]
        results.append(("audit throughput / xxhsum -H2 on every core", f"{best:.2f}x",
                        ">= 0.8x", best >= 0.8))
    if args.dark_n:
        dark = child(args, "dark", f"dark-file detection over {args.dark_n:,} files")
        rows.append(("dark files: walk + recorded paths + difference", f"{args.dark_n:,}",
                     f"{dark['seconds']:.3f}", f"{dark['cpu_seconds']:.3f}",
                     f"{dark['walked'] / dark['seconds']:,.0f} files/s",
                     f"{dark['dark']} dark found, {dark['statements']} SQL queries, "
                     f"peak RSS {dark['rss_mib']:.0f} MiB (built in {dark['build_s']:.0f} s)"))
        results.append(("dark files found", str(dark["dark"]), f"= {args.planted}",
                        dark["dark"] == args.planted))
        results.append(("SQL queries of the dark-file detection",
                        str(dark["statements"]), "<= 2", dark["statements"] <= 2))
    print_rows(f"audit benchmark (medians of {args.repeat})",
               ("phase", "N", "seconds", "CPU s", "rate", "detail"), rows)
    print_rows("targets", ("target", "measured", "limit", "result"),
               [(t, m, lim, "PASS" if ok else "FAIL") for t, m, lim, ok in results])
    return 0 if all(ok for *_, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
