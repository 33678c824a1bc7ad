"""An audit of one repository, phase by phase.

1. The files this datastore holds, checked against their records on every core
   (:mod:`.scan`), noted chunk by chunk so that an interrupted audit resumes.
2. The files recorded as held at other sites, looked for there (:mod:`.holders`).
3. Under the repository's sync lock (no sync is half-way then): the problems found
   confirmed against the records as they stand now, the dark files found by one
   walk (:mod:`.dark`) and, if asked, quarantined.

The audit is recorded in the sync log (operation ``audit``, from when it first
started, resumed or not); its notes go then.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from federation.audit.dark import DarkFile, Moved, find_dark, quarantine
from federation.audit.holders import describe, held_nowhere
from federation.audit.model import KINDS, Problem
from federation.audit.notes import Notes, Standing
from federation.audit.scan import Scope, confirm, scan
from federation.butler import Butler
from federation.registry.audits import AuditReads
from federation.registry.sync_log import LogEntry
from federation.sites import SiteDefinition
from federation.sync.progress import Progress
from federation.sync.site_access import sync_lock

#: starts a phase of the work: (title, files, bytes) -> where to report its progress
Phases = Callable[[str, int, int], Progress]


@dataclass(frozen=True)
class AuditSpec:
    """What to audit in a repository and how.

    ``selection`` names the audit (its notes and its sync log entry: collections, dataset
    types, ``--since`` as given, sample); ``since``: only datasets that arrived after it;
    ``ids``: only these datasets (None: all); ``own`` and ``skipped``: the repository's
    own entries at its root and directories under it that are not the datastore's;
    ``sites``: the sites to look for files held elsewhere at, by name.
    """

    selection: dict
    since: float | None = None
    ids: frozenset[uuid.UUID] | None = None
    sample: float = 1.0
    jobs: int | None = None
    quarantine: bool = False
    restart: bool = False
    wait: float = 60.0
    own: frozenset[str] = frozenset()
    skipped: tuple[str, ...] = ()
    sites: Mapping[str, SiteDefinition] = field(default_factory=dict)


@dataclass
class AuditResult:
    """What an audit found: every problem, what it checked, what it moved."""

    site: str
    since: float | None
    sample: float
    problems: list[Problem] = field(default_factory=list)
    files: int = 0
    hashed: int = 0
    bytes: int = 0
    resumed: int = 0
    elsewhere: int = 0  # records of files held at other sites, looked for there
    walked: int = 0  # entries of the datastore seen by the walk
    moved: list[Moved] = field(default_factory=list)
    started: float = 0.0
    note: str = ""  # about what was covered, for the report

    def counts(self) -> dict[str, int]:
        return {kind: sum(p.kind == kind for p in self.problems) for kind in KINDS}

    @property
    def ok(self) -> bool:
        return not self.problems


def run_audit(butler: Butler, spec: AuditSpec, phases: Phases | None = None) -> AuditResult:
    """Audit ``butler``'s repository as ``spec`` says; see the module's docstring."""
    registry, root = butler.registry, butler.datastore.root
    reads = AuditReads(registry.db)
    notes = Notes(root, spec.selection)
    standing = None if spec.restart else notes.read()
    resumed = standing is not None
    if standing is None:
        standing = Standing(spec.since, secrets.randbits(63), time.time())
        notes.start(standing)
    scope = Scope(standing.since, spec.ids, spec.sample, standing.seed)
    result = AuditResult(registry.site, scope.since, spec.sample, started=standing.started)
    log = registry.log.start(LogEntry(
        "audit", registry.site, registry.site,
        spec.selection | {"since_time": scope.since, "quarantine": spec.quarantine},
        started=standing.started))
    try:
        _check(reads, str(root), scope, spec, notes, standing if resumed else None, phases,
               result)
        _look_elsewhere(reads, scope, spec, phases, result)
        with sync_lock(root, registry.site, spec.wait):
            unheld = [p for p in result.problems if p.kind == "unheld"]
            result.problems = confirm(reads, str(root), [
                p for p in result.problems if p.kind != "unheld"]) + unheld
            dark, result.walked = find_dark(root, reads, set(spec.own), spec.skipped)
            if spec.quarantine and dark:
                result.moved = quarantine(root, dark, reads)
        result.problems += [_dark(d, result.moved) for d in dark]
    except KeyboardInterrupt:
        log.result, log.message = "interrupted", "interrupted by the user"
        registry.log.finish(log)
        raise
    except BaseException as exc:
        log.result, log.message = "error", str(exc).splitlines()[0] if str(exc) else \
            type(exc).__name__
        registry.log.finish(log)
        raise
    _describe(butler, result)
    _finish(registry.log, log, result)
    notes.drop()
    return result


def _check(reads: AuditReads, root: str, scope: Scope, spec: AuditSpec, notes: Notes,
           standing: Standing | None, phases: Phases | None, result: AuditResult) -> None:
    files, nbytes = reads.totals(here=True, since=scope.since,
                                 after=standing.upto if standing else None, ids=scope.ids)
    progress = phases(f"audit {result.site}", files, nbytes) if phases else None
    scanned = scan(reads, root, scope, jobs=spec.jobs, notes=notes, standing=standing,
                   advance=progress.advance if progress else None)
    result.problems = scanned.problems
    result.files, result.hashed, result.bytes = scanned.files, scanned.hashed, scanned.bytes
    result.resumed = scanned.resumed


def _look_elsewhere(reads: AuditReads, scope: Scope, spec: AuditSpec,
                    phases: Phases | None, result: AuditResult) -> None:
    records = [r for page in reads.pages(here=False, since=scope.since) for r in page
               if scope.ids is None or r.dataset_id in scope.ids]
    result.elsewhere = len(records)
    if not records:
        return
    progress = phases("looking for files held elsewhere", len(records),
                      sum(r.size for r in records)) if phases else None
    by_id = {r.dataset_id: r for r in records}
    for dataset_id, findings in held_nowhere(
            records, spec.sites, result.site,
            progress.advance if progress else None).items():
        record = by_id[dataset_id]
        result.problems.append(Problem(
            "unheld", record.path, f"held at {record.held_at} by its record, and no site "
            f"holds it ({describe(findings)})", dataset_id, record.size))


def _dark(file: DarkFile, moved: list[Moved]) -> Problem:
    detail = "no record names it"
    for move in moved:
        if move.path == file.path:
            detail += f"; moved to {move.to}" if move.to else f"; left in place: {move.why}"
    return Problem("dark", file.path, detail, size=file.size)


def _describe(butler: Butler, result: AuditResult) -> None:
    """Each problem with its dataset (type, data ID, run), by path."""
    refs = butler.registry.datasets.get_many(
        {p.dataset_id for p in result.problems if p.dataset_id is not None})
    order = {kind: i for i, kind in enumerate(KINDS)}
    result.problems = sorted(
        (dataclasses.replace(p, dataset=refs.get(p.dataset_id)) for p in result.problems),
        key=lambda p: (order[p.kind], p.path))


def _finish(log, entry: LogEntry, result: AuditResult) -> None:
    counts = result.counts()
    entry.counts = {f"file {kind}": n for kind, n in counts.items() if n}
    quarantined = sum(m.to is not None for m in result.moved)
    if quarantined:
        entry.counts["file quarantined"] = quarantined
    entry.files, entry.bytes, entry.failures = result.files, result.bytes, len(result.problems)
    entry.result = "ok" if result.ok else "failed"
    entry.message = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    log.finish(entry)


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite registry URL (None for another database)."""
    prefix = "sqlite:///"
    return Path(url[len(prefix):]).resolve() if url.startswith(prefix) else None
