"""Recording operations in the sync log of the repository they write to."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from federation.butler import Butler
from federation.registry.sync_log import LogEntry
from federation.sync.report import Report, SyncConflictError
from federation.sync.selection import Selection


@dataclass
class Logged:
    """An operation being logged; the caller hands it the report at the end."""

    entry: LogEntry
    report: Report | None = None


@contextmanager
def logged(butler: Butler, operation: str, source: str, destination: str, *,
           selection: Selection | None = None, cursor_from: int | None = None
           ) -> Iterator[Logged]:
    """Log an operation as running, then as it ended: ok, failed (files), conflict,
    interrupted or error (with the message); the error propagates."""
    log = butler.registry.log
    entry = log.start(LogEntry(operation, source, destination,
                               selection.to_dict() if selection else {},
                               cursor_from=cursor_from))
    record = Logged(entry)
    try:
        yield record
    except SyncConflictError as exc:
        _fill(entry, exc.report, "conflict")
        entry.cursor_to, entry.message = cursor_from, str(exc)
        log.finish(entry)
        raise
    except KeyboardInterrupt:
        entry.result, entry.message = "interrupted", "interrupted by the user"
        log.finish(entry)
        raise
    except BaseException as exc:
        entry.result, entry.message = "error", str(exc).splitlines()[0] if str(exc) else \
            type(exc).__name__
        log.finish(entry)
        raise
    report = record.report or Report()
    _fill(entry, report, "failed" if report.failed else "ok")
    if report.failed:
        dataset_id, path, reason = report.failed[0]
        entry.message = f"{len(report.failed)} file(s) failed, first {path}: {reason}"
    log.finish(entry)


def _fill(entry: LogEntry, report: Report, result: str) -> None:
    entry.result = result
    entry.counts = dict(report.counts)
    entry.files, entry.bytes = report.files, report.bytes
    entry.conflicts, entry.failures = report.conflict_count, len(report.failed)
    entry.cursor_to = report.cursor
