"""What an audit finds: one :class:`Problem` per file that is not as it should be."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from federation.model import DatasetRef

#: a recorded file absent here; one that does not match its record (size, xxh3-128, not a
#: regular file, unreadable); a file no record names; a file recorded as held at another
#: site that no site was found to hold
KINDS = ("missing", "corrupt", "dark", "unheld")


@dataclass(frozen=True)
class Problem:
    """One file found wrong: its kind, its path (relative to the datastore root, absolute
    for a file ingested in place), what was found, and the dataset it belongs to (None
    for a dark file). ``size``: a dark file's size on disk, else its record's."""

    kind: str
    path: str
    detail: str
    dataset_id: uuid.UUID | None = None
    size: int | None = None
    dataset: DatasetRef | None = None  # filled in for reports

    def to_dict(self) -> dict:
        found = {"kind": self.kind, "path": self.path, "detail": self.detail,
                 "size": self.size}
        if self.dataset_id is not None:
            found["id"] = str(self.dataset_id)
        if self.dataset is not None:
            found |= {"dataset_type": self.dataset.dataset_type.name, "run": self.dataset.run,
                      "data_id": self.dataset.required_data_id}
        return found

    def subject(self) -> str:
        """``dataset (path)``, or the path alone for a dark file."""
        what = str(self.dataset) if self.dataset is not None else (
            str(self.dataset_id) if self.dataset_id is not None else "")
        return f"{what} ({self.path})" if what else self.path

    def describe(self) -> str:
        """``kind: dataset (path): detail`` for a line of text."""
        return f"{self.kind}: {self.subject()}: {self.detail}"
