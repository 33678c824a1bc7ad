"""Two arrays compared value by value: shapes and types, NaN patterns, differences
within or beyond the tolerance, and the histogram of |A - B|.

Numbers (integers, floats, complex) are compared with ``numpy.isclose``
semantics, ``|a - b| <= atol + rtol * |b|``; anything else (booleans, text,
dates) must be equal. Infinities agree only with the same infinity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from federation.compare.model import LOG_EDGES, Difference, Histogram, Tolerance

_EDGES = np.asarray(LOG_EDGES)


@dataclass
class ArrayOutcome:
    """What comparing two arrays found: statistics (None when they cannot be compared
    value by value), why they differ, and, when asked, ``A - B`` and where it is beyond
    the tolerance."""

    stats: Difference | None
    reasons: list[str] = field(default_factory=list)
    diff: Any = None
    beyond: Any = None


def numeric(array: np.ndarray) -> bool:
    return array.dtype.kind in "iufc"


def same_type(a: np.ndarray, b: np.ndarray) -> bool:
    """The same dtype, byte order aside (FITS is big-endian, memory rarely); text of any
    width counts as one type."""
    if a.dtype.kind in "US" or b.dtype.kind in "US":
        return a.dtype.kind == b.dtype.kind
    return a.dtype.newbyteorder("=") == b.dtype.newbyteorder("=")


def compare_arrays(a: np.ndarray, b: np.ndarray, tolerance: Tolerance, *, name: str = "",
                   histogram: Histogram | None = None, keep_diff: bool = False
                   ) -> ArrayOutcome:
    """Compare ``a`` with the reference ``b``; ``name`` prefixes the reasons."""
    where = f"{name}: " if name else ""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return ArrayOutcome(None, [f"{where}shape {a.shape} in A, {b.shape} in B"])
    if a.dtype.names or b.dtype.names:  # structured arrays: field by field
        if a.dtype.names != b.dtype.names:
            return ArrayOutcome(None, [f"{where}fields {list(a.dtype.names or ())} in A, "
                                       f"{list(b.dtype.names or ())} in B"])
        return _fields(a, b, tolerance, where, histogram)
    if not same_type(a, b):
        return ArrayOutcome(None, [f"{where}type {a.dtype.name} in A, {b.dtype.name} in B"])
    if not numeric(a):
        return _exact(a, b, where)
    return _numbers(a, b, tolerance, where, histogram, keep_diff)


def _exact(a: np.ndarray, b: np.ndarray, where: str) -> ArrayOutcome:
    unequal = int(np.count_nonzero(a != b)) if a.size else 0
    stats = Difference(values=a.size, beyond=unequal)
    reasons = [f"{where}{unequal} of {a.size} values differ"] if unequal else []
    return ArrayOutcome(stats, reasons)


def _fields(a: np.ndarray, b: np.ndarray, tolerance: Tolerance, where: str,
            histogram: Histogram | None) -> ArrayOutcome:
    total, reasons = Difference(), []
    for name in a.dtype.names:
        found = compare_arrays(a[name], b[name], tolerance, name=f"{where}{name}",
                               histogram=histogram)
        reasons += found.reasons
        if found.stats is not None:
            total.add(found.stats)
    return ArrayOutcome(total, reasons)


def _numbers(a: np.ndarray, b: np.ndarray, tolerance: Tolerance, where: str,
             histogram: Histogram | None, keep_diff: bool) -> ArrayOutcome:
    if a.dtype.kind in "iu":  # no overflow in the subtraction, isclose works in floats
        a, b = a.astype(np.float64), b.astype(np.float64)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    nan_mismatch = nan_a ^ nan_b
    close = np.isclose(a, b, rtol=tolerance.rtol, atol=tolerance.atol, equal_nan=True)
    beyond = ~close & ~nan_mismatch
    finite = np.isfinite(a) & np.isfinite(b)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.subtract(a, b, dtype=np.result_type(a.dtype, b.dtype, np.float64))
    absolute = np.abs(diff[finite])
    reference = np.abs(b[finite])
    nonzero = reference > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        relative = absolute[nonzero] / reference[nonzero]
    stats = Difference(values=a.size, beyond=int(np.count_nonzero(beyond)),
                       nan_mismatch=int(np.count_nonzero(nan_mismatch)),
                       max_abs=float(absolute.max()) if absolute.size else 0.0,
                       sum_abs=float(absolute.sum()), finite=int(absolute.size),
                       max_rel=float(relative.max()) if relative.size else 0.0)
    if histogram is not None:
        _count(histogram, absolute, beyond[finite])
    reasons = []
    if stats.nan_mismatch:
        only_a = int(np.count_nonzero(nan_a & ~nan_b))
        reasons.append(f"{where}NaN pattern differs: {only_a} values NaN in A only, "
                       f"{stats.nan_mismatch - only_a} in B only")
    if stats.beyond:
        reasons.append(f"{where}{stats.beyond} of {a.size} values beyond the tolerance "
                       f"({100 * stats.fraction_beyond:.3g}%), max |A-B| {stats.max_abs:.3g}")
    if not keep_diff:
        return ArrayOutcome(stats, reasons)
    return ArrayOutcome(stats, reasons, diff=np.where(finite, diff, np.nan),
                        beyond=beyond | nan_mismatch)


def _count(histogram: Histogram, absolute: np.ndarray, beyond: np.ndarray) -> None:
    """Add |A - B| of finite values to a histogram (zeros apart; out of range values in
    the first or last bin)."""
    nonzero = absolute > 0
    histogram.zeros += int(absolute.size - np.count_nonzero(nonzero))
    logs = np.clip(np.log10(absolute[nonzero]), _EDGES[0], _EDGES[-1])
    flags = beyond[nonzero]
    for target, chosen in ((histogram.within, logs[~flags]), (histogram.beyond, logs[flags])):
        if chosen.size:
            counts, _ = np.histogram(chosen, bins=_EDGES)
            for i, n in enumerate(counts.tolist()):
                target[i] += n

