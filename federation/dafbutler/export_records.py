"""The dimension records a daf_butler export of some datasets holds.

Chosen as daf_butler's ``saveDatasets`` chooses them: every record the data
IDs need (their required and implied dimensions, recursively, and the join
elements relating dimensions the data ID holds); then the join elements
populated by an exported dimension (a visit brings its ``visit_definition``,
``visit_detector_region`` and ``visit_system_membership`` records) unless the
data IDs brought some already, and the records those name. Elements daf_butler
keeps no table for (``band``, the skypix levels) have no records. Elements are
written in daf_butler's order, records by key, fields in daf_butler's order.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from federation.dafbutler.records import to_butler
from federation.dimensions import daf_butler as butler_universe
from federation.dimensions.universe import Dimension, DimensionUniverse
from federation.errors import ConfigError
from federation.model import DatasetRef
from federation.registry.registry import Registry

#: which dimension populates daf_butler's join elements (universe version 4 on), when its
#: configuration is not here
POPULATED_BY = {"visit_definition": "visit", "visit_detector_region": "visit",
                "visit_system_membership": "visit"}
POPULATED_SINCE = 4

#: elements daf_butler derives from another's records, when its configuration is not here
VIEWS = {"band"}
_SKYPIX = re.compile(r"(?:htm|healpix|q3c|mq3c)\d+")

RecordKey = tuple[Any, ...]


class RecordCollector:
    """The dimension records an export of some datasets holds, chosen as daf_butler's
    ``saveDatasets`` chooses them."""

    def __init__(self, registry: Registry) -> None:
        self.universe = registry.universe
        self.dims = registry.dimensions
        self.records: dict[str, dict[RecordKey, dict[str, Any]]] = defaultdict(dict)
        self._joins = [d for d in self.universe.dimensions.values() if not d.has_key]
        self._tableless = without_records(self.universe)

    def blocks(self, refs: Iterable[DatasetRef], order: list[str]) -> list[dict[str, Any]]:
        """``dimension`` blocks for the data IDs of ``refs``, in dependency order."""
        data_ids = {}
        for ref in refs:
            names = ref.dataset_type.dimensions.names
            data_ids[(names, tuple(ref.data_id[n] for n in names))] = ref.data_id
        self._prefetch(data_ids.values())
        for data_id in data_ids.values():
            self.add_data_id(data_id)
        self._add_populated()
        rank = {name: i for i, name in enumerate(order)}
        return [{"type": "dimension", "element": name,
                 "records": [_butler_record(self.universe[name], self.records[name][key], rank)
                             for key in sorted(self.records[name])]}
                for name in order if self.records.get(name)]

    def add_data_id(self, data_id: Mapping[str, Any]) -> None:
        """The records of a complete data ID: each of its dimensions and each join element
        relating them."""
        for name in data_id:
            self._need(name, data_id)
        for join in self._joins:
            if all(n in data_id for n in join.requires):
                self._need(join.name, data_id)

    def _need(self, name: str, values: Mapping[str, Any]) -> None:
        """A record and, recursively, the records it names."""
        if name in self._tableless:
            return
        dim = self.universe[name]
        key = tuple(values[k] for k in dim.keys)
        if key in self.records[name]:
            return
        row = self.dims.get(name, key)
        if row is None:
            return
        self.records[name][key] = row
        for other in (*dim.requires, *dim.implies):
            if row.get(other) is not None:
                self._need(other, row)

    def _prefetch(self, data_ids: Iterable[Mapping[str, Any]]) -> None:
        """Load the data IDs' records in a few queries per element."""
        wanted: dict[str, set[RecordKey]] = defaultdict(set)
        for data_id in data_ids:
            for name in data_id:
                if name not in self._tableless:
                    keys = self.universe[name].keys
                    wanted[name].add(tuple(data_id[k] for k in keys))
        for name, keys in wanted.items():
            self.dims.prefetch(name, keys)

    def _add_populated(self) -> None:
        """The join elements a dimension exported populates (a visit's definitions and
        detector regions), unless the data IDs brought some already, and the records they
        name."""
        present = {name for name, found in self.records.items() if found}
        for join, populator in populated_by(self.universe).items():
            if join in present or not self.records.get(populator):
                continue
            keys = self.universe[populator].keys
            wanted = set(self.records[populator])
            for rows in self.dims.stream(join, 5000):
                for row in rows:
                    if tuple(row[k] for k in keys) in wanted:
                        self._add_row(join, row)

    def _add_row(self, name: str, row: dict[str, Any]) -> None:
        dim = self.universe[name]
        self.records[name][tuple(row[k] for k in dim.keys)] = row
        for other in (*dim.requires, *dim.implies):
            if row.get(other) is not None:
                self._need(other, row)


def butler_order(universe: DimensionUniverse) -> list[str]:
    """Elements in the order daf_butler sorts them: those whose dimensions are all placed
    already, a batch at a time, each batch by name."""
    placed: list[str] = []
    waiting = dict(universe.dimensions)
    while waiting:
        done = set(placed)
        ready = sorted(n for n, d in waiting.items() if done.issuperset((*d.requires,
                                                                          *d.implies)))
        placed += ready
        for name in ready:
            del waiting[name]
    return placed


def without_records(universe: DimensionUniverse) -> set[str]:
    """Elements daf_butler keeps no table for: views of another (``band``, whose values
    are those of ``physical_filter.band``) and the skypix levels."""
    elements = _elements(universe)
    if elements is None:
        return {n for n in universe.dimensions if n in VIEWS or _SKYPIX.fullmatch(n)}
    views = {name for name, spec in elements.items() if _view_of(spec)}
    return {n for n in universe.dimensions if n in views or n not in elements}


def _view_of(spec: Any) -> str | None:
    """The element another is a view of, in its (possibly nested) storage settings."""
    storage = spec.get("storage") if isinstance(spec, dict) else None
    while isinstance(storage, dict):
        if storage.get("view_of"):
            return str(storage["view_of"])
        storage = storage.get("nested")
    return None


def populated_by(universe: DimensionUniverse) -> dict[str, str]:
    """Join element -> the dimension whose records bring them along in an export."""
    elements = _elements(universe)
    if elements is None:
        return {k: v for k, v in POPULATED_BY.items()
                if k in universe and int(universe.version) >= POPULATED_SINCE}
    return {name: spec["populated_by"] for name, spec in elements.items()
            if isinstance(spec, dict) and spec.get("populated_by") in universe
            and name in universe}


def _elements(universe: DimensionUniverse) -> dict[str, Any] | None:
    """daf_butler's own configuration of the universe's elements (None: not installed)."""
    try:
        return butler_universe.raw_config(universe.version).get("elements") or {}
    except ConfigError:
        return None


def _butler_record(dim: Dimension, row: Mapping[str, Any], rank: Mapping[str, int]
                   ) -> dict[str, Any]:
    """A record as daf_butler exports it: required dimensions, key and implied ones in its
    order, then the other fields; ``hash`` fields as bytes (YAML ``!!binary``)."""
    found = to_butler(dim, row)
    first = [*sorted(dim.requires, key=rank.__getitem__),
             *([dim.key_field or dim.name] if dim.has_key else []),
             *sorted(dim.implies, key=rank.__getitem__)]
    record = {name: found[name] for name in first} | found
    for name, kind in dim.metadata.items():
        value = record.get(dim.renamed.get(name, name))
        if kind == "hash" and isinstance(value, str):
            record[dim.renamed.get(name, name)] = bytes.fromhex(value)
    return record
