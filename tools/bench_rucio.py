"""Rucio benchmark: files registered in and moved through a real Rucio server, vs rsync.

Files/s and MiB/s of ``fed rucio register`` and ``fed sync`` between two sites whose files
go through Rucio, beside ``rsync -a`` of the same files; and fed's requests to Rucio, which
must grow much slower than the number of files.

One Rucio server serves the whole run: ``RucioServer`` of ``tests/rucio_server.py`` (the
``tests/`` directory is put on ``sys.path``; it needs ``.rucio-venv`` from
``tools/install-rucio.sh`` and PostgreSQL on 127.0.0.1:5432), stopped and its database
dropped at the end, also on errors, Ctrl-C and SIGTERM. FTS cannot run here: the
``TransferAgent`` of ``tests/rucio_federation.py`` stands in for it, in a thread of this
process, every ``--agent-interval`` s; its client asks for PFNs 25 names a request (a GET
of more exceeds gunicorn's request line: HTTP 414) and for replicas with ``sort=random``.

Setup (not timed), per N of ``--sizes`` (``--file-kib`` KiB files) and, with
``--large-mb M``, for 4 files of M MiB: a repository of site NCSA holding N ``raw``
datasets of random bytes in ``HSC/raw/all`` (bulk ``Butler.ingest``, transfer=move).
Each repeat gets a fresh scope and fresh POSIX RSEs NCSA and IN2P3 (lfn2pfn ``identity``
under ``BASE/SITE/``, as in ``RucioFederation``): registering is idempotent, so a re-used
scope would time "already registered" and a sync with nothing to move. A repository must
be ``PREFIX/SCOPE``: NCSA's is renamed into place; IN2P3 is created empty. Timed, each
after ``os.sync()`` and ``--settle`` s:

1. ``fed rucio register NCSA --json``: each file read once (size + xxh3 checked, adler32
   + md5 for Rucio), replicas, a Rucio dataset per RUN, a rule per file on NCSA's RSE;
2. ``fed sync NCSA IN2P3 --json``, the agent running: a rule per file on IN2P3's RSE,
   a look every ``--poll`` s until the files are AVAILABLE there, each checked in place
   (size + xxh3), the records imported;
3. ``rsync -a`` of NCSA's repository without its registry into an empty directory, the
   reference (before 1 on even repeats, after 2 on odd ones).

fed runs as a subprocess: wall seconds and CPU seconds (``RUSAGE_CHILDREN`` deltas);
requests are the reports' ``calls`` and ``rucio_requests``. "agent" is the agent thread's
``thread_time``; "server" the CPU of the live gunicorn processes and of the PostgreSQL
backends of its database (/proc; the agent's requests included). Medians of ``--repeat``
runs; sync/rsync is the median of the repeats' ratios. Checked (not timed): both report
N files and their bytes; IN2P3's registry holds N datasets, each file matching its record
(size, xxh3); rsync's copy holds N files and the bytes.

Bound (exit status 1 when missed or a run failed): register and sync each make at most
0.05 requests per file at the largest N, and at most 0.05 more per file added from the
smallest N to the largest, i.e. requests grow at most 1/20 as fast as N. Bulk requests
take 1000 names, so a step costs ~N/1000 requests; a request per file breaks the bound.

    .venv/bin/python tools/bench_rucio.py                      # N = 1000, 5000; 64 KiB
    .venv/bin/python tools/bench_rucio.py --sizes 100 300 --repeat 1 --large-mb 64

``--workdir`` (empty or absent) is kept; the default, a temporary directory, is removed
at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import benchlib as bl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # rucio_server.py and rucio_federation.py

RUN = "HSC/raw/all"
SOURCE, DEST = "NCSA", "IN2P3"
OWNS = {SOURCE: ["HSC/raw", "HSC/calib", "HSC/runs"], DEST: ["u/in2p3"]}
FED = str(Path(sys.executable).parent / "fed")
RSYNC_EXCLUDE = ("registry.sqlite3*", "federation.yaml", ".federation-*")
MIB = 1 << 20
PER_FILE = 0.05  # requests per file, at most (see the docstring)
PFN_CHUNK = 25  # names per lfns2pfns request of the agent
STEPS = ("register", "sync", "rsync")


@dataclass
class Case:
    """One data set, NCSA's repository and the timed runs (per step, dicts of figures)."""

    count: int
    size: int
    base: Path
    small: bool = True  # in the request-growth check
    repo: Path | None = None
    runs: dict[str, list[dict]] = field(default_factory=lambda: {s: [] for s in STEPS})
    error: str | None = None

    @property
    def total(self) -> int:
        return self.count * self.size

    def describe(self) -> str:
        size = f"{self.size // MIB} MiB" if self.size >= MIB else f"{self.size // 1024} KiB"
        return f"{self.count:,} x {size}"


