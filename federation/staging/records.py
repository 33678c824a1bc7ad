"""Dimension records of a staging directory: completing and checking data IDs offline.

A staging directory holds only the records its inputs need; a data ID naming
any other value is refused, as a repository refuses a value it has no record
of.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from federation.dimensions.universe import DimensionGroup, DimensionUniverse
from federation.errors import DataIdError, MissingRecordError
from federation.model import data_id_key
from federation.registry.dimensions import coerce_key
from federation.staging.model import DamagedStagingError


class StagedRecords:
    """The records of a staging directory, by dimension and key."""

    def __init__(self, universe: DimensionUniverse,
                 records: Mapping[str, list[dict[str, Any]]]) -> None:
        self.universe = universe
        self._by_key: dict[str, dict[tuple, dict[str, Any]]] = {}
        for name, rows in records.items():
            if name not in universe.dimensions:
                raise DamagedStagingError(f"registry/dimensions.yaml: unknown dimension {name!r}")
            keys = universe.dimensions[name].keys
            table = self._by_key.setdefault(name, {})
            for row in rows:
                if any(k not in row for k in keys):
                    raise DamagedStagingError(f"registry/dimensions.yaml: a {name} record "
                                              f"lacks one of {', '.join(keys)}")
                table[tuple(row[k] for k in keys)] = row

    def get(self, dimension: str, data_id: Mapping[str, Any]) -> dict[str, Any] | None:
        """The record of ``dimension`` named by ``data_id``, or None."""
        keys = self.universe.dimensions[dimension].keys
        return self._by_key.get(dimension, {}).get(tuple(data_id.get(k) for k in keys))

    def expand(self, group: DimensionGroup, data_id: Mapping[str, Any]
               ) -> tuple[dict[str, Any], str]:
        """Check a data ID against the staged records and complete it with implied values.

        Returns the full data ID and its canonical key (as a registry computes them).
        """
        dims = self.universe.dimensions
        unknown = [k for k in data_id if k not in group.names]
        if unknown:
            raise DataIdError(f"data ID has dimension(s) {', '.join(unknown)} that are not "
                              f"among {', '.join(group.names)}")
        missing = [k for k in group.required if k not in data_id]
        if missing:
            raise DataIdError(f"data ID {dict(data_id)} is missing {', '.join(missing)} "
                              f"(needs {', '.join(group.required)})")
        full = {name: coerce_key(dims[name], data_id[name]) for name in group.required}
        for name in group.required:
            self._record(name, full)
        pending = list(group.implied)
        while pending:  # an implied value's record may imply the next (exposure -> band)
            ready = [(name, source) for name in pending for source in full
                     if name in dims[source].implies]
            if not ready:
                raise DataIdError(f"cannot determine {', '.join(pending)} from data ID {full}")
            for name, source in ready:
                if name in full:
                    continue
                value = self._record(source, full).get(name)
                if value is None:
                    raise DataIdError(f"the {source} record of {full} gives no {name}")
                full[name] = value
                pending.remove(name)
                self._record(name, full)
        for name in group.implied:
            if name in data_id and coerce_key(dims[name], data_id[name]) != full[name]:
                raise DataIdError(f"data ID gives {name}={data_id[name]!r} but its records "
                                  f"imply {full[name]!r}")
        return full, data_id_key([full[name] for name in group.required])

    def _record(self, name: str, data_id: Mapping[str, Any]) -> dict[str, Any]:
        record = self.get(name, data_id)
        if record is None:
            key = ", ".join(f"{k}={data_id.get(k)!r}"
                            for k in self.universe.dimensions[name].keys)
            missing = MissingRecordError(name, key)
            missing.args = (f"no {name} record for {key} in this staging directory: it holds "
                            "only the records its inputs need",)
            raise missing
        return record
