"""Checking many files on every core: each file's size, and its xxh3-128 when asked.

Hashing is CPU work, and one Python process would hold the GIL, so files are
measured in worker processes, a chunk of files per task (small files cost more
in messages than in hashing). Chunks are taken lazily from an iterable, at most
a few per worker in flight, and their results come back in the order given: a
caller can stream millions of files through it, and note after each chunk how
far it got. ``fed release verify`` and ``fed audit`` both check files this way
(an audit with a worker of its own that also compares each file with its record,
so that only problems travel back).
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, NamedTuple

from federation.datastore.checksum import descriptor_checksum, file_kind


class Unreadable(NamedTuple):
    """Why a file could not be measured: ``missing`` (no such file), or another reason
    (not a regular file, no permission) in ``why``."""

    missing: bool
    why: str


#: (size, xxh3-128 hex digest) of a file, the digest "" when it was only stat'ed; or why not
Measured = tuple[int, str] | Unreadable
#: a file to measure: its absolute path, and whether to hash it (else only stat it)
Wanted = tuple[str, bool]


def measure(path: str, full: bool = True) -> Measured:
    """Size (and, if ``full``, xxh3-128) of one regular file, or why it has none.

    A file to hash is opened without blocking and checked on its open descriptor (a
    FIFO would block a read forever, a device never end): nothing can swap it between
    the check and the read.
    """
    try:
        if not full:
            info = os.stat(path)
            if not stat.S_ISREG(info.st_mode):
                return Unreadable(False, f"not a regular file ({file_kind(info.st_mode)})")
            return info.st_size, ""
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                return Unreadable(False, f"not a regular file ({file_kind(mode)})")
            return descriptor_checksum(fd)
        finally:
            os.close(fd)
    except (FileNotFoundError, NotADirectoryError):
        return Unreadable(True, "missing")
    except OSError as exc:
        return Unreadable(False, f"unreadable ({exc.strerror or exc})")


def measure_chunk(files: Sequence[Wanted]) -> list[Measured]:
    """Each file of a chunk measured (in a worker process)."""
    return [measure(path, full) for path, full in files]


def measure_chunks(chunks: Iterable[Sequence[Any]], jobs: int | None = None,
                   worker: Callable[[list], Any] = measure_chunk) -> Iterator[Any]:
    """``worker(chunk)`` of each chunk, in order (by default the chunk's files measured),
    run by ``jobs`` processes (default: one per core; 1: in this process). ``worker``
    must be a module-level function. Chunks are read from ``chunks`` only as workers
    become free, so memory stays bounded by the chunks in flight; closing the iterator
    (an interrupt, an error) cancels the chunks not started."""
    jobs = max(1, jobs or os.cpu_count() or 1)
    if jobs == 1:
        for chunk in chunks:
            yield worker(list(chunk))
        return
    window = 2 * jobs + 2
    pool = ProcessPoolExecutor(jobs)
    pending: deque[Future] = deque()
    try:
        for chunk in chunks:
            pending.append(pool.submit(worker, list(chunk)))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
