"""Two JSON or YAML documents compared structurally, numbers within the tolerance.

Mappings must have the same keys and lists the same lengths; numbers (integers
and floats, not booleans) are compared within the tolerance, everything else
(text, booleans, null) must be equal, and a value of another kind is a
difference. Each difference is named by its path, e.g. ``$.psf.fwhm[2]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from federation.compare.arrays import compare_arrays
from federation.compare.model import Histogram, Part, Tolerance

SHOWN = 10  # differences named in the reasons; the rest are counted


@dataclass
class _Walk:
    paths: list[str] = field(default_factory=list)
    numbers_a: list[float] = field(default_factory=list)
    numbers_b: list[float] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


@dataclass
class StructureOutcome:
    parts: list[Part] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def compare_structures(a: Any, b: Any, tolerance: Tolerance,
                       histogram: Histogram | None = None) -> StructureOutcome:
    walk = _Walk()
    _visit("$", a, b, walk)
    found = StructureOutcome()
    found.reasons += _shown(walk.mismatches)
    if walk.paths:
        values_a = np.asarray(walk.numbers_a, dtype=np.float64)
        values_b = np.asarray(walk.numbers_b, dtype=np.float64)
        outcome = compare_arrays(values_a, values_b, tolerance, histogram=histogram)
        if outcome.stats is not None:
            found.parts.append(Part("numbers", outcome.stats))
        close = np.isclose(values_a, values_b, rtol=tolerance.rtol, atol=tolerance.atol,
                           equal_nan=True)
        found.reasons += _shown([f"{walk.paths[i]}: {walk.numbers_a[i]!r} in A, "
                                 f"{walk.numbers_b[i]!r} in B"
                                 for i in np.flatnonzero(~close).tolist()])
    return found


def _shown(lines: list[str]) -> list[str]:
    if len(lines) <= SHOWN:
        return lines
    return lines[:SHOWN] + [f"... and {len(lines) - SHOWN} more differences"]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _visit(path: str, a: Any, b: Any, walk: _Walk) -> None:
    if _number(a) and _number(b):
        walk.paths.append(path)
        walk.numbers_a.append(float(a))
        walk.numbers_b.append(float(b))
    elif isinstance(a, dict) and isinstance(b, dict):
        only_a = sorted(str(k) for k in a.keys() - b.keys())
        only_b = sorted(str(k) for k in b.keys() - a.keys())
        if only_a:
            walk.mismatches.append(f"{path}: keys only in A: {', '.join(only_a)}")
        if only_b:
            walk.mismatches.append(f"{path}: keys only in B: {', '.join(only_b)}")
        for key in sorted(a.keys() & b.keys(), key=str):
            _visit(f"{path}.{key}", a[key], b[key], walk)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            walk.mismatches.append(f"{path}: {len(a)} items in A, {len(b)} in B")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _visit(f"{path}[{i}]", x, y, walk)
    elif type(a) is not type(b):
        walk.mismatches.append(f"{path}: {_kind(a)} in A, {_kind(b)} in B")
    elif a != b:
        walk.mismatches.append(f"{path}: {_short(a)} in A, {_short(b)} in B")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if _number(value):
        return "a number"
    return {bool: "a boolean", str: "text", list: "a list", dict: "a mapping"}.get(
        type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
