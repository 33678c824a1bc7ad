"""Pairing the datasets of two runs by dataset type and data ID.

Each site makes its own datasets, so their UUIDs differ: what makes two
datasets "the same product" is their dataset type and the values of its
required dimensions (``calexp`` of visit 903334, detector 10). Each side holds
at most one dataset per type and data ID, so the pairing is one to one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.compare.model import FileInfo


@dataclass(frozen=True)
class Entry:
    """One side's dataset: its type, storage class, required data ID and file."""

    dataset_type: str
    storage_class: str
    data_id: dict[str, Any]
    info: FileInfo | None  # None: the registry has no file for it
    local: Path | None = None  # where the side's own datastore holds it

    @property
    def key(self) -> tuple:
        return (self.dataset_type, _id_key(self.data_id))


@dataclass(frozen=True)
class Pair:
    """A data ID of one dataset type, with the dataset on each side (None: absent)."""

    dataset_type: str
    data_id: dict[str, Any]
    a: Entry | None
    b: Entry | None


def pair_entries(a: list[Entry], b: list[Entry]) -> list[Pair]:
    """Every dataset type + data ID found on either side, in a stable order (type, then
    data ID values)."""
    by_a = {e.key: e for e in a}
    by_b = {e.key: e for e in b}
    pairs = []
    for key in sorted(by_a.keys() | by_b.keys()):
        first = by_a.get(key) or by_b[key]
        pairs.append(Pair(first.dataset_type, first.data_id, by_a.get(key), by_b.get(key)))
    return pairs


def _id_key(data_id: dict[str, Any]) -> tuple:
    """Sortable and hashable: numbers before text for each dimension, in name order."""
    return tuple((name, (0, value, "") if isinstance(value, int) else (1, 0, str(value)))
                 for name, value in sorted(data_id.items()))
