"""The dimension universe: which dimensions exist and how they relate.

A universe is loaded from YAML (see ``default_universe.yaml``). Each
dimension has a key type, dimensions it *requires* (part of its identity),
dimensions it *implies* (determined by its records), metadata fields and
optionally a timespan.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

import yaml

from federation import yamlio
from federation.errors import ConfigError

# "none": an element identified by the dimensions it requires alone (daf_butler's join
# elements such as visit_detector_region); it holds records but is no data ID key.
KEY_TYPES = {"string": str, "int": int, "none": type(None)}
# "region": a sky region as the hex of its sphgeom encoding; "hash": bytes as hex.
METADATA_TYPES = {"string": str, "int": int, "float": float, "bool": bool, "region": str,
                  "hash": str}
RESERVED_NAMES = {
    "id", "run", "run_id", "dataset_type", "dataset_type_id", "data_id_key", "collection",
    "timespan", "timespan_begin", "timespan_end", "ingest_date",
}


@dataclass(frozen=True)
class Dimension:
    """One dimension: its key type, relations, metadata fields and timespan."""

    name: str
    key_type: str
    requires: tuple[str, ...] = ()
    implies: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    has_timespan: bool = False
    key_field: str | None = None  # what daf_butler calls the key field ("id", "name")
    renamed: dict[str, str] = field(default_factory=dict)  # our field name -> daf_butler's

    @property
    def python_type(self) -> type:
        return KEY_TYPES[self.key_type]

    @property
    def has_key(self) -> bool:
        """Whether this is a dimension (a data ID key) rather than a key-less element."""
        return self.key_type != "none"

    @property
    def keys(self) -> tuple[str, ...]:
        """The columns that identify one record."""
        return (*self.requires, self.name) if self.has_key else self.requires


class DimensionGroup:
    """The dimensions of a dataset type, split into required and implied.

    Required dimensions identify a dataset (they form its data ID); implied
    ones are looked up from dimension records and added on completion.
    """

    def __init__(self, universe: DimensionUniverse, names) -> None:
        names = set(names)
        unknown = names - set(universe.dimensions)
        if unknown:
            raise ConfigError(
                f"unknown dimension(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(universe.dimensions)}"
            )
        keyless = sorted(n for n in names if not universe.dimensions[n].has_key)
        if keyless:
            raise ConfigError(f"{', '.join(keyless)} cannot be in a data ID: it has no key of "
                              "its own (it relates the dimensions it requires)")
        closure = set()
        stack = list(names)
        while stack:
            name = stack.pop()
            if name in closure:
                continue
            closure.add(name)
            dim = universe.dimensions[name]
            stack.extend(dim.requires)
            stack.extend(dim.implies)
        implied = set()
        for name in closure:
            implied.update(universe.dimensions[name].implies)
        self.universe = universe
        self.required: tuple[str, ...] = universe.sorted(closure - implied)
        self.implied: tuple[str, ...] = universe.sorted(implied)
        self.names: tuple[str, ...] = universe.sorted(closure)
        self._hash = hash(self.names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DimensionGroup) and self.names == other.names

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"DimensionGroup({', '.join(self.names)})"

    def __str__(self) -> str:
        return ", ".join(self.required) or "(none)"


_PARSED: dict[str, DimensionUniverse] = {}


class DimensionUniverse:
    """All dimensions a repository knows, in dependency order."""

    def __init__(self, config: dict) -> None:
        if not isinstance(config, dict) or not isinstance(config.get("dimensions"), dict):
            raise ConfigError("dimension universe must be a mapping with a 'dimensions' mapping")
        self.version = config.get("version", 1)
        self.namespace = str(config.get("namespace") or "federation")
        self.config = config
        raw = config["dimensions"]
        dims = {name: _parse_dimension(name, spec) for name, spec in raw.items()}
        _check_references(dims)
        self.dimensions: dict[str, Dimension] = {
            name: dims[name] for name in _topological_order(dims)
        }
        _check_relations(dims)
        self._order = {name: i for i, name in enumerate(self.dimensions)}

    @classmethod
    def default(cls) -> DimensionUniverse:
        text = resources.files("federation.dimensions").joinpath(
            "default_universe.yaml").read_text()
        return cls(yamlio.safe_load(text))

    @classmethod
    def from_yaml(cls, text: str) -> DimensionUniverse:
        """The universe a registry records (parsed once per process for each text)."""
        found = _PARSED.get(text)
        if found is None:
            try:
                found = _PARSED[text] = cls(yamlio.safe_load(text))
            except yaml.YAMLError as exc:
                raise ConfigError(f"dimension universe is not valid YAML: {exc}") from None
        return found

    @classmethod
    def from_file(cls, path: str | Path) -> DimensionUniverse:
        try:
            text = Path(path).read_bytes().decode("utf-8-sig")
        except OSError as exc:
            raise ConfigError(f"cannot read dimension universe {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"dimension universe {path} is not UTF-8 text (byte "
                              f"{exc.start})") from None
        return cls.from_yaml(text)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.config, sort_keys=False)

    @cached_property
    def digest(self) -> str:
        """What identifies this universe: a SHA-256 of its dimensions as they are read
        (documentation left out), the same whatever the YAML's layout."""
        shape: dict = {name: [d.key_type, list(d.requires), list(d.implies),
                              sorted(d.metadata.items()), d.has_timespan]
                       for name, d in sorted(self.dimensions.items())}
        if self.namespace != "federation":  # unchanged digests for existing repositories
            shape = {"namespace": self.namespace, "version": self.version, "dimensions": shape}
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()

    def differences(self, other: DimensionUniverse) -> list[str]:
        """How ``other`` differs from this universe, one short phrase per difference."""
        found = []
        if (self.namespace, self.version) != (other.namespace, other.version):
            found.append(f"universe {self.namespace}:{self.version} here, "
                         f"{other.namespace}:{other.version} there")
            if self.namespace != other.namespace:
                return found  # unrelated universes: every dimension would differ
        for name in sorted(set(self.dimensions) | set(other.dimensions)):
            mine, theirs = self.dimensions.get(name), other.dimensions.get(name)
            if mine is None or theirs is None:
                found.append(f"dimension {name} only {'there' if mine is None else 'here'}")
                continue
            for what, a, b in (("key type", mine.key_type, theirs.key_type),
                               ("requires", mine.requires, theirs.requires),
                               ("implies", mine.implies, theirs.implies),
                               ("timespan", mine.has_timespan, theirs.has_timespan)):
                if a != b:
                    found.append(f"{name} {what} {a} here, {b} there")
            for field_name in sorted(set(mine.metadata) | set(theirs.metadata)):
                a, b = mine.metadata.get(field_name), theirs.metadata.get(field_name)
                if a != b:
                    found.append(f"{name}.{field_name} {a or 'absent'} here, "
                                 f"{b or 'absent'} there")
        return found

    def __getitem__(self, name: str) -> Dimension:
        try:
            return self.dimensions[name]
        except KeyError:
            raise ConfigError(
                f"unknown dimension {name!r}; known: {', '.join(self.dimensions)}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self.dimensions

    def sorted(self, names) -> tuple[str, ...]:
        return tuple(sorted(names, key=self._order.__getitem__))

    def group(self, names) -> DimensionGroup:
        names = tuple(names)
        cache = self._groups
        if names not in cache:
            cache[names] = DimensionGroup(self, names)
        return cache[names]

    @cached_property
    def _groups(self) -> dict:
        return {}


SPEC_KEYS = {"key", "requires", "implies", "metadata", "timespan", "doc", "key_field",
             "renamed"}


def _parse_dimension(name: str, spec) -> Dimension:
    if not isinstance(spec, dict):
        raise ConfigError(f"dimension {name!r} must be a mapping")
    if not isinstance(name, str) or name in RESERVED_NAMES or not name.isidentifier() \
            or name != name.lower():
        raise ConfigError(
            f"{name!r} cannot be a dimension name (reserved or not a lowercase identifier)")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ConfigError(
            f"dimension {name!r} has unknown setting(s) {', '.join(sorted(map(str, unknown)))}; "
            f"known: {', '.join(sorted(SPEC_KEYS))}"
        )
    key_type = spec.get("key", "string")
    if not isinstance(key_type, str) or key_type not in KEY_TYPES:
        raise ConfigError(f"dimension {name!r}: key type must be one of {sorted(KEY_TYPES)}")
    requires = _name_list(name, "requires", spec.get("requires"))
    implies = _name_list(name, "implies", spec.get("implies"))
    twice = [other for other in requires if other in implies]
    if twice:
        raise ConfigError(f"dimension {name!r} names {twice[0]!r} twice (requires and implies)")
    metadata = spec.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ConfigError(f"dimension {name!r}: metadata must be a mapping of field name to type")
    has_timespan = spec.get("timespan", False)
    if not isinstance(has_timespan, bool):
        raise ConfigError(f"dimension {name!r}: timespan must be true or false")
    taken = {name, *requires, *implies}
    for field_name, type_name in metadata.items():
        if not isinstance(field_name, str) or not field_name.isidentifier() \
                or field_name in RESERVED_NAMES or field_name in taken:
            raise ConfigError(
                f"dimension {name!r}: {field_name!r} cannot be a metadata field name (reserved, "
                "a dimension's name, or not an identifier)"
            )
        if not isinstance(type_name, str) or type_name not in METADATA_TYPES:
            raise ConfigError(
                f"dimension {name!r} field {field_name!r}: type must be one of "
                f"{sorted(METADATA_TYPES)}"
            )
    key_field = spec.get("key_field")
    renamed = spec.get("renamed") or {}
    if key_field is not None and not isinstance(key_field, str):
        raise ConfigError(f"dimension {name!r}: key_field must be a field name")
    if not isinstance(renamed, dict) or not set(renamed) <= set(metadata):
        raise ConfigError(f"dimension {name!r}: renamed must map metadata fields to names")
    if key_type == "none" and not requires:
        raise ConfigError(f"element {name!r} has no key: it must require dimensions")
    return Dimension(
        name=name,
        key_type=key_type,
        requires=requires,
        implies=implies,
        metadata=dict(metadata),
        has_timespan=has_timespan,
        key_field=key_field,
        renamed=dict(renamed),
    )


def _name_list(name: str, setting: str, value) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"dimension {name!r}: {setting} must be a list of dimension names")
    if len(set(value)) != len(value):
        raise ConfigError(f"dimension {name!r}: {setting} names a dimension twice")
    return tuple(value)


