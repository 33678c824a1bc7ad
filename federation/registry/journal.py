"""The change journal's entries: one dataclass per kind, written and parsed here only.

Every mutation of a registry appends one entry per change, in the same
transaction, with a site-local sequence number (see
:meth:`~federation.registry.database.Database.append`). A sync reads the
entries after its cursor to learn *which* objects changed; the states it
sends are read from the registry's rows. The payload of each kind is a JSON
object whose fields are the dataclass's fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from federation.errors import InputError
from federation.model import compact_json


@dataclass(frozen=True, slots=True)
class DimensionRecordAdded:
    kind: ClassVar[str] = "dimension_record"
    dimension: str
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DatasetTypeRegistered:
    kind: ClassVar[str] = "dataset_type"
    name: str
    dimensions: list[str]
    storage_class: str


@dataclass(frozen=True, slots=True)
class CollectionCreated:
    kind: ClassVar[str] = "collection"
    name: str
    type: str
    owner: str
    doc: str = ""


@dataclass(frozen=True, slots=True)
class CollectionDocChanged:
    kind: ClassVar[str] = "doc"
    name: str
    doc: str


@dataclass(frozen=True, slots=True)
class ChainChanged:
    kind: ClassVar[str] = "chain"
    name: str
    children: list[str]


@dataclass(frozen=True, slots=True)
class CollectionRemoved:
    kind: ClassVar[str] = "remove_collection"
    name: str


@dataclass(frozen=True, slots=True)
class DatasetCreated:
    kind: ClassVar[str] = "dataset"
    id: str


@dataclass(frozen=True, slots=True)
class DatasetsRemoved:
    kind: ClassVar[str] = "remove_dataset"
    ids: list[str]


@dataclass(frozen=True, slots=True)
class DatasetsTagged:
    kind: ClassVar[str] = "associate"
    collection: str
    ids: list[str]


@dataclass(frozen=True, slots=True)
class DatasetsUntagged:
    kind: ClassVar[str] = "disassociate"
    collection: str
    ids: list[str]


@dataclass(frozen=True, slots=True)
class DatasetsCertified:
    kind: ClassVar[str] = "certify"
    collection: str
    ids: list[str]
    begin: int
    end: int


@dataclass(frozen=True, slots=True)
class DatasetsDecertified:
    kind: ClassVar[str] = "decertify"
    collection: str
    dataset_type: str
    begin: int
    end: int
    data_id_keys: list[str]


@dataclass(frozen=True, slots=True)
class CalibSlotsReplaced:
    """Validity ranges of calibration slots replaced by a sync from their owner."""

    kind: ClassVar[str] = "calib_slot"
    collection: str
    dataset_type: str
    data_id_keys: list[str]


@dataclass(frozen=True, slots=True)
class ReleaseCreated:
    """A release frozen at its site (written after its collections, so they travel first)."""

    kind: ClassVar[str] = "release"
    name: str


@dataclass(frozen=True, slots=True)
class ReleaseRetracted:
    kind: ClassVar[str] = "retract_release"
    name: str


@dataclass(frozen=True, slots=True)
class ReleaseChecked:
    """A verification of a release by ``site``, recorded here."""

    kind: ClassVar[str] = "release_check"
    release: str
    site: str
    checked: float


Change = (DimensionRecordAdded | DatasetTypeRegistered | CollectionCreated
          | CollectionDocChanged | ChainChanged | CollectionRemoved | DatasetCreated
          | DatasetsRemoved | DatasetsTagged | DatasetsUntagged | DatasetsCertified
          | DatasetsDecertified | CalibSlotsReplaced | ReleaseCreated | ReleaseRetracted
          | ReleaseChecked)

KINDS: dict[str, type] = {cls.kind: cls for cls in (
    DimensionRecordAdded, DatasetTypeRegistered, CollectionCreated, CollectionDocChanged,
    ChainChanged, CollectionRemoved, DatasetCreated, DatasetsRemoved, DatasetsTagged,
    DatasetsUntagged, DatasetsCertified, DatasetsDecertified, CalibSlotsReplaced,
    ReleaseCreated, ReleaseRetracted, ReleaseChecked)}
_FIELDS = {kind: tuple(f.name for f in fields(cls)) for kind, cls in KINDS.items()}


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journaled change with its local sequence number and provenance.

    ``origin`` is None for changes made at this site; ``version`` is the change's
    sequence number at its origin (its version everywhere it travels).
    """

    seq: int
    created_at: float
    origin: str | None
    version: int
    change: Change

    @property
    def kind(self) -> str:
        return self.change.kind


def encode(change: Change) -> str:
    """The payload text of a change (datasets, the bulk kind, take a short path)."""
    if type(change) is DatasetCreated:
        return f'{{"id":"{change.id}"}}'
    # Every field is plain JSON data: no need for asdict's deep copy (one entry per
    # replicated deletion makes this a bulk path).
    return compact_json({name: getattr(change, name) for name in _FIELDS[change.kind]})


def decode(kind: str, payload: str) -> Change:
    """Parse a stored payload; an unknown kind or malformed payload is an InputError."""
    cls = KINDS.get(kind)
    if cls is None:
        raise InputError(f"unknown journal entry kind {kind!r}")
    if cls is DatasetCreated and payload.startswith('{"id":"') and len(payload) == 45:
        return DatasetCreated(payload[7:43])
    try:
        data = json.loads(payload)
        return cls(**{name: data[name] for name in _FIELDS[kind] if name in data})
    except (ValueError, TypeError) as exc:
        raise InputError(f"malformed {kind} journal entry: {exc}") from None
