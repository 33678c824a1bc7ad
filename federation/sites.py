"""Site definitions: which repository a site runs, how it is reached, what it owns.

A site is described by ``sites/NAME.yaml``::

    name: NCSA
    registry: postgresql+psycopg://postgres@127.0.0.1:5432/fed_ncsa
    root: ../demo-repos/NCSA      # datastore root (the repository directory)
    transport: local              # local here; sftp, http later
    owns: [HSC/raw, HSC/calib, HSC/runs, refcats, skymaps]
    read_only: false
    keep_deleted: false           # true: an archive keeps data deleted upstream

Relative ``root`` paths and ``sqlite:///`` paths are relative to the YAML file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from federation.errors import ConfigError

TRANSPORTS = ("local",)
SITES_ENV = "FED_SITES"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_KNOWN_KEYS = {"name", "registry", "root", "transport", "owns", "read_only", "keep_deleted",
               "description", "transport_options"}


@dataclass(frozen=True)
class SiteDefinition:
    """One site of the federation."""

    name: str
    registry: str
    root: Path
    transport: str = "local"
    owns: tuple[str, ...] = ()
    read_only: bool = False
    keep_deleted: bool = False
    description: str = ""
    transport_options: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    def owns_collection(self, collection: str) -> bool:
        return any(_under(collection, prefix) for prefix in self.owns)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "registry": self.registry, "root": str(self.root),
                "transport": self.transport, "owns": list(self.owns),
                "read_only": self.read_only, "keep_deleted": self.keep_deleted,
                "description": self.description}


def _under(collection: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return collection == prefix or collection.startswith(prefix + "/")


def sites_dir(explicit: str | Path | None = None) -> Path:
    """The directory of site definitions: explicit, $FED_SITES, or ./sites."""
    return Path(explicit or os.environ.get(SITES_ENV) or "sites")


def parse_site(data: Any, source: Path) -> SiteDefinition:
    """Validate a site definition mapping read from ``source``."""
    where = str(source)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a site definition must be a mapping")
    unknown = set(data) - _KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("name", "registry", "root"):
        if not data.get(key) or not isinstance(data[key], str):
            raise ConfigError(f"{where}: '{key}' is required and must be a string")
    name = data["name"]
    if not _NAME.match(name):
        raise ConfigError(f"{where}: invalid site name {name!r}")
    transport = data.get("transport", "local")
    if transport not in TRANSPORTS:
        raise ConfigError(f"{where}: unknown transport {transport!r}; use one of "
                          f"{', '.join(TRANSPORTS)}")
    owns = data.get("owns") or []
    if not isinstance(owns, list) or not all(isinstance(p, str) and p.strip("/") for p in owns):
        raise ConfigError(f"{where}: 'owns' must be a list of collection prefixes")
    for flag in ("read_only", "keep_deleted"):
        if not isinstance(data.get(flag, False), bool):
            raise ConfigError(f"{where}: '{flag}' must be true or false")
    base = source.parent
    registry = data["registry"]
    if registry.startswith("sqlite:///") and not registry.startswith("sqlite:////"):
        registry = f"sqlite:///{(base / registry.removeprefix('sqlite:///')).resolve()}"
    root = Path(data["root"]).expanduser()
    return SiteDefinition(
        name=name, registry=registry, root=(base / root).resolve(), transport=transport,
        owns=tuple(p.strip("/") for p in owns), read_only=data.get("read_only", False),
        keep_deleted=data.get("keep_deleted", False), description=data.get("description", ""),
        transport_options=dict(data.get("transport_options") or {}), source=source)


def load_site(name: str, directory: str | Path | None = None) -> SiteDefinition:
    """The site called ``name`` (or defined in the YAML file ``name``)."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        path = sites_dir(directory) / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(s.name for s in list_sites(directory)) or "none"
        raise ConfigError(f"unknown site {name!r} (no {path}); known sites: {known}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    site = parse_site(data, path)
    if site.name != path.stem and Path(name).suffix not in (".yaml", ".yml"):
        raise ConfigError(f"{path} defines site {site.name!r}, not {path.stem!r}")
    return site


def list_sites(directory: str | Path | None = None) -> list[SiteDefinition]:
    folder = sites_dir(directory)
    if not folder.is_dir():
        return []
    sites = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            sites.append(parse_site(yaml.safe_load(path.read_text()), path))
        except (ConfigError, yaml.YAMLError):
            continue
    return sites


def owner_by_prefix(collection: str, sites: Iterable[SiteDefinition]) -> str | None:
    """The site whose longest owned prefix covers ``collection``, if any."""
    best, length = None, -1
    for site in sites:
        for prefix in site.owns:
            if _under(collection, prefix) and len(prefix) > length:
                best, length = site.name, len(prefix)
    return best
