"""What the Butler takes and answers besides datasets: files to ingest, existence,
verification reports, and the hook through which it reads files held elsewhere."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from federation.errors import FederationError
from federation.model import DatasetRef, StoredFile


@dataclass(frozen=True)
class FileDataset:
    """An existing file to ingest, with its dataset type and data ID.

    ``origin`` says where it was listed (e.g. ``raws.csv:7``, a table and its
    line); errors about this file start with it.
    """

    path: Path
    dataset_type: str
    data_id: dict[str, Any]
    origin: str | None = None

    def context(self, exc: FederationError) -> FederationError:
        """``exc`` with this file's origin put in front of its message."""
        if self.origin is not None:
            exc.args = (f"{self.origin}: {exc}",)
        return exc


@dataclass(frozen=True)
class Existence:
    """Answer of :meth:`Butler.exists`: true only when the file is in this datastore.

    ``registered`` says whether the registry knows the dataset at all, and
    ``held_at`` names the site holding its file when it is not here.
    """

    here: bool
    registered: bool = False
    held_at: str | None = None

    def __bool__(self) -> bool:
        return self.here

    def __str__(self) -> str:
        if self.here:
            return "here"
        if self.held_at:
            return f"held at site {self.held_at}"
        return "registered, but its file is missing" if self.registered else "unknown"


class FileProblem(NamedTuple):
    """A file that does not match its record: whose, where, and how."""

    dataset_id: uuid.UUID
    path: str
    problem: str


@dataclass
class VerifyReport:
    """Outcome of re-hashing files against their recorded checksums."""

    checked: int = 0
    held_elsewhere: int = 0
    problems: list[FileProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class FileSource(Protocol):
    """Brings files held at other sites here on read (see :mod:`federation.cache`)."""

    # ``butler``: the Butler reading (typed Any: the Butler imports this module)
    def bring(self, butler: Any, ref: DatasetRef, held_at: str) -> StoredFile:
        """The dataset's file, fetched from the site holding it into this datastore."""

    def note_read(self, butler: Any, ref: DatasetRef) -> None:
        """A dataset whose file is here was read."""
