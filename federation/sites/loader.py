"""Reading site definitions: ``sites/NAME.yaml``, checked whole when read.

A site on this machine::

    name: NCSA
    registry: postgresql+psycopg://postgres@127.0.0.1:5432/fed_ncsa
    root: ../demo-repos/NCSA      # the repository directory
    transport: local
    owns: [HSC/raw, HSC/calib, HSC/runs, HSC/defaults, refcats, skymaps]
    read_only: false
    keep_deleted: false           # true: an archive keeps data deleted upstream
    role: repository              # release: a read-only release site (takes releases only)
    outbox: /srv/ncsa/outbox      # where 'fed publish' writes (default ROOT/.federation-outbox)
    rucio: {url: https://rucio.example.org, account: fed, username: fed,
            password_env: FED_RUCIO_PASSWORD, scope: hsc, rse: NCSA_DISK}
                                  # its files are replicated through Rucio (optional)

Another machine describes the same site by how it reaches it; its registry is
then read only through the bundles the site publishes::

    name: NCSA
    transport: sftp               # or http, with  http: {url: https://.../repo/}
    sftp: {host: ncsa.example.org, user: fed, key_file: ~/.ssh/id_ed25519,
           root: /srv/ncsa/repo, outbox: /srv/ncsa/outbox}
    owns: [HSC/raw, HSC/calib, HSC/runs, HSC/defaults, refcats, skymaps]

An LSST butler (daf_butler) repository, read through daf_butler as a source for
``fed sync`` (the optional extra ``federation[butler]``)::

    name: LSST
    kind: daf_butler
    root: /data/butler            # or  config: /data/butler/butler.yaml
    owns: [HSC/raw, HSC/calib]    # optional, as for any site

Relative ``root`` paths and ``sqlite:///`` paths are relative to the YAML file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from federation import yamlio
from federation.errors import ConfigError
from federation.rucio.settings import RucioSettings
from federation.sites.definition import (
    DafButlerRepository,
    LocalRegistry,
    PublishedRegistry,
    SiteDefinition,
)
from federation.transport.kinds import KINDS, kind_of, parse_settings
from federation.transport.settings import LocalSettings

SITES_ENV = "FED_SITES"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
ROLES = ("repository", "release")
_KEYS = {"name", "registry", "root", "transport", "owns", "read_only", "keep_deleted",
         "role", "description", "outbox", "inbox", "rucio", "kind", "config"} \
    | {k for k, v in KINDS.items() if v.remote}


def check_site_name(name: object) -> str:
    """A site name: letters, digits, '-' and '_' (it names files and directories)."""
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"invalid site name {name!r}: use letters, digits, '-' and '_' "
                          "(at most 64 characters, starting with a letter or digit)")
    return name


def sites_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The directory of site definitions: explicit, $FED_SITES, or ./sites."""
    return Path(explicit or os.environ.get(SITES_ENV) or "sites")


