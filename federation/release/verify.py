"""Verifying a release held here: every file re-hashed against the manifest, the root
recomputed from the manifest's entries, the outcome recorded in the registry.

A site *holds* a release only when this has passed. Files are hashed in worker
processes (every core; hashing is CPU work and one Python process would hold the
GIL), a chunk of files per task (:mod:`federation.datastore.hashing`). After each
chunk, what was found so far is noted in ``.federation-verify/`` in the datastore,
so that a verification interrupted (Ctrl-C, a kill) resumes after the last chunk it
finished; the note goes when the verification is recorded.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from federation.butler import Butler
from federation.datastore.hashing import Unreadable, measure_chunks
from federation.faults import checkpoint
from federation.merkle import build, entry_hash
from federation.registry.releases import ReleaseCheck
from federation.registry.sync_log import LogEntry, who
from federation.release.manifest import ManifestEntry

CHUNK = 256  # files per task: small files cost more in messages than in hashing
NOTES = ".federation-verify"  # in the datastore: what unfinished verifications found


@dataclass(frozen=True)
class Problem:
    """A released file that is not here as the manifest says."""

    entry: ManifestEntry
    kind: str  # missing, corrupt
    detail: str


@dataclass
class Verification:
    """What a verification found: the recorded check and the problems behind it, and how
    many files an interrupted earlier run had verified already (``resumed``)."""

    check: ReleaseCheck
    expected_root: str
    problems: list[Problem] = field(default_factory=list)
    bytes: int = 0
    resumed: int = 0


class _Notes:
    """What an unfinished verification of one release found, chunk by chunk: a JSON
    lines file whose first line names the release's root."""

    def __init__(self, butler: Butler, name: str, root: str) -> None:
        folder = butler.datastore.root / NOTES
        self.path = folder / f"{hashlib.sha256(name.encode()).hexdigest()[:32]}.jsonl"
        self.root = root

    def read(self) -> tuple[int, list[dict], int, int]:
        """(last manifest position verified, problems found, files, bytes) so far."""
        upto, problems, files, nbytes = -1, [], 0, 0
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            return upto, problems, files, nbytes
        try:
            if not lines or json.loads(lines[0]).get("root") != self.root:
                return -1, [], 0, 0  # another release's, or one replaced: start over
            for line in lines[1:]:
                chunk = json.loads(line)
                upto = max(upto, chunk["upto"])
                problems += chunk["problems"]
                files += chunk["files"]
                nbytes += chunk["bytes"]
        except (ValueError, KeyError, TypeError):
            return -1, [], 0, 0  # a note cut short by a kill: start over
        return upto, problems, files, nbytes

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"root": self.root}) + "\n")

    def add(self, upto: int, problems: list[Problem], files: int, nbytes: int) -> None:
        with open(self.path, "a") as out:
            out.write(json.dumps({"upto": upto, "files": files, "bytes": nbytes,
                                  "problems": [[p.entry.line, p.kind, p.detail]
                                               for p in problems]}) + "\n")

    def drop(self) -> None:
        self.path.unlink(missing_ok=True)


def verify(butler: Butler, name: str, *, jobs: int | None = None,
           progress: Callable[[int], None] | None = None,
           restart: bool = False) -> Verification:
    """Verify release ``name`` in this repository and record the outcome (also in the sync
    log, as operation ``verify``); resume an interrupted verification unless
    ``restart``."""
    registry = butler.registry
    info = registry.releases.get(name)
    log = registry.log.start(LogEntry("verify", registry.site, registry.site,
                                      {"release": name}))
    notes = _Notes(butler, name, info.root)
    try:
        entries = [ManifestEntry.from_line(e.line) for e in registry.releases.entries(name)]
        root = build(entry_hash(e.line.encode()) for e in entries)[0].hex()
        upto, earlier, files_before, bytes_before = (-1, [], 0, 0) if restart else notes.read()
        if upto < 0:
            notes.start()
        elif progress is not None:
            progress(upto + 1)
        problems = [Problem(ManifestEntry.from_line(line), kind, detail)
                    for line, kind, detail in earlier]
        found, checked, nbytes = _check_files(butler, entries, jobs, progress, upto, notes)
        problems += found
        resumed, checked, nbytes = files_before, checked + files_before, nbytes + bytes_before
    except BaseException as exc:
        log.result, log.message = "error", str(exc).splitlines()[0] if str(exc) else "error"
        registry.log.finish(log)
        raise
    missing = sum(p.kind == "missing" for p in problems)
    check = ReleaseCheck(name, time.time(), who(), root,
                         complete=not problems and root == info.root, files=checked,
                         missing=missing, corrupt=len(problems) - missing, site=registry.site)
    registry.releases.record_check(check)
    notes.drop()
    log.files, log.bytes, log.failures = checked, nbytes, len(problems)
    log.result = "ok" if check.complete else "failed"
    if root != info.root:
        log.message = f"manifest root {root} is not the release's {info.root}"
    elif problems:
        log.message = f"{len(problems)} file(s) missing or corrupt"
    registry.log.finish(log)
    return Verification(check, info.root, problems, nbytes, resumed)


def _check_files(butler: Butler, entries: Sequence[ManifestEntry], jobs: int | None,
                 progress: Callable[[int], None] | None, upto: int, notes: _Notes
                 ) -> tuple[list[Problem], int, int]:
    """(problems, files checked, bytes read) for the entries after position ``upto``,
    noted chunk by chunk."""
    datastore = butler.datastore
    todo = list(enumerate(entries))[upto + 1:]
    stored = {i: (f, held) for i, f, held in butler.registry.datasets.iter_files(
        [e.id for _, e in todo])}
    found: list[Problem] = []
    files = nbytes = 0
    chunks = [todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]
    wanted = [[(pos, e, _where(datastore, stored.get(e.id))) for pos, e in chunk]
              for chunk in chunks]
    hashed = measure_chunks(([(w, True) for _, e, w in c if e.size is not None
                              and not w.startswith("!")] for c in wanted), jobs)
    for chunk, results in zip(wanted, hashed, strict=True):
        problems: list[Problem] = []
        got_of = iter(results)
        chunk_bytes = chunk_files = 0
        for _, entry, where in chunk:
            if entry.size is None:
                continue  # a dataset without a file: nothing to hash
            if where.startswith("!"):
                problems.append(Problem(entry, "missing", where[1:]))
                continue
            got = next(got_of)
            chunk_files += 1
            if isinstance(got, Unreadable):
                problems.append(Problem(entry, "missing", f"{where}: {got.why}"))
                continue
            chunk_bytes += got[0]
            if got != (entry.size, entry.checksum):
                problems.append(Problem(entry, "corrupt", _mismatch(where, got, entry)))
        notes.add(chunk[-1][0], problems, chunk_files, chunk_bytes)
        checkpoint("release files verified")
        found += problems
        files += chunk_files
        nbytes += chunk_bytes
        if progress is not None:
            progress(len(chunk))
    return found, files, nbytes


def _where(datastore, found) -> str:
    """A file's path here, or ``!`` and why there is none."""
    if found is None:
        return "!no record of it here"
    if found[1] is not None:
        return f"!its file is held at {found[1]}"
    return str(datastore.path_of(found[0]))


def _mismatch(path: str, got: tuple[int, str], entry: ManifestEntry) -> str:
    if got[0] != entry.size:
        return f"{path}: the file has {got[0]} bytes, the manifest says {entry.size}"
    return f"{path}: the file's xxh3-128 is {got[1]}, the manifest's {entry.checksum}"
