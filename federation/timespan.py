"""Half-open time intervals ``[begin, end)`` stored as integer nanoseconds (UTC).

Unbounded ends are stored as sentinels so that overlap tests are plain
integer comparisons in SQL on every database.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from federation.errors import InputError

MIN_NS = -(2**62)
MAX_NS = 2**62
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_ns(value: str | dt.datetime | dt.date | int | None, *, default: int) -> int:
    """Convert an ISO string, datetime, date or ns integer to UTC nanoseconds."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise InputError(f"invalid time value {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InputError(
                f"invalid time {value!r}: expected ISO 8601, e.g. 2013-06-17T13:00:00") from None
    if not isinstance(value, dt.date):
        raise InputError(f"invalid time {value!r}: expected an ISO 8601 string, a datetime, "
                         "a date or integer nanoseconds")
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def ns_to_iso(ns: int) -> str | None:
    """Render nanoseconds as an ISO 8601 UTC string; unbounded ends as None."""
    if ns <= MIN_NS or ns >= MAX_NS:
        return None
    stamp = _EPOCH + dt.timedelta(microseconds=ns // 1000)
    return stamp.replace(tzinfo=None).isoformat()


@dataclass(frozen=True, slots=True)
class Timespan:
    """A half-open interval of time; ``None`` at either end means unbounded."""

    begin: int = MIN_NS
    end: int = MAX_NS

    def __post_init__(self) -> None:
        if self.end <= self.begin:
            raise InputError(
                f"empty timespan: end {ns_to_iso(self.end)} is not after begin "
                f"{ns_to_iso(self.begin)}"
            )

    @classmethod
    def from_values(cls, begin=None, end=None) -> Timespan:
        """Build from ISO strings, datetimes, dates or ns; None is unbounded."""
        return cls(to_ns(begin, default=MIN_NS), to_ns(end, default=MAX_NS))

    @classmethod
    def instant(cls, when) -> Timespan:
        """A one-nanosecond interval at ``when``."""
        ns = to_ns(when, default=MIN_NS)
        return cls(ns, ns + 1)

    def overlaps(self, other: Timespan) -> bool:
        return self.begin < other.end and other.begin < self.end

    def to_dict(self) -> dict[str, str | None]:
        return {"begin": ns_to_iso(self.begin), "end": ns_to_iso(self.end)}

    def __str__(self) -> str:
        begin = ns_to_iso(self.begin) or "-inf"
        end = ns_to_iso(self.end) or "+inf"
        return f"[{begin}, {end})"
