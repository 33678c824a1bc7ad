"""Tables and targets of ``bench_sync.py``: medians, pair ratios, PASS/FAIL."""

from __future__ import annotations

import os
from typing import Any

from benchlib import fmt, median, pair_ratios, print_rows
from sync_fixtures import FILE_SIZE, delta_count

FULL_VS_RSYNC = 1.5  # full sync at most this many times rsync's seconds
LSST_VS_OURS = 4.0  # transfer_from at least this many times the full sync's seconds
FLAT_COST = 1.25  # ms/dataset of the largest N within this factor of the smallest N's
NOOP_VS_RSYNC = 1.0  # fed's no-op strictly below rsync's
DELTA_VS_FULL = 0.05
RSS_LIMIT_MIB = 300.0


def ok(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if "seconds" in r]


def seconds(runs: list[dict[str, Any]], key: str = "seconds") -> float | None:
    return median([r[key] for r in ok(runs)])


def ratios(a_runs: list[dict[str, Any]], b_runs: list[dict[str, Any]]) -> list[float]:
    """Pair by pair (run i of A over run i of B), over pairs where both completed."""
    pairs = [(a, b) for a, b in zip(a_runs, b_runs, strict=False) if "seconds" in a
             and "seconds" in b]
    return pair_ratios([a["seconds"] for a, _ in pairs], [b["seconds"] for _, b in pairs])


def status(passed: bool | None) -> str:
    return "SKIP" if passed is None else "PASS" if passed else "FAIL"


def size_figures(entry: dict[str, Any]) -> dict[str, Any]:
    """Medians and ratios of one N."""
    n, full, rsync = entry["n"], entry.get("full", []), entry.get("rsync", [])
    lsst = entry.get("lsst", {})
    full_s = seconds(full)
    lsst_s = lsst.get("seconds")
    return {"n": n, "rsync_s": seconds(rsync), "rsync_cpu": seconds(rsync, "cpu_seconds"),
            "full_s": full_s, "full_cpu": seconds(full, "cpu_seconds"),
            "full_vs_rsync": median(ratios(full, rsync)),
            "ms_per_dataset": None if full_s is None else 1000 * full_s / n,
            "lsst_s": lsst_s, "lsst_cpu": lsst.get("cpu_seconds"),
            "lsst_vs_ours": None if lsst_s is None or not full_s else lsst_s / full_s,
            "full_rss": max((r["peak_rss_mib"] for r in ok(full)), default=None)}


def size_targets(entry: dict[str, Any], fig: dict[str, Any], target) -> None:
    n = entry["n"]
    if "error" in entry["build"]:
        target(f"N={n:,}: source built", entry["build"]["error"], "completes", False)
        return
    full, rsync = entry.get("full", []), entry.get("rsync", [])
    complete = (len(ok(full)) == len(full) and len(ok(rsync)) == len(rsync)
                and all(r["files"] == n for r in rsync)
                and all(r["dest_datasets"] == n and r["dest_files"] == n and r["files"] == n
                        for r in full))
    errors = [r["error"] for r in full + rsync if "error" in r]
    target(f"N={n:,}: every rsync and full sync complete", errors[0] if errors else
           f"{len(ok(rsync))} rsync, {len(ok(full))} full", f"{n:,} files / datasets", complete)
    ratio = fig["full_vs_rsync"]
    target(f"N={n:,}: full sync / rsync -a", fmt(ratio, ".2f", "x"), f"<= {FULL_VS_RSYNC}x",
           None if ratio is None else ratio <= FULL_VS_RSYNC)
    lsst = entry.get("lsst", {})
    if "skipped" in lsst:
        target(f"N={n:,}: transfer_from / full sync", lsst["skipped"], f">= {LSST_VS_OURS}x",
               None)
    elif "error" in lsst or lsst.get("count") != n:
        target(f"N={n:,}: transfer_from / full sync", lsst.get("error", "wrong count"),
               f">= {LSST_VS_OURS}x", False)
    else:
        ratio = fig["lsst_vs_ours"]
        target(f"N={n:,}: transfer_from / full sync", fmt(ratio, ".2f", "x"),
               f">= {LSST_VS_OURS}x", None if ratio is None else ratio >= LSST_VS_OURS)


def noop_delta_rows(entry: dict[str, Any], fig: dict[str, Any],
                    timed, target) -> None:
    n, d = entry["n"], delta_count(entry["n"])
    setup = entry.get("noop_setup", {})
    errors = [r["error"] for r in setup.values() if "error" in r]
    if errors:
        target("no-op: synced copies made", errors[0], "completes", False)
    noop = entry.get("noop", {"fed": [], "rsync": []})
    fed, rsync = noop["fed"], noop["rsync"]
    if fed or rsync:
        changed = sum(1 for r in ok(fed) if r["changed"])
        timed(f"no-op: fed sync, whole process (median of {len(ok(fed))})", n,
              seconds(fed), seconds(fed, "cpu_seconds"), None,
              f"changed something in {changed} run(s)!" if changed else "nothing changed")
        timed(f"no-op: rsync -a into its synced copy (median of {len(ok(rsync))})", n,
              seconds(rsync), seconds(rsync, "cpu_seconds"), None, "")
        errors = [r["error"] for r in fed + rsync if "error" in r]
        target("no-op: fed sync changed nothing", errors[0] if errors else
               f"{changed} run(s) changed something", "0", not errors and not changed)
        ratio = median(ratios(fed, rsync))
        target("no-op: fed sync / rsync -a (whole processes)", fmt(ratio, ".2f", "x"),
               f"< {NOOP_VS_RSYNC:.0f}x", None if ratio is None else ratio < NOOP_VS_RSYNC)
    delta = entry.get("delta", {})
    if "seconds" not in delta:
        target(f"delta: +{d:,} datasets synced", delta.get("error", "not run"), "completes",
               False)
        return
    timed(f"delta sync (+{d:,} datasets = 1%)", n + d, delta["seconds"],
          delta["cpu_seconds"], d / delta["seconds"], f"{delta['files']:,} files moved")
    target(f"delta: exactly the +{d:,} datasets synced",
           f"{delta['files']:,} files, {delta['dest_datasets']:,} datasets",
           f"{d:,} files, {n + d:,} datasets",
           delta["files"] == d and delta["dest_datasets"] == n + d)
    if fig["full_s"]:
        ratio = delta["seconds"] / fig["full_s"]
        target("delta / full sync", f"{ratio:.1%}", f"< {DELTA_VS_FULL:.0%}",
               ratio < DELTA_VS_FULL)