def build_source(case: Case) -> None:
    """NCSA's repository (first at ``base/NCSA/seed``) holding the case's files."""
    from federation.butler import Butler, FileDataset

    case.repo = Butler.create(case.base / SOURCE / "seed", site=SOURCE)
    incoming = case.base / "incoming"
    incoming.mkdir()
    datasets = []
    for i in range(case.count):
        path = incoming / f"{i:07d}.dat"
        with open(path, "wb") as out:
            for start in range(0, case.size, 16 * MIB):
                out.write(os.urandom(min(16 * MIB, case.size - start)))
        datasets.append(FileDataset(path, "raw", {
            "instrument": "HSC", "exposure": bl.FIRST_EXPOSURE + i // bl.DETECTORS,
            "detector": i % bl.DETECTORS}))
    with Butler(case.repo) as butler:
        for dimension, records in bl.dimension_records(case.count).items():
            butler.registry.insert_dimension_records(dimension, records)
        butler.registry.register_dataset_type("raw", ["exposure", "detector"], "Bytes")
        butler.ingest(datasets, run=RUN, transfer="move")
    shutil.rmtree(incoming)


def new_scope(server, client, case: Case, args: argparse.Namespace) -> tuple[str, Path]:
    """A fresh scope and RSEs, NCSA's repository moved into place, IN2P3 empty, and the
    site definitions: (scope, sites directory)."""
    import yaml

    from federation.butler import Butler

    tag = uuid.uuid4().hex[:8]
    scope, sites = f"bench{tag}", case.base / f"sites-{tag}"
    client.add_scope("root", scope)
    sites.mkdir()
    for site in (SOURCE, DEST):
        rse, repo = f"{site}_{tag.upper()}", case.base / site / scope
        client.add_rse(rse, deterministic=True, rse_type="DISK")
        client.add_protocol(rse, {
            "scheme": "file", "hostname": "localhost", "port": 0,
            "prefix": f"{case.base / site}/", "impl": "rucio.rse.protocols.posix.Default",
            "domains": {"lan": {"read": 1, "write": 1, "delete": 1},
                        "wan": {"read": 1, "write": 1, "delete": 1,
                                "third_party_copy_read": 1, "third_party_copy_write": 1}}})
        client.add_rse_attribute(rse, "lfn2pfn_algorithm", "identity")
        client.set_local_account_limit("root", rse, -1)
        (sites / f"{site}.yaml").write_text(yaml.safe_dump({
            "name": site, "registry": f"sqlite:///{repo / 'registry.sqlite3'}",
            "root": str(repo), "owns": OWNS[site], "rucio": {
                "url": server.url, "account": "root", "username": server.username,
                "password": server.password, "scope": scope, "rse": rse,
                "poll": args.poll, "timeout": 300, "wait": 7200}}))
    case.repo = case.repo.rename(case.base / SOURCE / scope)
    Butler.create(case.base / DEST / scope, site=DEST)
    return scope, sites