def parse_site(data: Any, source: Path) -> SiteDefinition:
    """Validate a site definition mapping read from ``source``."""
    where = str(source)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a site definition must be a mapping")
    unknown = set(data) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    if data.get("kind", "repository") == "daf_butler":
        return _parse_daf_butler(data, source)
    if "kind" in data and data["kind"] != "repository":
        raise ConfigError(f"{where}: 'kind' must be repository or daf_butler, not "
                          f"{data['kind']!r}")
    if "config" in data:
        raise ConfigError(f"{where}: 'config' is for a site of 'kind: daf_butler'")
    kind = kind_of(data.get("transport", "local"), where)
    for other, known in KINDS.items():
        if known.remote and other != kind.name and other in data:
            raise ConfigError(f"{where}: a '{other}:' block needs 'transport: {other}'")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: 'name' is required and must be a string")
    if not NAME.match(name):
        raise ConfigError(f"{where}: invalid site name {name!r}")
    owns = data.get("owns") or []
    if not isinstance(owns, list) or not all(isinstance(p, str) and p.strip("/") for p in owns):
        raise ConfigError(f"{where}: 'owns' must be a list of collection prefixes")
    for flag in ("read_only", "keep_deleted"):
        if not isinstance(data.get(flag, False), bool):
            raise ConfigError(f"{where}: '{flag}' must be true or false")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}: 'description' must be a string")
    role = data.get("role", "repository")
    if role not in ROLES:
        raise ConfigError(f"{where}: 'role' must be {' or '.join(ROLES)}, not {role!r}")
    rucio = None if data.get("rucio") is None else \
        RucioSettings.from_block(data["rucio"], where, base=source.parent)
    common = dict(name=name, owns=tuple(p.strip("/") for p in owns), rucio=rucio,
                  read_only=data.get("read_only", False),
                  keep_deleted=data.get("keep_deleted", False), role=role,
                  description=description, source=source)
    if kind.remote:
        for key in ("registry", "root", "outbox", "inbox"):
            if key in data:
                raise ConfigError(f"{where}: '{key}' is for a site on this machine; a site "
                                  f"reached over {kind.name} gives it in its '{kind.name}:' "
                                  "block (or reads its registry from its outbox)")
        files = parse_settings(kind.name, data.get(kind.name), where)
        return SiteDefinition(registry=PublishedRegistry(), files=files, **common)
    base = source.parent
    files = LocalSettings.from_block({k: data[k] for k in ("root", "outbox", "inbox")
                                      if k in data}, where, base=base)
    return SiteDefinition(registry=LocalRegistry(_registry_url(data, base, where), files.root),
                          files=files, **common)


def _parse_daf_butler(data: dict[str, Any], source: Path) -> SiteDefinition:
    """``kind: daf_butler``: an LSST butler repository, named by its root or its config."""
    where = str(source)
    allowed = {"name", "kind", "root", "config", "owns", "description"}
    unknown = set(data) - allowed
    if unknown:
        raise ConfigError(f"{where}: a site of 'kind: daf_butler' takes only "
                          f"{', '.join(sorted(allowed))}; not {', '.join(sorted(unknown))}")
    places = [data[k] for k in ("root", "config") if k in data]
    if len(places) != 1 or not isinstance(places[0], str) or not places[0]:
        raise ConfigError(f"{where}: a site of 'kind: daf_butler' names its repository by "
                          "'root' (a directory) or 'config' (its butler.yaml), one of them")
    config = (source.parent / Path(places[0]).expanduser()).resolve()
    name = check_site_name(data.get("name"))
    owns = data.get("owns") or []
    if not isinstance(owns, list) or not all(isinstance(p, str) and p.strip("/") for p in owns):
        raise ConfigError(f"{where}: 'owns' must be a list of collection prefixes")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}: 'description' must be a string")
    root = config if config.suffix not in (".yaml", ".yml", ".json") else config.parent
    return SiteDefinition(name=name, registry=DafButlerRepository(config),
                          files=LocalSettings.at(root), owns=tuple(p.strip("/") for p in owns),
                          read_only=True, description=description, source=source)


def _registry_url(data: dict[str, Any], base: Path, where: str) -> str:
    url = data.get("registry")
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{where}: 'registry' is required and must be a string")
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = f"sqlite:///{(base / url.removeprefix('sqlite:///')).resolve()}"
    return url


def load_site(name: str, directory: str | os.PathLike | None = None) -> SiteDefinition:
    """The site called ``name``, from ``NAME.yaml`` in the sites directory."""
    folder = sites_dir(directory)
    path = folder / f"{check_site_name(name)}.yaml"
    if not path.is_file():
        known = ", ".join(s.name for s in list_sites(directory)) or "none"
        raise ConfigError(f"unknown site {name!r} (no {path}); known sites: {known}")
    site = parse_site(read_yaml(path), path)
    if site.name != name:
        raise ConfigError(f"{path} defines site {site.name!r}, not {name!r}")
    return site


def read_yaml(path: Path) -> Any:
    try:
        return yamlio.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None


def list_sites(directory: str | os.PathLike | None = None) -> list[SiteDefinition]:
    """The usable site definitions: readable, in the file named after the site (as
    :func:`load_site` finds them). ``fed site list`` shows the others with their error."""
    folder = sites_dir(directory)
    if not folder.is_dir():
        return []
    sites = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            site = parse_site(read_yaml(path), path)
        except ConfigError:
            continue
        if site.name == path.stem:
            sites.append(site)
    return sites
