"""Plan everything, then apply: the one sequence behind syncs, bundle imports, receives and
mirror refreshes.

The planning pass reads the batches once (inside the source's window), classifies
them and spools them to a file; nothing is written to the destination. A dry run
stops there, and so does ``--on-conflict fail`` when anything conflicts. The
applying pass then reads the spool back, so it applies exactly what was planned:
each batch is planned again against the destination as it now is, its files are
fetched and verified, and its records, retries and cursor are written in one
transaction.
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from federation.faults import checkpoint
from federation.registry.states import DatasetState
from federation.sync.applier import Applier, CursorMove
from federation.sync.batch import Batch, Marked
from federation.sync.fetcher import (
    Downloaded,
    Fetched,
    Fetcher,
    clear_staging,
    local_path,
    staging_of,
)
from federation.sync.options import SyncOptions
from federation.sync.planner import Planner
from federation.sync.progress import Progress
from federation.sync.report import Plan, Report, SyncConflictError

#: opens the batches of one operation: (the source journal position they reach, batches)
OpenBatches = Callable[[], AbstractContextManager[tuple[int, Marked]]]


@dataclass
class Target:
    """A destination ready to take batches from one source."""

    planner: Planner
    applier: Applier
    fetcher: Fetcher | None  # None: records only
    retry_key: str  # the selection whose failed files are retried
    cursor_after: Callable[[int], CursorMove | None]  # the cursor once a marked batch is in
    start: int | None = None  # the cursor before this operation
    #: checks, while planning, that the files a batch needs can be fetched (nothing is
    #: written when they cannot)
    check_files: Callable[[list[DatasetState]], None] | None = None


def drive(open_batches: OpenBatches, target: Target, options: SyncOptions,
          progress: Progress | None = None) -> Report:
    """Plan every batch, then (unless dry, or conflicting under ``fail``) apply them.

    While the batches are planned, the files they need are already downloaded into
    staging and verified (nothing is renamed into place before the applying pass).
    """
    progress = progress or Progress()
    butler = target.planner.butler
    if not options.dry_run:
        clear_staging(butler.datastore)
        butler.empty_trash()  # files a crashed run had removed the records of
    planner = target.planner
    planned = Report(cursor=target.start)
    files = nbytes = 0
    downloads = _Downloads(None if options.dry_run else target)
    try:
        with Spool(None if options.dry_run else staging_of(butler.datastore)) as spool:
            with open_batches() as (upto, batches):
                for index, (batch, mark) in enumerate(batches):
                    plan = planner.plan(batch, carry=True)
                    planned.add(plan)
                    needed = planner.files_needed(plan)
                    if target.check_files is not None and needed:
                        target.check_files(needed)
                    files += len(needed)
                    nbytes += sum(s.file.size for s in needed)
                    spool.write(batch, mark, plan)
                    downloads.submit(index, needed)
                    checkpoint("batch planned")
            planned.cursor = upto if target.start is None else max(upto, target.start)
            if options.dry_run:
                return planned
            if planned.conflicts and options.strict:
                raise SyncConflictError(planned)
            progress.planned(files, nbytes)
            checkpoint("sync planned")
            report = Report(cursor=target.start)
            _Applying(target, options, report, downloads).run(spool.read())
    except KeyboardInterrupt:
        raise  # what arrived stays in staging: the next run resumes it
    except BaseException:
        downloads.discard()  # refused or failed: nothing of this operation stays behind
        raise
    finally:
        downloads.close()
    report.cursor = planned.cursor
    return report


class _Downloads:
    """Files downloaded into staging while the batches are planned, a batch at a time in
    the background. Planning waits when :attr:`QUEUED` files wait for download (the
    states they belong to are held in memory meanwhile)."""

    QUEUED = 20_000

    def __init__(self, target: Target | None) -> None:
        self.fetcher = target.fetcher if target is not None else None
        self.replica = target.planner.replica if target is not None else None
        self.pool = ThreadPoolExecutor(1) if self.fetcher is not None else None
        self.pending: dict[int, Future] = {}
        self.sizes: dict[int, int] = {}
        self.submitted: list[str] = []  # the datasets whose files were asked for

    def submit(self, index: int, states: list[DatasetState]) -> None:
        if self.pool is None or not states:
            return
        in_use = self.replica.paths_in_use(local_path(s) for s in states)
        self.pending[index] = self.pool.submit(self.fetcher.download, states, in_use)
        self.submitted.extend(s.id for s in states)
        self.sizes[index] = len(states)
        for queued in list(self.pending):  # the oldest first: the pool has one worker
            if sum(n for i, n in self.sizes.items() if not self.pending[i].done()) \
                    <= self.QUEUED:
                break
            self.pending[queued].result()

    def take(self, index: int) -> Downloaded | None:
        self.sizes.pop(index, None)
        found = self.pending.pop(index, None)
        return None if found is None else found.result()

    def discard(self) -> None:
        """Stop, and drop from staging whatever this operation downloaded."""
        self.close()
        if self.fetcher is not None:
            self.fetcher.discard(self.submitted)

    def close(self) -> None:
        if self.pool is not None:
            for future in self.pending.values():
                future.cancel()
            self.fetcher.stop()  # transfers still running end at their next chunk
            self.pool.shutdown(wait=True)


class _Applying:
    """The applying pass: batches in order, each one's downloaded files renamed into place
    while the one before it is written.

    A batch is applied as it was planned unless the destination changed meanwhile
    (another writer: its journal moved on), it holds memberships (whose datasets
    earlier batches bring, or fail to), or earlier batches may have brought some of
    its objects already: then it is planned again first, and under ``fail`` a new
    conflict stops the operation.
    """

    def __init__(self, target: Target, options: SyncOptions, report: Report,
                 downloads: _Downloads) -> None:
        self.target = target
        self.options = options
        self.report = report
        self.downloads = downloads
        self.registry = target.planner.registry
        self.head = self.registry.db.last_seq()

    def run(self, items: Iterator[tuple[Batch, int | None, Plan]]) -> None:
        self.target.planner.removed.clear()  # from now on, batches are applied in order
        with ThreadPoolExecutor(1) as background:
            try:
                self._run(items, background)
            except BaseException:
                # Ctrl-C or an error: stop the transfers first, or leaving this block would
                # wait for the placement under way, and it for its download to finish.
                self.downloads.close()
                raise

    def _run(self, items: Iterator[tuple[Batch, int | None, Plan]],
             background: ThreadPoolExecutor) -> None:
        planner = self.target.planner
        ahead: Future | None = None
        index, item = 0, next(items, None)
        while item is not None:
            batch, mark, plan = item
            item = next(items, None)
            if batch.repeats or batch.has_memberships \
                    or self.registry.db.last_seq() != self.head:
                plan = planner.plan(batch)
                if plan.conflicts and self.options.strict:
                    found = Report()
                    found.add(plan)
                    raise SyncConflictError(found)
            placed = ahead.result() if ahead is not None else self._place(index, None)
            fetched = self._complete(placed, planner.files_needed(plan))
            ahead = None
            if item is not None:  # the next batch's files go into place meanwhile
                wanted = {s.id for s in planner.files_needed(item[2])}
                ahead = background.submit(self._place, index + 1, wanted)
            checkpoint("files fetched")
            self._write(plan, mark, fetched)
            index += 1

    def _place(self, index: int, wanted: set[str] | None) -> Fetched:
        downloaded = self.downloads.take(index)
        if downloaded is None or self.target.fetcher is None:
            return Fetched()
        return self.target.fetcher.place(downloaded, wanted)

    def _complete(self, fetched: Fetched, needed: list[DatasetState]) -> Fetched:
        """What this batch needs of what is in place already, and the rest fetched now."""
        wanted = {s.id for s in needed}
        result = Fetched({i: p for i, p in fetched.arrived.items() if i in wanted},
                         {i: f for i, f in fetched.failed.items() if i in wanted})
        result.files = len(result.arrived)
        result.bytes = sum(s.file.size for s in needed if s.id in result.arrived)
        missing = [s for s in needed if s.id not in result.arrived and s.id not in result.failed]
        fetcher = self.target.fetcher
        if missing and fetcher is not None:
            in_use = self.target.planner.replica.paths_in_use(local_path(s) for s in missing)
            more = fetcher.fetch(missing, in_use)
            result.arrived.update(more.arrived)
            result.failed.update(more.failed)
            result.files += more.files
            result.bytes += more.bytes
        return result

    def _write(self, plan: Plan, mark: int | None, fetched: Fetched) -> None:
        target, report = self.target, self.report
        cursor = target.cursor_after(mark) if mark is not None else None
        self.head = target.applier.apply(plan, fetched, retry_key=target.retry_key,
                                         cursor=cursor)
        report.add(plan, set(fetched.failed))
        report.files += len(fetched.arrived)
        report.bytes += fetched.bytes
        known = report.failed_ids
        report.failed.extend((i, path, reason) for i, (path, reason) in fetched.failed.items()
                             if i not in known)


class Spool:
    """Batches written once and read back: a pickle file in staging (this process wrote it,
    and staging is cleared at the start of every sync), or nothing for a dry run."""

    def __init__(self, folder: Path | None) -> None:
        self.path = None if folder is None else folder / f"spool-{uuid.uuid4().hex}.pickle"
        self._file = None

    def __enter__(self) -> Spool:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w+b")  # noqa: SIM115 - closed in __exit__
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self.path.unlink(missing_ok=True)

    def write(self, batch: Batch, mark: int | None, plan: Plan) -> None:
        if self._file is not None:
            pickle.dump((batch, mark, plan), self._file, protocol=pickle.HIGHEST_PROTOCOL)

    def read(self) -> Iterator[tuple[Batch, int | None, Plan]]:
        self._file.flush()
        self._file.seek(0)
        while True:
            try:
                yield pickle.load(self._file)
            except EOFError:
                return