class AgentClient:
    """The agent's Rucio client: PFN lookups a few names at a time (a GET with every name
    in its URL; gunicorn answers 414 above 4094 bytes, which the agent's thread would
    swallow, every rule left replicating), replica listings unsorted (``sort=random``)."""

    def __init__(self, client) -> None:
        self._client = client

    def __getattr__(self, name: str):
        return getattr(self._client, name)

    def list_replicas(self, *args, **kwargs):
        return self._client.list_replicas(*args, **{"sort": "random"} | kwargs)

    def lfns2pfns(self, rse: str, lfns: list[str], **kwargs) -> dict[str, str]:
        found: dict[str, str] = {}
        for start in range(0, len(lfns), PFN_CHUNK):
            found.update(self._client.lfns2pfns(rse, lfns[start:start + PFN_CHUNK], **kwargs))
        return found


def make_agent(client, scope: str):
    from rucio_federation import TransferAgent

    class TimedAgent(TransferAgent):
        cpu = 0.0  # seconds of the agent's thread

        def run_once(self) -> int:
            start = time.thread_time()
            try:
                return super().run_once()
            finally:
                self.cpu += time.thread_time() - start

    return TimedAgent(AgentClient(client), scope)


def children_cpu() -> float:
    return sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])  # user + system


def server_cpu(server) -> float:
    """CPU seconds so far of the live processes of gunicorn's group and of the PostgreSQL
    backends serving its database."""
    total, backend = 0, f" {server.db_name} ".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()  # pid (comm) state ppid pgrp ...
            fields = stat[stat.rindex(")") + 2:].split()  # utime, stime: 12th and 13th
            if int(fields[2]) == server._proc.pid or stat.startswith(
                    f"{entry.name} (postgres") and backend in Path(entry.path,
                                                                   "cmdline").read_bytes():
                total += int(fields[11]) + int(fields[12])
        except OSError:
            continue
    return total / os.sysconf("SC_CLK_TCK")


def timed(argv: list[str], env: dict[str, str] | None, server) -> tuple[dict, str]:
    """Run a command to its end: its figures, and its stdout."""
    cpu, rucio, start = children_cpu(), server_cpu(server), time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL)
    figures = {"seconds": time.perf_counter() - start, "cpu": children_cpu() - cpu,
               "server_cpu": server_cpu(server) - rucio}
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv[:3])} exited {proc.returncode}: "
                           f"{(proc.stdout + proc.stderr).strip()[-800:]}")
    return figures, proc.stdout


def check_copy(directory: Path, case: Case) -> None:
    sizes = [p.stat().st_size for p in directory.rglob("*") if p.is_file()]
    if len(sizes) != case.count or sum(sizes) != case.total:
        raise RuntimeError(f"{directory} holds {len(sizes)} files, {sum(sizes):,} bytes; "
                           f"expected {case.count}, {case.total:,}")


def check_destination(repo: Path, case: Case) -> None:
    """IN2P3 holds the N datasets, and every file on disk matches its record."""
    from federation.butler import Butler
    from federation.datastore.checksum import file_checksum

    with Butler(repo) as butler:
        datasets = len(butler.query_datasets("raw", [RUN]))
        files = [stored for _, stored, _ in butler.registry.datasets.iter_files()]
    bad = [f.path for f in files if file_checksum(repo / f.path) != (f.size, f.checksum)]
    if datasets != case.count or len(files) != case.count or bad \
            or sum(f.size for f in files) != case.total:
        raise RuntimeError(f"{repo}: {datasets} datasets, {len(files)} files, {len(bad)} "
                           f"not matching their records (first: {bad[:1]})")


