"""A release's manifest: one entry per dataset, in one canonical text form.

An entry's line is JSON with its keys sorted, no spaces, UTF-8 (non-ASCII kept):

    {"checksum":"<xxh3-128 hex>","data_id":{<required dimensions, sorted>},
     "dataset_type":"raw","found":true,"id":"<uuid>","run":"HSC/raw/all",
     "size":1024,"storage_class":"Bytes","validity":[[begin_ns,end_ns],...]}

``found``: a search of the frozen collections found this dataset (a RUN or
TAGGED member, first along the chain); ``validity``: the validity ranges it is
certified over in the frozen CALIBRATION collections (integer UTC nanoseconds,
half-open), empty when none. Entries are ordered by their key: dataset type,
then the data ID's line (``json.dumps(data_id, sort_keys=True,
separators=(",", ":"))``), then run, each compared as a string. The manifest
file written by ``fed release show --manifest`` holds exactly these lines in
this order, so its Merkle root (:mod:`federation.merkle`) can be recomputed
from it alone.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from federation.merkle import entry_hash


@dataclass(frozen=True)
class ManifestEntry:
    """One dataset of a release."""

    dataset_type: str
    data_id: dict[str, Any]
    run: str
    id: uuid.UUID
    storage_class: str
    size: int | None
    checksum: str | None
    found: bool
    validity: tuple[tuple[int, int], ...] = ()

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.dataset_type, _compact(self.data_id), self.run)

    @property
    def line(self) -> str:
        return _compact({
            "checksum": self.checksum, "data_id": self.data_id,
            "dataset_type": self.dataset_type, "found": self.found, "id": str(self.id),
            "run": self.run, "size": self.size, "storage_class": self.storage_class,
            "validity": [list(v) for v in self.validity]})

    @property
    def hash(self) -> bytes:
        return entry_hash(self.line.encode())

    @classmethod
    def from_line(cls, line: str) -> ManifestEntry:
        d = json.loads(line)
        return cls(d["dataset_type"], d["data_id"], d["run"], uuid.UUID(d["id"]),
                   d["storage_class"], d["size"], d["checksum"], d["found"],
                   tuple((b, e) for b, e in d["validity"]))

    def describe(self) -> str:
        """``type {data ID} in run`` for people."""
        data_id = ", ".join(f"{k}={v}" for k, v in self.data_id.items())
        return f"{self.dataset_type} {{{data_id}}} in {self.run}"


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
