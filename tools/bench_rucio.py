"""Rucio benchmark: files registered in and moved through a real Rucio server, against rsync.

Measures files/s and MiB/s of ``fed rucio register`` and of ``fed sync`` between two sites
whose files go through Rucio, beside ``rsync -a`` of the same files, and how many requests
fed makes to Rucio: bulk, so they must grow much slower than the number of files.

One Rucio server runs for the whole benchmark: ``RucioServer`` of ``tests/rucio_server.py``
(imported by putting ``tests/`` on ``sys.path``; it needs ``.rucio-venv`` from
``tools/install-rucio.sh`` and PostgreSQL on 127.0.0.1:5432), in the work directory; it is
stopped, and its database dropped, at the end, also on errors and Ctrl-C. FTS cannot run
here: ``TransferAgent`` of ``tests/rucio_federation.py`` stands in for it, in a thread of
this process (its CPU is reported apart from fed's).

Setup (not timed), for each N of ``--sizes`` (``--file-kib`` KiB files of random bytes) and,
with ``--large-mb M``, for 4 files of M MiB: a source repository of site NCSA holding the
files as N ``raw`` datasets in ``HSC/raw/all`` (bulk ``Butler.ingest``, transfer=move).

Every repeat gets a fresh scope and two fresh POSIX RSEs, NCSA and IN2P3 (lfn2pfn
``identity`` under ``BASE/SITE/``, as in ``RucioFederation``): registration is idempotent,
so re-using a scope would measure "already registered" and a sync that has nothing to
move. A site's repository must be ``PREFIX/SCOPE``, so the NCSA repository (files and
registry, built once) is renamed into the new scope's place; IN2P3 is created empty. Then,
timed, after ``os.sync()`` and ``--settle`` seconds, in this order:

1. ``fed rucio register NCSA --json``: reads every file once (size + xxh3 checked,
   adler32 + md5 for Rucio), registers the replicas, one Rucio dataset per RUN, a rule
   per file on NCSA's RSE. Requests: the report's ``calls``.
2. ``fed sync NCSA IN2P3 --json`` with the agent running (every ``--agent-interval`` s):
   fed finds the files registered, adds a rule per file on IN2P3's RSE, waits (polling
   every ``--poll`` s) until Rucio lists them AVAILABLE there, checks each in place (size
   + xxh3) and imports the records. Requests: the report's ``rucio_requests``.
3. ``rsync -a`` of NCSA's repository without its registry into an empty directory: the
   reference. It runs before 1 on even repeats and after 2 on odd ones.

fed runs as a subprocess (``fed`` of this venv; tokens and its rucio.cfg under the work
dir): wall seconds, and its CPU seconds from ``RUSAGE_CHILDREN`` deltas. "agent CPU" is
the agent thread's ``thread_time``; "server CPU" the live gunicorn and PostgreSQL
processes' utime+stime from /proc (the agent's own requests during a sync included).
Medians of ``--repeat`` runs; sync/rsync is the median of each repeat's ratio.

Checked afterwards (not timed): register registered N files and N x size bytes; the sync
brought N files; IN2P3's registry holds N datasets and each file on disk matches its
record (size and xxh3); the rsync copy holds N files and the bytes.

Bound (exit status 1 if missed, or if a run failed): at the largest N, the requests of a
register and of a sync are at most 0.05 per file (50 per 1000 files), and between the
smallest and the largest N they grow by at most 0.05 per added file: growing at most 1/20
as fast as N. A bulk request takes 1000 names, so each step over N files costs ~N/1000
requests; one request per file, or polling more often than the agent delivers, breaks it.

Run it from the repository root with the project's virtualenv::

    .venv/bin/python tools/bench_rucio.py                      # N = 1000, 5000; 64 KiB
    .venv/bin/python tools/bench_rucio.py --sizes 200 1000 --repeat 1
    .venv/bin/python tools/bench_rucio.py --sizes 1000 5000 --large-mb 256 --keep

``--workdir`` defaults to a temporary directory removed at the end (kept with ``--keep``);
a directory given explicitly must be empty or absent, and is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import (
    DETECTORS,
    FIRST_EXPOSURE,
    dimension_records,
    fmt,
    log,
    median,
    pair_ratios,
    print_rows,
    settle,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # rucio_server.py and rucio_federation.py

RUN = "HSC/raw/all"
SOURCE, DEST = "NCSA", "IN2P3"
OWNS = {SOURCE: ["HSC/raw", "HSC/calib", "HSC/runs"], DEST: ["u/in2p3"]}
FED = str(Path(sys.executable).parent / "fed")
RSYNC_EXCLUDE = ("registry.sqlite3*", "federation.yaml", ".federation-*")
MIB = 1 << 20
PER_FILE = 0.05  # requests per file, at most (see the docstring)
STEPS = ("register", "sync", "rsync")


@dataclass
class Case:
    """One data set, its repository and its timed runs (per step: dicts of figures)."""

    count: int
    size: int
    base: Path
    small: bool = True  # part of the request-growth check
    repo: Path | None = None  # NCSA's repository, where the last repeat put it
    runs: dict[str, list[dict]] = field(default_factory=lambda: {s: [] for s in STEPS})
    error: str | None = None

    @property
    def total(self) -> int:
        return self.count * self.size

    def describe(self) -> str:
        size = f"{self.size // MIB} MiB" if self.size >= MIB else f"{self.size // 1024} KiB"
        return f"{self.count:,} x {size}"


# -- setup -----------------------------------------------------------------------------


def build_source(case: Case) -> None:
    """NCSA's repository (at ``base/NCSA/seed``) with the case's files as raw datasets."""
    from federation.butler import Butler, FileDataset

    repo = case.base / SOURCE / "seed"
    Butler.create(repo, site=SOURCE)
    incoming = case.base / "incoming"
    incoming.mkdir()
    datasets = []
    for i in range(case.count):
        path = incoming / f"{i:07d}.dat"
        with open(path, "wb") as out:
            for start in range(0, case.size, 16 * MIB):
                out.write(os.urandom(min(16 * MIB, case.size - start)))
        datasets.append(FileDataset(path, "raw", {
            "instrument": "HSC", "exposure": FIRST_EXPOSURE + i // DETECTORS,
            "detector": i % DETECTORS}))
    with Butler(repo) as butler:
        for dimension, records in dimension_records(case.count).items():
            butler.registry.insert_dimension_records(dimension, records)
        butler.registry.register_dataset_type("raw", ["exposure", "detector"], "Bytes")
        butler.ingest(datasets, run=RUN, transfer="move")
    shutil.rmtree(incoming)
    case.repo = repo


def new_scope(server, client, case: Case, args: argparse.Namespace) -> tuple[str, Path]:
    """A fresh scope, RSEs NCSA_TAG and IN2P3_TAG, NCSA's repository moved to its place,
    IN2P3 empty, and the two site definitions; (scope, sites directory)."""
    import yaml

    from federation.butler import Butler

    tag = uuid.uuid4().hex[:8]
    scope = f"bench{tag}"
    client.add_scope("root", scope)
    sites = case.base / f"sites-{scope}"
    sites.mkdir()
    for site in (SOURCE, DEST):
        rse = f"{site}_{tag.upper()}"
        client.add_rse(rse, deterministic=True, rse_type="DISK")
        client.add_protocol(rse, {
            "scheme": "file", "hostname": "localhost", "port": 0,
            "prefix": f"{case.base / site}/", "impl": "rucio.rse.protocols.posix.Default",
            "domains": {"lan": {"read": 1, "write": 1, "delete": 1},
                        "wan": {"read": 1, "write": 1, "delete": 1,
                                "third_party_copy_read": 1, "third_party_copy_write": 1}}})
        client.add_rse_attribute(rse, "lfn2pfn_algorithm", "identity")
        client.set_local_account_limit("root", rse, -1)
        repo = case.base / site / scope
        (sites / f"{site}.yaml").write_text(yaml.safe_dump({
            "name": site, "registry": f"sqlite:///{repo / 'registry.sqlite3'}",
            "root": str(repo), "owns": OWNS[site], "rucio": {
                "url": server.url, "account": "root", "username": server.username,
                "password": server.password, "scope": scope, "rse": rse,
                "poll": args.poll, "timeout": 300, "wait": 3600}}))
    os.rename(case.repo, case.base / SOURCE / scope)
    case.repo = case.base / SOURCE / scope
    Butler.create(case.base / DEST / scope, site=DEST)
    return scope, sites


# -- measuring -------------------------------------------------------------------------


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def server_cpu(server) -> float:
    """CPU seconds so far of the live processes of gunicorn's group and of PostgreSQL."""
    group, total = server._proc.pid, 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:]
        fields = rest.split()  # state ppid pgrp ... utime (12th) stime (13th)
        if int(fields[2]) == group or name.startswith("postgres"):
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def timed(argv: list[str], env: dict[str, str] | None, server) -> tuple[dict, str]:
    """Run a command to its end: its figures, and its stdout."""
    cpu, rucio, start = children_cpu(), server_cpu(server), time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    figures = {"seconds": seconds, "cpu": children_cpu() - cpu,
               "server_cpu": server_cpu(server) - rucio}
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv[:3])} exited {proc.returncode}: "
                           f"{(proc.stdout + proc.stderr).strip()[-800:]}")
    return figures, proc.stdout