def one_repeat(server, client, case: Case, repeat: int, args: argparse.Namespace) -> None:
    scope, sites = new_scope(server, client, case, args)
    env = {k: v for k, v in os.environ.items() if k != "RUCIO_CONFIG"} | {
        "FED_SITES": str(sites), "XDG_CACHE_HOME": str(case.base.parent / "cache")}
    copy = case.base / "rsync-copy"

    def rsync() -> None:
        bl.settle(args.settle)
        figures, _ = timed(["rsync", "-a", *(f"--exclude={e}" for e in RSYNC_EXCLUDE),
                            f"{case.repo}/", f"{copy}/"], None, server)
        check_copy(copy, case)
        shutil.rmtree(copy)
        case.runs["rsync"].append(figures)
        bl.log(f"  rsync: {figures['seconds']:.2f} s")

    if repeat % 2 == 0:
        rsync()
    bl.settle(args.settle)
    figures, out = timed([FED, "rucio", "register", SOURCE, "--json"], env, server)
    done = json.loads(out)
    if done["registered"] != case.count or done["bytes"] != case.total or done["failed"]:
        raise RuntimeError(f"register: {out[:800]}")
    case.runs["register"].append(figures | {"requests": done["calls"]})
    bl.log(f"  register: {figures['seconds']:.2f} s, {done['calls']} requests")

    bl.settle(args.settle)
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
    bl.log(f"  sync: {figures['seconds']:.2f} s, {report['rucio_requests']} requests, "
           f"the agent copied {agent.copied}")
    if not args.keep:
        shutil.rmtree(case.base / DEST / scope)
    if repeat % 2 == 1:
        rsync()


def med(case: Case, step: str, key: str = "seconds") -> float | None:
    return bl.median([r[key] for r in case.runs[step] if key in r])


def print_tables(cases: list[Case], repeat: int) -> None:
    body, cpu = [], []
    for c in cases:
        if c.error:
            body.append((c.describe(), f"FAILED: {c.error}", *[""] * 13))
            continue
        reg, syn = med(c, "register"), med(c, "sync")
        ratio = bl.median(bl.pair_ratios([r["seconds"] for r in c.runs["sync"]],
                                         [r["seconds"] for r in c.runs["rsync"]]))
        requests = [med(c, step, "requests") for step in ("register", "sync")]
        body.append((
            c.describe(), bl.fmt(reg, ".2f"), bl.fmt(c.count / reg, ",.0f"),
            bl.fmt(c.total / MIB / reg, ",.1f"), bl.fmt(med(c, "register", "cpu"), ".2f"),
            bl.fmt(syn, ".2f"), bl.fmt(c.count / syn, ",.0f"), bl.fmt(c.total / MIB / syn, ",.1f"),
            bl.fmt(med(c, "sync", "cpu"), ".2f"), bl.fmt(med(c, "rsync"), ".2f"),
            bl.fmt(ratio, ".1f", "x"), *(bl.fmt(r, ".0f") for r in requests),
            *(bl.fmt(1000 * r / c.count, ".1f") for r in requests)))
        cpu.append((c.describe(), *(bl.fmt(med(c, step, key), ".2f") for step, key in (
            ("register", "cpu"), ("register", "server_cpu"), ("sync", "cpu"),
            ("sync", "agent_cpu"), ("sync", "server_cpu"), ("rsync", "cpu"))),
            " / ".join(" ".join(f"{r['seconds']:.1f}" for r in c.runs[s]) for s in STEPS)))
    bl.print_rows(f"fed through Rucio vs rsync -a: medians of {repeat} (s: wall seconds; "
                  "CPU s: fed's process; req: fed's requests to Rucio)",
                  ("files", "register s", "files/s", "MiB/s", "CPU s", "sync s", "files/s",
                   "MiB/s", "CPU s", "rsync s", "sync/rsync", "req register", "req sync",
                   "req/1000 reg", "req/1000 sync"), body)
    bl.print_rows("CPU seconds (medians): fed; the agent standing in for FTS; Rucio server + "
                  "PostgreSQL. Wall seconds of every run: register / sync / rsync",
                  ("files", "register fed", "register server", "sync fed", "sync agent",
                   "sync server", "rsync", "runs (s)"), cpu)


