"""A local, records-only replica of a remote site's registry, fed by its outbox.

A remote site's registry is never reached directly: its published bundles are
fetched (over SFTP or HTTP) and imported into a mirror kept inside the
destination repository (``.federation-mirrors/SITE``). A sync then reads the
mirror exactly as it reads a local source, so selections, snapshots, chain
growth and conflicts behave the same, and fetches files from the remote
datastore. Files the remote site holds are recorded in the mirror as held at
that site; the mirror holds no files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from federation.butler import Butler
from federation.dimensions.universe import DimensionUniverse
from federation.errors import ConfigError, InputError
from federation.sites import SiteDefinition
from federation.sync.bundle.importer import import_into
from federation.sync.options import SyncOptions
from federation.sync.remote.outbox import PUBLISHED, fetch_index, sha256_of

MIRRORS = ".federation-mirrors"


class Mirror:
    """The mirror of ``site`` inside the repository at ``home``."""

    def __init__(self, site: SiteDefinition, home: Path) -> None:
        self.site = site
        self.path = home / MIRRORS / site.name
        self._id_file = self.path / "outbox-id"
        self._instance_file = self.path / "source-instance"

    @property
    def source_instance(self) -> str:
        """The instance id of the repository the mirrored outbox belongs to."""
        return self._instance_file.read_text().strip() if self._instance_file.is_file() else ""

    @property
    def outbox_id(self) -> str:
        """The id of the outbox this mirror follows: a reset outbox gives a new mirror, and
        the destination's cursor (which records this id) starts afresh."""
        return self._id_file.read_text().strip()

    def open(self) -> Butler:
        return Butler(self.path)

    def refresh(self) -> int:
        """Import the bundles published since the last refresh; returns the site's journal
        entry the mirror now reflects."""
        name = self.site.name
        outbox = self.site.open_files("outbox")
        try:
            index = fetch_index(outbox, name)
            if index is None:
                raise ConfigError(f"site {name} has published nothing at "
                                  f"{outbox.describe()}: run 'fed publish {name}' on the "
                                  "machine that runs its registry")
            self._ensure(index.id, index.universe)
            self._instance_file.write_text(index.instance + "\n")
            with self.open() as mirror:
                found = mirror.registry.cursors.get("pull", name, PUBLISHED.key)
                cursor = found.last_seq if found is not None else 0
                if index.last_seq < cursor:
                    raise InputError(f"{name}'s outbox ends at journal entry {index.last_seq} "
                                     f"but this mirror already holds entry {cursor}: the "
                                     "outbox was reset without a new id")
                incoming = self.path / "incoming"
                incoming.mkdir(exist_ok=True)
                for bundle in (b for b in index.bundles if b.to_seq > cursor):
                    local = incoming / bundle.name
                    outbox.fetch(bundle.name, local, resume=True)
                    if sha256_of(local) != (bundle.size, bundle.sha256):
                        local.unlink()
                        raise InputError(f"bundle {bundle.name} from {name}'s outbox does not "
                                         "match its index entry (size or SHA-256): not "
                                         "imported")
                    # No site prefixes: the mirror copies the site as it is; the
                    # destination judges ownership when it reads the mirror.
                    import_into(local, mirror, SyncOptions(), expect_source=name,
                                operation="mirror")
                    local.unlink()
            return index.last_seq
        finally:
            outbox.close()

    def _ensure(self, outbox_id: str, universe: dict | None) -> None:
        """A mirror for this outbox, with the site's dimension universe; a different outbox
        (reset at the site) starts a new one."""
        if self._id_file.is_file() and self._id_file.read_text().strip() == outbox_id:
            return
        if self.path.exists():
            shutil.rmtree(self.path)
        Butler.create(self.path, site=f"{self.site.name}-mirror",
                      universe=DimensionUniverse(universe) if universe else None)
        self._id_file.write_text(outbox_id + "\n")