def records_rows(records: dict[str, Any], timed, target) -> None:
    if "seconds" not in records:
        target("records-only sync", records.get("error", "not run"), "completes", False)
        return
    n = records["n"]
    timed("records-only sync (fabricated file records, no files)", n, records["seconds"],
          records["cpu_seconds"], n / records["seconds"],
          f"peak RSS {records['peak_rss_mib']:,.0f} MiB")
    target(f"records-only: {n:,} datasets at the destination, no file moved",
           f"{records['dest_datasets']:,} datasets, {records['files']:,} files",
           f"{n:,}, 0", records["dest_datasets"] == n and records["files"] == 0)
    target("records-only: peak RSS (MiB)", f"{records['peak_rss_mib']:,.0f}",
           f"< {RSS_LIMIT_MIB:.0f}", records["peak_rss_mib"] < RSS_LIMIT_MIB)


def evaluate(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The three tables: per N, other timed rows, and targets."""
    sizes, timed_rows, targets = [], [], []

    def timed(phase, n, wall, cpu, rate, detail):
        timed_rows.append({"phase": phase, "n": n, "seconds": wall, "cpu_seconds": cpu,
                           "rate": rate, "detail": detail})

    def target(name, value, limit, passed):
        targets.append({"target": name, "value": value, "limit": limit,
                        "status": status(passed)})

    for entry in results["sizes"]:
        fig = size_figures(entry)
        sizes.append(fig)
        size_targets(entry, fig, target)
        if "noop" in entry or "delta" in entry:
            noop_delta_rows(entry, fig, timed, target)
    costs = [f for f in sizes if f["ms_per_dataset"] is not None]
    if len(costs) >= 2:
        flat = costs[-1]["ms_per_dataset"] / costs[0]["ms_per_dataset"]
        target(f"ms/dataset at N={costs[-1]['n']:,} / at N={costs[0]['n']:,}",
               f"{flat:.2f}x", f"<= {FLAT_COST}x", flat <= FLAT_COST)
    else:
        target("ms/dataset flat in N", "needs two sizes", f"<= {FLAT_COST}x", None)
    rss = [f["full_rss"] for f in sizes if f["full_rss"] is not None]
    rss += [e["delta"]["peak_rss_mib"] for e in results["sizes"]
            if "peak_rss_mib" in e.get("delta", {})]
    if rss:
        target("full and delta syncs: peak RSS (MiB)", f"{max(rss):,.0f}",
               f"< {RSS_LIMIT_MIB:.0f}", max(rss) < RSS_LIMIT_MIB)
    if results.get("records") is not None:
        records_rows(results["records"], timed, target)
    return {"sizes": sizes, "timed": timed_rows, "targets": targets}


def print_report(rows: dict[str, list[dict[str, Any]]], results: dict[str, Any],
                 repeat: int, settle_s: float) -> None:
    load = results["load_average"]
    print(f"sync benchmark: datasets of {FILE_SIZE} bytes, SQLite -> SQLite, local files; "
          f"{os.cpu_count()} CPUs; load average {load[0]:.2f} at start, {load[-1]:.2f} at end; "
          f"{repeat} interleaved pair(s) per comparison, {settle_s:g} s settle before each run")
    header = ("N", "rsync s", "rsync CPU", "full s", "full CPU", "full/rsync", "ms/dataset",
              "LSST s", "LSST CPU", "LSST/ours", "full RSS MiB")
    body = [(f"{f['n']:,}", fmt(f["rsync_s"]), fmt(f["rsync_cpu"]), fmt(f["full_s"]),
             fmt(f["full_cpu"]), fmt(f["full_vs_rsync"], ".2f", "x"),
             fmt(f["ms_per_dataset"], ".4f"), fmt(f["lsst_s"]), fmt(f["lsst_cpu"]),
             fmt(f["lsst_vs_ours"], ".2f", "x"), fmt(f["full_rss"], ",.0f"))
            for f in rows["sizes"]]
    print_rows("1. full sync (records + files + xxh3 verify) into an empty site, against "
               "rsync -a and lsst.daf.butler transfer_from (medians; ratios: median of pairs)",
               header, body)
    if rows["timed"]:
        header = ("phase", "N", "seconds", "CPU s", "datasets/s", "detail")
        body = [(r["phase"], f"{r['n']:,}", fmt(r["seconds"]), fmt(r["cpu_seconds"]),
                 fmt(r["rate"], ",.0f"), r["detail"]) for r in rows["timed"]]
        print_rows("2. no-op and delta (largest N); 3. memory: records-only sync "
                   "(source rows inserted directly; its file records are fabricated)",
                   header, body)
    body = [(r["target"], r["value"], r["limit"], r["status"]) for r in rows["targets"]]
    print_rows("targets", ("target", "measured", "limit", "result"), body)
