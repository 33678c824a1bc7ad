"""Helpers shared by the benchmarks in this directory (run them as scripts)."""

from __future__ import annotations

import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DETECTORS = 100  # per exposure, so N datasets are N distinct data IDs
FIRST_EXPOSURE = 903334
NIGHT = 20130617
NIGHT_NS = 1_371_470_400 * 10**9  # 2013-06-17T12:00:00Z


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def dimension_records(n_ids: int) -> dict[str, list[dict[str, Any]]]:
    exposures = math.ceil(n_ids / DETECTORS)
    filters = ["HSC-G", "HSC-R", "HSC-I", "HSC-Z", "HSC-Y"]
    return {
        "instrument": [{"instrument": "HSC", "detector_max": 112, "visit_max": 21474800,
                        "class_name": "lsst.obs.subaru.HyperSuprimeCam"}],
        "physical_filter": [{"instrument": "HSC", "physical_filter": f, "band": f[-1].lower()}
                            for f in filters],
        "day_obs": [{"instrument": "HSC", "day_obs": NIGHT, "timespan_begin": NIGHT_NS,
                     "timespan_end": NIGHT_NS + 86400 * 10**9}],
        "detector": [{"instrument": "HSC", "detector": d, "full_name": f"1_{d:02d}",
                      "purpose": "SCIENCE"} for d in range(DETECTORS)],
        "exposure": [{"instrument": "HSC", "exposure": FIRST_EXPOSURE + i,
                      "physical_filter": filters[i % len(filters)], "day_obs": NIGHT,
                      "obs_id": f"HSCA{FIRST_EXPOSURE + i}", "exposure_time": 30.0,
                      "observation_type": "science",
                      "timespan_begin": NIGHT_NS + i * 40 * 10**9,
                      "timespan_end": NIGHT_NS + (i * 40 + 30) * 10**9}
                     for i in range(exposures)],
    }


class Profiled:
    """Runs a block under a profiler when ``enabled``; prints the top functions to stderr.

    With yappi installed (the ``bench`` extra) every thread is profiled, on CPU time:
    downloads and placements run beside the main thread. Without it, cProfile sees the
    main thread only.
    """

    def __init__(self, enabled: bool, label: str) -> None:
        self.enabled, self.label, self.profile = enabled, label, None

    def __enter__(self) -> Profiled:
        if not self.enabled:
            return self
        try:
            import yappi
        except ImportError:
            import cProfile

            self.profile = cProfile.Profile()
            self.profile.enable()
            return self
        yappi.set_clock_type("cpu")
        yappi.start()
        self.profile = yappi
        return self

    def __exit__(self, *exc) -> None:
        if self.profile is None:
            return
        import io

        out = io.StringIO()
        if getattr(self.profile, "__name__", "") == "yappi":
            yappi = self.profile
            yappi.stop()
            for order in ("tsub", "ttot"):
                stats = yappi.get_func_stats().sort(order)
                out.write(f"== yappi (CPU, every thread) of {self.label}, by {order}\n")
                for stat in list(stats)[:35]:
                    out.write(f"{stat.ncall:>10} {stat.tsub:8.2f} {stat.ttot:8.2f}  "
                              f"{stat.module.rsplit('/', 2)[-1]}:{stat.lineno} {stat.name}\n")
            out.write("== threads (CPU s)\n")
            for thread in yappi.get_thread_stats():
                out.write(f"{thread.name:>24} {thread.ttot:8.2f}\n")
            log(out.getvalue())
            return
        import pstats

        self.profile.disable()
        for order in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(self.profile, stream=out).sort_stats(order).print_stats(30)
            log(f"== cProfile of {self.label}, by {order}\n{out.getvalue()}")


def print_rows(title: str, header: tuple, body: list[tuple]) -> None:
    """Print a title line and an aligned table between rules."""
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    print(line)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print(line)
    for row in body:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print(line)


# -- timing ----------------------------------------------------------------------------


def cpu_seconds() -> float:
    """User + system seconds of this process (all threads) and of the children it waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timer:
    """Wall seconds and CPU seconds (see :func:`cpu_seconds`) of a block."""

    def __enter__(self) -> Timer:
        self.cpu = cpu_seconds()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
        self.cpu = cpu_seconds() - self.cpu


def run_measured(argv: Sequence[str], *, cwd: str | os.PathLike | None = None,
                 capture_stderr: bool = True) -> dict[str, Any]:
    """Run a process to its end: wall seconds, CPU seconds and peak RSS of that process
    (its waited-for children included, from ``wait4``), exit status, stdout and stderr.

    Output goes to temporary files rather than pipes, so the process is reaped by
    ``wait4`` itself and its resource usage is its own.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err if capture_stderr else None,
                                cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "peak_rss_mib": usage.ru_maxrss / 1024, "returncode": proc.returncode,
                "stdout": out.read().decode(errors="replace"),
                "stderr": err.read().decode(errors="replace")}


def settle(seconds: float) -> None:
    """Flush what is pending on disk (deletions included) and wait, before a timed run."""
    os.sync()
    time.sleep(seconds)


def remove(*paths: Path) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def pair_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Ratio of each interleaved pair (run i of A over run i of B)."""
    return [a / b for a, b in zip(numerators, denominators, strict=False) if b > 0]


def fmt(value: float | None, spec: str = ".3f", suffix: str = "") -> str:
    """A number for a table cell; an empty cell when there is none."""
    return "" if value is None else f"{value:{spec}}{suffix}"