def make_agent(client, scope: str):
    from rucio_federation import TransferAgent

    class TimedAgent(TransferAgent):
        """The agent, with the CPU seconds of its thread counted."""

        cpu = 0.0

        def run_once(self) -> int:
            start = time.thread_time()
            try:
                return super().run_once()
            finally:
                self.cpu += time.thread_time() - start

    return TimedAgent(client, scope)


def check_files(directory: Path, case: Case) -> None:
    sizes = [p.stat().st_size for p in directory.rglob("*") if p.is_file()]
    if len(sizes) != case.count or sum(sizes) != case.total:
        raise RuntimeError(f"{directory} holds {len(sizes)} files, {sum(sizes):,} bytes; "
                           f"expected {case.count}, {case.total:,}")


def check_destination(repo: Path, case: Case) -> None:
    """IN2P3 holds the N datasets, and each file on disk matches its record."""
    from federation.butler import Butler
    from federation.datastore.checksum import file_checksum

    with Butler(repo) as butler:
        datasets = len(butler.query_datasets("raw", [RUN]))
        files = list(butler.registry.datasets.iter_files())
    bad = [s.path for _, s, _ in files if file_checksum(repo / s.path) != (s.size, s.checksum)]
    if datasets != case.count or len(files) != case.count or bad \
            or sum(s.size for _, s, _ in files) != case.total:
        raise RuntimeError(f"{repo}: {datasets} datasets, {len(files)} files, "
                           f"{len(bad)} not matching their records (first: {bad[:1]})")


