"""Verifying a release held here: every file re-hashed against the manifest, the root
recomputed from the manifest's entries, the outcome recorded in the registry.

A site *holds* a release only when this has passed. Files are hashed in worker
processes (every core; hashing is CPU work and one Python process would hold the
GIL), a chunk of files per task.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from federation.butler import Butler
from federation.datastore.checksum import file_checksum
from federation.merkle import build, entry_hash
from federation.registry.releases import ReleaseCheck
from federation.registry.sync_log import LogEntry, who
from federation.release.manifest import ManifestEntry

CHUNK = 256  # files per task: small files cost more in messages than in hashing


@dataclass(frozen=True)
class Problem:
    """A released file that is not here as the manifest says."""

    entry: ManifestEntry
    kind: str  # missing, corrupt
    detail: str


@dataclass
class Verification:
    """What a verification found: the recorded check and the problems behind it."""

    check: ReleaseCheck
    expected_root: str
    problems: list[Problem] = field(default_factory=list)
    bytes: int = 0


def verify(butler: Butler, name: str, *, jobs: int | None = None,
           progress: Callable[[int], None] | None = None) -> Verification:
    """Verify release ``name`` in this repository and record the outcome (also in the sync
    log, as operation ``verify``)."""
    registry = butler.registry
    info = registry.releases.get(name)
    log = registry.log.start(LogEntry("verify", registry.site, registry.site,
                                      {"release": name}))
    try:
        entries = [ManifestEntry.from_line(e.line) for e in registry.releases.entries(name)]
        root = build(entry_hash(e.line.encode()) for e in entries)[0].hex()
        problems, checked, nbytes = _check_files(butler, entries, jobs, progress)
    except BaseException as exc:
        log.result, log.message = "error", str(exc).splitlines()[0] if str(exc) else "error"
        registry.log.finish(log)
        raise
    missing = sum(p.kind == "missing" for p in problems)
    check = ReleaseCheck(name, time.time(), who(), root,
                         complete=not problems and root == info.root, files=checked,
                         missing=missing, corrupt=len(problems) - missing)
    registry.releases.record_check(check)
    log.files, log.bytes, log.failures = checked, nbytes, len(problems)
    log.result = "ok" if check.complete else "failed"
    if root != info.root:
        log.message = f"manifest root {root} is not the release's {info.root}"
    elif problems:
        log.message = f"{len(problems)} file(s) missing or corrupt"
    registry.log.finish(log)
    return Verification(check, info.root, problems, nbytes)


def _check_files(butler: Butler, entries: Sequence[ManifestEntry], jobs: int | None,
                 progress: Callable[[int], None] | None
                 ) -> tuple[list[Problem], int, int]:
    """(problems, files checked, bytes read)."""
    registry, datastore = butler.registry, butler.datastore
    stored = {i: (f, held) for i, f, held in registry.datasets.iter_files(
        [e.id for e in entries])}
    problems: list[Problem] = []
    wanted: list[tuple[ManifestEntry, str]] = []
    for entry in entries:
        if entry.size is None:
            continue  # a dataset without a file: nothing to hash
        found = stored.get(entry.id)
        if found is None:
            problems.append(Problem(entry, "missing", "no record of it here"))
        elif found[1] is not None:
            problems.append(Problem(entry, "missing", f"its file is held at {found[1]}"))
        else:
            wanted.append((entry, str(datastore.path_of(found[0]))))
    nbytes = 0
    workers = max(1, jobs or os.cpu_count() or 1)
    with ProcessPoolExecutor(workers) as pool:
        chunks = [wanted[i:i + CHUNK] for i in range(0, len(wanted), CHUNK)]
        for chunk, results in zip(chunks, pool.map(_hash_paths, ([p for _, p in c]
                                                                   for c in chunks)),
                                  strict=True):
            for (entry, path), got in zip(chunk, results, strict=True):
                if isinstance(got, str):
                    problems.append(Problem(entry, "missing", f"{path}: {got}"))
                    continue
                nbytes += got[0]
                if got != (entry.size, entry.checksum):
                    problems.append(Problem(entry, "corrupt", _mismatch(path, got, entry)))
            if progress is not None:
                progress(len(chunk))
    return problems, len(wanted), nbytes


def _hash_paths(paths: list[str]) -> list[tuple[int, str] | str]:
    """(size, xxh3-128) of each file, or why it could not be read (in a worker)."""
    return list(_each(paths))


def _each(paths: list[str]) -> Iterator[tuple[int, str] | str]:
    for path in paths:
        try:
            yield file_checksum(path)
        except OSError as exc:
            yield exc.strerror or str(exc)


def _mismatch(path: str, got: tuple[int, str], entry: ManifestEntry) -> str:
    if got[0] != entry.size:
        return f"{path}: the file has {got[0]} bytes, the manifest says {entry.size}"
    return f"{path}: the file's xxh3-128 is {got[1]}, the manifest's {entry.checksum}"
