"""Dimension records: insertion, lookup and data ID completion."""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa

from federation.dimensions.universe import Dimension, DimensionGroup
from federation.errors import (
    DataIdError,
    DimensionRecordError,
    ExpressionError,
    InputError,
    MissingRecordError,
)
from federation.model import data_id_key
from federation.registry.database import Database
from federation.registry.journal import DimensionRecordAdded
from federation.registry.where import compile_where
from federation.timespan import MAX_NS, MIN_NS, Timespan, ns_to_iso, to_ns

_CHUNK = 500


# The limits of the registry's columns (BIGINT, VARCHAR(128)), checked up front so that
# both databases refuse the same values with the same clear error.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
MAX_STRING = 128
_INT_TEXT = re.compile(r"\s*[-+]?[0-9]+\s*")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


def coerce_key(dim: Dimension, value: Any) -> Any:
    """Convert a data ID value (possibly text from a CSV) to the dimension's key type."""
    if isinstance(value, bool) or value is None:
        raise DataIdError(f"invalid value {value!r} for dimension {dim.name!r}")
    if dim.key_type == "int":
        if isinstance(value, numbers.Integral):
            value = int(value)
        elif isinstance(value, str) and _INT_TEXT.fullmatch(value):
            value = int(value)
        else:
            raise DataIdError(f"dimension {dim.name!r} needs an integer, got {value!r}")
        if not INT_MIN <= value <= INT_MAX:
            raise DataIdError(
                f"dimension {dim.name!r} value {value} is out of range for a 64-bit integer")
        return value
    if isinstance(value, int | float | str):
        value = str(value)
        if len(value) > MAX_STRING:
            raise DataIdError(
                f"dimension {dim.name!r} value {value[:40]!r}... is too long "
                f"({len(value)} characters; at most {MAX_STRING})")
        return value
    raise DataIdError(f"dimension {dim.name!r} needs a string, got {value!r}")


def _coerce_field(dim: Dimension, field: str, value: Any) -> Any:
    """Check a record field against its declared kind; text (from CSV) is parsed.

    Strings must be strings and numbers numbers: a list or mapping is refused
    rather than stored as its Python repr.
    """
    if value is None or value == "":
        return None
    kind = dim.metadata[field]
    if kind in ("region", "hash"):  # hex text
        if not isinstance(value, str) or not _HEX.fullmatch(value):
            raise _field_error(dim, field, f"{kind} (hex text)", value)
        return value.lower()
    if kind == "string":
        if not isinstance(value, str):
            raise _field_error(dim, field, kind, value)
        if len(value) > MAX_STRING:
            raise InputError(
                f"{dim.name} field {field!r} value {value[:40]!r}... is too long "
                f"({len(value)} characters; at most {MAX_STRING})")
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _BOOL_TEXT:
            return _BOOL_TEXT[value.strip().lower()]
        raise _field_error(dim, field, kind, value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real | str):
        raise _field_error(dim, field, kind, value)
    try:
        if kind == "float":
            return float(value)
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)  # int() would silently truncate it
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise _field_error(dim, field, kind, value) from None
    if not INT_MIN <= number <= INT_MAX:
        raise InputError(
            f"{dim.name} field {field!r} value {number} is out of range for a 64-bit integer")
    return number


_BOOL_TEXT = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _field_error(dim: Dimension, field: str, kind: str, value: Any) -> InputError:
    return InputError(f"{dim.name} field {field!r} needs a {kind}, got {value!r} "
                      f"({type(value).__name__})")


