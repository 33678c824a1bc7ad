"""Site definitions: which repository a site runs, how it is reached, what it owns.

A site is described by ``sites/NAME.yaml``::

    name: NCSA
    registry: postgresql+psycopg://postgres@127.0.0.1:5432/fed_ncsa
    root: ../demo-repos/NCSA      # datastore root (the repository directory)
    transport: local
    owns: [HSC/raw, HSC/calib, HSC/runs, refcats, skymaps]
    read_only: false
    keep_deleted: false           # true: an archive keeps data deleted upstream
    outbox: /srv/ncsa/outbox      # where 'fed publish' writes (default ROOT/.federation-outbox)

Another machine describes the same site by how it reaches it; its registry
is then read only through the bundles the site publishes::

    name: NCSA
    transport: sftp               # or http, with  http: {url: https://.../repo/}
    sftp: {host: ncsa.example.org, user: fed, key_file: ~/.ssh/id_ed25519,
           root: /srv/ncsa/repo, outbox: /srv/ncsa/outbox}
    owns: [HSC/raw, HSC/calib, HSC/runs, refcats, skymaps]

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

TRANSPORTS = ("local", "sftp", "http")
REMOTE_TRANSPORTS = ("sftp", "http")
OUTBOX = ".federation-outbox"
INBOX = ".federation-inbox"
SITES_ENV = "FED_SITES"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_KNOWN_KEYS = {"name", "registry", "root", "transport", "owns", "read_only", "keep_deleted",
               "description", "outbox", "inbox", "sftp", "http"}
_SFTP_KEYS = {"host", "port", "user", "key_file", "known_hosts", "root", "outbox", "inbox",
              "timeout", "retries", "retry_deadline"}
_HTTP_KEYS = {"url", "outbox", "verify", "timeout", "retries", "retry_deadline"}


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
    #: the ``sftp:`` or ``http:`` block of a remote site; empty for a local one
    remote: dict[str, Any] = field(default_factory=dict)
    outbox: Path | None = None  # a local site's published bundles
    inbox: Path | None = None  # where pushed bundles wait for 'fed receive'
    source: Path | None = None

    @property
    def is_remote(self) -> bool:
        """Reached over the network: no registry here, only published bundles."""
        return self.transport in REMOTE_TRANSPORTS

    def owns_collection(self, collection: str) -> bool:
        return any(_under(collection, prefix) for prefix in self.owns)

    def to_dict(self) -> dict[str, Any]:
        if self.is_remote:
            return {"name": self.name, "transport": self.transport,
                    self.transport: dict(self.remote), "owns": list(self.owns),
                    "read_only": self.read_only, "keep_deleted": self.keep_deleted,
                    "description": self.description}
        return {"name": self.name, "registry": self.registry, "root": str(self.root),
                "transport": self.transport, "owns": list(self.owns),
                "read_only": self.read_only, "keep_deleted": self.keep_deleted,
                "description": self.description, "outbox": str(self.outbox),
                "inbox": str(self.inbox)}


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
    transport = data.get("transport", "local")
    if transport not in TRANSPORTS:
        raise ConfigError(f"{where}: unknown transport {transport!r}; use one of "
                          f"{', '.join(TRANSPORTS)}")
    required = ("name",) if transport in REMOTE_TRANSPORTS else ("name", "registry", "root")
    for key in required:
        if not data.get(key) or not isinstance(data[key], str):
            raise ConfigError(f"{where}: '{key}' is required and must be a string")
    name = data["name"]
    if not _NAME.match(name):
        raise ConfigError(f"{where}: invalid site name {name!r}")
    remote = _remote_block(data, transport, where)
    owns = data.get("owns") or []
    if not isinstance(owns, list) or not all(isinstance(p, str) and p.strip("/") for p in owns):
        raise ConfigError(f"{where}: 'owns' must be a list of collection prefixes")
    for flag in ("read_only", "keep_deleted"):
        if not isinstance(data.get(flag, False), bool):
            raise ConfigError(f"{where}: '{flag}' must be true or false")
    base = source.parent
    common = dict(name=name, transport=transport, owns=tuple(p.strip("/") for p in owns),
                  read_only=data.get("read_only", False),
                  keep_deleted=data.get("keep_deleted", False),
                  description=data.get("description", ""), source=source)
    if remote:
        return SiteDefinition(registry="", root=Path(), remote=remote, **common)
    registry = data["registry"]
    if registry.startswith("sqlite:///") and not registry.startswith("sqlite:////"):
        registry = f"sqlite:///{(base / registry.removeprefix('sqlite:///')).resolve()}"
    root = (base / Path(data["root"]).expanduser()).resolve()
    folders = {}
    for key, default in (("outbox", OUTBOX), ("inbox", INBOX)):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}: '{key}' must be a directory path")
        folders[key] = (base / Path(value).expanduser()).resolve() if value else root / default
    return SiteDefinition(registry=registry, root=root, **folders, **common)


def _remote_block(data: dict[str, Any], transport: str, where: str) -> dict[str, Any]:
    """The ``sftp:``/``http:`` block a remote transport needs, checked; {} for local."""
    for other in REMOTE_TRANSPORTS:
        if other != transport and other in data:
            raise ConfigError(f"{where}: a '{other}:' block needs 'transport: {other}'")
    if transport not in REMOTE_TRANSPORTS:
        return {}
    block = data.get(transport)
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: 'transport: {transport}' needs a '{transport}:' mapping")
    allowed, needed = (_SFTP_KEYS, ("host", "root")) if transport == "sftp" \
        else (_HTTP_KEYS, ("url",))
    unknown = set(block) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) in '{transport}:': "
                          f"{', '.join(sorted(unknown))}")
    for key in needed:
        if not isinstance(block.get(key), str) or not block[key]:
            raise ConfigError(f"{where}: '{transport}: {key}' is required")
    for key in ("port", "retries"):
        if key in block and (not isinstance(block[key], int) or block[key] < 1):
            raise ConfigError(f"{where}: '{transport}: {key}' must be a positive integer")
    for key in ("timeout", "retry_deadline"):
        if key in block and (not isinstance(block[key], int | float) or block[key] <= 0):
            raise ConfigError(f"{where}: '{transport}: {key}' must be a positive number")
    if transport == "sftp" and not block["root"].startswith("/"):
        raise ConfigError(f"{where}: 'sftp: root' must be an absolute path on the server")
    return dict(block)


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