def one_repeat(server, client, case: Case, repeat: int, args: argparse.Namespace) -> None:
    scope, sites = new_scope(server, client, case, args)
    env = {k: v for k, v in os.environ.items() if k != "RUCIO_CONFIG"} | {
        "FED_SITES": str(sites), "XDG_CACHE_HOME": str(case.base.parent / "cache")}
    copy = case.base / "rsync-copy"

    def rsync() -> None:
        shutil.rmtree(copy, ignore_errors=True)
        settle(args.settle)
        figures, _ = timed(["rsync", "-a", *(f"--exclude={e}" for e in RSYNC_EXCLUDE),
                            f"{case.repo}/", f"{copy}/"], None, server)
        check_files(copy, case)
        shutil.rmtree(copy)
        case.runs["rsync"].append(figures)
        log(f"  rsync: {figures['seconds']:.2f} s")

    if repeat % 2 == 0:
        rsync()
    settle(args.settle)
    figures, out = timed([FED, "rucio", "register", SOURCE, "--json"], env, server)
    done = json.loads(out)
    if done["registered"] != case.count or done["bytes"] != case.total or done["failed"]:
        raise RuntimeError(f"register: {out[:800]}")
    case.runs["register"].append(figures | {"requests": done["calls"]})
    log(f"  register: {figures['seconds']:.2f} s, {done['calls']} requests")

    settle(args.settle)
    agent = make_agent(client, scope)
    with agent.running(args.agent_interval):
        figures, out = timed([FED, "sync", SOURCE, DEST, "--json"], env, server)
    report = json.loads(out)
    if report["files"] != case.count or report["bytes"] != case.total \
            or report["failed_files"] or agent.failures:
        raise RuntimeError(f"sync: {out[:800]} agent: {agent.failures[:2]}")
    check_destination(case.base / DEST / scope, case)
    case.runs["sync"].append(figures | {"requests": report["rucio_requests"],
                                        "agent_cpu": agent.cpu})
    log(f"  sync: {figures['seconds']:.2f} s, {report['rucio_requests']} requests, "
        f"agent copied {agent.copied}")
    if not args.keep:
        shutil.rmtree(case.base / DEST / scope)
    if repeat % 2 == 1:
        rsync()


