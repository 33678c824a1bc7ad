"""The units a sync moves: the current state of one object each, with its version.

A source's journal says *which* objects changed; the reader sends each
object's current state. A destination applies a state only when its version
is newer than what it holds, so states may arrive twice, late, or by several
paths and still converge. Every state is a JSON line in a bundle.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, ClassVar

from federation.errors import InputError


@dataclass(frozen=True)
class FileInfo:
    """A dataset file as the source holds it (path relative to its root, or absolute)."""

    path: str
    formatter: str
    size: int
    checksum: str


@dataclass(frozen=True)
class RecordState:
    kind: ClassVar[str] = "dimension_record"
    dimension: str
    record: dict[str, Any]


@dataclass(frozen=True)
class DatasetTypeState:
    kind: ClassVar[str] = "dataset_type"
    name: str
    dimensions: list[str]
    storage_class: str


@dataclass(frozen=True)
class CollectionState:
    """A collection's definition, documentation and (for chains) children."""

    kind: ClassVar[str] = "collection"
    name: str
    type: str
    owner: str
    created_version: int
    doc: str = ""
    doc_version: int = 0
    children: list[str] | None = None
    chain_version: int = 0
    #: the release whose frozen structure this collection is (it has a name of its own,
    #: outside the prefixes its site owns)
    release: str | None = None


@dataclass(frozen=True)
class DatasetState:
    kind: ClassVar[str] = "dataset"
    id: str
    dataset_type: str
    run: str
    data_id: dict[str, Any]
    file: FileInfo | None = None
    held_at: str | None = None  # the file is at this site, not at the source
    version: int = 0  # its creation at the owner; newer than a tombstone means re-created

    @cached_property
    def uuid(self) -> uuid.UUID:
        return uuid.UUID(self.id)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the parsed UUID (a cache, cheaper to parse again than to pickle)."""
        state = dict(self.__dict__)
        state.pop("uuid", None)
        return state


@dataclass(frozen=True)
class TagState:
    """Whether one dataset is in one TAGGED collection, as of ``version``."""

    kind: ClassVar[str] = "tag"
    collection: str
    dataset_id: str
    present: bool
    version: int


@dataclass(frozen=True)
class CalibSlotState:
    """Every validity range of one type + data ID in a CALIBRATION collection."""

    kind: ClassVar[str] = "calib_slot"
    collection: str
    dataset_type: str
    data_id_key: str
    entries: list[tuple[str, int, int]]  # (dataset id, begin ns, end ns)
    version: int


@dataclass(frozen=True)
class DatasetRemoval:
    kind: ClassVar[str] = "dataset_removal"
    id: str
    run: str
    dataset_type: str
    data_id_key: str
    version: int


@dataclass(frozen=True)
class CollectionRemoval:
    kind: ClassVar[str] = "collection_removal"
    name: str
    owner: str
    version: int


@dataclass(frozen=True)
class ReleaseState:
    """A release: what its row records and, in key order, every line of its manifest
    (a destination rebuilds the Merkle tree from them and must find the same root).
    A retraction is the only change a release ever sees."""

    kind: ClassVar[str] = "release"
    name: str
    root: str
    site: str
    created: float
    creator: str
    doc: str
    selection: dict[str, Any]
    entries: int
    bytes: int
    counts: dict[str, int]
    retracted: float | None = None
    retract_reason: str | None = None


@dataclass(frozen=True)
class ReleaseEntries:
    """Manifest lines ``start``.. of a release (a release of 100,000 entries travels as
    some twenty of these, each a bundle line of about a megabyte)."""

    kind: ClassVar[str] = "release_entries"
    release: str
    start: int
    lines: list[str]


@dataclass(frozen=True)
class ReleaseCheckState:
    """One verification of a release by ``site`` (see :class:`~federation.registry.releases.
    ReleaseCheck`): it travels, so that every site can tell who holds the release."""

    kind: ClassVar[str] = "release_check"
    release: str
    site: str
    checked: float
    checker: str
    root: str
    complete: bool
    files: int
    missing: int
    corrupt: int


State = (RecordState | DatasetTypeState | CollectionState | DatasetState | TagState
         | CalibSlotState | DatasetRemoval | CollectionRemoval | ReleaseState | ReleaseEntries
         | ReleaseCheckState)
KINDS: dict[str, type] = {cls.kind: cls for cls in (
    RecordState, DatasetTypeState, CollectionState, DatasetState, TagState, CalibSlotState,
    DatasetRemoval, CollectionRemoval, ReleaseState, ReleaseEntries, ReleaseCheckState)}


def identity(state: State) -> tuple:
    """What a state is about, so that repeated states are counted once."""
    if isinstance(state, RecordState):
        return (state.kind, state.dimension, tuple(sorted(state.record.items(), key=str)))
    if isinstance(state, DatasetTypeState | CollectionState | CollectionRemoval):
        return (state.kind, state.name)
    if isinstance(state, DatasetState | DatasetRemoval):
        return (state.kind, state.id)
    if isinstance(state, TagState):
        return (state.kind, state.collection, state.dataset_id)
    if isinstance(state, ReleaseState):
        return (state.kind, state.name)
    if isinstance(state, ReleaseEntries):
        return (state.kind, state.release, state.start)
    if isinstance(state, ReleaseCheckState):
        return (state.kind, state.release, state.site, state.checked)
    return (state.kind, state.collection, state.dataset_type, state.data_id_key)


def to_json(state: State) -> dict[str, Any]:
    return {"kind": state.kind, **asdict(state)}


def from_json(data: Any) -> State:
    """Rebuild a state from a bundle line; malformed input is an InputError."""
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        raise InputError(f"unknown record in bundle: {str(data)[:80]}")
    data = dict(data)
    cls = KINDS[data.pop("kind")]
    try:
        if cls is DatasetState and data.get("file") is not None:
            data["file"] = FileInfo(**data["file"])
        if cls is CalibSlotState:
            data["entries"] = [tuple(e) for e in data["entries"]]
        return cls(**data)
    except (TypeError, ValueError) as exc:
        raise InputError(f"malformed {cls.kind} record in bundle: {exc}") from None