def request_growth(cases: list[Case]) -> list[str]:
    """Print the request-growth check; what missed the bound."""
    done = sorted((c for c in cases if c.small and not c.error), key=lambda c: c.count)
    if not done:
        return ["no size completed"]
    low, high, missed = done[0], done[-1], []
    print(f"\nrequests to Rucio (bound: <= {PER_FILE} per file at the largest N, and per "
          "added file from the smallest N to the largest)")
    for step in ("register", "sync"):
        r_low, r_high = med(low, step, "requests"), med(high, step, "requests")
        per_file = r_high / high.count
        slope = (r_high - r_low) / (high.count - low.count) if high is not low else 0.0
        ok = per_file <= PER_FILE and slope <= PER_FILE
        print(f"  {step}: {r_low:.0f} at N={low.count:,}, {r_high:.0f} at N={high.count:,}: "
              f"x{r_high / max(r_low, 1):.2f} for x{high.count / low.count:.1f} files; "
              f"{per_file:.4f} per file, {slope:.4f} per added file: "
              f"{'ok' if ok else 'MISSED'}")
        if not ok:
            missed.append(f"{step} requests")
    return missed


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
        os.environ["RUCIO_CONFIG"] = str(server.client_config)
        client = server.client()
        for case in cases:
            bl.log(f"setup: {case.describe()} at {SOURCE} (not timed) ...")
            case.base.mkdir()
            build_source(case)
            for repeat in range(args.repeat):
                bl.log(f"{case.describe()} #{repeat + 1}:")
                try:
                    one_repeat(server, client, case, repeat, args)
                except Exception as exc:
                    bl.log(traceback.format_exc())
                    case.error = f"{type(exc).__name__}: {str(exc)[:200]}"
                    break
            if not args.keep:
                shutil.rmtree(case.base, ignore_errors=True)
    finally:
        server.stop()
    print(f"Rucio benchmark: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} "
          f"at the end; Rucio server (gunicorn {server.workers} worker x {server.threads} "
          f"threads, PostgreSQL); poll {args.poll} s, agent every {args.agent_interval} s")
    print_tables(cases, args.repeat)
    missed = request_growth(cases)
    failed = [c.describe() for c in cases if c.error]
    print(f"\nfailed: {', '.join(failed)}" if failed else "\nevery copy checked")
    print("bound met" if not missed else f"bound missed: {', '.join(missed)}")
    return 1 if missed or failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(
        "Files/s and MiB/s of 'fed rucio register' and 'fed sync' through a real Rucio "
        "server against rsync -a, and fed's Rucio requests per file."))
    add = parser.add_argument
    add("--sizes", type=int, nargs="+", default=[1000, 5000], metavar="N",
        help="numbers of small files, one case each (default 1000 5000)")
    add("--file-kib", type=int, default=64, help="small files' size, KiB (default 64)")
    add("--large-mb", type=int, default=0, help="also a case of 4 files of this many MiB")
    add("--repeat", type=int, default=3, help="timed repeats per case (default 3; medians)")
    add("--poll", type=float, default=1.0, help="the sites' 'rucio: poll', seconds between "
        "fed's looks at the files on their way (default 1; fed's own default is 5)")
    add("--agent-interval", type=float, default=0.5,
        help="seconds between the transfer agent's rounds (default 0.5)")
    add("--settle", type=float, default=2.0,
        help="seconds to wait after os.sync() before each timed run (default 2)")
    add("--workdir", type=Path, help="work directory, empty or absent; kept (default: a "
        "temporary one, removed at the end unless --keep)")
    add("--keep", action="store_true", help="keep the work directory and repositories")
    args = parser.parse_args()
    if min(args.sizes + [args.file_kib, args.repeat]) < 1 or args.large_mb < 0 \
            or min(args.poll, args.agent_interval) <= 0 or args.settle < 0:
        parser.error("sizes, --file-kib, --repeat, --poll and --agent-interval must be > 0")
    if len(set(args.sizes)) != len(args.sizes):
        parser.error("--sizes must differ")
    if not shutil.which("rsync"):
        parser.error("rsync is not installed")
    if args.workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="fed-bench-rucio-"))
    else:
        workdir = args.workdir.absolute()
        if workdir.exists() and any(workdir.iterdir()):
            parser.error(f"--workdir {workdir} is not empty")
        workdir.mkdir(parents=True, exist_ok=True)
        args.keep = True
    bl.log(f"work directory: {workdir}")

    def interrupted(signum, frame) -> None:  # SIGTERM as Ctrl-C: the server is stopped
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    try:
        return run(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
