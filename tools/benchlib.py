"""Helpers shared by the benchmarks in this directory (run them as scripts)."""

from __future__ import annotations

import math
import sys
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
    """Runs a block under cProfile when ``enabled``; prints the top functions to stderr."""

    def __init__(self, enabled: bool, label: str) -> None:
        self.enabled, self.label, self.profile = enabled, label, None

    def __enter__(self) -> Profiled:
        if self.enabled:
            import cProfile

            self.profile = cProfile.Profile()
            self.profile.enable()
        return self

    def __exit__(self, *exc) -> None:
        if self.profile is None:
            return
        import io
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
