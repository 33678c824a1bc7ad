"""Transport benchmark: fed's SFTP and HTTP pulls against rsync, scp and curl on loopback.

One run moves the same data with every tool, over a real OpenSSH sshd and a real nginx
bound to 127.0.0.1 (``tests/servers.py``, binaries from ``tools/install-servers.sh``):

* small: ``--small-files`` files (default 10000) of 4 KiB random bytes;
* large: 4 files of ``--large-mb`` MiB (default 256) of random bytes.

Setup (not timed), per shape: a source repository of site ``NCSA`` (SQLite) holding the
files as ``raw`` datasets (Bytes) in ``HSC/raw/all`` (bulk ``Butler.ingest``,
transfer=move), published once to its outbox (``publish``); two definitions of NCSA as
another machine sees it (``transport: sftp`` through the sshd, ``transport: http``
through nginx); a destination site ``IN2P3`` created empty before every fed run.

Timed, ``--repeat`` times each (interleaved; the median is reported):

1. fed SFTP pull: ``sync(NCSA over sftp, IN2P3, SyncOptions(Selection(), jobs=J))``:
   fetch and import the published bundle, plan, then copy every file with size and xxh3
   checks over J SSH connections;
2. fed HTTP pull: the same through nginx, J HTTP connections;
3. ``rsync -a -e "ssh ..."`` of the source's data directory into an empty directory;
4. ``scp -r`` (OpenSSH's scp, SFTP protocol) of the same directory;
5. curl: large files one ``curl -s -o`` per file, in sequence; small files one
   ``curl --parallel --parallel-max J`` with every URL in a ``-K`` config file.

Every copy is checked afterwards (not timed): file count and bytes at the destination.
SSH host keys are always verified (known_hosts + StrictHostKeyChecking=yes for OpenSSH,
federation's refusing policy for paramiko); the setup used is printed.

Targets: large files fed SFTP MiB/s >= 0.5 x scp; large files fed HTTP MiB/s >= 0.8 x
curl; small files fed SFTP time <= 1.5 x rsync (fed HTTP / rsync is reported too). The
exit status is 1 when a target is missed or a transfer failed.

Run it from the repository root with the project's virtualenv::

    .venv/bin/python tools/bench_transport.py
    .venv/bin/python tools/bench_transport.py --small-files 500 --large-mb 16 --repeat 1
    .venv/bin/python tools/bench_transport.py --profile

``--profile`` adds, after the timed runs, one fed SFTP pull of each shape under cProfile
(not counted in the table), all to stderr: the calling thread through ``benchlib.Profiled``
(wall time; its top 30 by tottime and by cumulative time), and every thread the sync
starts (transfer workers, paramiko's packet and prefetch threads) merged, in CPU time of
each thread, top 15 by cumulative time and by tottime. Profiling slows paramiko's packet
thread, which changes how far it runs ahead of the readers: compare the wall and CPU
seconds it logs with the table's.

``--workdir`` defaults to a temporary directory removed at the end; a directory given
explicitly must be empty (or absent) and is kept.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchlib import DETECTORS, FIRST_EXPOSURE, Profiled, dimension_records, log, print_rows

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # servers.py: the sshd and nginx of the test suite

RUN = "HSC/raw/all"
DATA_DIR = "HSC"  # the top directory of RUN in the datastore: what the other tools copy
SOURCE, DESTINATION = "NCSA", "IN2P3"
SMALL_SIZE = 4096
LARGE_COUNT = 4
MIB = 1 << 20
TOP = 15

SFTP_VS_SCP = 0.5  # large files, throughput ratio, at least
HTTP_VS_CURL = 0.8  # large files, throughput ratio, at least
SFTP_VS_RSYNC = 1.5  # small files, time ratio, at most

FED_SFTP, FED_HTTP = "fed SFTP pull", "fed HTTP pull"
RSYNC, SCP, CURL = "rsync -a over ssh", "scp -r", "curl"
FLOOR = "floor: write + rename the files locally (jobs threads)"


@dataclass
class Shape:
    """One data set: its source repository, site definitions and expected content."""

    name: str
    count: int
    size: int
    base: Path
    files: list[tuple[str, int]] = field(default_factory=list)  # (path in the repo, size)

    @property
    def total(self) -> int:
        return self.count * self.size

    @property
    def source_root(self) -> Path:
        return self.base / SOURCE

    @property
    def sites(self) -> Path:
        return self.base / "sites"

    def remote_sites(self, transport: str) -> Path:
        return self.base / f"remote-{transport}"

    def describe(self) -> str:
        size = f"{self.size // MIB} MiB" if self.size >= MIB else f"{self.size // 1024} KiB"
        return f"{self.count:,} files x {size} = {self.total / MIB:,.1f} MiB"


@dataclass
class Result:
    """The timed runs of one method on one shape."""

    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # CPU seconds of the client side
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds and not self.error else None


# -- setup -----------------------------------------------------------------------------


def write_sites(shape: Shape, sshd, web) -> None:
    """NCSA and IN2P3 as local sites, and NCSA as reached over SFTP and over HTTP."""
    import yaml

    owns = {SOURCE: ["HSC/raw", "HSC/calib", "HSC/runs"], DESTINATION: ["u/in2p3"]}
    shape.sites.mkdir(parents=True)
    for name in (SOURCE, DESTINATION):
        (shape.sites / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": name, "registry": f"sqlite:///../{name}/registry.sqlite3",
            "root": f"../{name}", "transport": "local", "owns": owns[name]}))
    blocks = {
        "sftp": {"host": sshd.host, "port": sshd.port, "user": sshd.user,
                 "key_file": str(sshd.user_key), "known_hosts": str(sshd.known_hosts),
                 "root": str(shape.source_root)},
        "http": {"url": web.url_for(shape.source_root)},
    }
    for transport, block in blocks.items():
        folder = shape.remote_sites(transport)
        folder.mkdir()
        (folder / f"{SOURCE}.yaml").write_text(yaml.safe_dump({
            "name": SOURCE, "transport": transport, "owns": owns[SOURCE], transport: block}))


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        left = size
        while left:
            chunk = os.urandom(min(left, 16 * MIB))
            handle.write(chunk)
            left -= len(chunk)


def build_source(shape: Shape) -> float:
    """The source repository holding the shape's files as datasets, published; seconds."""
    from federation.butler import Butler, FileDataset
    from federation.sites import load_site
    from federation.sync.remote.outbox import publish

    begin = time.perf_counter()
    Butler.create(shape.source_root, site=SOURCE)
    incoming = shape.base / "incoming"
    incoming.mkdir()
    ids = [(FIRST_EXPOSURE + i // DETECTORS, i % DETECTORS) for i in range(shape.count)]
    datasets = []
    for i, (exposure, detector) in enumerate(ids):
        path = incoming / f"{i:07d}.dat"
        if shape.size >= MIB:
            write_random(path, shape.size)
        else:
            path.write_bytes(os.urandom(shape.size))
        datasets.append(FileDataset(path, "raw", {"instrument": "HSC", "exposure": exposure,
                                                  "detector": detector}))
    with Butler(shape.source_root) as butler:
        for dimension, records in dimension_records(shape.count).items():
            butler.registry.insert_dimension_records(dimension, records)
        butler.registry.register_dataset_type("raw", ["exposure", "detector"], "Bytes")
        butler.ingest(datasets, run=RUN, transfer="move")
    shutil.rmtree(incoming)
    publish(load_site(SOURCE, shape.sites))
    shape.files = [(p.relative_to(shape.source_root).as_posix(), p.stat().st_size)
                   for p in sorted((shape.source_root / DATA_DIR).rglob("*")) if p.is_file()]
    if len(shape.files) != shape.count or sum(s for _, s in shape.files) != shape.total:
        raise SystemExit(f"{shape.name}: the source holds {len(shape.files)} files, "
                         f"expected {shape.count}")
    return time.perf_counter() - begin


def ssh_options(sshd) -> list[str]:
    """OpenSSH client options: no user config, this key only, the host key verified."""
    return ["-F", "/dev/null", "-i", str(sshd.user_key), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={sshd.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]


def host_key_setup(sshd, web, shape: Shape) -> list[str]:
    """Check that both SSH clients verify the host key; lines describing the setup."""
    import paramiko

    from federation.sites import load_site
    from federation.transport.sftp import HostKeyError, connect

    fingerprint = subprocess.run(["ssh-keygen", "-lf", str(sshd.known_hosts)],
                                 capture_output=True, text=True, timeout=30).stdout.split()
    probe = subprocess.run(["ssh", "-v", *ssh_options(sshd), "-p", str(sshd.port),
                            f"{sshd.user}@{sshd.host}", "true"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        raise SystemExit(f"ssh to the benchmark sshd failed:\n{probe.stderr[-2000:]}")
    found = re.search(r"kex: server->client cipher: (\S+) MAC: (\S+)", probe.stderr)
    openssh_cipher = f"{found.group(1)} (MAC {found.group(2)})" if found else "?"
    version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.split(",")[0]

    settings = load_site(SOURCE, shape.remote_sites("sftp")).files
    client = connect(settings)
    transport = client.get_transport()
    fed_cipher = f"{transport.remote_cipher} (MAC {transport.remote_mac})"
    client.close()
    try:
        connect(replace(settings, known_hosts=sshd.other_known_hosts)).close()
        refused = "NO, it connected"
    except HostKeyError:
        refused = "yes"
    return [
        f"host key: sshd's {fingerprint[-1] if fingerprint else '?'} key "
        f"{fingerprint[1] if len(fingerprint) > 1 else '?'}, recorded for "
        f"[{sshd.host}]:{sshd.port} in {sshd.known_hosts}; always verified, never "
        "StrictHostKeyChecking=no",
        f"  fed SFTP (paramiko {paramiko.__version__}): known_hosts {sshd.known_hosts}, "
        f"unknown or changed keys refused (a known_hosts with another key for this host is "
        f"refused: {refused}); cipher {fed_cipher}",
        f"  rsync/scp ({version}): {shlex.join(ssh_options(sshd))}; cipher {openssh_cipher}",
        f"  fed HTTP and curl: plain HTTP to nginx at {web.url} (sendfile on, no TLS)",
    ]


# -- timed methods ---------------------------------------------------------------------


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def check_copy(directory: Path, shape: Shape) -> None:
    """The copy under ``directory`` must hold the shape's files (count and bytes)."""
    sizes = [p.stat().st_size for p in directory.rglob("*") if p.is_file()]
    if len(sizes) != shape.count or sum(sizes) != shape.total:
        raise RuntimeError(f"{directory} holds {len(sizes)} files, {sum(sizes):,} bytes; "
                           f"expected {shape.count} files, {shape.total:,} bytes")


def fed_pull(shape: Shape, transport: str, jobs: int,
             profile: bool = False) -> tuple[float, float]:
    """Wall and CPU seconds (this process, all threads) of one sync from NCSA (over
    ``transport``) into a fresh, empty IN2P3."""
    from federation.butler import Butler
    from federation.operations.sync import sync_sites as sync
    from federation.sites import list_sites, load_site
    from federation.sync.options import SyncOptions
    from federation.sync.selection import Selection

    dest_root = shape.base / DESTINATION
    shutil.rmtree(dest_root, ignore_errors=True)
    Butler.create(dest_root, site=DESTINATION)
    source = load_site(SOURCE, shape.remote_sites(transport))
    destination = load_site(DESTINATION, shape.sites)
    sites = list_sites(shape.sites)
    label = f"fed {transport.upper()} pull of the {shape.name} files"
    gc.collect()
    try:
        with ThreadProfiles(profile, label), Profiled(profile, f"{label}, calling thread"):
            cpu, start = time.process_time(), time.perf_counter()
            report = sync(source, destination, SyncOptions(Selection(), jobs=jobs),
                          sites=sites)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        if profile:
            log(f"== {label}: {seconds:.2f} s wall, {cpu:.2f} s CPU in this process "
                "(under the profilers)")
        if report.failed or report.conflicts:
            raise RuntimeError(f"{len(report.failed)} failed files (first: "
                               f"{report.failed[:1]}), {len(report.conflicts)} conflicts")
        if report.files != shape.count or report.bytes != shape.total:
            raise RuntimeError(f"the sync moved {report.files} files, {report.bytes:,} bytes")
        check_copy(dest_root / DATA_DIR, shape)
    finally:
        shutil.rmtree(dest_root, ignore_errors=True)
    return seconds, cpu


def timed_command(argv: list[str], target: Path, shape: Shape) -> tuple[float, float]:
    """Wall and CPU seconds of one command copying into the empty directory ``target``."""
    cpu, start = children_cpu(), time.perf_counter()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - start, children_cpu() - cpu
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    check_copy(target, shape)
    return seconds, cpu


def copy_with(method: str, shape: Shape, sshd, web, jobs: int) -> tuple[float, float]:
    """Wall and CPU seconds of one copy of the data directory with rsync, scp or curl.

    The CPU is the clients' (rsync and its ssh, scp and its ssh, curl), not the servers'.
    """
    target = shape.base / "copy"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    remote = f"{sshd.user}@{sshd.host}:{shape.source_root / DATA_DIR}"
    try:
        if method == RSYNC:
            ssh = shlex.join(["ssh", *ssh_options(sshd), "-p", str(sshd.port)])
            return timed_command(["rsync", "-a", "-e", ssh, remote, f"{target}/"], target,
                                 shape)
        if method == SCP:
            return timed_command(["scp", "-q", "-r", *ssh_options(sshd), "-P", str(sshd.port),
                                  remote, str(target)], target, shape)
        base = web.url_for(shape.source_root)
        pairs = [(base + urllib.parse.quote(path), target / path) for path, _ in shape.files]
        if shape.size >= MIB:  # one curl per file, in sequence
            cpu, start = children_cpu(), time.perf_counter()
            for url, out in pairs:
                proc = subprocess.run(["curl", "-s", "-f", "--create-dirs", "-o", str(out),
                                       url], stdin=subprocess.DEVNULL, capture_output=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"curl exited {proc.returncode} for {url}")
            seconds, cpu = time.perf_counter() - start, children_cpu() - cpu
            check_copy(target, shape)
            return seconds, cpu
        config = shape.base / "curl.config"  # written before the clock starts
        config.write_text("".join(f'url = "{url}"\noutput = "{out}"\n' for url, out in pairs))
        try:
            return timed_command(["curl", "-s", "-f", "--create-dirs", "--parallel",
                                  "--parallel-max", str(jobs), "-K", str(config)],
                                 target, shape)
        finally:
            config.unlink()
    finally:
        shutil.rmtree(target, ignore_errors=True)


def write_floor(shape: Shape, jobs: int) -> tuple[float, float]:
    """Wall and CPU seconds to create the shape's files here, as any copy must: each
    written to a staging name and renamed into the repository's layout. No network."""
    target = shape.base / "floor"
    shutil.rmtree(target, ignore_errors=True)
    staging = target / ".staging"
    staging.mkdir(parents=True)
    payload = os.urandom(min(shape.size, 16 * MIB))
    made: set[Path] = set()

    def one(item: tuple[int, tuple[str, int]]) -> None:
        index, (path, size) = item
        final = target / path
        if final.parent not in made:
            final.parent.mkdir(parents=True, exist_ok=True)
            made.add(final.parent)
        temp = staging / f"{index}.part"
        with open(temp, "wb") as handle:
            for start in range(0, size, len(payload)):
                handle.write(payload[:size - start])
        os.replace(temp, final)

    try:
        cpu, start = time.process_time(), time.perf_counter()
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, enumerate(shape.files)))
        return time.perf_counter() - start, time.process_time() - cpu
    finally:
        shutil.rmtree(target, ignore_errors=True)


def measure(method: str, shape: Shape, sshd, web, jobs: int) -> tuple[float, float]:
    if method == FLOOR:
        return write_floor(shape, jobs)
    if method == FED_SFTP:
        return fed_pull(shape, "sftp", jobs)
    if method == FED_HTTP:
        return fed_pull(shape, "http", jobs)
    return copy_with(method, shape, sshd, web, jobs)


# -- profiling -------------------------------------------------------------------------


class ThreadProfiles:
    """cProfile in every thread started inside the block, merged (top functions to stderr).

    ``Profiled`` sees only the thread that enables it; a sync moves its files in worker
    threads and paramiko reads its packets in a thread per connection. Each new thread
    gets its own profiler (``threading.setprofile`` runs before the thread's ``run``),
    timed in CPU seconds of that thread, so waiting (recv, locks) does not hide the work.
    Only threads that have ended are counted: a profiler still running in a live thread
    would be closed with the calling thread's clock.
    """

    def __init__(self, enabled: bool, label: str) -> None:
        self.enabled, self.label = enabled, label
        self.profiles: list[tuple[threading.Thread, Any]] = []
        self._lock = threading.Lock()

    def _start(self, frame, event, arg) -> None:
        import cProfile

        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self.profiles.append((threading.current_thread(), profile))
        profile.enable()  # replaces this hook for the rest of the thread

    def __enter__(self) -> ThreadProfiles:
        if self.enabled:
            threading.setprofile(self._start)
        return self

    def __exit__(self, *exc) -> None:
        if not self.enabled:
            return
        threading.setprofile(None)
        deadline = time.monotonic() + 10
        for thread, _ in self.profiles:
            thread.join(max(0.0, deadline - time.monotonic()))
        ended = [profile for thread, profile in self.profiles if not thread.is_alive()]
        alive = len(self.profiles) - len(ended)
        if not ended:
            log(f"== {self.label}: no thread it started has ended ({alive} alive)")
            return
        import io
        import pstats

        for order in ("cumulative", "tottime"):
            out = io.StringIO()
            pstats.Stats(*ended, stream=out).sort_stats(order).print_stats(TOP)
            log(f"== cProfile of {self.label}, the {len(ended)} threads it started merged"
                + (f" ({alive} still alive, left out)" if alive else "")
                + f" (CPU time of each thread), by {order}\n{out.getvalue()}")


# -- report ----------------------------------------------------------------------------


def print_shape(shape: Shape, results: dict[str, Result], jobs: int, repeat: int) -> None:
    header = ("method", "median s", "MiB/s", "files/s", "client CPU s", "runs (s)",
              "checked")
    body = []
    for method, result in results.items():
        name = method
        if method in (FED_SFTP, FED_HTTP):
            name = f"{method} (jobs={jobs})"
        elif method == CURL:
            name = ("curl, one per file in sequence" if shape.size >= MIB
                    else f"curl --parallel --parallel-max {jobs} -K")
        if result.median is None:
            body.append((name, "", "", "", "", "", f"FAILED: {result.error}"))
            continue
        seconds = result.median
        body.append((name, f"{seconds:.3f}", f"{shape.total / MIB / seconds:,.1f}",
                     f"{shape.count / seconds:,.0f}", f"{statistics.median(result.cpu):.2f}",
                     " ".join(f"{s:.2f}" for s in result.seconds),
                     f"{shape.count:,} files, {shape.total:,} B"))
    print_rows(f"{shape.name} files: {shape.describe()}; median of {repeat} (client CPU: "
               "fed's process, or the tool and its ssh; servers not counted)", header, body)


def ratio_rows(results: dict[str, dict[str, Result]]) -> tuple[list[tuple], list[str]]:
    """(table rows, names of missed targets) for the ratios the targets use."""
    rows, missed = [], []

    def add(name: str, numerator: float | None, denominator: float | None, target: str,
            ok=None) -> None:
        if numerator is None or denominator is None:
            rows.append((name, "n/a", target, "missed (a run failed)" if ok else "-"))
            if ok:
                missed.append(name)
            return
        value = numerator / denominator
        status = "-" if ok is None else ("met" if ok(value) else "missed")
        if status == "missed":
            missed.append(name)
        rows.append((name, f"{value:.2f}", target, status))

    def rate(shape: str, method: str) -> float | None:
        seconds = results[shape][method].median
        return None if seconds is None else 1 / seconds  # same bytes for every method

    small = results["small"]
    add("large files: fed SFTP MiB/s / scp MiB/s", rate("large", FED_SFTP),
        rate("large", SCP), f">= {SFTP_VS_SCP}", lambda v: v >= SFTP_VS_SCP)
    add("large files: fed HTTP MiB/s / curl MiB/s", rate("large", FED_HTTP),
        rate("large", CURL), f">= {HTTP_VS_CURL}", lambda v: v >= HTTP_VS_CURL)
    add("small files: fed SFTP time / rsync time", small[FED_SFTP].median,
        small[RSYNC].median, f"<= {SFTP_VS_RSYNC}", lambda v: v <= SFTP_VS_RSYNC)
    add("small files: fed HTTP time / rsync time", small[FED_HTTP].median,
        small[RSYNC].median, "(none)")
    add("large files: fed SFTP MiB/s / rsync MiB/s", rate("large", FED_SFTP),
        rate("large", RSYNC), "(none)")
    add("small files: fed SFTP time / scp time", small[FED_SFTP].median,
        small[SCP].median, "(none)")
    add("small files: rsync time / local write floor", small[RSYNC].median,
        small[FLOOR].median, "(none)")
    add("small files: fed SFTP time / local write floor", small[FED_SFTP].median,
        small[FLOOR].median, "(none)")
    return rows, missed


# -- main ------------------------------------------------------------------------------


def tool_versions() -> str:
    def first_line(argv: list[str]) -> str:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except OSError:
            return f"{argv[0]} missing"
        return (proc.stdout or proc.stderr).strip().splitlines()[0]

    return "; ".join([" ".join(first_line(["rsync", "--version"]).split()[:3]),
                      " ".join(first_line(["curl", "--version"]).split()[:2]),
                      first_line(["/usr/sbin/nginx", "-v"])])


def run(args: argparse.Namespace, workdir: Path) -> int:
    from servers import SSHServer, WebServer

    methods = [FED_SFTP, FED_HTTP, RSYNC, SCP, CURL, FLOOR]
    shapes = [Shape("small", args.small_files, SMALL_SIZE, workdir / "small"),
              Shape("large", LARGE_COUNT, args.large_mb * MIB, workdir / "large")]
    with ExitStack() as servers:
        sshd = servers.enter_context(SSHServer(workdir / "sshd"))
        web = servers.enter_context(WebServer(workdir / "nginx", workdir))
        for shape in shapes:
            shape.base.mkdir()
            write_sites(shape, sshd, web)
            log(f"setup: {shape.name} files, {shape.describe()}: ingest at {SOURCE} and "
                "publish (not timed) ...")
            log(f"  {build_source(shape):.1f} s")
        setup = host_key_setup(sshd, web, shapes[0])
        load_start = os.getloadavg()[0]
        results = {s.name: {m: Result() for m in methods} for s in shapes}
        for shape in shapes:
            for repeat in range(args.repeat):
                # Each repeat starts with another method: on this VM, writing to memory
                # pages a process has not touched before costs several times more than
                # reusing ones just freed, so a fixed order would favour whoever runs late.
                shift = repeat % len(methods)
                for method in methods[shift:] + methods[:shift]:
                    result = results[shape.name][method]
                    if result.error:
                        continue
                    log(f"{shape.name} #{repeat + 1}: {method} ...")
                    try:
                        seconds, cpu = measure(method, shape, sshd, web, args.jobs)
                    except Exception as exc:
                        log(traceback.format_exc())
                        result.error = f"{type(exc).__name__}: {str(exc)[:200]}"
                        continue
                    result.seconds.append(seconds)
                    result.cpu.append(cpu)
                    log(f"  {seconds:.3f} s, {shape.total / MIB / seconds:,.1f} MiB/s, "
                        f"client CPU {cpu:.2f} s")
        load_end = os.getloadavg()[0]
        if args.profile:
            for shape in shapes:
                log(f"profiling: fed SFTP pull of the {shape.name} files (not in the table)")
                try:
                    fed_pull(shape, "sftp", args.jobs, profile=True)
                except Exception:
                    log(traceback.format_exc())

    print(f"transport benchmark on 127.0.0.1: {os.cpu_count()} CPUs, load average "
          f"{load_start:.2f} at start, {load_end:.2f} at end; jobs={args.jobs}")
    print(f"tools: {tool_versions()}")
    for line in setup:
        print(line)
    for shape in shapes:
        print_shape(shape, results[shape.name], args.jobs, args.repeat)
    rows, missed = ratio_rows(results)
    print_rows("ratios (MiB/s ratios: higher is better for fed; time ratios: lower)",
               ("ratio", "value", "target", "result"), rows)
    failed = [f"{shape} {method}" for shape, by_method in results.items()
              for method, result in by_method.items() if result.error]
    print()
    if failed:
        print(f"failed runs: {', '.join(failed)}")
    print("all targets met" if not missed else
          f"{len(missed)} target(s) missed: {'; '.join(missed)}")
    return 1 if missed or failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark fed's SFTP and HTTP pulls against rsync, scp and curl.")
    parser.add_argument("--small-files", type=int, default=10000,
                        help="number of 4 KiB files in the small shape (default 10000)")
    parser.add_argument("--large-mb", type=int, default=256,
                        help=f"size in MiB of each of the {LARGE_COUNT} large files "
                             "(default 256)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="timed runs of each method, each repeat starting with the next "
                             "method; the median is reported (default 5)")
    parser.add_argument("--jobs", type=int, default=4,
                        help="fed's parallel transfers and curl's --parallel-max (default 4)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="work directory, empty or absent; kept (default: a temporary "
                             "one, removed at the end)")
    parser.add_argument("--profile", action="store_true",
                        help="also run one fed SFTP pull per shape under cProfile (stderr)")
    args = parser.parse_args()
    if min(args.small_files, args.large_mb, args.repeat, args.jobs) < 1:
        parser.error("--small-files, --large-mb, --repeat and --jobs must be positive")
    missing = [t for t in ("rsync", "scp", "ssh", "curl", "ssh-keygen") if not shutil.which(t)]
    if missing:
        parser.error(f"not installed: {', '.join(missing)}")
    temporary = args.workdir is None
    if temporary:
        workdir = Path(tempfile.mkdtemp(prefix="fed-bench-transport-"))
    else:
        workdir = args.workdir.absolute()
        if workdir.exists() and any(workdir.iterdir()):
            parser.error(f"--workdir {workdir} is not empty")
        workdir.mkdir(parents=True, exist_ok=True)
    log(f"work directory: {workdir}")
    try:
        return run(args, workdir)
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
