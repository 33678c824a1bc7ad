"""The registry's tables, built from a dimension universe.

One schema serves SQLite and PostgreSQL. Datasets carry one column per
dimension (their complete data ID, implied values included) so that `where`
expressions on data IDs need no joins.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from federation.dimensions.universe import DimensionUniverse

SCHEMA_VERSION = 4  # 3: releases; 4: verifications name their site (older ones upgrade on open)

_SQL_TYPES = {
    "string": sa.String(128),
    "int": sa.BigInteger(),
    "float": sa.Float(),
    "bool": sa.Boolean(),
    "region": sa.Text(),
    "hash": sa.Text(),
}


@dataclass
class Tables:
    """Handles to every registry table."""

    metadata: sa.MetaData
    meta: sa.Table
    journal_head: sa.Table
    journal: sa.Table
    dataset_type: sa.Table
    collection: sa.Table
    collection_chain: sa.Table
    dataset: sa.Table
    tag: sa.Table
    calib: sa.Table
    file: sa.Table
    dimensions: dict[str, sa.Table]
    tag_removed: sa.Table
    calib_slot: sa.Table
    dataset_tombstone: sa.Table
    collection_tombstone: sa.Table
    sync_cursor: sa.Table
    sync_retry: sa.Table
    trash: sa.Table
    sync_log: sa.Table
    release: sa.Table
    release_entry: sa.Table
    release_node: sa.Table
    release_check: sa.Table
    provenance: sa.Table


def dimension_table_name(name: str) -> str:
    return f"dim_{name}"


_built: dict[str, Tables] = {}


def tables_for(universe: DimensionUniverse) -> Tables:
    """The tables of a universe, built once per process: a sync's source and destination
    usually share one universe, and building them costs as much as opening a registry."""
    found = _built.get(universe.digest)
    if found is None:
        found = _built[universe.digest] = build_tables(universe)
    return found


def build_tables(universe: DimensionUniverse) -> Tables:
    md = sa.MetaData()
    meta = sa.Table(
        "meta", md,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    journal_head = sa.Table(
        "journal_head", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
    )
    journal = sa.Table(
        "journal", md,
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        # Where the change was first made (NULL: here) and its sequence number there;
        # that number is the change's version everywhere it travels.
        sa.Column("origin", sa.String(64), nullable=True),
        sa.Column("origin_seq", sa.BigInteger, nullable=True),
    )
    dataset_type = sa.Table(
        "dataset_type", md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("dimensions", sa.Text, nullable=False),
        sa.Column("storage_class", sa.String(64), nullable=False),
        sqlite_autoincrement=True,
    )
    collection = sa.Table(
        "collection", md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(256), nullable=False, unique=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("owner_site", sa.String(64), nullable=False),
        sa.Column("doc", sa.Text, nullable=False, default=""),
        # Versions (owner's journal sequence numbers) of the last chain and doc changes.
        sa.Column("created_version", sa.BigInteger, nullable=False, default=0),
        sa.Column("chain_version", sa.BigInteger, nullable=False, default=0),
        sa.Column("doc_version", sa.BigInteger, nullable=False, default=0),
        # This registry's journal sequence number of the collection's creation here.
        sa.Column("created_seq", sa.BigInteger, nullable=False, default=0),
        sqlite_autoincrement=True,
    )
    collection_chain = sa.Table(
        "collection_chain", md,
        sa.Column("parent_id", sa.ForeignKey("collection.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("child_id", sa.ForeignKey("collection.id"), nullable=False, index=True),
    )
    dimensions = {name: _dimension_table(md, universe, name) for name in universe.dimensions}
    dim_columns = [
        sa.Column(name, _SQL_TYPES[dim.key_type], nullable=True)
        for name, dim in universe.dimensions.items() if dim.has_key
    ]
    dataset = sa.Table(
        "dataset", md,
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("dataset_type_id", sa.ForeignKey("dataset_type.id"), nullable=False),
        sa.Column("run_id", sa.ForeignKey("collection.id"), nullable=False),
        sa.Column("data_id_key", sa.String(512), nullable=False),
        sa.Column("ingest_date", sa.Float, nullable=False),
        # The owner's journal sequence number of the dataset's creation: a replica takes a
        # dataset re-created after a deletion only if this is newer than the tombstone.
        sa.Column("version", sa.BigInteger, nullable=False, default=0),
        *dim_columns,
        sa.UniqueConstraint("run_id", "dataset_type_id", "data_id_key", name="dataset_slot"),
        sa.Index("dataset_type_key", "dataset_type_id", "data_id_key"),
    )
    tag = sa.Table(
        "tag", md,
        sa.Column("collection_id", sa.ForeignKey("collection.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("dataset_id", sa.ForeignKey("dataset.id", ondelete="CASCADE"),
                  primary_key=True, index=True),
        sa.Column("dataset_type_id", sa.Integer, nullable=False),
        sa.Column("data_id_key", sa.String(512), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False, default=0),
        sa.UniqueConstraint("collection_id", "dataset_type_id", "data_id_key", name="tag_slot"),
    )
    # Memberships removed from TAGGED collections, so an older "associate" arriving
    # later by another path does not bring them back.
    tag_removed = sa.Table(
        "tag_removed", md,
        sa.Column("collection_id", sa.ForeignKey("collection.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("dataset_id", sa.Uuid, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    # Version of each (CALIBRATION collection, type, data ID) slot's validity list.
    calib_slot = sa.Table(
        "calib_slot", md,
        sa.Column("collection_id", sa.ForeignKey("collection.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("dataset_type_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data_id_key", sa.String(512), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    # Datasets deleted by their owner. `kept` marks an archive still holding the data.
    dataset_tombstone = sa.Table(
        "dataset_tombstone", md,
        sa.Column("dataset_id", sa.Uuid, primary_key=True),
        sa.Column("run", sa.String(256), nullable=False, index=True),
        sa.Column("dataset_type", sa.String(128), nullable=False),
        sa.Column("data_id_key", sa.String(512), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("kept", sa.Boolean, nullable=False, default=False),
        sa.Column("removed_at", sa.Float, nullable=False),
    )
    collection_tombstone = sa.Table(
        "collection_tombstone", md,
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("owner_site", sa.String(64), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    # Files whose records are gone but which may still be on disk: deleted after the
    # transaction that removed their records commits, and again after a crash.
    trash = sa.Table(
        "trash", md,
        sa.Column("path", sa.Text, primary_key=True),
    )
    # How far this repository has gone with each peer, per direction and selection
    # (see federation.registry.cursors).
    sync_cursor = sa.Table(
        "sync_cursor", md,
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("peer", sa.String(64), primary_key=True),
        sa.Column("selection_key", sa.String(64), primary_key=True),
        sa.Column("selection", sa.Text, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("covered", sa.Text, nullable=True),
        sa.Column("instance", sa.String(64), nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    # Datasets whose file failed to arrive; the next pull of that cursor retries them.
    sync_retry = sa.Table(
        "sync_retry", md,
        sa.Column("peer", sa.String(64), primary_key=True),
        sa.Column("selection_key", sa.String(64), primary_key=True),
        sa.Column("dataset_id", sa.Uuid, primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
    )
    # Every sync, import, receive, publish and push (see federation.registry.sync_log).
    sync_log = sa.Table(
        "sync_log", md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("user_host", sa.String(256), nullable=False),
        sa.Column("started", sa.Float, nullable=False, index=True),
        sa.Column("ended", sa.Float, nullable=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("selection", sa.Text, nullable=False),
        sa.Column("cursor_from", sa.BigInteger, nullable=True),
        sa.Column("cursor_to", sa.BigInteger, nullable=True),
        sa.Column("counts", sa.Text, nullable=False),
        sa.Column("files", sa.BigInteger, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("conflicts", sa.Integer, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    # Data releases (see federation.registry.releases): what was frozen, its manifest's
    # entries in key order, and its Merkle tree's nodes (shared by every release).
    release = sa.Table(
        "release", md,
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("creator", sa.String(256), nullable=False),
        sa.Column("doc", sa.Text, nullable=False),
        sa.Column("selection", sa.Text, nullable=False),
        sa.Column("entries", sa.BigInteger, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("counts", sa.Text, nullable=False),  # entries by dataset type (JSON)
        sa.Column("retracted", sa.Float, nullable=True),
        sa.Column("retract_reason", sa.Text, nullable=True),
    )
    release_entry = sa.Table(
        "release_entry", md,
        sa.Column("release", sa.ForeignKey("release.name", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("dataset_id", sa.Uuid, nullable=False, index=True),
        sa.Column("hash", sa.String(64), nullable=False, index=True),
        sa.Column("line", sa.Text, nullable=False),
    )
    release_node = sa.Table(
        "release_node", md,
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("children", sa.LargeBinary, nullable=False),
    )
    # Verifications of releases: every file re-hashed against the manifest, here or at
    # another site (whose records travel with the release).
    release_check = sa.Table(
        "release_check", md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("release", sa.ForeignKey("release.name", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("site", sa.String(64), nullable=False, server_default=""),
        sa.Column("checked", sa.Float, nullable=False),
        sa.Column("checker", sa.String(256), nullable=False),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("complete", sa.Boolean, nullable=False),
        sa.Column("files", sa.BigInteger, nullable=False),
        sa.Column("missing", sa.BigInteger, nullable=False),
        sa.Column("corrupt", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )
    # Which datasets each output was made from (see federation.registry.provenance). Not a
    # schema version change: repositories created before it gain it on first use.
    provenance = sa.Table(
        "provenance", md,
        sa.Column("output_id", sa.ForeignKey("dataset.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("input_id", sa.Uuid, primary_key=True, index=True),
    )
    calib = sa.Table(
        "calib", md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("collection_id", sa.ForeignKey("collection.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("dataset_id", sa.ForeignKey("dataset.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("dataset_type_id", sa.Integer, nullable=False),
        sa.Column("data_id_key", sa.String(512), nullable=False),
        sa.Column("timespan_begin", sa.BigInteger, nullable=False),
        sa.Column("timespan_end", sa.BigInteger, nullable=False),
        sa.Index("calib_lookup", "collection_id", "dataset_type_id", "data_id_key"),
        sqlite_autoincrement=True,
    )
    file = sa.Table(
        "file", md,
        sa.Column("dataset_id", sa.ForeignKey("dataset.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("formatter", sa.String(32), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("checksum", sa.String(32), nullable=False),
        # NULL when the file is in this site's datastore; otherwise the site holding it.
        sa.Column("held_at", sa.String(64), nullable=True),
        sa.Index("file_path", "path", unique=True),
    )
    return Tables(md, meta, journal_head, journal, dataset_type, collection,
                  collection_chain, dataset, tag, calib, file, dimensions, tag_removed,
                  calib_slot, dataset_tombstone, collection_tombstone, sync_cursor, sync_retry,
                  trash, sync_log, release, release_entry, release_node,
                  release_check, provenance)


def _dimension_table(md: sa.MetaData, universe: DimensionUniverse, name: str) -> sa.Table:
    dim = universe.dimensions[name]
    columns = [
        sa.Column(req, _SQL_TYPES[universe.dimensions[req].key_type], primary_key=True,
                  autoincrement=False)
        for req in dim.requires
    ]
    if dim.has_key:
        columns.append(sa.Column(name, _SQL_TYPES[dim.key_type], primary_key=True,
                                 autoincrement=False))
    for implied in dim.implies:
        columns.append(sa.Column(implied, _SQL_TYPES[universe.dimensions[implied].key_type],
                                 nullable=False))
    for field_name, type_name in dim.metadata.items():
        columns.append(sa.Column(field_name, _SQL_TYPES[type_name], nullable=True))
    if dim.has_timespan:
        columns.append(sa.Column("timespan_begin", sa.BigInteger, nullable=True))
        columns.append(sa.Column("timespan_end", sa.BigInteger, nullable=True))
    return sa.Table(dimension_table_name(name), md, *columns)
