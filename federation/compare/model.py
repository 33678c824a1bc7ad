"""What a comparison of two runs finds: the classes, the statistics, the summaries.

Every pair of datasets (same dataset type, same data ID, one from each side) falls
in one class:

* ``identical``: the two files have the same size and xxh3-128 checksum (no file
  is read for that);
* ``equivalent``: the bytes differ but the content agrees within the tolerance;
* ``different``: another shape, type or structure, another NaN pattern, or values
  beyond the tolerance;
* ``only_a`` / ``only_b``: the data ID is on one side only.

The tolerance follows ``numpy.isclose``: ``|a - b| <= atol + rtol * |b|``, with B
as the reference.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

from federation.errors import InputError

#: Defaults of ``fed compare``: a few float32 rounding steps (float32's epsilon is
#: 1.2e-7), and no absolute slack (values near zero must then agree exactly).
DEFAULT_RTOL = 1e-6
DEFAULT_ATOL = 0.0


class Kind(enum.StrEnum):
    """The class of one pair."""

    IDENTICAL = "identical"
    EQUIVALENT = "equivalent"
    DIFFERENT = "different"
    ONLY_A = "only_a"
    ONLY_B = "only_b"

    @property
    def label(self) -> str:
        return {"only_a": "only in A", "only_b": "only in B"}.get(self.value, self.value)


@dataclass(frozen=True)
class Tolerance:
    """How far numbers may be apart and still agree (numpy.isclose semantics)."""

    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL

    def __post_init__(self) -> None:
        for name, value in (("rtol", self.rtol), ("atol", self.atol)):
            if not isinstance(value, int | float) or isinstance(value, bool) \
                    or not math.isfinite(value) or value < 0:
                raise InputError(f"--{name} must be a finite number >= 0, not {value!r}")

    def describe(self) -> str:
        return f"rtol={self.rtol:g}, atol={self.atol:g}"


@dataclass
class Difference:
    """Numeric statistics of the values of one part (an image HDU, a table column, the
    numbers of a JSON document) or of a whole pair."""

    values: int = 0  # numbers compared
    beyond: int = 0  # of them beyond the tolerance
    nan_mismatch: int = 0  # NaN on one side only
    max_abs: float = 0.0  # over the values finite on both sides
    sum_abs: float = 0.0
    finite: int = 0
    max_rel: float = 0.0  # |a - b| / |b| where b != 0

    @property
    def mean_abs(self) -> float:
        return self.sum_abs / self.finite if self.finite else 0.0

    @property
    def fraction_beyond(self) -> float:
        return self.beyond / self.values if self.values else 0.0

    def add(self, other: Difference) -> None:
        self.values += other.values
        self.beyond += other.beyond
        self.nan_mismatch += other.nan_mismatch
        self.max_abs = max(self.max_abs, other.max_abs)
        self.sum_abs += other.sum_abs
        self.finite += other.finite
        self.max_rel = max(self.max_rel, other.max_rel)

    def to_dict(self) -> dict[str, Any]:
        return {"values": self.values, "beyond": self.beyond,
                "fraction_beyond": self.fraction_beyond, "nan_mismatch": self.nan_mismatch,
                "max_abs": self.max_abs, "mean_abs": self.mean_abs, "max_rel": self.max_rel}


@dataclass
class Part:
    """One compared part of a pair's content, with its unit when the file gives one."""

    name: str
    stats: Difference
    unit: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit} | self.stats.to_dict()


@dataclass(frozen=True)
class FileInfo:
    """One side's dataset in a pair: its id, run and file record."""

    id: str
    run: str
    path: str
    size: int
    checksum: str
    held_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "run": self.run, "path": self.path, "size": self.size,
                "checksum": self.checksum, "held_at": self.held_at}


@dataclass
class PairResult:
    """One pair (or a data ID on one side only) and what the comparison found."""

    dataset_type: str
    data_id: dict[str, Any]
    storage_class: str
    kind: Kind
    a: FileInfo | None = None
    b: FileInfo | None = None
    stats: Difference | None = None  # numbers compared, all parts together
    parts: list[Part] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # why it is different

    def describe(self) -> str:
        """``calexp {detector=1, instrument=HSC, visit=903334}``"""
        return describe(self.dataset_type, self.data_id)

    @property
    def unit(self) -> str:
        units = {p.unit for p in self.parts if p.unit}
        return units.pop() if len(units) == 1 else ""

    def severity(self) -> tuple:
        """Sorts the worst pairs first: different before equivalent, a structural
        difference (no comparable numbers) first, then by the fraction of values beyond
        the tolerance, NaN mismatches, the largest relative and absolute difference."""
        rank = {Kind.DIFFERENT: 2, Kind.EQUIVALENT: 1}.get(self.kind, 0)
        stats = self.stats or Difference()
        structural = self.kind is Kind.DIFFERENT and not stats.beyond and not stats.nan_mismatch
        return (rank, structural, stats.fraction_beyond, stats.nan_mismatch, stats.max_rel,
                stats.max_abs)

    def to_dict(self) -> dict[str, Any]:
        return {"dataset_type": self.dataset_type, "data_id": self.data_id,
                "storage_class": self.storage_class, "class": str(self.kind),
                "a": self.a.to_dict() if self.a else None,
                "b": self.b.to_dict() if self.b else None,
                "stats": self.stats.to_dict() if self.stats else None,
                "parts": [p.to_dict() for p in self.parts], "reasons": list(self.reasons)}


