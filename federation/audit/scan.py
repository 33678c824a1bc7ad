"""Checking the files this datastore holds against their records.

File records are read in pages in path order, cut into chunks, and measured on every
core (:mod:`federation.datastore.hashing`): each file's size, and its xxh3-128 when it
is in the sample (all of them unless sampling). After each chunk, what was found is
noted (:mod:`federation.audit.notes`), so that an interrupted audit resumes after the
last chunk it finished.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from federation.audit.model import Problem
from federation.audit.notes import Notes, Standing
from federation.datastore.checksum import mismatch
from federation.datastore.hashing import Measured, Unreadable, measure, measure_chunks
from federation.faults import checkpoint
from federation.registry.audits import AuditReads, FileRecord
from federation.transport.base import TransportError, check_relative

CHUNK = 256  # files per task at most: small files cost more in messages than in hashing
CHUNK_BYTES = 64 << 20  # ... and bytes: large files in smaller tasks keep every core busy

#: called after each chunk with the files and the bytes (of their records) it checked
Advance = Callable[[int, int], None]


@dataclass(frozen=True)
class Scope:
    """Which recorded files to check: those of datasets that arrived after ``since``,
    of the datasets ``ids`` (None: all), a ``sample`` fraction of them hashed (the rest
    only stat'ed), chosen by ``seed``."""

    since: float | None = None
    ids: frozenset[uuid.UUID] | None = None
    sample: float = 1.0
    seed: int = 0

    def hashed(self, dataset_id: uuid.UUID) -> bool:
        """Whether this dataset's file is in the sample (the same one on every resume)."""
        if self.sample >= 1.0:
            return True
        digest = hashlib.blake2b(dataset_id.bytes, digest_size=8,
                                 key=self.seed.to_bytes(8, "big")).digest()
        return int.from_bytes(digest, "big") < self.sample * 2**64


@dataclass
class Scanned:
    """What the check of the recorded files found; ``resumed``: files an interrupted
    earlier run had checked."""

    problems: list[Problem] = field(default_factory=list)
    files: int = 0
    hashed: int = 0
    bytes: int = 0
    resumed: int = 0


def location(root: str, path: str) -> str | None:
    """A recorded file's absolute path (a relative one may not leave the root)."""
    if os.path.isabs(path):
        return path
    try:
        return f"{root}/{check_relative(path)}"
    except TransportError:
        return None


#: a file to check: its absolute path (None: its recorded path leaves the root), whether
#: to hash it (else only its size is checked), and its record's size and checksum
Check = tuple[str | None, bool, int, str]


def judge(where: str | None, size: int, checksum: str, got: Measured | None
          ) -> tuple[str, str] | None:
    """(kind, detail) of what is wrong with a recorded file, given what measuring it found
    (None: nothing)."""
    if where is None:
        return "corrupt", "its path leaves the datastore root"
    if isinstance(got, Unreadable):
        return ("missing", "no file at its path") if got.missing else ("corrupt", got.why)
    problem = mismatch((got[0], got[1] or checksum), (size, checksum))
    return None if problem is None else ("corrupt", problem)


def check_chunk(files: list[Check]) -> tuple[int, int, list[tuple[int, str, str]]]:
    """Check a chunk of files against their records (in a worker process): the files and
    bytes hashed, and the problems found as (position in the chunk, kind, detail). Only
    problems travel back: a sound file costs no message."""
    hashed = nbytes = 0
    problems = []
    for position, (where, full, size, checksum) in enumerate(files):
        got = measure(where, full) if where is not None else None
        if full and got is not None and not isinstance(got, Unreadable):
            hashed += 1
            nbytes += got[0]
        found = judge(where, size, checksum, got)
        if found is not None:
            problems.append((position, *found))
    return hashed, nbytes, problems


def scan(reads: AuditReads, root: str, scope: Scope, *, jobs: int | None = None,
         notes: Notes | None = None, standing: Standing | None = None,
         advance: Advance | None = None) -> Scanned:
    """Check the files in scope, after what ``standing`` (from ``notes``) says an earlier
    run checked; note each chunk in ``notes``."""
    found = Scanned()
    after = None
    if standing is not None:
        found.problems = list(standing.problems)
        found.files, found.hashed, found.bytes = standing.files, standing.hashed, \
            standing.bytes
        found.resumed, after = standing.files, standing.upto
    in_flight: deque[list[FileRecord]] = deque()

    def wanted() -> Iterator[list[Check]]:
        for chunk in _chunks(reads, scope, after):
            in_flight.append(chunk)
            yield [(location(root, r.path), scope.hashed(r.dataset_id), r.size, r.checksum)
                   for r in chunk]

    for hashed, nbytes, wrong in measure_chunks(wanted(), jobs, check_chunk):
        chunk = in_flight.popleft()
        problems = [Problem(kind, chunk[i].path, detail, chunk[i].dataset_id, chunk[i].size)
                    for i, kind, detail in wrong]
        if notes is not None:
            notes.add(chunk[-1].path, len(chunk), hashed, nbytes, problems)
        checkpoint("audit files checked")
        found.problems += problems
        found.files += len(chunk)
        found.hashed += hashed
        found.bytes += nbytes
        if advance is not None:
            advance(len(chunk), sum(r.size for r in chunk))
    return found


def _chunks(reads: AuditReads, scope: Scope, after: str | None
            ) -> Iterator[list[FileRecord]]:
    """The records in scope, in path order, in chunks of CHUNK files or CHUNK_BYTES."""
    chunk: list[FileRecord] = []
    nbytes = 0
    for page in reads.pages(here=True, since=scope.since, after=after):
        for record in page:
            if scope.ids is None or record.dataset_id in scope.ids:
                chunk.append(record)
                nbytes += record.size
                if len(chunk) >= CHUNK or nbytes >= CHUNK_BYTES:
                    yield chunk
                    chunk, nbytes = [], 0
    if chunk:
        yield chunk


def confirm(reads: AuditReads, root: str, problems: Sequence[Problem]) -> list[Problem]:
    """The missing or corrupt files among ``problems`` that still are, against their
    records as they stand now (a dataset removed, dropped or replaced while the audit ran
    is no problem of its file). Call it under the sync lock."""
    current = reads.current(p.dataset_id for p in problems if p.dataset_id is not None)
    still = []
    for problem in problems:
        record = current.get(problem.dataset_id)
        if record is None or record.held_at is not None:
            continue
        where = location(root, record.path)
        again = judge(where, record.size, record.checksum,
                      measure(where) if where is not None else None)
        if again is not None:
            kind, detail = again
            still.append(Problem(kind, record.path, detail, record.dataset_id, record.size))
    return still
