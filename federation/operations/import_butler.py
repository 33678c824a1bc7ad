"""`fed import-butler`: import an LSST butler (daf_butler) YAML export into a repository.

The export is read and checked whole (:mod:`federation.dafbutler.importer`), compared
with the repository (:mod:`federation.dafbutler.import_plan`), then written in one
transaction through the registry's own bulk APIs, which journal every change so that
``fed sync`` carries the imported data on. Files are staged (copied, moved, linked or
registered in place) and hashed (size, xxh3) before the transaction and renamed into
place inside it: an error anywhere leaves neither rows nor files behind.

Dataset UUIDs are kept. Times (record time spans, validity ranges) are daf_butler's
TAI nanoseconds, stored as they are (a daf_butler universe's convention).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from federation.butler import Butler
from federation.dafbutler.import_plan import plan_import
from federation.dafbutler.importer import (
    ButlerExport,
    Conflict,
    ImportPlan,
    NewDataset,
    read_export,
)
from federation.datastore.posix import TRANSFER_MODES, PosixDatastore, StagedFile, placing
from federation.datastore.storage_classes import get_storage_class
from federation.dimensions.daf_butler import NAMESPACE
from federation.errors import ConfigError, ConflictError, InputError
from federation.model import DatasetRef, StoredFile
from federation.registry.sync_log import LogEntry

Progress = Callable[[int], None] | None
ON_CONFLICT = ("fail", "skip")


@dataclass
class ImportButlerReport:
    """What an import wrote (counts of new items), what was there already, what it left."""

    repo: Path
    export: Path
    records: int = 0
    dataset_types: int = 0
    collections: int = 0
    datasets: int = 0
    files: int = 0
    bytes: int = 0
    tags: int = 0  # datasets newly tagged
    certifications: int = 0  # datasets newly certified
    chains: int = 0  # chains defined
    present: int = 0  # items already in the repository as the export gives them
    conflicts: list[Conflict] = field(default_factory=list)  # skipped (on_conflict skip)
    dataset_ids: list[uuid.UUID] = field(default_factory=list)  # of the new datasets

    @property
    def new(self) -> int:
        """Everything newly written; 0 when the export was imported before."""
        return (self.records + self.dataset_types + self.collections + self.datasets
                + self.tags + self.certifications + self.chains)

    @property
    def skipped(self) -> int:
        return len(self.conflicts)


def import_butler(repo: Path, export: Path, *, files_from: Path | None = None,
                  transfer: str = "copy", on_conflict: str = "fail",
                  progress: Progress = None) -> ImportButlerReport:
    """Import a daf_butler export into ``repo``; files are read from ``files_from``
    (default: the export file's directory) at each dataset's ``path``.

    ``on_conflict``: ``fail`` (any difference from the repository is a ConflictError
    and nothing is written) or ``skip`` (differing items are left as they are and
    listed in the report). ``progress`` is called with 1 for each file brought in.
    """
    if transfer not in TRANSFER_MODES:
        raise InputError(f"unknown transfer mode {transfer!r}; use one of "
                         f"{', '.join(TRANSFER_MODES)}")
    if on_conflict not in ON_CONFLICT:
        raise InputError(f"--on-conflict must be one of {', '.join(ON_CONFLICT)}, "
                         f"not {on_conflict!r}")
    export = Path(export)
    files_from = Path(files_from) if files_from is not None else export.absolute().parent
    if not files_from.is_dir():
        raise InputError(f"--files-from {files_from} is not a directory")
    parsed = read_export(export)
    with Butler(repo) as butler:
        check_universe(butler, parsed, repo)
        templates = butler.config.templates or {}
        templated = None if "default" in templates else set(templates)
        plan = plan_import(butler.registry, butler.datastore, parsed, files_from=files_from,
                           transfer=transfer, templated=templated)
        if plan.conflicts and on_conflict == "fail":
            first = plan.conflicts[0]
            more = f" (and {len(plan.conflicts) - 1} more)" if len(plan.conflicts) > 1 else ""
            raise ConflictError(f"{export}: {len(plan.conflicts)} conflict(s) with the "
                                f"repository, nothing imported: {first}{more}; "
                                "--on-conflict skip imports the rest")
        report = ImportButlerReport(Path(repo), export, present=plan.present,
                                    conflicts=plan.conflicts)
        if plan.new_items:
            _logged(butler, export, report, lambda: _write(butler, plan, transfer, report,
                                                           progress))
    return report


def check_universe(butler: Butler, export: ButlerExport, repo: Path) -> None:
    """The repository must have the export's universe (namespace and version)."""
    universe = butler.registry.universe
    wanted = export.universe_namespace
    version = export.universe_version
    choice = f"{NAMESPACE}:{version}" if version is not None else NAMESPACE
    if universe.namespace != NAMESPACE or wanted != NAMESPACE:
        raise ConfigError(
            f"{export.source} is in universe {wanted}:{version}, but repository {repo} has "
            f"universe {universe.namespace}:{universe.version}; a daf_butler export needs a "
            f"repository made with `fed create REPO --universe {choice}`")
    if version is not None and universe.version != version:
        raise ConfigError(
            f"{export.source} is in daf_butler universe version {version}, but repository "
            f"{repo} has version {universe.version}; import it into a repository made with "
            f"`fed create REPO --universe {choice}`")


def _logged(butler: Butler, export: Path, report: ImportButlerReport,
            work: Callable[[], None]) -> None:
    """Run ``work`` with a sync log entry (operation ``import-butler``)."""
    log = butler.registry.log
    entry = log.start(LogEntry("import-butler", "daf_butler", butler.site,
                               {"export": str(export)}, started=time.time()))
    try:
        work()
    except BaseException as exc:
        entry.result = "error"
        entry.message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.finish(entry)
        raise
    entry.counts = {"records": report.records, "dataset_types": report.dataset_types,
                    "collections": report.collections, "datasets": report.datasets,
                    "tags": report.tags, "certifications": report.certifications}
    entry.files, entry.bytes, entry.conflicts = report.files, report.bytes, report.skipped
    entry.result = "conflict" if report.conflicts else "ok"
    log.finish(entry)


class _ExportPaths(PosixDatastore):
    """The repository's datastore, placing each imported file at the path the export
    gives it (datasets not in ``paths`` go where the file templates say)."""

    def __init__(self, base: PosixDatastore, paths: dict[uuid.UUID, str]) -> None:
        super().__init__(base.root, base.templates)
        self._paths = paths

    def _relative_path(self, ref: DatasetRef, extension: str) -> str:
        return self._paths.get(ref.id) or super()._relative_path(ref, extension)


def _stage(butler: Butler, datasets: list[NewDataset], transfer: str,
           progress: Progress) -> list[StagedFile]:
    """Bring every file in under a temporary name (hashing it on the way)."""
    datastore = _ExportPaths(butler.datastore,
                             {n.ref.id: n.path for n in datasets if n.path is not None})
    staged: list[StagedFile] = []
    try:
        for new in datasets:
            storage_class = get_storage_class(new.ref.dataset_type.storage_class)
            staged.append(datastore.stage_ingest(new.ref, new.source, storage_class, transfer))
            if progress is not None:
                progress(1)
    except BaseException:
        for item in staged:
            item.abort()
        raise
    return staged


def _write(butler: Butler, plan: ImportPlan, transfer: str, report: ImportButlerReport,
           progress: Progress) -> None:
    """Stage the files, then write everything in one transaction (all or nothing)."""
    registry = butler.registry
    staged = _stage(butler, plan.datasets, transfer, progress)
    with placing(staged) as commit_files, registry.transaction():
        for element, rows in plan.records.items():
            report.records += registry.dimensions.insert(element, rows)
        for dataset_type in plan.dataset_types:
            report.dataset_types += registry.dataset_types.register(dataset_type)
        for name, ctype, doc in plan.collections:
            report.collections += registry.collections.register(name, ctype, doc)
        by_run: dict[str, list[tuple[NewDataset, StoredFile]]] = {}
        for new, item in zip(plan.datasets, staged, strict=True):
            by_run.setdefault(new.ref.run, []).append((new, item.stored))
        for run, entries in by_run.items():
            registry.datasets.insert(run, [(n.ref, s) for n, s in entries],
                                     keys=[n.key for n, _ in entries])
        for name, children in plan.chains.items():
            registry.collections.set_chain(name, children)
        for tag, refs in plan.tags.items():
            report.tags += registry.datasets.associate(tag, refs)
        for (collection, span), refs in plan.certifications.items():
            report.certifications += registry.datasets.certify(collection, refs, span)
        commit_files()
    report.chains = len(plan.chains)
    report.datasets = report.files = len(plan.datasets)
    report.bytes = sum(item.stored.size for item in staged)
    report.dataset_ids = [n.ref.id for n in plan.datasets]
