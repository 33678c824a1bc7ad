"""Dataset type definitions: name, dimensions, storage class."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

import sqlalchemy as sa

from federation.errors import DatasetTypeError
from federation.model import DatasetType
from federation.registry.database import Database
from federation.registry.journal import DatasetTypeRegistered

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
MAX_NAME = 128  # the width of dataset_type.name


class DatasetTypes:
    """Registered dataset types, cached by name and id (definitions never change)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._by_name: dict[str, tuple[int, DatasetType]] = {}
        self._by_id: dict[int, DatasetType] = {}

    def make(self, name: str, dimensions: Iterable[str], storage_class: str) -> DatasetType:
        """Build (and validate) a definition without registering it."""
        from federation.datastore.storage_classes import get_storage_class

        if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_NAME:
            raise DatasetTypeError(
                f"invalid dataset type name {name!r}: start with a letter; letters, digits, "
                f"'_', '.'; at most {MAX_NAME} characters"
            )
        get_storage_class(storage_class)
        if isinstance(dimensions, str) or not isinstance(dimensions, Iterable):
            raise DatasetTypeError(
                f"dataset type {name!r}: dimensions must be a list of dimension names, "
                f"got {dimensions!r}")
        try:
            group = self.db.universe.group(tuple(dimensions))
        except Exception as exc:  # ConfigError for unknown dimensions
            raise DatasetTypeError(f"dataset type {name!r}: {exc}") from None
        return DatasetType(name, group, storage_class)

    def register(self, dataset_type: DatasetType) -> bool:
        """Register a definition; identical re-registration is a no-op.

        A different definition under the same name is an error showing both.
        """
        if self._is_registered(dataset_type):
            return False
        table = self.db.tables.dataset_type
        with self.db.transaction() as conn:
            # Again, now that writers are serialized: another may have registered it.
            if self._is_registered(dataset_type):
                return False
            tid = conn.execute(sa.insert(table).values(
                name=dataset_type.name,
                dimensions=",".join(dataset_type.dimensions.names),
                storage_class=dataset_type.storage_class,
            ).returning(table.c.id)).scalar_one()
            if tid is None:  # an overlay's view (SQLite) returns no id: read it back
                tid = conn.execute(sa.select(table.c.id).where(
                    table.c.name == dataset_type.name)).scalar_one()
            self.db.append([DatasetTypeRegistered(dataset_type.name,
                                                  list(dataset_type.dimensions.names),
                                                  dataset_type.storage_class)])
            self.db.on_rollback(self.forget)
            self._remember(tid, dataset_type)
        return True

    def _is_registered(self, dataset_type: DatasetType) -> bool:
        """True if registered identically; an error if registered differently."""
        existing = self._lookup(dataset_type.name)
        if existing is None:
            return False
        _, stored = existing
        if stored.dimensions != dataset_type.dimensions or \
                stored.storage_class != dataset_type.storage_class:
            raise DatasetTypeError(
                f"dataset type {dataset_type.name!r} is already registered as {stored}; "
                f"refusing new definition {dataset_type}"
            )
        return True

    def _remember(self, tid: int, dataset_type: DatasetType) -> None:
        self._by_name[dataset_type.name] = (tid, dataset_type)
        self._by_id[tid] = dataset_type

    def forget(self) -> None:
        self._by_name.clear()
        self._by_id.clear()

    def _from_row(self, row) -> DatasetType:
        dims = [d for d in row.dimensions.split(",") if d]
        return DatasetType(row.name, self.db.universe.group(tuple(dims)), row.storage_class)

    def _lookup(self, name: str) -> tuple[int, DatasetType] | None:
        if name not in self._by_name:
            table = self.db.tables.dataset_type
            with self.db.reading() as conn:
                row = conn.execute(sa.select(table).where(table.c.name == name)).first()
            if row is None:
                return None
            self._remember(row.id, self._from_row(row))
        return self._by_name[name]

    def find(self, name: str) -> DatasetType | None:
        """The registered definition, or None."""
        found = self._lookup(name)
        return None if found is None else found[1]

    def get(self, name: str) -> DatasetType:
        found = self._lookup(name)
        if found is None:
            raise DatasetTypeError(f"no dataset type named {name!r}; register it first")
        return found[1]

    def id_of(self, name: str) -> int:
        self.get(name)
        return self._by_name[name][0]

    def by_id(self, tid: int) -> DatasetType:
        if tid not in self._by_id:
            table = self.db.tables.dataset_type
            with self.db.reading() as conn:
                row = conn.execute(sa.select(table).where(table.c.id == tid)).one()
            self._remember(row.id, self._from_row(row))
        return self._by_id[tid]

    def query(self, pattern: str = "*") -> list[DatasetType]:
        table = self.db.tables.dataset_type
        with self.db.reading() as conn:
            rows = conn.execute(sa.select(table).order_by(table.c.name)).all()
        result = []
        for row in rows:
            if fnmatch.fnmatchcase(row.name, pattern):
                self._remember(row.id, self._from_row(row))
                result.append(self._by_id[row.id])
        return result

    def resolve(self, names: Iterable[str] | str | None) -> list[DatasetType]:
        """Dataset types named by exact names and/or globs (None means all)."""
        if names is None:
            return self.query()
        if isinstance(names, str):
            names = [names]
        result: list[DatasetType] = []
        for name in names:
            found = self.query(name) if any(c in name for c in "*?[") else [self.get(name)]
            result.extend(t for t in found if t not in result)
        return result