class DimensionRecords:
    """Stores and caches dimension records; completes data IDs from them."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.universe = db.universe
        self._plans: dict[DimensionGroup, tuple[list, tuple[str, ...], dict]] = {}
        self._preloaded: set[str] = set()
        self._cache: dict[str, dict[tuple, dict[str, Any] | None]] = {
            name: {} for name in self.universe.dimensions
        }

    # -- insertion -------------------------------------------------------------

    def normalize(self, dimension: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Validate one user-supplied record and convert it to its row form."""
        dim = self.universe[dimension]
        if not isinstance(record, Mapping):
            raise InputError(f"a {dimension} record must be a mapping, got {record!r}")
        row: dict[str, Any] = {}
        known = set(dim.keys) | set(dim.implies) | set(dim.metadata)
        if dim.has_timespan:
            known |= {"timespan", "timespan_begin", "timespan_end"}
        unknown = set(record) - known
        if unknown:
            raise InputError(
                f"unknown field(s) {', '.join(sorted(unknown))} in {dimension} record; "
                f"known: {', '.join(sorted(known))}"
            )
        for name in (*dim.keys, *dim.implies):
            if record.get(name) in (None, ""):
                raise InputError(f"{dimension} record {dict(record)} is missing {name!r}")
            row[name] = coerce_key(self.universe[name], record[name])
        for field in dim.metadata:
            row[field] = _coerce_field(dim, field, record.get(field))
        if dim.has_timespan:
            span = record.get("timespan") or {}
            if isinstance(span, Timespan):  # as returned by query(): unbounded ends are None
                span = {"begin": None if span.begin <= MIN_NS else span.begin,
                        "end": None if span.end >= MAX_NS else span.end}
            if not isinstance(span, Mapping):
                raise InputError(f"{dimension} timespan must be a mapping with begin/end")
            begin = record.get("timespan_begin", span.get("begin"))
            end = record.get("timespan_end", span.get("end"))
            row["timespan_begin"] = None if begin in (None, "") else to_ns(begin, default=MIN_NS)
            row["timespan_end"] = None if end in (None, "") else to_ns(end, default=MAX_NS)
            if row["timespan_begin"] is not None and row["timespan_end"] is not None \
                    and row["timespan_end"] <= row["timespan_begin"]:
                raise InputError(
                    f"{dimension} record {dict(record)} has an empty timespan: end "
                    f"{ns_to_iso(row['timespan_end'])} is not after begin "
                    f"{ns_to_iso(row['timespan_begin'])}")
        return row

    def insert(self, dimension: str, records: Iterable[Mapping[str, Any]]) -> int:
        """Insert records; identical ones are skipped, differing ones are an error.

        Returns the number of records newly inserted.
        """
        dim = self.universe[dimension]
        rows = [self.normalize(dimension, r) for r in records]
        keys = dim.keys
        unique: dict[tuple, dict[str, Any]] = {}
        for row in rows:
            key = tuple(row[k] for k in keys)
            if key in unique and unique[key] != row:
                raise DimensionRecordError(
                    f"two different {dimension} records for {_fmt_key(keys, key)} in the input"
                )
            unique[key] = row
        with self.db.transaction() as conn:
            self.prefetch(dimension, unique.keys())
            cache = self._cache[dimension]
            new = []
            for key, row in unique.items():
                existing = cache.get(key)
                if existing is None:
                    new.append(row)
                elif existing != row:
                    raise DimensionRecordError(
                        f"{dimension} record for {_fmt_key(keys, key)} differs from the stored one:"
                        f" stored {_show(existing)}, new {_show(row)}"
                    )
            if not new:
                return 0
            self._check_references(dim, new)
            conn.execute(sa.insert(self.db.tables.dimensions[dimension]), new)
            self.db.append([DimensionRecordAdded(dimension, row) for row in new])

            # Visible to later steps of this transaction; forgotten if it rolls back.
            new_keys = [tuple(row[k] for k in keys) for row in new]
            for key, row in zip(new_keys, new, strict=True):
                cache[key] = row
            self.db.on_rollback(lambda: [cache.pop(key, None) for key in new_keys])
        return len(new)

    def _check_references(self, dim: Dimension, rows: list[dict[str, Any]]) -> None:
        """Records this one requires or implies must exist (key-only ones are created)."""
        for other_name in (*dim.requires, *dim.implies):
            other = self.universe[other_name]
            other_keys = other.keys
            wanted = {tuple(row[k] for k in other_keys) for row in rows}
            self.prefetch(other_name, wanted)
            missing = [k for k in wanted if self._cache[other_name].get(k) is None]
            if not missing:
                continue
            if not other.requires and not other.implies and not other.metadata \
                    and not other.has_timespan:
                self.insert(other_name, [{other_name: k[0]} for k in missing])
                continue
            raise DimensionRecordError(
                f"{dim.name} record refers to {other_name} {_fmt_key(other_keys, missing[0])}, "
                f"which has no record; insert it first"
            )

    # -- lookup ----------------------------------------------------------------

    def prefetch(self, dimension: str, keys: Iterable[tuple]) -> None:
        """Load the records for ``keys`` into the cache in a few bulk queries."""
        cache = self._cache[dimension]
        missing = [k for k in keys if k not in cache]
        if not missing:
            return
        dim = self.universe[dimension]
        table = self.db.tables.dimensions[dimension]
        key_cols = [table.c[k] for k in dim.keys]
        found = {}
        with self.db.reading() as conn:
            for start in range(0, len(missing), _CHUNK):
                chunk = missing[start:start + _CHUNK]
                cond = (key_cols[0].in_([k[0] for k in chunk]) if len(key_cols) == 1
                        else sa.tuple_(*key_cols).in_(chunk))
                for row in conn.execute(sa.select(table).where(cond)).mappings():
                    row = dict(row)
                    found[tuple(row[c.name] for c in key_cols)] = row
        for key in missing:
            if key in found:
                cache[key] = found[key]
            # Absent keys are not cached: another writer may add them later.

    def cached(self, dimension: str, key: tuple) -> dict[str, Any] | None:
        """A record already loaded (see :meth:`prefetch`), without querying for it."""
        return self._cache[dimension].get(key)

    def get(self, dimension: str, key: tuple) -> dict[str, Any] | None:
        cache = self._cache[dimension]
        if key not in cache:
            self.prefetch(dimension, [key])
        return cache.get(key)

    def forget(self) -> None:
        """Drop cached records (after a rollback may have left phantom ones)."""
        for cache in self._cache.values():
            cache.clear()
        self._plans.clear()
        self._preloaded.clear()

    def query(self, dimension: str, where: str | None = None,
              bind: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Records of one dimension, optionally filtered by a `where` expression."""
        dim = self.universe[dimension]
        table = self.db.tables.dimensions[dimension]

        def resolve(name: str, field: str | None):
            column = name if field is None else field
            if field is not None and name != dimension:
                raise_unknown(f"{name}.{field}")
            if column in table.c:
                return table.c[column]
            raise_unknown(name if field is None else f"{name}.{field}")

        def raise_unknown(text: str):
            raise ExpressionError(
                f"unknown name {text!r} in where expression for {dimension} records; "
                f"known: {', '.join(c.name for c in table.c if not c.name.startswith('timespan'))}"
            )

        stmt = sa.select(table).order_by(*[table.c[k] for k in dim.keys])
        condition = compile_where(where, resolve, bind)
        if condition is not None:
            stmt = stmt.where(condition)
        with self.db.reading() as conn:
            return [to_public(dim, dict(row)) for row in conn.execute(stmt).mappings()]

    def stream(self, dimension: str, chunk: int) -> Iterator[list[dict[str, Any]]]:
        """Every record of one dimension as stored (the form a sync sends), in key order,
        ``chunk`` at a time."""
        dim = self.universe[dimension]
        table = self.db.tables.dimensions[dimension]
        stmt = sa.select(table).order_by(*[table.c[k] for k in dim.keys])
        with self.db.reading() as conn:
            result = conn.execution_options(yield_per=chunk).execute(stmt).mappings()
            for rows in result.partitions(chunk):
                yield [dict(row) for row in rows]

    # -- data IDs --------------------------------------------------------------

    def expand(self, group: DimensionGroup, data_id: Mapping[str, Any], *,
               allow_extra: bool = False) -> tuple[dict[str, Any], str]:
        """Validate a data ID and complete it with implied values.

        Returns the complete data ID and its canonical key. With
        ``allow_extra``, known dimensions outside the group are accepted,
        checked and returned too (calibration lookups use them for time).
        """
        if not allow_extra and len(data_id) == len(group.required):
            fast = self._expand_cached(group, data_id)
            if fast is not None:
                return fast
        full, key = self._expand(group, data_id, allow_extra)
        if not allow_extra:
            plan = self._plan(group)
            plan[2][tuple(full[k] for k in plan[1])] = {k: full[k] for k in group.implied}
        return full, key

    def _plan(self, group: DimensionGroup) -> tuple[list, tuple[str, ...], dict]:
        """Per group: (required names with key types and record keys, memo key, memo).

        Implied values depend only on the records of required dimensions that
        imply something; the memo maps those dimensions' values to them.
        """
        plan = self._plans.get(group)
        if plan is None:
            dims = self.universe.dimensions
            required = [(n, dims[n].python_type, (*dims[n].requires, n)) for n in group.required]
            memo_names = set()
            for name in group.required:
                if dims[name].implies:
                    memo_names.update((*dims[name].requires, name))
            plan = self._plans[group] = (required, self.universe.sorted(memo_names), {})
        return plan

    def _expand_cached(self, group: DimensionGroup, data_id: Mapping[str, Any]
                       ) -> tuple[dict[str, Any], str] | None:
        """The common case, from caches alone; None sends the caller down the full path."""
        required, memo_names, memo = self._plan(group)
        full = {}
        cache = self._cache
        for name, ptype, record_key in required:
            value = data_id.get(name)
            if type(value) is not ptype:
                return None
            full[name] = value
            # Requirements come earlier in `required`, so `full` holds them already.
            if tuple([full[k] for k in record_key]) not in cache[name]:
                return None
        implied = memo.get(tuple([full[k] for k in memo_names]))
        if implied is None:
            return None
        key = data_id_key(list(full.values()))
        full.update(implied)
        return full, key

    def preload(self, dimension: str, limit: int = 200_000) -> bool:
        """Cache every record of a dimension holding at most ``limit``; True if done."""
        if dimension in self._preloaded:
            return True
        dim = self.universe[dimension]
        table = self.db.tables.dimensions[dimension]
        keys = dim.keys
        with self.db.reading() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            if count > limit:
                return False
            cache = self._cache[dimension]
            for row in conn.execute(sa.select(table)).mappings():
                row = dict(row)
                cache.setdefault(tuple(row[k] for k in keys), row)
        self._preloaded.add(dimension)
        return True

    def _expand(self, group: DimensionGroup, data_id: Mapping[str, Any], allow_extra: bool
                ) -> tuple[dict[str, Any], str]:
        universe = self.universe
        unknown = [k for k in data_id if k not in universe.dimensions]
        if unknown:
            raise DataIdError(
                f"unknown dimension(s) {', '.join(unknown)} in data ID; "
                f"known: {', '.join(universe.dimensions)}"
            )
        missing = [k for k in group.required if k not in data_id]
        if missing:
            raise DataIdError(
                f"data ID {dict(data_id)} is missing {', '.join(missing)} "
                f"(needs {', '.join(group.required)})"
            )
        extra = [k for k in data_id if k not in group.names]
        if extra and not allow_extra:
            raise DataIdError(
                f"data ID has dimension(s) {', '.join(extra)} that are not among "
                f"{', '.join(group.names)}"
            )
        full = {name: coerce_key(universe.dimensions[name], data_id[name])
                for name in group.required}
        records = {}
        for name in group.required:
            records[name] = self._record_for(name, full)
        pending = list(group.implied)
        while pending:
            progressed = False
            for name in list(pending):
                source = next((r for r in records.values() if name in r), None)
                if source is None:
                    continue
                full[name] = source[name]
                records[name] = self._record_for(name, full)
                pending.remove(name)
                progressed = True
            if not progressed:
                raise DataIdError(f"cannot determine {', '.join(pending)} from data ID {full}")
        for name in group.implied:
            given = data_id.get(name)
            if name in data_id and coerce_key(universe.dimensions[name], given) != full[name]:
                raise DataIdError(
                    f"data ID gives {name}={data_id[name]!r} but its records imply {full[name]!r}"
                )
        key = data_id_key([full[name] for name in group.required])
        for name in extra:
            dim = universe.dimensions[name]
            full[name] = coerce_key(dim, data_id[name])
            absent = [k for k in dim.requires if k not in full]
            if absent:
                raise DataIdError(f"data ID gives {name} but not {', '.join(absent)}")
            self._record_for(name, full)
        return full, key

    def _record_for(self, name: str, values: Mapping[str, Any]) -> dict[str, Any]:
        dim = self.universe.dimensions[name]
        key = tuple(values[k] for k in dim.keys)
        record = self.get(name, key)
        if record is None:
            raise MissingRecordError(name, _fmt_key(dim.keys, key))
        return record

    def timespan_of(self, data_id: Mapping[str, Any]) -> Timespan | None:
        """The observation timespan named by a data ID (exposure, visit or day_obs)."""
        for name in ("exposure", "visit", "day_obs"):
            if name in data_id and name in self.universe.dimensions:
                dim = self.universe.dimensions[name]
                if not dim.has_timespan:
                    continue
                record = self._record_for(name, data_id)
                begin, end = record.get("timespan_begin"), record.get("timespan_end")
                if begin is not None or end is not None:
                    return Timespan(MIN_NS if begin is None else begin,
                                    MAX_NS if end is None else end)
        return None


def to_public(dim: Dimension, row: dict[str, Any]) -> dict[str, Any]:
    """A record as users see it: timespan as a Timespan (or None)."""
    if dim.has_timespan:
        begin, end = row.pop("timespan_begin", None), row.pop("timespan_end", None)
        row["timespan"] = None if begin is None and end is None else Timespan(
            MIN_NS if begin is None else begin, MAX_NS if end is None else end)
    return row


def _fmt_key(names: Iterable[str], values: Iterable[Any]) -> str:
    return ", ".join(f"{n}={v!r}" for n, v in zip(names, values, strict=True))


def _show(row: Mapping[str, Any]) -> str:
    shown = {}
    for k, v in row.items():
        shown[k] = ns_to_iso(v) if k.startswith("timespan_") and v is not None else v
    return str(shown)
