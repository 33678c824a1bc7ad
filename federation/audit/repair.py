"""Repairing missing and corrupt files from replicas at other sites.

Under the repository's sync lock, every file it holds is checked (:mod:`.scan`);
each one missing or corrupt is asked of the given sites, in order, through the sync
core's :class:`~federation.sync.fetcher.Fetcher`: downloaded into staging through the
site's transport, checked against *this* repository's record (size and xxh3-128),
and renamed into place only then. Just before that, the file here is checked once
more: a good file is never overwritten. A corrupt file replaced is kept (a hard
link) in ``.federation-quarantine/<UTC time>/``. A site whose copy is missing or
does not match is passed over for the next; when no site has a good copy, the file
stays as it is, and so does everything else of its dataset: one bad replica never
makes a file lost. Records are not changed.

A site on this machine is read where its registry records the dataset's file (with
this record's size and checksum); one reached over SFTP or HTTP at the same relative
path. A dry run fetches and verifies each copy into a temporary directory outside
the repository and places nothing.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from federation.audit.dark import QUARANTINE
from federation.audit.model import Problem
from federation.audit.scan import Scope, location, scan
from federation.butler import Butler
from federation.datastore.hashing import measure
from federation.datastore.posix import PosixDatastore
from federation.errors import FederationError
from federation.registry.audits import AuditReads, FileRecord
from federation.registry.states import DatasetState, FileInfo
from federation.registry.sync_log import LogEntry
from federation.sites import SiteDefinition
from federation.sync.fetcher import Downloaded, Fetcher
from federation.sync.progress import Progress
from federation.sync.site_access import open_site, sync_lock
from federation.transport.base import Transport
from federation.transport.renamed import RenamedTransport

Phases = Callable[[str, int, int], Progress]


@dataclass(frozen=True)
class Attempt:
    """What one site offered for one file: a good copy, or why not."""

    site: str
    good: bool
    how: str


@dataclass
class Fix:
    """A file found missing or corrupt here, and what the sites offered for it;
    ``source``: the site whose copy replaced it (on a dry run: would); ``kept``: where the
    corrupt file replaced is kept."""

    problem: Problem
    record: FileRecord | None
    attempts: list[Attempt] = field(default_factory=list)
    source: str | None = None
    kept: str | None = None


@dataclass(frozen=True)
class RepairSpec:
    """Which files to repair from which sites, in order of preference."""

    sources: tuple[SiteDefinition, ...]
    selection: dict
    ids: frozenset[uuid.UUID] | None = None
    jobs: int | None = None
    dry_run: bool = False
    wait: float = 60.0


@dataclass
class RepairResult:
    """Files repaired (or, on a dry run, repairable), not repaired (no site has a good
    copy), and found good again on the last check (``fine``)."""

    site: str
    dry_run: bool
    sources: list[str]
    checked: int = 0
    repaired: list[Fix] = field(default_factory=list)
    unrepaired: list[Fix] = field(default_factory=list)
    fine: list[Fix] = field(default_factory=list)
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.unrepaired


def run_repair(butler: Butler, spec: RepairSpec, phases: Phases | None = None) -> RepairResult:
    """Repair ``butler``'s missing and corrupt files from ``spec.sources``."""
    registry, root = butler.registry, butler.datastore.root
    result = RepairResult(registry.site, spec.dry_run, [s.name for s in spec.sources])
    reads = AuditReads(registry.db)
    with sync_lock(root, registry.site, spec.wait):
        if spec.dry_run:
            _repair(butler, reads, spec, phases, result)
            return result
        registry.log.interrupted(registry.site)
        log = registry.log.start(LogEntry("repair", spec.sources[0].name, registry.site,
                                          spec.selection))
        try:
            _repair(butler, reads, spec, phases, result)
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            log.result = "interrupted" if interrupted else "error"
            log.message = "interrupted by the user" if interrupted else (
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            registry.log.finish(log)
            raise
    log.counts = {"file repaired": len(result.repaired)} if result.repaired else {}
    log.files, log.bytes, log.failures = len(result.repaired), result.bytes, \
        len(result.unrepaired)
    log.result = "failed" if result.unrepaired else "ok"
    log.message = ", ".join(m for m in (
        f"{len(result.repaired)} repaired" if result.repaired else "",
        f"{len(result.unrepaired)} without a good copy at "
        f"{', '.join(result.sources)}" if result.unrepaired else "") if m)
    registry.log.finish(log)
    return result


def _repair(butler: Butler, reads: AuditReads, spec: RepairSpec, phases: Phases | None,
            result: RepairResult) -> None:
    root = butler.datastore.root
    files, nbytes = reads.totals(here=True, ids=spec.ids)
    progress = phases(f"checking {result.site}", files, nbytes) if phases else None
    scanned = scan(reads, str(root), Scope(ids=spec.ids), jobs=spec.jobs,
                   advance=progress.advance if progress else None)
    result.checked = scanned.files
    records = reads.current(p.dataset_id for p in scanned.problems)
    todo: dict[uuid.UUID, Fix] = {}
    for problem in scanned.problems:
        fix = Fix(problem, records.get(problem.dataset_id))
        why = _unrepairable(fix, str(root))
        if why:
            fix.attempts.append(Attempt(result.site, False, why))
            result.unrepaired.append(fix)
        else:
            todo[problem.dataset_id] = fix
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for source in spec.sources:
        if not todo:
            break
        _try(butler, source, todo, spec, phases, result, stamp)
    result.unrepaired += todo.values()
    refs = butler.registry.datasets.get_many(p.dataset_id for p in scanned.problems)
    for fix in result.repaired + result.unrepaired + result.fine:
        fix.problem = dataclasses.replace(fix.problem, dataset=refs.get(fix.problem.dataset_id))


def _unrepairable(fix: Fix, root: str) -> str:
    record = fix.record
    if record is None or record.held_at is not None:
        return "its record changed while the repair checked it"
    if os.path.isabs(record.path):
        return f"ingested in place at {record.path}: fed repair writes only in the datastore"
    where = location(root, record.path)
    if where is None:
        return "its path leaves the datastore root"
    if fix.problem.detail.startswith("not a regular file"):
        return f"{fix.problem.detail} here: move it away, then repair"
    return ""


def _try(butler: Butler, source: SiteDefinition, todo: dict[uuid.UUID, Fix],
         spec: RepairSpec, phases: Phases | None, result: RepairResult, stamp: str) -> None:
    """Fetch from ``source`` what it holds of ``todo`` and place what verifies (``todo``
    keeps what is still to repair)."""
    try:
        transport, wanted = _open(source, todo)
    except (FederationError, sa.exc.SQLAlchemyError, OSError) as exc:
        text = str(exc).strip()
        why = f"unreachable ({text.splitlines()[0] if text else type(exc).__name__})"
        for fix in todo.values():
            fix.attempts.append(Attempt(source.name, False, why))
        return
    states = [DatasetState(str(i), "", "", {}, FileInfo(todo[i].record.path, "",
                                                        todo[i].record.size,
                                                        todo[i].record.checksum))
              for i in wanted]
    progress = phases(f"repair from {source.name}", len(states),
                      sum(s.file.size for s in states)) if phases and states else None
    try:
        with _fetch_into(butler.datastore, spec.dry_run) as datastore:
            fetcher = Fetcher(datastore, transport, source.name, progress=progress)
            fetcher.discard(s.id for s in states)
            downloaded = fetcher.download(states)
            for dataset_id, (_, reason) in downloaded.failed.items():
                todo[uuid.UUID(dataset_id)].attempts.append(Attempt(source.name, False, reason))
            placeable = _placeable(butler, downloaded, todo, spec.dry_run, source, result)
            if spec.dry_run:
                return
            for dataset_id in placeable.staged:
                fix = todo[uuid.UUID(dataset_id)]
                if fix.problem.kind == "corrupt":
                    fix.kept = _keep(butler.datastore.root, fix.record.path, stamp)
            placed = fetcher.place(placeable)
            fetcher.discard(downloaded.failed)
    finally:
        transport.close()
    for dataset_id, (_, reason) in placed.failed.items():
        todo[uuid.UUID(dataset_id)].attempts.append(Attempt(source.name, False, reason))
    for dataset_id in placed.arrived:
        fix = todo.pop(uuid.UUID(dataset_id))
        fix.source = source.name
        fix.attempts.append(Attempt(source.name, True, f"fetched over {source.transport}, "
                                                       "verified and placed"))
        result.repaired.append(fix)
        result.bytes += fix.record.size


def _placeable(butler: Butler, downloaded: Downloaded, todo: dict[uuid.UUID, Fix],
               dry_run: bool, source: SiteDefinition, result: RepairResult) -> Downloaded:
    """The verified downloads to place: not those whose file here is good after all (it
    stays; the download goes). A dry run notes the site and places nothing."""
    placeable = Downloaded()
    root = str(butler.datastore.root)
    for dataset_id, staged in downloaded.staged.items():
        fix = todo[uuid.UUID(dataset_id)]
        record = fix.record
        if staged.temp is None or measure(location(root, record.path)) == (record.size,
                                                                           record.checksum):
            if staged.temp is not None:
                staged.temp.unlink(missing_ok=True)
            result.fine.append(todo.pop(fix.problem.dataset_id))
        elif dry_run:
            fix.source = source.name
            fix.attempts.append(Attempt(source.name, True, f"fetched over {source.transport} "
                                                           "and verified (dry run: not placed)"))
            result.repaired.append(todo.pop(fix.problem.dataset_id))
        else:
            placeable.staged[dataset_id] = staged
    return placeable


def _open(source: SiteDefinition, todo: dict[uuid.UUID, Fix]
          ) -> tuple[Transport, list[uuid.UUID]]:
    """A transport to ``source``'s files, and the datasets to ask it for. A site on this
    machine is asked only for files its registry holds with our size and checksum, at
    the path it records."""
    if source.is_remote:
        return source.open_files(), list(todo)
    with open_site(source) as theirs:
        found = theirs.registry.datasets.files_here(todo)
    paths, wanted = {}, []
    for dataset_id, fix in todo.items():
        local = found.get(dataset_id)
        if local is None:
            fix.attempts.append(Attempt(source.name, False, "not held"))
        elif (local.stored.size, local.stored.checksum) != (fix.record.size,
                                                             fix.record.checksum):
            fix.attempts.append(Attempt(source.name, False,
                                        "its record has another size or checksum"))
        else:
            paths[fix.record.path] = local.stored.path
            wanted.append(dataset_id)
    return RenamedTransport(source.open_files(), paths), wanted


@contextmanager
def _fetch_into(datastore: PosixDatastore, dry_run: bool) -> Iterator[PosixDatastore]:
    """The datastore downloads go to: this one, or on a dry run a temporary one."""
    if not dry_run:
        yield datastore
        return
    with tempfile.TemporaryDirectory(prefix="fed-repair-") as folder:
        yield PosixDatastore(folder)


def _keep(root: Path, path: str, stamp: str) -> str | None:
    """A hard link to the corrupt file at ``path`` in the quarantine (None if none can be
    made): the bad bytes stay for a look after the good ones replace them."""
    target = root / QUARANTINE / stamp / path
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(root / path, target, follow_symlinks=False)
    except OSError:
        return None
    return str(target.relative_to(root))
