"""daf_butler's dimension universe, translated into this project's universe form.

The LSST butler describes its universe in ``configs/dimensions.yaml`` of the
``lsst-daf-butler`` package (older versions under ``configs/old_dimensions/``).
This module reads that file from the installed package (without importing the
package) and translates it:

- each element with keys becomes a dimension keyed by its first key (``id`` or
  ``name``, remembered as ``key_field``); alternate keys (``obs_id``,
  ``full_name``, ``hash``) become record fields;
- an element without keys (``visit_detector_region``, ``visit_definition``,
  ``visit_system_membership``) becomes a key-less element identified by the
  dimensions it requires;
- ``requires`` is closed over (``visit_detector_region`` requires
  ``instrument`` through ``visit``), as this project's universes spell it;
- elements in the ``topology`` families get a ``region`` field (spatial) or a
  timespan (temporal); skypix systems become one integer dimension per level;
- a field named like a dimension (``instrument.visit_system``) is stored as
  ``<field>_value`` and exported under its own name again.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import Any

from federation import yamlio
from federation.dimensions.universe import DimensionUniverse
from federation.errors import ConfigError

NAMESPACE = "daf_butler"
_TYPES = {"int": "int", "string": "string", "float": "float", "bool": "bool", "hash": "hash",
          "region": "region"}


def parse_choice(text: str) -> tuple[str, int | None] | None:
    """``daf_butler`` or ``daf_butler:VERSION`` -> (namespace, version); None otherwise."""
    name, _, version = text.partition(":")
    if name != NAMESPACE:
        return None
    if not version:
        return NAMESPACE, None
    if not version.isdigit():
        raise ConfigError(f"universe version must be a number, got {version!r} "
                          f"(for example {NAMESPACE}:7)")
    return NAMESPACE, int(version)


def config_dir() -> Path:
    """Where the installed lsst-daf-butler keeps its configuration files."""
    try:
        spec = find_spec("lsst.daf.butler")
    except ModuleNotFoundError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("daf_butler's universe needs the lsst-daf-butler package: "
                          "pip install 'federation[butler]'")
    return Path(next(iter(spec.submodule_search_locations))) / "configs"


def available_versions() -> list[int]:
    """The universe versions the installed daf_butler describes."""
    root = config_dir()
    found = {int(p.stem.removeprefix("daf_butler_universe"))
             for p in (root / "old_dimensions").glob("daf_butler_universe*.yaml")
             if p.stem.removeprefix("daf_butler_universe").isdigit()}
    found.add(int(_read(root / "dimensions.yaml").get("version", 0)))
    return sorted(found)


def load(version: int | None = None) -> DimensionUniverse:
    """daf_butler's universe (its current one, or ``version``) as a DimensionUniverse."""
    return DimensionUniverse(translate(raw_config(version)))


def raw_config(version: int | None = None) -> dict[str, Any]:
    """daf_butler's own dimension configuration of that version."""
    root = config_dir()
    current = _read(root / "dimensions.yaml")
    if version is None or int(current.get("version", -1)) == version:
        return current
    old = root / "old_dimensions" / f"daf_butler_universe{version}.yaml"
    if not old.is_file():
        raise ConfigError(f"daf_butler has no universe version {version}; known: "
                          f"{', '.join(map(str, available_versions()))}")
    return _read(old)


def translate(config: dict[str, Any]) -> dict[str, Any]:
    """This project's universe configuration for daf_butler's ``config``."""
    elements: dict[str, Any] = dict(config.get("elements") or {})
    spatial, temporal = _topology(config)
    out: dict[str, Any] = {}
    for name, levels in _skypix(config).items():
        for level in levels:
            out[f"{name}{level}"] = {"key": "int", "key_field": "id",
                                     "doc": f"{name} pixel at level {level}"}
    names = set(elements) | set(out)
    for name, spec in elements.items():
        out[name] = _element(name, spec, elements, names, name in spatial, name in temporal)
    return {"version": int(config.get("version", 0)), "namespace": NAMESPACE,
            "dimensions": out}


def _element(name: str, spec: dict[str, Any], elements: dict[str, Any], names: set[str],
             spatial: bool, temporal: bool) -> dict[str, Any]:
    keys = list(spec.get("keys") or [])
    out: dict[str, Any] = {}
    if keys:
        out["key"] = _key_type(name, keys[0])
        out["key_field"] = keys[0]["name"]
    else:
        out["key"] = "none"
    requires = _closure(spec.get("requires") or [], elements)
    if requires:
        out["requires"] = requires
    if spec.get("implies"):
        out["implies"] = list(spec["implies"])
    metadata: dict[str, str] = {}
    renamed: dict[str, str] = {}
    for field in [*keys[1:], *(spec.get("metadata") or [])]:
        ours = field["name"] if field["name"] not in names else f"{field['name']}_value"
        if ours != field["name"]:
            renamed[ours] = field["name"]
        metadata[ours] = _field_type(name, field)
    if spatial:
        metadata["region"] = "region"
    if metadata:
        out["metadata"] = metadata
    if renamed:
        out["renamed"] = renamed
    if temporal:
        out["timespan"] = True
    if spec.get("doc"):
        out["doc"] = " ".join(str(spec["doc"]).split())
    return out


def _closure(requires: list[str], elements: dict[str, Any]) -> list[str]:
    """Every dimension ``requires`` names, with what those require first."""
    out: list[str] = []

    def add(name: str) -> None:
        for other in (elements.get(name) or {}).get("requires") or []:
            add(other)
        if name not in out:
            out.append(name)

    for name in requires:
        add(name)
    return out


def _key_type(element: str, key: dict[str, Any]) -> str:
    kind = key.get("type")
    if kind not in ("int", "string"):
        raise ConfigError(f"daf_butler element {element}: key type {kind!r} is not supported")
    return str(kind)


def _field_type(element: str, field: dict[str, Any]) -> str:
    kind = field.get("type")
    if kind not in _TYPES:
        raise ConfigError(f"daf_butler element {element} field {field.get('name')}: "
                          f"type {kind!r} is not supported")
    return _TYPES[kind]


def _topology(config: dict[str, Any]) -> tuple[set[str], set[str]]:
    topology = config.get("topology") or {}
    spatial = {e for family in (topology.get("spatial") or {}).values() for e in family}
    temporal = {e for family in (topology.get("temporal") or {}).values() for e in family}
    return spatial, temporal


def _skypix(config: dict[str, Any]) -> dict[str, range]:
    """Skypix systems and their levels (``htm`` 1..24, ``healpix`` 1..17, as in daf_butler)."""
    found = {}
    for name, spec in (config.get("skypix") or {}).items():
        if isinstance(spec, dict) and "max_level" in spec:
            found[name] = range(1, int(spec["max_level"]) + 1)
    return found


def _read(path: Path) -> dict[str, Any]:
    try:
        loaded = yamlio.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read daf_butler's universe {path}: {exc.strerror}") from None
    if not isinstance(loaded, dict) or "elements" not in loaded:
        raise ConfigError(f"{path} is not a daf_butler dimension configuration")
    return loaded
