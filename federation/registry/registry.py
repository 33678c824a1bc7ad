"""The registry: one SQL database of dimensions, dataset types, collections and datasets."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from federation.dimensions.universe import DimensionUniverse
from federation.errors import ConfigError
from federation.model import CollectionType, DatasetType
from federation.registry.collections import Collections, check_prefix
from federation.registry.cursors import CursorStore
from federation.registry.database import UPGRADABLE, Database, make_engine
from federation.registry.dataset_types import DatasetTypes
from federation.registry.datasets import Datasets
from federation.registry.dimensions import DimensionRecords
from federation.registry.overlay import OVERLAY_KEY, open_overlay
from federation.registry.provenance import Provenance
from federation.registry.releases import Releases
from federation.registry.sync_log import SyncLog


class Registry:
    """Facade over the registry's parts, all sharing one database and its journal.

    ``dimensions``, ``dataset_types``, ``collections`` and ``datasets`` hold
    the operations; this class creates/opens the database and offers the
    shortcuts most callers need.
    """

    def __init__(self, db: Database, site: str, instance: str = "",
                 owns: Sequence[str] = ()) -> None:
        self.db = db
        self.site = site
        #: this repository's identity: a rebuilt repository has another, even under the
        #: same site name, so that cursors following the old one notice
        self.instance = instance
        self.universe = db.universe
        self.dimensions = DimensionRecords(db)
        self.dataset_types = DatasetTypes(db)
        self.collections = Collections(db, site, owns)
        self.releases = Releases(db, site)
        self.datasets = Datasets(db, self.dimensions, self.dataset_types, self.collections,
                                 self.releases)
        self.cursors = CursorStore(db)
        self.log = SyncLog(db)
        self.provenance = Provenance(db)

    @classmethod
    def create(cls, url: str, *, site: str, universe: DimensionUniverse | None = None,
               owns: Sequence[str] = (), role: str = "repository") -> Registry:
        """Create a new, empty registry at ``url``."""
        if not site or not site.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"invalid site name {site!r}: use letters, digits, '-' and '_'")
        universe = universe or DimensionUniverse.default()
        db = Database(make_engine(url), universe)
        owns = [check_prefix(p) for p in owns]
        instance = db.create(site, owns, role)
        db.role = role
        return cls(db, site, instance, owns)

    @classmethod
    def open(cls, url: str) -> Registry:
        """Open an existing registry, refusing unknown schema versions."""
        engine = make_engine(url)
        meta = Database.read_meta(engine)
        if meta.get("schema_version") not in UPGRADABLE:
            Database.check_version(meta)
        missing = [key for key in ("site", "universe", "instance") if key not in meta]
        if missing:
            raise ConfigError(f"registry database is damaged: its meta table lacks "
                              f"{', '.join(missing)}")
        universe = DimensionUniverse.from_yaml(meta["universe"])
        if OVERLAY_KEY in meta:  # layered over a release's registry (registry/overlay.py)
            open_overlay(engine, meta, universe)
        db = Database(engine, universe)
        db.upgrade(meta)
        db.role = meta.get("role", "repository")
        db.overlay = OVERLAY_KEY in meta
        return cls(db, meta["site"], meta["instance"], json.loads(meta.get("owns", "[]")))

    def close(self) -> None:
        self.db.engine.dispose()

    def transaction(self):
        """A write transaction; everything inside commits or rolls back together."""
        return self.db.transaction()

    # -- shortcuts -----------------------------------------------------------

    def register_dataset_type(self, name: str, dimensions: Iterable[str],
                              storage_class: str) -> bool:
        return self.dataset_types.register(
            self.dataset_types.make(name, dimensions, storage_class))

    def get_dataset_type(self, name: str) -> DatasetType:
        return self.dataset_types.get(name)

    def insert_dimension_records(self, dimension: str,
                                 records: Iterable[Mapping[str, Any]]) -> int:
        return self.dimensions.insert(dimension, records)

    def register_collection(self, name: str, ctype: CollectionType = CollectionType.TAGGED,
                            doc: str = "") -> bool:
        return self.collections.register(name, ctype, doc)

    def register_run(self, name: str, doc: str = "") -> bool:
        return self.collections.register(name, CollectionType.RUN, doc)

    def expand_data_id(self, dataset_type: DatasetType, data_id: Mapping[str, Any], *,
                       allow_extra: bool = False) -> tuple[dict[str, Any], str]:
        return self.dimensions.expand(dataset_type.dimensions, data_id, allow_extra=allow_extra)
