"""What a staging directory's YAML registry holds, as typed values.

Each value converts to and from the plain mapping written in YAML; reading
checks every field, and a malformed one is a :class:`DamagedStagingError`
naming the file and the entry.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from federation.errors import InputError
from federation.model import CollectionType

#: written in ``staging.yaml``; a directory of another format is refused
FORMAT = "fed-staging/1"


class DamagedStagingError(InputError):
    """A staging directory whose YAML or files are not what its registry says."""


def _field(data: Any, name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(data, dict):
        raise DamagedStagingError(f"{where}: expected a mapping, got {type(data).__name__}")
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise DamagedStagingError(f"{where}: field {name!r} is missing or malformed")
    return value


def _uuid(text: Any, where: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(text))
    except ValueError:
        raise DamagedStagingError(f"{where}: {text!r} is not a dataset UUID") from None


@dataclass(frozen=True)
class StagingHeader:
    """``staging.yaml``: where the inputs came from and how the job should search them."""

    site: str
    instance: str
    universe_digest: str
    created: str
    selection: dict[str, Any]
    #: the collections named at staging, expanded, in search order (the default search path)
    search_path: list[str]
    templates: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "site": self.site, "instance": self.instance,
                "universe_digest": self.universe_digest, "created": self.created,
                "selection": self.selection, "search_path": list(self.search_path),
                "templates": dict(self.templates)}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> StagingHeader:
        found = _field(data, "format", str, where)
        if found != FORMAT:
            raise DamagedStagingError(f"{where}: format {found!r} is not {FORMAT!r}")
        return cls(_field(data, "site", str, where), _field(data, "instance", str, where),
                   _field(data, "universe_digest", str, where),
                   _field(data, "created", str, where), _field(data, "selection", dict, where),
                   [str(n) for n in _field(data, "search_path", list, where)],
                   {str(k): str(v) for k, v in (data.get("templates") or {}).items()})


@dataclass(frozen=True)
class StagedType:
    """A dataset type: its name, dimensions (names in the staged universe), storage class."""

    name: str
    dimensions: tuple[str, ...]
    storage_class: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dimensions": list(self.dimensions),
                "storage_class": self.storage_class}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> StagedType:
        return cls(_field(data, "name", str, where),
                   tuple(str(d) for d in _field(data, "dimensions", list, where)),
                   _field(data, "storage_class", str, where))


@dataclass(frozen=True)
class StagedCollection:
    """A collection the job may search: an input RUN, or a named collection flattened to
    the staged datasets found through it (``datasets``), with the type it had."""

    name: str
    type: CollectionType
    datasets: tuple[uuid.UUID, ...] = ()
    flattened_from: CollectionType | None = None

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"name": self.name, "type": str(self.type)}
        if self.type is not CollectionType.RUN:
            found["flattened_from"] = str(self.flattened_from or self.type)
            found["datasets"] = [str(i) for i in self.datasets]
        return found

    @classmethod
    def from_dict(cls, data: Any, where: str) -> StagedCollection:
        name = _field(data, "name", str, where)
        try:
            ctype = CollectionType(_field(data, "type", str, where))
        except ValueError:
            raise DamagedStagingError(f"{where}: unknown collection type {data['type']!r}") \
                from None
        if ctype not in (CollectionType.RUN, CollectionType.TAGGED):
            raise DamagedStagingError(f"{where}: a staged collection is a RUN or TAGGED")
        if ctype is CollectionType.RUN:
            return cls(name, ctype)
        ids = tuple(_uuid(i, where) for i in _field(data, "datasets", list, where))
        try:
            origin = CollectionType(data.get("flattened_from") or ctype)
        except ValueError:
            raise DamagedStagingError(f"{where}: unknown collection type "
                                      f"{data['flattened_from']!r}") from None
        return cls(name, ctype, ids, origin)


@dataclass(frozen=True)
class StagedDataset:
    """An input or output dataset: its UUID, type, run, full data ID and file.

    ``path`` is relative to the staging directory; ``inputs`` (outputs only) are
    the UUIDs of the datasets it was made from.
    """

    id: uuid.UUID
    dataset_type: str
    run: str
    data_id: dict[str, Any]
    path: str
    size: int
    checksum: str
    inputs: tuple[uuid.UUID, ...] = ()

    def to_dict(self, *, with_inputs: bool = False) -> dict[str, Any]:
        found = {"id": str(self.id), "dataset_type": self.dataset_type, "run": self.run,
                 "data_id": dict(self.data_id), "path": self.path, "size": self.size,
                 "checksum": self.checksum}
        if with_inputs:
            found["inputs"] = [str(i) for i in self.inputs]
        return found

    @classmethod
    def from_dict(cls, data: Any, where: str, *, with_inputs: bool = False) -> StagedDataset:
        inputs: tuple[uuid.UUID, ...] = ()
        if with_inputs:
            inputs = tuple(_uuid(i, where) for i in _field(data, "inputs", list, where))
        data_id = _field(data, "data_id", dict, where)
        if not all(isinstance(v, int | str) and not isinstance(v, bool)
                   for v in data_id.values()):
            raise DamagedStagingError(f"{where}: data ID values must be integers or strings")
        return cls(_uuid(_field(data, "id", str, where), where),
                   _field(data, "dataset_type", str, where), _field(data, "run", str, where),
                   {str(k): v for k, v in data_id.items()}, _field(data, "path", str, where),
                   _field(data, "size", int, where), _field(data, "checksum", str, where),
                   inputs)
