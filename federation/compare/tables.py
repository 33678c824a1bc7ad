"""Two tables (astropy ``Table``, read from FITS) compared column by column.

The columns are matched by name: a column on one side only, another number of
rows, another type or another unit makes the tables different. Numeric columns
are compared within the tolerance, every other column exactly; masked entries
must be masked on both sides and are not compared further.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from federation.compare.arrays import compare_arrays
from federation.compare.model import Histogram, Part, Tolerance


@dataclass
class TableOutcome:
    parts: list[Part] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def compare_tables(a: Any, b: Any, tolerance: Tolerance, histogram: Histogram | None = None
                   ) -> TableOutcome:
    found = TableOutcome()
    names_a, names_b = list(a.colnames), list(b.colnames)
    only_a = [n for n in names_a if n not in names_b]
    only_b = [n for n in names_b if n not in names_a]
    if only_a:
        found.reasons.append(f"columns only in A: {', '.join(only_a)}")
    if only_b:
        found.reasons.append(f"columns only in B: {', '.join(only_b)}")
    if len(a) != len(b):
        found.reasons.append(f"{len(a)} rows in A, {len(b)} in B")
        return found
    for name in (n for n in names_a if n in names_b):
        _column(name, a[name], b[name], tolerance, histogram, found)
    return found


def _column(name: str, col_a: Any, col_b: Any, tolerance: Tolerance,
            histogram: Histogram | None, found: TableOutcome) -> None:
    unit_a, unit_b = _unit(col_a), _unit(col_b)
    label = f"column {name}"
    if unit_a != unit_b:
        found.reasons.append(f"{label}: unit {unit_a or '(none)'} in A, "
                             f"{unit_b or '(none)'} in B")
        return
    mask_a, mask_b = np.ma.getmaskarray(col_a), np.ma.getmaskarray(col_b)
    data_a, data_b = np.asarray(np.ma.getdata(col_a)), np.asarray(np.ma.getdata(col_b))
    if mask_a.shape == mask_b.shape and (mask_a.any() or mask_b.any()):
        masked = int(np.count_nonzero(mask_a != mask_b))
        if masked:
            found.reasons.append(f"{label}: {masked} entries masked on one side only")
            return
        keep = ~mask_a
        if keep.ndim == data_a.ndim:
            data_a, data_b = data_a[keep], data_b[keep]
    outcome = compare_arrays(data_a, data_b, tolerance, name=label, histogram=histogram)
    found.reasons += outcome.reasons
    if outcome.stats is not None:
        found.parts.append(Part(name, outcome.stats, unit_a))


def _unit(column: Any) -> str:
    unit = getattr(column, "unit", None)
    return "" if unit is None else str(unit)
