"""Release benchmark: freezing a release of N datasets, and comparing two 1M-entry releases.

1. Creation: a source repository of ``--n`` datasets (default 100,000; rows
   inserted directly, as in bench_sync's records source: freezing reads records,
   not files) and ``fed``'s release creation over its run, in a subprocess of
   its own: seconds, CPU seconds, peak RSS.
2. Verification: a release of ``--verify-files`` files of ``--verify-kib`` KiB
   (default 2,000 x 1 MiB), ``fed``'s verification (one process per core)
   against ``xxhsum -H2`` (Debian's xxhash package) over the same files, page
   cache warm, interleaved, ``--repeat`` times: throughput and its ratio.
3. Diff: two manifests of ``--diff-n`` entries (default 1,000,000) in canonical
   manifest form, the second with ``--changes`` entries changed (default 100),
   their trees built (not timed), then compared with the tree walk (median of
   ``--repeat``): seconds, nodes read, and d * log64(n) beside it for scale.

4. Distribution: a release of ``--sync-n`` datasets of ~1 KiB files (default
   20,000; ingested, then frozen), ``fed sync SOURCE DEST --release DR1`` as a
   whole process into an empty destination (its verification at the end
   included) against ``rsync -a`` of the release's run directory, interleaved
   pairs, ``--repeat`` times: medians of wall and CPU seconds, and the ratio.

Targets (exit status 1 when missed): verification >= 0.8x xxhsum's throughput;
the diff under 1 s and reading O(d log n) nodes (at most 4 * d * (levels + 1)).
The release sync against rsync is reported, with no target.

    python tools/bench_release.py [--n 100000] [--diff-n 1000000] [--changes 100]
                                  [--sync-n 20000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import Timer, log, pair_ratios, peak_rss_mib, print_rows, run_measured, settle


def create_child(workdir: Path, n: int) -> dict:
    """Build the source (not timed), then freeze its run into release DR1 (timed)."""
    import sync_fixtures

    from federation.butler import Butler
    from federation.release.freeze import ReleaseRequest, freeze

    sync_fixtures.write_sites(workdir)
    sync_fixtures.build_records_source(workdir, n)
    with Butler(workdir / sync_fixtures.SOURCE) as butler, Timer() as timer:
        info = freeze(butler, ReleaseRequest("DR1", [sync_fixtures.RUN]))
    return {"seconds": timer.seconds, "cpu_seconds": timer.cpu, "peak_rss_mib": peak_rss_mib(),
            "entries": info.entries}


def verify_child(workdir: Path, files: int, kib: int, repeat: int) -> dict:
    """A release of ``files`` files of ``kib`` KiB (built, not timed), then ``fed``'s
    verification and ``xxhsum -H2`` over the same files, interleaved, page cache warm."""
    import os

    import sync_fixtures

    from federation.butler import Butler, FileDataset
    from federation.release.freeze import ReleaseRequest, freeze
    from federation.release.verify import verify

    sync_fixtures.write_sites(workdir)
    root = sync_fixtures.empty_source(workdir, files)
    incoming = workdir / "incoming"
    ids = sync_fixtures.data_ids(0, files)
    datasets = []
    for exposure, detector in ids:
        path = incoming / str(exposure) / f"{detector:03d}.raw"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(kib << 10))
        datasets.append(FileDataset(path, "raw", {"instrument": "HSC", "exposure": exposure,
                                                  "detector": detector}))
    with Butler(root) as butler:
        butler.ingest(datasets, run=sync_fixtures.RUN, transfer="move")
        freeze(butler, ReleaseRequest("DR1", [sync_fixtures.RUN]))
        paths = [str(butler.datastore.path_of(butler.registry.datasets.file(r.id)[0]))
                 for r in butler.query_datasets("raw", sync_fixtures.RUN)]
    list_file = workdir / "paths.txt"
    list_file.write_text("\n".join(paths))
    xxhsum = ["sh", "-c", f"xargs -a {list_file} xxhsum -H2 > /dev/null"]
    subprocess.run(xxhsum, check=True)  # warm the page cache
    ours, theirs, cpu = [], [], []
    for _ in range(repeat):
        with Butler(root) as butler, Timer() as timer:
            found = verify(butler, "DR1")
        assert found.check.complete, "the release did not verify"
        ours.append(timer.seconds)
        cpu.append(timer.cpu)
        with Timer() as timer:
            subprocess.run(xxhsum, check=True)
        theirs.append(timer.seconds)
    mib = files * kib / 1024
    return {"ours_s": statistics.median(ours), "ours_cpu": statistics.median(cpu),
            "xxhsum_s": statistics.median(theirs), "mib": mib,
            "ratio": statistics.median(t / o for o, t in zip(ours, theirs, strict=True))}


def sync_child(workdir: Path, n: int, repeat: int) -> dict:
    """A release of ``n`` ~1 KiB files (built, not timed), then interleaved pairs of
    ``rsync -a`` of its run directory and ``fed sync --release`` into empty targets."""
    import sync_fixtures as fx

    from federation.butler import Butler
    from federation.release.freeze import ReleaseRequest, freeze

    sites = fx.write_sites(workdir)
    fx.build_source(workdir, n)
    with Butler(workdir / fx.SOURCE) as butler:
        freeze(butler, ReleaseRequest("DR1", [fx.RUN]))
    fed = Path(sys.executable).parent / "fed"
    ours, theirs = [], []
    for _ in range(repeat):
        target = workdir / "rsync-target"
        shutil.rmtree(target, ignore_errors=True)
        settle(1.0)
        theirs.append(run_measured(["rsync", "-a", f"{workdir / fx.SOURCE / fx.RUN}/",
                                    f"{target}/"]))
        fx.create_destination(workdir)
        settle(1.0)
        run = run_measured([str(fed), "sync", fx.SOURCE, fx.DESTINATION, "--release", "DR1",
                            "--sites", str(sites), "--json"], cwd=workdir)
        if run["returncode"] != 0:
            raise SystemExit(f"fed sync --release failed: {run['stderr'][-400:]}")
        verified = json.loads(run["stdout"])["verified"]
        assert verified and verified[0]["complete"] and verified[0]["files"] == n
        ours.append(run)
    return {"ours_s": statistics.median(r["seconds"] for r in ours),
            "ours_cpu": statistics.median(r["cpu_seconds"] for r in ours),
            "rsync_s": statistics.median(r["seconds"] for r in theirs),
            "rsync_cpu": statistics.median(r["cpu_seconds"] for r in theirs),
            "ratio": statistics.median(pair_ratios([r["seconds"] for r in ours],
                                                   [r["seconds"] for r in theirs]))}


def manifest_lines(n: int, changed: set[int]) -> list[bytes]:
    lines = []
    for i in range(n):
        exposure, detector = 903334 + i // 100, i % 100
        checksum = f"{(i * 2654435761 + (7 if i in changed else 0)) % 2**128:032x}"
        lines.append(json.dumps({
            "checksum": checksum, "data_id": {"detector": detector, "exposure": exposure,
                                              "instrument": "HSC"},
            "dataset_type": "raw", "found": True, "id": f"{i:032x}", "run": "HSC/raw/all",
            "size": 1024, "storage_class": "Bytes", "validity": []},
            sort_keys=True, separators=(",", ":")).encode())
    return lines


def bench_diff(n: int, changes: int, repeat: int) -> dict:
    from federation.merkle import build, diff, entry_hash

    changed = set(random.Random(1).sample(range(n), changes))
    log(f"building two trees of {n:,} entries ({changes} changed) ...")
    root_a, nodes_a = build(entry_hash(x) for x in manifest_lines(n, set()))
    root_b, nodes_b = build(entry_hash(x) for x in manifest_lines(n, changed))
    a = {node.hash: node for node in nodes_a}
    b = {node.hash: node for node in nodes_b}
    levels = max(node.level for node in nodes_a) + 1
    times, found = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        found = diff(root_a, root_b, a.__getitem__, b.__getitem__)
        times.append(time.perf_counter() - start)
    assert len(found.only_a) == changes == len(found.only_b), "the diff missed changes"
    return {"seconds": statistics.median(times), "nodes_visited": found.nodes_visited,
            "nodes": len(nodes_a), "levels": levels,
            "d_log_n": round(changes * math.log(n, 64), 1)}


def child(args: argparse.Namespace, phase: str, what: str) -> dict:
    """Run one phase in a fresh process of this script (its own RSS and CPU), in a
    temporary directory."""
    log(f"{what} ...")
    with tempfile.TemporaryDirectory(prefix="fed-bench-release-") as tmp:
        out = subprocess.run([sys.executable, __file__, "--child", phase, "--workdir", tmp,
                              "--n", str(args.n), "--repeat", str(args.repeat),
                              "--verify-files", str(args.verify_files),
                              "--verify-kib", str(args.verify_kib),
                              "--sync-n", str(args.sync_n)],
                             capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{phase} failed:\n{out.stderr}")
    return json.loads(out.stdout.splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="datasets in the release")
    parser.add_argument("--diff-n", type=int, default=1_000_000, help="entries per manifest")
    parser.add_argument("--changes", type=int, default=100, help="entries that differ")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--verify-files", type=int, default=2000,
                        help="files of the release verified (0: skip)")
    parser.add_argument("--verify-kib", type=int, default=1024, help="size of each, KiB")
    parser.add_argument("--sync-n", type=int, default=20_000,
                        help="datasets of the release synced against rsync -a (0: skip)")
    parser.add_argument("--child", choices=["create", "verify", "sync"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "create":
        print(json.dumps(create_child(args.workdir, args.n)))
        return 0
    if args.child == "sync":
        print(json.dumps(sync_child(args.workdir, args.sync_n, args.repeat)))
        return 0
    if args.child == "verify":
        print(json.dumps(verify_child(args.workdir, args.verify_files, args.verify_kib,
                                      args.repeat)))
        return 0
    created = child(args, "create", f"release creation at N={args.n:,}")
    verified = None
    if args.verify_files and shutil.which("xxhsum") is None:
        log("xxhsum is not installed (Debian: apt install xxhash): verification skipped")
    elif args.verify_files:
        verified = child(args, "verify", f"verification of {args.verify_files:,} files of "
                         f"{args.verify_kib} KiB against xxhsum -H2")
    synced = None
    if args.sync_n:
        synced = child(args, "sync", f"release sync of {args.sync_n:,} files against rsync -a")
    diffed = bench_diff(args.diff_n, args.changes, args.repeat)
    rows = [("create (freeze a run)", f"{args.n:,}", f"{created['seconds']:.3f}",
             f"{created['cpu_seconds']:.3f}",
             f"{created['entries']:,} entries, peak RSS {created['peak_rss_mib']:.0f} MiB")]
    if verified is not None:
        rows += [
            (f"fed release verify (median of {args.repeat})", f"{args.verify_files:,}",
             f"{verified['ours_s']:.3f}", f"{verified['ours_cpu']:.3f}",
             f"{verified['mib'] / verified['ours_s']:.0f} MiB/s, {os.cpu_count()} processes"),
            ("xxhsum -H2, same files", f"{args.verify_files:,}",
             f"{verified['xxhsum_s']:.3f}", "",
             f"{verified['mib'] / verified['xxhsum_s']:.0f} MiB/s")]
    if synced is not None:
        rows += [
            (f"fed sync --release (median of {args.repeat})", f"{args.sync_n:,}",
             f"{synced['ours_s']:.3f}", f"{synced['ours_cpu']:.3f}",
             f"{synced['ratio']:.2f}x rsync (median pair ratio), verification included"),
            ("rsync -a of its files", f"{args.sync_n:,}", f"{synced['rsync_s']:.3f}",
             f"{synced['rsync_cpu']:.3f}", "")]
    rows.append((f"diff ({args.changes} changed, median of {args.repeat})",
                 f"{args.diff_n:,}", f"{diffed['seconds']:.4f}", "",
                 f"{diffed['nodes_visited']} of {diffed['nodes']:,} nodes read "
                 f"({diffed['levels']} levels; d*log64(n) = {diffed['d_log_n']})"))
    print_rows("release benchmark", ("phase", "N", "seconds", "CPU s", "detail"), rows)
    bound = 4 * args.changes * (diffed["levels"] + 1)
    results = [("diff of two 1M-entry releases", f"{diffed['seconds']:.3f} s", "< 1 s",
                diffed["seconds"] < 1),
               ("nodes read by the diff", str(diffed["nodes_visited"]), f"<= {bound}",
                diffed["nodes_visited"] <= bound)]
    if verified is not None:
        results.append(("verification throughput / xxhsum -H2", f"{verified['ratio']:.2f}x",
                        ">= 0.8x", verified["ratio"] >= 0.8))
    print_rows("targets", ("target", "measured", "limit", "result"),
               [(t, m, lim, "PASS" if ok else "FAIL") for t, m, lim, ok in results])
    return 0 if all(ok for *_, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
