"""Collections: RUN, TAGGED, CHAINED and CALIBRATION, with owners and docs."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from federation.errors import CollectionError
from federation.model import Collection, CollectionType
from federation.registry.database import Database
from federation.registry.journal import (
    ChainChanged,
    CollectionCreated,
    CollectionDocChanged,
    CollectionRemoved,
)
from federation.registry.releases import release_holding

_NAME = re.compile(r"[A-Za-z0-9_.+\-]+(/[A-Za-z0-9_.+\-]+)*")
MAX_NAME = 256  # the width of collection.name


def check_prefix(prefix: str) -> str:
    """An owned prefix: a collection name (``u/alice``, ``HSC/raw``), without slashes around."""
    stripped = prefix.strip("/") if isinstance(prefix, str) else prefix
    check_collection_name(stripped)
    return stripped


def check_collection_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_NAME or any(
            part in (".", "..") for part in name.split("/")):
        raise CollectionError(
            f"invalid collection name {name!r}: use letters, digits, '_.+-' and '/' "
            f"between non-empty parts, at most {MAX_NAME} characters, e.g. HSC/raw/all"
        )


class Collections:
    """Collection definitions, chains and ownership of one registry."""

    def __init__(self, db: Database, site: str, owns: Sequence[str] = ()) -> None:
        self.db = db
        self.site = site
        #: the prefixes this site owns; collections are born here only below them
        #: (none recorded: a repository of its own, that may create any)
        self.owns = tuple(owns)
        self._by_name: dict[str, tuple[int, CollectionType, str]] = {}
        self._by_id: dict[int, str] = {}

    # -- lookup ----------------------------------------------------------------

    def _row(self, name: str) -> tuple[int, CollectionType, str] | None:
        if name not in self._by_name:
            table = self.db.tables.collection
            with self.db.reading() as conn:
                row = conn.execute(
                    sa.select(table.c.id, table.c.type, table.c.owner_site)
                    .where(table.c.name == name)).first()
            if row is None:
                return None
            self._remember(name, row.id, CollectionType(row.type), row.owner_site)
        return self._by_name[name]

    def _remember(self, name: str, cid: int, ctype: CollectionType, owner: str) -> None:
        self._by_name[name] = (cid, ctype, owner)
        self._by_id[cid] = name

    def forget(self) -> None:
        self._by_name.clear()
        self._by_id.clear()

    def _drop(self, name: str) -> None:
        entry = self._by_name.pop(name, None)
        if entry is not None:
            self._by_id.pop(entry[0], None)

    def lookup(self, name: str, expected: CollectionType | None = None, *, fresh: bool = False
               ) -> tuple[int, CollectionType]:
        """The collection's id and type; an error if absent or of another type.

        ``fresh`` bypasses the cache: writers use it inside their transaction,
        since another registry instance may have removed (or re-created) the
        collection since it was cached.
        """
        if fresh:
            self._drop(name)
        row = self._row(name)
        if row is None:
            raise CollectionError(f"no collection named {name!r}")
        if expected is not None and row[1] is not expected:
            raise CollectionError(f"collection {name!r} is {row[1]}, not {expected}")
        return row[0], row[1]

    def exists(self, name: str) -> bool:
        return self._row(name) is not None

    def name_of(self, cid: int) -> str:
        if cid not in self._by_id:
            table = self.db.tables.collection
            with self.db.reading() as conn:
                row = conn.execute(sa.select(table).where(table.c.id == cid)).one()
            self._remember(row.name, row.id, CollectionType(row.type), row.owner_site)
        return self._by_id[cid]

    def owner(self, name: str) -> str:
        self.lookup(name)
        return self._by_name[name][2]

    def check_owned(self, name: str) -> None:
        """Refuse to create a collection outside the prefixes this site owns."""
        if self.owns and not any(name == p or name.startswith(p + "/") for p in self.owns):
            raise CollectionError(
                f"collection {name!r} is outside the prefixes site {self.site} owns "
                f"({', '.join(self.owns)}): it can only be created at the site that owns its "
                "prefix")

    def check_writable(self, name: str) -> None:
        """Refuse local writes into a collection another site owns, or a release froze."""
        release = self.release_of(name)
        if release is not None:
            raise CollectionError(f"collection {name!r} belongs to release {release!r}: a "
                                  "release never changes")
        owner = self.owner(name)
        if owner != self.site:
            raise CollectionError(
                f"collection {name!r} is owned by site {owner!r}; this repository is site "
                f"{self.site!r} and cannot write into it"
            )

    def release_of(self, name: str) -> str | None:
        """The release whose frozen structure ``name`` is part of (``NAME`` and
        ``NAME/...``), if any."""
        table = self.db.tables.release
        with self.db.reading() as conn:
            return release_holding(name, conn.execute(sa.select(table.c.name)).scalars())

    def get(self, name: str) -> Collection:
        cid, _ = self.lookup(name)
        table = self.db.tables.collection
        with self.db.reading() as conn:
            row = conn.execute(sa.select(table).where(table.c.id == cid)).one()
        coll = Collection(row.name, CollectionType(row.type), row.owner_site, row.doc)
        if coll.type is CollectionType.CHAINED:
            coll.children = self.children(name)
        return coll

    def query(self, pattern: str = "*", types: Iterable[CollectionType] | None = None
              ) -> list[Collection]:
        """Collections whose name matches a glob, sorted by name."""
        table = self.db.tables.collection
        stmt = sa.select(table).order_by(table.c.name)
        if types is not None:
            stmt = stmt.where(table.c.type.in_([str(t) for t in types]))
        with self.db.reading() as conn:
            rows = conn.execute(stmt).all()
        result = []
        for row in rows:
            if fnmatch.fnmatchcase(row.name, pattern):
                coll = Collection(row.name, CollectionType(row.type), row.owner_site, row.doc)
                if coll.type is CollectionType.CHAINED:
                    coll.children = self.children(row.name)
                result.append(coll)
        return result

    # -- definition ------------------------------------------------------------

    def register(self, name: str, ctype: CollectionType, doc: str = "",
                 owner: str | None = None, *, release: bool = False) -> bool:
        """Create a collection; a no-op if it exists with the same type. A release's
        collections (``release``) have names of their own, outside the owned prefixes."""
        check_collection_name(name)
        ctype = CollectionType(ctype)
        if self._is_registered(name, ctype):
            return False
        owner = owner or self.site
        if owner == self.site and not release:
            self.check_owned(name)
        table = self.db.tables.collection
        with self.db.transaction() as conn:
            # Again, now that writers are serialized: another may have registered it.
            if self._is_registered(name, ctype, fresh=True):
                return False
            tomb = self.db.tables.collection_tombstone
            conn.execute(sa.delete(tomb).where(tomb.c.name == name))
            version = self.db.append([CollectionCreated(name, str(ctype), owner, doc or "")])
            cid = conn.execute(sa.insert(table).values(
                name=name, type=str(ctype), owner_site=owner, doc=doc or "",
                created_version=version, doc_version=version, created_seq=self.db.head())
                .returning(table.c.id)).scalar_one()
            if cid is None:  # an overlay's view (SQLite) returns no id: read it back
                cid = conn.execute(sa.select(table.c.id).where(table.c.name == name)).scalar_one()
            self.db.on_rollback(self.forget)
            self._remember(name, cid, ctype, owner)
        return True

    def _is_registered(self, name: str, ctype: CollectionType, *, fresh: bool = False) -> bool:
        if fresh:
            self._drop(name)
        existing = self._row(name)
        if existing is None:
            return False
        if existing[1] is not ctype:
            raise CollectionError(f"collection {name!r} already exists as {existing[1]}")
        return True

    def set_doc(self, name: str, doc: str, *, check_owner: bool = True) -> None:
        if check_owner:
            self.check_writable(name)
        table = self.db.tables.collection
        with self.db.transaction() as conn:
            cid, _ = self.lookup(name, fresh=True)
            version = self.db.append([CollectionDocChanged(name, doc)])
            conn.execute(sa.update(table).where(table.c.id == cid).values(
                doc=doc, doc_version=version))

    def children(self, name: str) -> list[str]:
        cid, _ = self.lookup(name, CollectionType.CHAINED)
        chain = self.db.tables.collection_chain
        with self.db.reading() as conn:
            ids = conn.execute(sa.select(chain.c.child_id).where(chain.c.parent_id == cid)
                               .order_by(chain.c.position)).scalars().all()
        return [self.name_of(i) for i in ids]

    def set_chain(self, name: str, children: Sequence[str], *, check_owner: bool = True) -> None:
        """Redefine a CHAINED collection's ordered children; cycles are refused."""
        if check_owner:
            self.check_writable(name)
        cid, _ = self.lookup(name, CollectionType.CHAINED)
        children = list(children)
        if len(set(children)) != len(children):
            raise CollectionError(f"chain {name!r} would list a collection twice: {children}")
        chain = self.db.tables.collection_chain
        with self.db.transaction() as conn:
            # Checked inside the (serialized) transaction so that two writers
            # redefining chains at once cannot build a cycle between them.
            cid, _ = self.lookup(name, CollectionType.CHAINED, fresh=True)
            child_ids = [self.lookup(child, fresh=True)[0] for child in children]
            for child in children:
                if child == name or name in self._descendants(child):
                    raise CollectionError(
                        f"chain {name!r} cannot contain {child!r}: that would form a cycle")
            conn.execute(sa.delete(chain).where(chain.c.parent_id == cid))
            if child_ids:
                conn.execute(sa.insert(chain), [
                    {"parent_id": cid, "position": i, "child_id": c}
                    for i, c in enumerate(child_ids)])
            version = self.db.append([ChainChanged(name, list(children))])
            table = self.db.tables.collection
            conn.execute(sa.update(table).where(table.c.id == cid).values(chain_version=version))

    def _descendants(self, name: str) -> set[str]:
        found: set[str] = set()
        stack = [name]
        while stack:
            current = stack.pop()
            if self.lookup(current)[1] is CollectionType.CHAINED:
                for child in self.children(current):
                    if child not in found:
                        found.add(child)
                        stack.append(child)
        return found

    def parents(self, name: str) -> list[str]:
        cid, _ = self.lookup(name)
        chain = self.db.tables.collection_chain
        with self.db.reading() as conn:
            ids = conn.execute(sa.select(chain.c.parent_id).where(chain.c.child_id == cid)
                               .distinct()).scalars().all()
        return sorted(self.name_of(i) for i in ids)

    def flatten(self, names: Iterable[str]) -> list[tuple[int, str, CollectionType]]:
        """Expand chains depth-first into the ordered, de-duplicated search path."""
        result: list[tuple[int, str, CollectionType]] = []
        seen: set[int] = set()

        def visit(name: str) -> None:
            cid, ctype = self.lookup(name)
            if ctype is CollectionType.CHAINED:
                for child in self.children(name):
                    visit(child)
            elif cid not in seen:
                seen.add(cid)
                result.append((cid, name, ctype))

        for name in names:
            visit(name)
        return result

    def expand_patterns(self, patterns: Iterable[str]) -> list[str]:
        """Collection names for a mix of exact names and globs, in the given order."""
        names: list[str] = []
        for pattern in patterns:
            if any(ch in pattern for ch in "*?["):
                matches = [c.name for c in self.query(pattern)]
                names.extend(m for m in matches if m not in names)
            else:
                self.lookup(pattern)
                if pattern not in names:
                    names.append(pattern)
        return names

    def versions(self, name: str) -> tuple[int, int, int]:
        """(created, doc, chain) versions of a collection."""
        cid, _ = self.lookup(name)
        t = self.db.tables.collection
        with self.db.reading() as conn:
            row = conn.execute(sa.select(t.c.created_version, t.c.doc_version, t.c.chain_version)
                               .where(t.c.id == cid)).one()
        return tuple(row)

    def remove(self, name: str, *, check_owner: bool = True) -> None:
        """Delete a collection's definition (its datasets are handled by the caller)."""
        if check_owner:
            self.check_writable(name)
        cid, ctype = self.lookup(name)
        table = self.db.tables.collection
        dataset = self.db.tables.dataset
        with self.db.transaction() as conn:
            cid, ctype = self.lookup(name, fresh=True)
            parents = self.parents(name)
            if parents:
                raise CollectionError(
                    f"collection {name!r} is in chained collection(s) {', '.join(parents)}; "
                    "remove it from the chain first"
                )
            if ctype is CollectionType.RUN and conn.execute(
                    sa.select(dataset.c.id).where(dataset.c.run_id == cid).limit(1)).first():
                raise CollectionError(
                    f"run {name!r} still holds datasets; remove them (or the whole run) first")
            conn.execute(sa.delete(table).where(table.c.id == cid))
            owner = self._by_name[name][2] if name in self._by_name else self.site
            version = self.db.append([CollectionRemoved(name)])
            tomb = self.db.tables.collection_tombstone
            conn.execute(sa.delete(tomb).where(tomb.c.name == name))
            conn.execute(sa.insert(tomb).values(name=name, owner_site=owner, version=version))
            self.db.on_rollback(self.forget)
            self._by_name.pop(name, None)
            self._by_id.pop(cid, None)
