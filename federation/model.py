"""Value types shared by the registry, datastore and butler."""

from __future__ import annotations

import enum
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from federation.dimensions.universe import DimensionGroup
from federation.timespan import Timespan

# Fixed namespace so that deterministic IDs agree between independent sites.
DATASET_ID_NAMESPACE = uuid.UUID("840b31d9-05cd-5161-b2c8-00d32b280d0f")


class CollectionType(enum.StrEnum):
    RUN = "RUN"
    TAGGED = "TAGGED"
    CHAINED = "CHAINED"
    CALIBRATION = "CALIBRATION"


class IdMode(enum.StrEnum):
    """How new dataset IDs are made."""

    RANDOM = "random"  # UUID4, for outputs
    DETERMINISTIC = "deterministic"  # UUID5(type, data ID): same raw, same ID everywhere
    DETERMINISTIC_RUN = "deterministic-run"  # UUID5(type, data ID, run)


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


def make_dataset_id(
    mode: IdMode, dataset_type: str, key: str, run: str | None = None
) -> uuid.UUID:
    """A new dataset UUID: random, or derived from type + data ID (+ run)."""
    if mode is IdMode.RANDOM:
        return uuid.uuid4()
    name = f"{dataset_type}|{key}"
    if mode is IdMode.DETERMINISTIC_RUN:
        name += f"|{run}"
    return uuid.uuid5(DATASET_ID_NAMESPACE, name)