def describe(dataset_type: str, data_id: dict[str, Any]) -> str:
    values = ", ".join(f"{k}={v}" for k, v in sorted(data_id.items()))
    return f"{dataset_type} {{{values}}}"


#: Bin edges of the histograms of |A - B|: log10 from 1e-16 to 1e+8, four bins a decade.
LOG_EDGES = tuple(-16 + i / 4 for i in range(24 * 4 + 1))


@dataclass
class Histogram:
    """Counts of |A - B| over every compared value of a dataset type, in log bins,
    split into values within and beyond the tolerance; exact zeros counted apart.
    Its size does not depend on how many values were compared."""

    within: list[int] = field(default_factory=lambda: [0] * (len(LOG_EDGES) - 1))
    beyond: list[int] = field(default_factory=lambda: [0] * (len(LOG_EDGES) - 1))
    zeros: int = 0
    unit: str = ""

    @property
    def total(self) -> int:
        return self.zeros + sum(self.within) + sum(self.beyond)


@dataclass
class TypeSummary:
    """The pairs of one dataset type, by class, with the largest difference found."""

    dataset_type: str
    storage_class: str
    counts: dict[Kind, int] = field(default_factory=lambda: {k: 0 for k in Kind})
    max_abs: float | None = None
    histogram: Histogram = field(default_factory=Histogram)

    @property
    def pairs(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"dataset_type": self.dataset_type, "storage_class": self.storage_class,
                "counts": {str(k): n for k, n in self.counts.items()},
                "max_abs": self.max_abs}


@dataclass(frozen=True)
class SideInfo:
    """One side as the user named it: ``SITE:RUN`` (or ``REPO:RUN``), and how it was read."""

    text: str
    site: str
    run: str
    datasets: int
    remote: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"side": self.text, "site": self.site, "run": self.run,
                "datasets": self.datasets, "remote": self.remote}


@dataclass
class ImageDiff:
    """A - B of the worst image pair (its first 2-D plane), for the report."""

    pair: PairResult
    part: str
    diff: Any  # numpy array
    beyond: Any  # numpy bool array: pixels beyond the tolerance


@dataclass
class Comparison:
    """Everything ``fed compare`` found."""

    a: SideInfo
    b: SideInfo
    tolerance: Tolerance
    pairs: list[PairResult]
    summaries: list[TypeSummary]
    fetched: int = 0  # files brought from other sites into the cache
    fetched_bytes: int = 0
    reused: int = 0  # files found in the cache, verified again
    worst_image: ImageDiff | None = None
    report: str | None = None  # the HTML report's index.html

    def count(self, *kinds: Kind) -> int:
        return sum(1 for p in self.pairs if p.kind in kinds)

    @property
    def equivalent(self) -> bool:
        return not self.count(Kind.DIFFERENT, Kind.ONLY_A, Kind.ONLY_B)

    def worst(self, limit: int = 10) -> list[PairResult]:
        """The pairs that differ most (different or equivalent), worst first."""
        found = [p for p in self.pairs if p.kind in (Kind.DIFFERENT, Kind.EQUIVALENT)]
        return sorted(found, key=PairResult.severity, reverse=True)[:limit]

    def verdict(self) -> str:
        if self.equivalent:
            return f"scientifically equivalent within {self.tolerance.describe()}"
        one_side = self.count(Kind.ONLY_A, Kind.ONLY_B)
        return (f"NOT equivalent within {self.tolerance.describe()}: "
                f"{self.count(Kind.DIFFERENT)} different, {one_side} only on one side")

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a.to_dict(), "b": self.b.to_dict(), "rtol": self.tolerance.rtol,
                "atol": self.tolerance.atol, "equivalent": self.equivalent,
                "verdict": self.verdict(),
                "counts": {str(k): self.count(k) for k in Kind},
                "summary": [s.to_dict() for s in self.summaries],
                "files": {"fetched": self.fetched, "fetched_bytes": self.fetched_bytes,
                          "reused_from_cache": self.reused},
                "report": self.report,
                "pairs": [p.to_dict() for p in self.pairs]}
