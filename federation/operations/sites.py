"""The ``fed site`` commands: list, show, check, init and trust site definitions."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.butler import Butler
from federation.errors import ConfigError, FederationError
from federation.operations.rucio import check_rucio
from federation.registry.provision import ensure_database
from federation.sites import SiteDefinition, load_site, parse_site, read_yaml, sites_dir
from federation.sync.remote.outbox import fetch_index
from federation.sync.site_access import open_site
from federation.transport.settings import SFTPSettings
from federation.transport.ssh import scan_host_key, trust_host_key

SitesDir = str | os.PathLike | None


@dataclass(frozen=True)
class SiteEntry:
    """A site definition file: the site it defines, or why it cannot be read."""

    path: Path
    site: SiteDefinition | None
    error: str | None = None


def list_entries(directory: SitesDir = None) -> list[SiteEntry]:
    """Every ``*.yaml`` in the sites directory, broken ones with their error (which names
    the file): not YAML, not a valid definition, or defining a site of another name."""
    folder = sites_dir(directory)
    if not folder.is_dir():
        return []
    entries = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            site = parse_site(read_yaml(path), path)
            if site.name != path.stem:
                raise ConfigError(f"{path} defines site {site.name!r}, not {path.stem!r}: "
                                  "a site is found by its file name, NAME.yaml")
            entries.append(SiteEntry(path, site))
        except ConfigError as exc:
            entries.append(SiteEntry(path, None, str(exc)))
    return entries


def show(name: str, directory: SitesDir = None) -> dict[str, Any]:
    """One site's definition, as JSON-able data."""
    return load_site(name, directory).to_dict()


@dataclass(frozen=True)
class SiteCheck:
    """Whether a site is reachable and is what its definition says."""

    name: str
    ok: bool
    detail: str


def check(names: list[str], directory: SitesDir = None) -> list[SiteCheck]:
    """Open each named (or every defined) site: its repository, or its published outbox.

    A definition that cannot be read fails its check; without names, so does every
    broken definition file in the directory.
    """
    if names:
        return [_check_named(name, directory) for name in names]
    entries = list_entries(directory)
    if not entries:
        raise ConfigError(f"no site definitions found in {sites_dir(directory)} (see --sites)")
    return [_check_site(e.site) if e.site is not None
            else SiteCheck(e.path.stem, False, e.error or "cannot be read") for e in entries]


def _check_named(name: str, directory: SitesDir) -> SiteCheck:
    try:
        definition = load_site(name, directory)
    except FederationError as exc:
        return SiteCheck(name, False, str(exc))
    return _check_site(definition)


def _check_site(definition: SiteDefinition) -> SiteCheck:
    try:
        return SiteCheck(definition.name, True, _check(definition))
    except FederationError as exc:  # shown as "NAME: why": the name once
        return SiteCheck(definition.name, False,
                         str(exc).removeprefix(f"site {definition.name}: "))


def _check(definition: SiteDefinition) -> str:
    found = _check_registry(definition)
    if definition.rucio is not None:
        found += f"; {check_rucio(definition)}"
    return found


def _check_registry(definition: SiteDefinition) -> str:
    if definition.is_daf_butler:
        from federation.dafbutler.source import describe_repository

        return describe_repository(definition)
    if not definition.is_remote:
        with open_site(definition) as butler:
            return f"journal at {butler.registry.db.last_seq()}"
    outbox = definition.open_files("outbox")  # connects: host key and credentials checked
    try:
        index = fetch_index(outbox, definition.name)
        if index is None:
            return f"reachable at {outbox.describe()}; nothing published yet"
        return f"published up to journal entry {index.last_seq} in {len(index.bundles)} bundles"
    finally:
        outbox.close()


def init(name: str, directory: SitesDir = None) -> SiteDefinition:
    """Create the repository a local site definition describes (and its PostgreSQL
    database)."""
    definition = load_site(name, directory)
    if definition.is_remote:
        raise ConfigError(f"site {name} is reached over {definition.transport}: create its "
                          "repository on the machine that runs it")
    if definition.is_daf_butler:
        raise ConfigError(f"site {name} is an LSST butler repository: create it with "
                          "daf_butler ('butler create')")
    ensure_database(definition.registry.url)
    url = definition.registry.url
    default = f"sqlite:///{definition.root / 'registry.sqlite3'}"
    db = None if url == default else url
    Butler.create(definition.root, db=db, site=definition.name, owns=definition.owns,
                  role=definition.role)
    return definition


@dataclass(frozen=True)
class OfferedKey:
    """The SSH host key an SFTP site's server offers."""

    site: str
    address: str
    key_type: str
    fingerprint: str
    key: Any  # the key itself, for trust_key


def offered_key(name: str, directory: SitesDir = None) -> OfferedKey:
    """Connect to an SFTP site's server and read the host key it offers (trusting nothing)."""
    settings = _sftp_settings(load_site(name, directory))
    key = scan_host_key(settings)
    return OfferedKey(name, settings.address, key.get_name(), key.fingerprint, key)


def trust_key(offered: OfferedKey, directory: SitesDir = None) -> Path:
    """Record an offered host key in the site's known_hosts file; returns that file."""
    return trust_host_key(_sftp_settings(load_site(offered.site, directory)), offered.key)


def _sftp_settings(site: SiteDefinition) -> SFTPSettings:
    if not isinstance(site.files, SFTPSettings):
        raise ConfigError(f"site {site.name} is not reached over SFTP")
    return site.files
