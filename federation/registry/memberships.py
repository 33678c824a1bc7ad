"""Memberships of TAGGED and CALIBRATION collections: tagging and certifying datasets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from federation.errors import CalibrationError, ConflictError
from federation.model import CollectionType, DatasetRef, DatasetType, ref_key
from federation.registry.database import IN_VALUES, chunked
from federation.registry.journal import (
    DatasetsCertified,
    DatasetsDecertified,
    DatasetsTagged,
    DatasetsUntagged,
)
from federation.timespan import Timespan


class Memberships:
    """Tags and certifications of the datasets of one registry (a part of
    :class:`~federation.registry.datasets.Datasets`, which provides ``db``,
    ``collections``, ``types``, ``get``, ``get_many`` and ``_stored``)."""

    # -- tags ------------------------------------------------------------------

    def associate(self, collection: str, refs: Sequence[DatasetRef], *,
                  check_owner: bool = True) -> int:
        """Add datasets to a TAGGED collection; returns how many were new."""
        cid, _ = self.collections.lookup(collection, CollectionType.TAGGED)
        if check_owner:
            self.collections.check_writable(collection)
        tg = self.db.tables.tag
        new = []
        with self.db.transaction() as conn:
            cid, _ = self.collections.lookup(collection, CollectionType.TAGGED, fresh=True)
            wanted = {}
            for ref in self._stored(refs):
                slot = (self.types.id_of(ref.dataset_type.name), ref_key(ref))
                if slot in wanted and wanted[slot] != ref.id:
                    raise ConflictError(f"two datasets for one slot of {collection!r}: {ref}")
                wanted[slot] = ref.id
            held = {(r.dataset_type_id, r.data_id_key): r.dataset_id
                    for r in self.db.select_in(
                        sa.select(tg.c.dataset_type_id, tg.c.data_id_key, tg.c.dataset_id)
                        .where(tg.c.collection_id == cid, tg.c.data_id_key.in_(IN_VALUES)),
                        {key for _, key in wanted})}
            for (tid, key), dataset_id in wanted.items():
                there = held.get((tid, key))
                if there is None:
                    new.append({"collection_id": cid, "dataset_id": dataset_id,
                                "dataset_type_id": tid, "data_id_key": key})
                elif there != dataset_id:
                    raise ConflictError(
                        f"TAGGED collection {collection!r} already holds {self.get(there)}"
                        f" (id {there}); cannot also tag {dataset_id}")
            if new:
                version = self.db.append([DatasetsTagged(
                    collection, [str(r["dataset_id"]) for r in new])])
                conn.execute(sa.insert(tg), [r | {"version": version} for r in new])
                gone = self.db.tables.tag_removed
                for chunk in chunked([r["dataset_id"] for r in new]):
                    conn.execute(sa.delete(gone).where(gone.c.collection_id == cid,
                                                       gone.c.dataset_id.in_(chunk)))
        return len(new)

    def disassociate(self, collection: str, refs: Sequence[DatasetRef], *,
                     check_owner: bool = True) -> int:
        cid, _ = self.collections.lookup(collection, CollectionType.TAGGED)
        if check_owner:
            self.collections.check_writable(collection)
        tg = self.db.tables.tag
        gone = self.db.tables.tag_removed
        with self.db.transaction() as conn:
            cid, _ = self.collections.lookup(collection, CollectionType.TAGGED, fresh=True)
            present = []
            for chunk in chunked(list(dict.fromkeys(r.id for r in refs))):
                # Only what was really tagged is removed and journaled: no-ops leave no trace.
                present += conn.execute(sa.select(tg.c.dataset_id).where(
                    tg.c.collection_id == cid, tg.c.dataset_id.in_(chunk))).scalars().all()
            if not present:
                return 0
            version = self.db.append([DatasetsUntagged(collection, [str(i) for i in present])])
            for chunk in chunked(present):
                conn.execute(sa.delete(tg).where(tg.c.collection_id == cid,
                                                 tg.c.dataset_id.in_(chunk)))
                conn.execute(sa.delete(gone).where(gone.c.collection_id == cid,
                                                   gone.c.dataset_id.in_(chunk)))
            conn.execute(sa.insert(gone), [{"collection_id": cid, "dataset_id": i,
                                            "version": version} for i in present])
        return len(present)

    # -- calibrations ----------------------------------------------------------

    def certify(self, collection: str, refs: Sequence[DatasetRef], timespan: Timespan, *,
                check_owner: bool = True) -> int:
        """Certify datasets over a validity range; overlaps for a type + data ID are refused."""
        cid, _ = self.collections.lookup(collection, CollectionType.CALIBRATION)
        if check_owner:
            self.collections.check_writable(collection)
        c = self.db.tables.calib
        new = []
        with self.db.transaction() as conn:
            cid, _ = self.collections.lookup(collection, CollectionType.CALIBRATION, fresh=True)
            rows, seen = [], {}
            for ref in self._stored(refs):
                slot = (self.types.id_of(ref.dataset_type.name), ref_key(ref))
                if slot in seen:
                    raise CalibrationError(
                        f"{ref} and {seen[slot]} would both be valid during {timespan}")
                seen[slot] = ref
                rows.append({"collection_id": cid, "dataset_id": ref.id,
                             "dataset_type_id": slot[0], "data_id_key": slot[1],
                             "timespan_begin": timespan.begin, "timespan_end": timespan.end})
            for row in rows:
                clash = conn.execute(sa.select(c.c.dataset_id, c.c.timespan_begin,
                                               c.c.timespan_end).where(
                    c.c.collection_id == cid, c.c.dataset_type_id == row["dataset_type_id"],
                    c.c.data_id_key == row["data_id_key"], c.c.timespan_begin < timespan.end,
                    c.c.timespan_end > timespan.begin)).first()
                if clash is None:
                    new.append(row)
                elif (clash.dataset_id, clash.timespan_begin, clash.timespan_end) != (
                        row["dataset_id"], timespan.begin, timespan.end):
                    other = Timespan(clash.timespan_begin, clash.timespan_end)
                    raise CalibrationError(
                        f"cannot certify {seen[(row['dataset_type_id'], row['data_id_key'])]} in "
                        f"{collection!r} for {timespan}: {self.get(clash.dataset_id)} is already "
                        f"valid for {other}")
            if new:
                conn.execute(sa.insert(c), new)
                version = self.db.append([DatasetsCertified(
                    collection, [str(r["dataset_id"]) for r in new], timespan.begin,
                    timespan.end)])
                self.set_slot_versions(cid, [(r["dataset_type_id"], r["data_id_key"])
                                             for r in new], version)
        return len(new)

    def set_slot_versions(self, cid: int, slots: Iterable[tuple[int, str]], version: int
                          ) -> None:
        """Record the version of the last change to these calibration slots."""
        cs = self.db.tables.calib_slot
        slots = list(dict.fromkeys(slots))
        conn = self.db.current()
        for chunk in chunked(slots):
            conn.execute(sa.delete(cs).where(
                cs.c.collection_id == cid,
                sa.tuple_(cs.c.dataset_type_id, cs.c.data_id_key).in_(list(chunk))))
        conn.execute(sa.insert(cs), [{"collection_id": cid, "dataset_type_id": t,
                                      "data_id_key": k, "version": version} for t, k in slots])

    def decertify(self, collection: str, dataset_type: DatasetType, timespan: Timespan, *,
                  data_id_keys: Sequence[str] | None = None, check_owner: bool = True) -> int:
        """Remove validity within ``timespan``; ranges partly inside are trimmed or split."""
        cid, _ = self.collections.lookup(collection, CollectionType.CALIBRATION)
        if check_owner:
            self.collections.check_writable(collection)
        c = self.db.tables.calib
        tid = self.types.id_of(dataset_type.name)
        with self.db.transaction() as conn:
            cid, _ = self.collections.lookup(collection, CollectionType.CALIBRATION, fresh=True)
            cond = [c.c.collection_id == cid, c.c.dataset_type_id == tid,
                    c.c.timespan_begin < timespan.end, c.c.timespan_end > timespan.begin]
            if data_id_keys is not None:
                cond.append(c.c.data_id_key.in_(list(data_id_keys)))
            rows = conn.execute(sa.select(c).where(*cond)).mappings().all()
            if not rows:
                return 0
            conn.execute(sa.delete(c).where(c.c.id.in_([r["id"] for r in rows])))
            keep = []
            for r in rows:
                base = {k: r[k] for k in ("collection_id", "dataset_id", "dataset_type_id",
                                          "data_id_key")}
                if r["timespan_begin"] < timespan.begin:
                    keep.append(base | {"timespan_begin": r["timespan_begin"],
                                        "timespan_end": timespan.begin})
                if r["timespan_end"] > timespan.end:
                    keep.append(base | {"timespan_begin": timespan.end,
                                        "timespan_end": r["timespan_end"]})
            if keep:
                conn.execute(sa.insert(c), keep)
            touched = sorted({r["data_id_key"] for r in rows})
            version = self.db.append([DatasetsDecertified(
                collection, dataset_type.name, timespan.begin, timespan.end, touched)])
            self.set_slot_versions(cid, [(tid, k) for k in touched], version)
        return len(rows)

    def certifications(self, collection: str) -> list[tuple[DatasetRef, Timespan]]:
        cid, _ = self.collections.lookup(collection, CollectionType.CALIBRATION)
        c = self.db.tables.calib
        with self.db.reading() as conn:
            rows = conn.execute(sa.select(c.c.dataset_id, c.c.timespan_begin, c.c.timespan_end)
                                .where(c.c.collection_id == cid)
                                .order_by(c.c.data_id_key, c.c.timespan_begin)).all()
        refs = self.get_many([r.dataset_id for r in rows])
        return [(refs[r.dataset_id], Timespan(r.timespan_begin, r.timespan_end)) for r in rows]