# -- report ----------------------------------------------------------------------------


def med(case: Case, step: str, key: str = "seconds") -> float | None:
    return median([r[key] for r in case.runs[step] if key in r])


def print_tables(cases: list[Case], args: argparse.Namespace) -> None:
    body, cpu = [], []
    for c in cases:
        if c.error:
            body.append((c.describe(), f"FAILED: {c.error}", *[""] * 13))
            continue
        reg, syn, rs = med(c, "register"), med(c, "sync"), med(c, "rsync")
        ratio = median(pair_ratios([r["seconds"] for r in c.runs["sync"]],
                                   [r["seconds"] for r in c.runs["rsync"]]))
        body.append((
            c.describe(), fmt(reg, ".2f"), fmt(c.count / reg, ",.0f"),
            fmt(c.total / MIB / reg, ",.1f"), fmt(med(c, "register", "cpu"), ".2f"),
            fmt(syn, ".2f"), fmt(c.count / syn, ",.0f"), fmt(c.total / MIB / syn, ",.1f"),
            fmt(med(c, "sync", "cpu"), ".2f"), fmt(rs, ".2f"), fmt(ratio, ".1f", "x"),
            fmt(med(c, "register", "requests"), ".0f"), fmt(med(c, "sync", "requests"), ".0f"),
            fmt(1000 * med(c, "register", "requests") / c.count, ".1f"),
            fmt(1000 * med(c, "sync", "requests") / c.count, ".1f")))
        cpu.append((c.describe(), fmt(med(c, "register", "cpu"), ".2f"),
                    fmt(med(c, "register", "server_cpu"), ".2f"),
                    fmt(med(c, "sync", "cpu"), ".2f"), fmt(med(c, "sync", "agent_cpu"), ".2f"),
                    fmt(med(c, "sync", "server_cpu"), ".2f"), fmt(med(c, "rsync", "cpu"), ".2f"),
                    " / ".join(" ".join(f"{r['seconds']:.1f}" for r in c.runs[s])
                               for s in STEPS)))
    print_rows(f"Rucio vs rsync -a: medians of {args.repeat} (s = wall seconds; CPU s = fed's "
               "process; requests = fed's to Rucio)",
               ("files", "register s", "files/s", "MiB/s", "CPU s", "sync s", "files/s",
                "MiB/s", "CPU s", "rsync s", "sync/rsync", "req register", "req sync",
                "req/1000 reg", "req/1000 sync"), body)
    print_rows("CPU seconds (medians): fed, the agent standing in for FTS, Rucio server + "
               "PostgreSQL; runs (wall s) register / sync / rsync",
               ("files", "register fed", "register server", "sync fed", "sync agent",
                "sync server", "rsync", "runs"), cpu)


def request_growth(cases: list[Case]) -> list[str]:
    """Print the request-growth check; what it found missed."""
    done = sorted((c for c in cases if c.small and not c.error), key=lambda c: c.count)
    if not done:
        return ["no size completed"]
    low, high = done[0], done[-1]
    missed = []
    print(f"\nrequests to Rucio (bound: <= {PER_FILE} per file at the largest N and per added "
          "file between the smallest and the largest N)")
    for step in ("register", "sync"):
        r_low, r_high = med(low, step, "requests"), med(high, step, "requests")
        per_file = r_high / high.count
        slope = (r_high - r_low) / (high.count - low.count) if high is not low else 0.0
        ok = per_file <= PER_FILE and slope <= PER_FILE
        print(f"  {step}: {r_low:.0f} at N={low.count:,}, {r_high:.0f} at N={high.count:,}: "
              f"x{r_high / r_low:.2f} for x{high.count / low.count:.1f} files; "
              f"{per_file:.4f} per file, {slope:.4f} per added file: "
              f"{'ok' if ok else 'MISSED'}")
        if not ok:
            missed.append(f"{step} requests")
    return missed