def _check_references(dims: dict[str, Dimension]) -> None:
    for dim in dims.values():
        for other in dim.requires + dim.implies:
            if other not in dims:
                raise ConfigError(f"dimension {dim.name!r} refers to unknown dimension {other!r}")
            if not dims[other].has_key:
                raise ConfigError(f"dimension {dim.name!r} refers to {other!r}, which has no key")


def _check_relations(dims: dict[str, Dimension]) -> None:
    """A dimension must require whatever the dimensions it names require.

    A record stores the keys of the dimensions it requires and implies; to find
    their records it needs all of their own required keys too.
    """
    for dim in dims.values():
        for other in dim.requires + dim.implies:
            missing = [r for r in dims[other].requires if r not in dim.requires]
            if missing:
                raise ConfigError(
                    f"dimension {dim.name!r} names {other!r}, which requires "
                    f"{', '.join(missing)}; {dim.name!r} must require {', '.join(missing)} too"
                )
        clash = set(dim.metadata) & set(dims)
        if clash:
            raise ConfigError(
                f"dimension {dim.name!r}: metadata field {sorted(clash)[0]!r} has the name of a "
                "dimension"
            )


def _topological_order(dims: dict[str, Dimension]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise ConfigError(f"dimension relations form a cycle: {' -> '.join(path + (name,))}")
        state[name] = 1
        for other in dims[name].requires + dims[name].implies:
            visit(other, path + (name,))
        state[name] = 2
        order.append(name)

    for name in dims:
        visit(name, ())
    return order
