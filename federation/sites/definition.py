"""A site definition: which site, how its registry is reached, how its files are reached.

The two are apart: a site on this machine has a local registry (a database URL
and a repository directory); a site on another machine is read through the
bundles it publishes in its outbox. Its files are reached through one kind of
transport (:mod:`federation.transport.kinds`), whose typed settings the
definition holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.errors import ConfigError
from federation.rucio.settings import RucioSettings
from federation.sites.ownership import under
from federation.transport.base import Transport
from federation.transport.kinds import KINDS, TransportKind
from federation.transport.settings import LocalSettings, TransportSettings


@dataclass(frozen=True)
class LocalRegistry:
    """A registry this machine opens itself: its database and its repository directory."""

    url: str
    root: Path


@dataclass(frozen=True)
class PublishedRegistry:
    """A registry read only through the bundles its site publishes in its outbox."""


@dataclass(frozen=True)
class DafButlerRepository:
    """An LSST butler (daf_butler) repository, read through daf_butler's own API: a sync
    source only (``kind: daf_butler``); ``config`` is its root or its ``butler.yaml``."""

    config: Path


RegistryAccess = LocalRegistry | PublishedRegistry | DafButlerRepository


@dataclass(frozen=True)
class SiteDefinition:
    """One site of the federation."""

    name: str
    registry: RegistryAccess
    files: TransportSettings
    owns: tuple[str, ...] = ()
    read_only: bool = False
    keep_deleted: bool = False  # an archive: keeps datasets deleted upstream
    #: ``release``: a read-only release site that takes only releases, by sync
    role: str = "repository"
    description: str = ""
    source: Path | None = None  # the YAML file it was read from
    #: its files are replicated through Rucio (None: only through its transport)
    rucio: RucioSettings | None = None

    @property
    def kind(self) -> TransportKind:
        return KINDS[self.files.kind]

    @property
    def transport(self) -> str:
        """The kind of transport its files are reached through (``local``, ``sftp``, ...)."""
        return self.files.kind

    @property
    def is_remote(self) -> bool:
        """Its registry is not on this machine: only its published bundles are."""
        return isinstance(self.registry, PublishedRegistry)

    @property
    def is_daf_butler(self) -> bool:
        """An LSST butler repository (``kind: daf_butler``): read through daf_butler."""
        return isinstance(self.registry, DafButlerRepository)

    @property
    def root(self) -> Path:
        """The repository directory of a site whose registry is on this machine."""
        if self.is_daf_butler:
            raise ConfigError(f"site {self.name} is an LSST butler repository (kind: "
                              "daf_butler): it is only a source for 'fed sync'")
        if not isinstance(self.registry, LocalRegistry):
            raise ConfigError(f"site {self.name} is reached over {self.transport}; its "
                              "repository is not on this machine")
        return self.registry.root

    @property
    def outbox(self) -> Path:
        """Where a local site publishes its bundles."""
        return self._local_files().outbox

    @property
    def inbox(self) -> Path:
        """Where bundles pushed to a local site wait for ``fed receive``."""
        return self._local_files().inbox

    def _local_files(self) -> LocalSettings:
        if not isinstance(self.files, LocalSettings):
            raise ConfigError(f"site {self.name}: its files are reached over {self.transport}")
        return self.files

    def open_files(self, folder: str = "root") -> Transport:
        """A transport rooted at the site's datastore (``"root"``), outbox or inbox."""
        if folder == "inbox" and not self.kind.writable:
            raise ConfigError(f"site {self.name} is published read-only over "
                              f"{self.transport.upper()}: nothing can be pushed to it")
        return self.files.open(folder)

    def owns_collection(self, collection: str) -> bool:
        return any(under(collection, prefix) for prefix in self.owns)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "transport": self.transport}
        if isinstance(self.registry, LocalRegistry):
            data |= {"registry": self.registry.url, "root": str(self.registry.root)}
        if isinstance(self.registry, DafButlerRepository):
            data |= {"kind": "daf_butler", "config": str(self.registry.config)}
        if isinstance(self.files, LocalSettings):
            data |= {"outbox": str(self.files.outbox), "inbox": str(self.files.inbox)}
        else:
            data[self.transport] = self.files.to_dict()
        if self.rucio is not None:
            data["rucio"] = self.rucio.to_dict()
        return data | {"owns": list(self.owns), "read_only": self.read_only,
                       "keep_deleted": self.keep_deleted, "role": self.role,
                       "description": self.description}

    @property
    def is_release_site(self) -> bool:
        return self.role == "release"
