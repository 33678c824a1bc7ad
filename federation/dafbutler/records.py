"""Dimension records and timespans between daf_butler's form and this registry's.

daf_butler names a record's key by its field (``id``, ``name``), splits a
timespan into ``datetime_begin``/``datetime_end`` and holds regions as sphgeom
objects; this registry names the key after the dimension, holds a timespan
as integer nanoseconds and a region as the hex of its sphgeom encoding (whose
first byte names its class). Both directions go through here, so a record
that goes in and comes out again is the same record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from federation.dafbutler.export_yaml import ButlerTime, ButlerTimespan, Region
from federation.dimensions.universe import Dimension
from federation.errors import InputError
from federation.timespan import MAX_NS, MIN_NS, Timespan

# sphgeom's type codes: the first byte of an encoded region.
_REGION_KINDS = {"62": "Box", "63": "Circle", "65": "Ellipse", "70": "ConvexPolygon",
                 "75": "UnionRegion", "69": "IntersectionRegion"}


def region_kind(encoded: str) -> str:
    """The sphgeom class of an encoded region (hex)."""
    try:
        return _REGION_KINDS[encoded[:2].lower()]
    except KeyError:
        raise InputError(f"region {encoded[:16]}... is not a sphgeom encoding I know") from None


def from_butler(dim: Dimension, record: Mapping[str, Any]) -> dict[str, Any]:
    """A daf_butler record of ``dim`` (as in an export) in this registry's form."""
    back = {theirs: ours for ours, theirs in dim.renamed.items()}
    out: dict[str, Any] = {}
    begin = end = None
    for name, value in record.items():
        if name == "datetime_begin":
            begin = value
        elif name == "datetime_end":
            end = value
        elif name == "timespan" and isinstance(value, ButlerTimespan):
            begin, end = value.begin, value.end
        elif dim.has_key and name == dim.key_field:
            out[dim.name] = value
        elif isinstance(value, Region):
            out[back.get(name, name)] = value.encoded
        else:
            out[back.get(name, name)] = value
    if dim.has_timespan and (begin is not None or end is not None):
        out["timespan"] = {"begin": _ns(begin), "end": _ns(end)}
    return out


def to_butler(dim: Dimension, row: Mapping[str, Any]) -> dict[str, Any]:
    """A record of this registry (as ``DimensionRecords.query`` gives it) in daf_butler's
    form, as an export holds it."""
    out: dict[str, Any] = {}
    for name in dim.requires:
        out[name] = row[name]
    if dim.has_key:
        out[dim.key_field or dim.name] = row[dim.name]
    for name in dim.implies:
        out[name] = row[name]
    for name, kind in dim.metadata.items():
        value = row.get(name)
        if kind == "region" and value is not None:
            value = Region(region_kind(value), value)
        out[dim.renamed.get(name, name)] = value
    if dim.has_timespan:
        span = timespan_of(row)
        out["datetime_begin"] = None if span is None else _time(span.begin)
        out["datetime_end"] = None if span is None else _time(span.end)
    return out


def timespan_of(row: Mapping[str, Any]) -> Timespan | None:
    """A record's timespan, whichever way the row holds it (None if it has none)."""
    span = row.get("timespan")
    if isinstance(span, Timespan):
        return span
    begin, end = row.get("timespan_begin"), row.get("timespan_end")
    if begin is None and end is None:
        return None
    return Timespan(MIN_NS if begin is None else begin, MAX_NS if end is None else end)


def to_timespan(span: ButlerTimespan) -> Timespan:
    """A daf_butler validity range as this registry's Timespan."""
    return Timespan(MIN_NS if span.begin is None else span.begin.ns,
                    MAX_NS if span.end is None else span.end.ns)


def from_timespan(span: Timespan) -> ButlerTimespan:
    """This registry's Timespan as a daf_butler validity range."""
    return ButlerTimespan(_time(span.begin), _time(span.end))


def _ns(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, ButlerTime):
        return value.ns
    raise InputError(f"invalid daf_butler time {value!r}: expected a !butler_time value")


def _time(ns: int) -> ButlerTime | None:
    return None if ns <= MIN_NS or ns >= MAX_NS else ButlerTime(ns)
