"""A destination's bookkeeping per (source, selection): cursor, coverage, retries."""

from __future__ import annotations

import json
import uuid

import sqlalchemy as sa

from federation.butler import Butler
from federation.sync.selection import Selection


def read_cursor(butler: Butler, source: str, selection: Selection) -> int | None:
    """How far this repository has applied ``source``'s journal for ``selection``."""
    c = butler.registry.db.tables.sync_cursor
    with butler.registry.db.reading() as conn:
        return conn.execute(sa.select(c.c.last_seq).where(
            c.c.source == source, c.c.selection_key == selection.key)).scalar()


def covered_collections(butler: Butler, source: str, selection: Selection) -> set[str] | None:
    """The collections the cursor's last sync covered, if it recorded them."""
    c = butler.registry.db.tables.sync_cursor
    with butler.registry.db.reading() as conn:
        text = conn.execute(sa.select(c.c.selection).where(
            c.c.source == source, c.c.selection_key == selection.key)).scalar()
    if text is None:
        return None
    expanded = json.loads(text).get("expanded")
    return None if expanded is None else set(expanded)


def retry_ids(butler: Butler, source: str, selection: Selection) -> list[uuid.UUID]:
    r = butler.registry.db.tables.sync_retry
    with butler.registry.db.reading() as conn:
        return list(conn.execute(sa.select(r.c.dataset_id).where(
            r.c.source == source, r.c.selection_key == selection.key)).scalars().all())
