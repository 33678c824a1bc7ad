"""Value types shared by the registry, datastore and butler."""

from __future__ import annotations

import enum
import json
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from federation.dimensions.universe import DimensionGroup
from federation.timespan import Timespan

# daf_butler's DatasetIdFactory.NS_UUID (uuid5(NAMESPACE_DNS, "lsst.org")): deterministic
# IDs agree between independent sites and with the LSST butler. Never change it.
DATASET_ID_NAMESPACE = uuid.UUID("840b31d9-05cd-5161-b2c8-00d32b280d0f")


class CollectionType(enum.StrEnum):
    RUN = "RUN"
    TAGGED = "TAGGED"
    CHAINED = "CHAINED"
    CALIBRATION = "CALIBRATION"


class IdMode(enum.StrEnum):
    """How new dataset IDs are made."""

    RANDOM = "random"  # UUIDv7 (time-ordered), for outputs; daf_butler's UNIQUE
    DETERMINISTIC = "deterministic"  # UUID5(type, data ID): daf_butler's DATAID_TYPE
    DETERMINISTIC_RUN = "deterministic-run"  # UUID5(type, run, data ID): DATAID_TYPE_RUN


@dataclass(frozen=True)
class DatasetType:
    """A named kind of dataset: its dimensions and its storage class."""

    name: str
    dimensions: DimensionGroup
    storage_class: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dimensions": list(self.dimensions.names),
            "storage_class": self.storage_class,
        }

    def __str__(self) -> str:
        return f"{self.name}({', '.join(self.dimensions.required)}) -> {self.storage_class}"


@dataclass(frozen=True, slots=True, eq=False)
class DatasetRef:
    """A dataset: its global UUID, type, complete data ID and RUN."""

    id: uuid.UUID
    dataset_type: DatasetType
    data_id: dict[str, Any]
    run: str

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DatasetRef) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def required_data_id(self) -> dict[str, Any]:
        return {name: self.data_id[name] for name in self.dataset_type.dimensions.required}

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "dataset_type": self.dataset_type.name,
            "run": self.run,
            "data_id": self.data_id,
        }

    def __str__(self) -> str:
        data_id = ", ".join(f"{k}={v!r}" for k, v in self.required_data_id.items())
        return f"{self.dataset_type.name}@{{{data_id}}} [{self.run}]"


@dataclass(frozen=True, slots=True)
class StoredFile:
    """Where a dataset's file lives and what it must hash to.

    ``path`` is relative to the datastore root, or absolute for files
    ingested in place (transfer mode ``direct``).
    """

    path: str
    formatter: str
    size: int
    checksum: str


@dataclass
class Collection:
    """A collection's registry entry."""

    name: str
    type: CollectionType
    owner_site: str
    doc: str = ""
    children: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        result = {"name": self.name, "type": str(self.type), "owner_site": self.owner_site,
                  "doc": self.doc}
        if self.type is CollectionType.CHAINED:
            result["children"] = list(self.children)
        return result


@dataclass(frozen=True, slots=True)
class Certification:
    """A dataset's validity range in a CALIBRATION collection."""

    ref: DatasetRef
    timespan: Timespan


compact_json = json.JSONEncoder(separators=(",", ":")).encode


_quote = json.encoder.encode_basestring_ascii


def data_id_key(values: list[Any] | tuple[Any, ...]) -> str:
    """Canonical, unambiguous text form of a data ID's required values (their compact
    JSON list)."""
    parts = []
    for value in values:
        kind = type(value)
        if kind is int:
            parts.append(str(value))
        elif kind is str:
            parts.append(_quote(value))
        else:  # anything else (only from malformed input): JSON decides
            return compact_json(list(values))
    return f"[{','.join(parts)}]"


def ref_key(ref: DatasetRef) -> str:
    """The data ID key of a dataset: its slot, with its type, in a run or collection."""
    return data_id_key([ref.data_id[n] for n in ref.dataset_type.dimensions.required])


def make_dataset_id(mode: IdMode | str, dataset_type: str, required: Mapping[str, Any],
                    run: str | None = None) -> uuid.UUID:
    """A new dataset UUID: random (v7), or derived from type (+ run) + data ID.

    ``required`` maps the dataset type's required dimensions to their values.
    Deterministic IDs are daf_butler's (``DatasetIdFactory.makeDatasetId``), so the
    same raw ingested by the LSST butler and by fed gets the same UUID: the UUID5, in
    :data:`DATASET_ID_NAMESPACE`, of ``dataset_type=raw,detector=0,exposure=903334,
    instrument=HSC`` (``run=<run>`` follows the type in DETERMINISTIC_RUN mode):
    dimension names sorted, values as ``str()``.
    """
    mode = IdMode(mode)
    if mode is IdMode.RANDOM:
        return uuid7()
    items = [f"dataset_type={dataset_type}"]
    if mode is IdMode.DETERMINISTIC_RUN:
        if run is None:
            raise ValueError("a deterministic-run dataset ID needs the run")
        items.append(f"run={run}")
    items.extend(f"{name}={required[name]}" for name in sorted(required))
    return uuid.uuid5(DATASET_ID_NAMESPACE, ",".join(items))


_uuid7_lock = threading.Lock()
_uuid7_last = (0, 0)  # (unix ms, 42-bit counter) of the last UUIDv7 made here
_COUNTER_MAX = (1 << 42) - 1


def _reset_uuid7() -> None:
    """A forked child starts its own sequence: it must not count on from its parent's."""
    global _uuid7_lock, _uuid7_last
    _uuid7_lock, _uuid7_last = threading.Lock(), (0, 0)


os.register_at_fork(after_in_child=_reset_uuid7)


def uuid7() -> uuid.UUID:
    """A time-ordered UUID, version 7 (RFC 9562): a 48-bit Unix time in milliseconds, a
    42-bit counter (RFC 9562 §6.2, method 1) and 32 random bits.

    Within a process each UUID sorts after the one before, even within a millisecond or
    when the clock steps back; the counter starts at a random value below 2**41 in each
    new millisecond. (daf_butler's own ``generate_uuidv7`` has the same layout with random
    bits where this has the counter; Python 3.14's ``uuid.uuid7`` works as this does.)
    """
    global _uuid7_last
    with _uuid7_lock:
        now = time.time_ns() // 1_000_000
        last_ms, last_counter = _uuid7_last
        if now > last_ms:
            ms, counter = now, int.from_bytes(os.urandom(6)) >> 7  # 41 random bits
        elif last_counter < _COUNTER_MAX:
            ms, counter = last_ms, last_counter + 1
        else:  # the counter ran out (2**41 UUIDs or more): take the next millisecond
            ms, counter = last_ms + 1, int.from_bytes(os.urandom(6)) >> 7
        _uuid7_last = (ms, counter)
    tail = int.from_bytes(os.urandom(4))
    value = ((ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (counter >> 30) << 64
             | 0b10 << 62 | (counter & 0x3FFF_FFFF) << 32 | tail)
    return uuid.UUID(int=value)