# -- main ------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> int:
    from rucio_server import RucioServer, missing_prerequisite

    reason = missing_prerequisite()
    if reason:
        raise SystemExit(f"no Rucio server: {reason}")
    cases = [Case(n, args.file_kib * 1024, workdir / f"n{n}") for n in args.sizes]
    if args.large_mb:
        cases.append(Case(4, args.large_mb * MIB, workdir / "large", small=False))
    server = RucioServer(workdir / "rucio")
    try:
        server.start()
        log(f"Rucio at {server.url} ({server.startup_seconds})")
        os.environ["RUCIO_CONFIG"] = str(server.client_config)
        client = server.client()
        for case in cases:
            log(f"setup: {case.describe()} at {SOURCE} (not timed) ...")
            case.base.mkdir()
            build_source(case)
            for repeat in range(args.repeat):
                log(f"{case.describe()} #{repeat + 1}:")
                try:
                    one_repeat(server, client, case, repeat, args)
                except Exception as exc:
                    log(traceback.format_exc())
                    case.error = f"{type(exc).__name__}: {str(exc)[:200]}"
                    break
            if not args.keep:
                shutil.rmtree(case.base, ignore_errors=True)
    finally:
        server.stop()
    print(f"Rucio benchmark: {os.cpu_count()} CPUs; Rucio server {server.url} (gunicorn "
          f"{server.workers} worker x {server.threads} threads, PostgreSQL); poll "
          f"{args.poll} s, agent every {args.agent_interval} s, settle {args.settle} s")
    print_tables(cases, args)
    missed = request_growth(cases)
    failed = [c.describe() for c in cases if c.error]
    print(f"\nfailed: {', '.join(failed)}" if failed else "\nevery copy checked")
    print("bound met" if not missed else f"missed: {', '.join(missed)}")
    return 1 if missed or failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Files/s and MiB/s of fed rucio register and fed sync through a real "
                    "Rucio server against rsync -a, and the Rucio requests per file.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000], metavar="N",
                        help="numbers of small files, one case each (default 1000 5000)")
    parser.add_argument("--file-kib", type=int, default=64,
                        help="size of each small file in KiB (default 64)")
    parser.add_argument("--large-mb", type=int, default=0,
                        help="also a case of 4 files of this many MiB (default: none)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed repeats per case, medians reported (default 3)")
    parser.add_argument("--poll", type=float, default=1.0,
                        help="the sites' rucio: poll, seconds between fed's looks at the "
                             "rules being replicated (default 1; fed's own default is 5)")
    parser.add_argument("--agent-interval", type=float, default=0.5,
                        help="seconds between the transfer agent's rounds (default 0.5)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds to wait after os.sync() before each timed run "
                             "(default 2)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="work directory, empty or absent; kept (default: a temporary "
                             "one, removed at the end unless --keep)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory and every case's repositories")
    args = parser.parse_args()
    if min(args.sizes + [args.file_kib, args.repeat]) < 1 or args.large_mb < 0 \
            or min(args.poll, args.agent_interval) <= 0 or args.settle < 0:
        parser.error("sizes, --file-kib, --repeat, --poll and --agent-interval must be "
                     "positive")
    if len(set(args.sizes)) != len(args.sizes):
        parser.error("--sizes must differ")
    if not shutil.which("rsync"):
        parser.error("rsync is not installed")
    temporary = args.workdir is None
    if temporary:
        workdir = Path(tempfile.mkdtemp(prefix="fed-bench-rucio-"))
    else:
        workdir = args.workdir.absolute()
        if workdir.exists() and any(workdir.iterdir()):
            parser.error(f"--workdir {workdir} is not empty")
        workdir.mkdir(parents=True, exist_ok=True)
        args.keep = True
    log(f"work directory: {workdir}")
    try:
        return run(args, workdir)
    finally:
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
