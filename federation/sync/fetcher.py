"""Bringing files into a datastore: downloaded to staging, verified, renamed into place.

A file is fetched through a :class:`~federation.transport.base.Transport` into
``.federation-staging/`` inside the datastore, its size and xxh3-128 checked
against the record, and only then renamed to its final path. A file already in
place and matching is not fetched again; a path holding another dataset's file
is never touched. Partial downloads stay in staging for the next run to resume.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from federation.datastore.checksum import file_checksum, mismatch
from federation.datastore.posix import PosixDatastore
from federation.errors import ChecksumError, FederationError
from federation.faults import checkpoint
from federation.registry.states import DatasetState
from federation.sync.progress import Progress
from federation.transport.base import FetchRequest, Transport, TransportError, check_relative

STAGING = ".federation-staging"
BATCH_FILE = 256 << 10  # files up to this size travel in groups (see Transport.batches)
GROUP = 500  # files per group: bounds what one failed stream has to redo


@dataclass
class Fetched:
    """Files in place: datastore paths by dataset id, failures with their reason."""

    arrived: dict[str, str] = field(default_factory=dict)
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (path, reason)
    files: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class Staged:
    """A file downloaded and verified, waiting in staging to be renamed into place."""

    relative: str  # its datastore path here
    final: str
    temp: Path | None  # None: the file is in place already (an earlier run brought it)
    size: int


@dataclass
class Downloaded:
    """What :meth:`Fetcher.download` brought into staging."""

    staged: dict[str, Staged] = field(default_factory=dict)
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)


class Fetcher:
    """Fetches datasets' files from one source into one datastore."""

    def __init__(self, datastore: PosixDatastore, transport: Transport, source: str, *,
                 jobs: int | None = None, progress: Progress | None = None) -> None:
        self.datastore = datastore
        self.transport = transport
        self.source = source
        self.jobs = max(1, jobs or transport.parallel)
        self.progress = progress or Progress()
        self._root = str(datastore.root)
        self._staging = str(staging_of(datastore))
        self._made_dirs: set[str] = set()
        self._stopped = threading.Event()

    def stop(self) -> None:
        """Stop the transfers under way at their next chunk (Ctrl-C): what arrived stays
        in staging, for the next run to resume."""
        self._stopped.set()

    @property
    def staging(self) -> Path:
        return staging_of(self.datastore)

    def fetch(self, states: Sequence[DatasetState], in_use: Iterable[str] = ()) -> Fetched:
        """Download, verify and rename into place the files of ``states``."""
        return self.place(self.download(states, in_use))

    def download(self, states: Sequence[DatasetState], in_use: Iterable[str] = ()
                 ) -> Downloaded:
        """Bring the files of ``states`` into staging, each checked against its record;
        ``in_use``: datastore paths holding other datasets' files (a file that would
        arrive there gets a path of its own).

        Small files go in groups when the transport moves a group faster than one
        file at a time (SFTP streams them); the rest go one by one.
        """
        result = Downloaded()
        if not states:
            return result
        in_use = set(in_use)
        if self._staging not in self._made_dirs:
            os.makedirs(self._staging, exist_ok=True)
            self._made_dirs.add(self._staging)
        small = [s for s in states if s.file.size <= BATCH_FILE]
        large = [[s] for s in states if s.file.size > BATCH_FILE]
        run = self._group if self.transport.batches else self._each
        with ThreadPoolExecutor(self.jobs) as pool:
            tasks = [pool.submit(run, group, in_use) for group in _groups(small, self.jobs)]
            tasks += [pool.submit(self._each, group, in_use) for group in large]
            for task in as_completed(tasks):
                done = task.result()
                for state, staged, error in done:
                    if staged is not None:
                        result.staged[state.id] = staged
                    else:
                        result.failed[state.id] = (state.file.path, error or "")
                self.progress.advance(len(done), 0)
        return result

    def place(self, downloaded: Downloaded, wanted: set[str] | None = None) -> Fetched:
        """Rename the downloaded files into place (those of ``wanted`` datasets; the others'
        downloads are dropped)."""
        result = Fetched(failed={i: f for i, f in downloaded.failed.items()
                                 if wanted is None or i in wanted})
        if self._stopped.is_set():
            return result  # interrupted: complete downloads wait in staging for the next run
        for dataset_id, staged in downloaded.staged.items():
            if wanted is not None and dataset_id not in wanted:
                if staged.temp is not None:
                    staged.temp.unlink(missing_ok=True)
                continue
            try:
                if staged.temp is not None:
                    parent = os.path.dirname(staged.final)
                    if parent not in self._made_dirs:
                        os.makedirs(parent, exist_ok=True)
                        self._made_dirs.add(parent)
                    os.replace(staged.temp, staged.final)
                    checkpoint("file renamed")
            except OSError as exc:
                result.failed[dataset_id] = (staged.relative, f"{exc.strerror or exc}")
                continue
            result.arrived[dataset_id] = staged.relative
            result.files += 1
            result.bytes += staged.size
        return result

    def discard(self, dataset_ids: Iterable[str]) -> None:
        """Remove these datasets' downloads, complete or partial, from staging."""
        for dataset_id in dataset_ids:
            for suffix in (".part", ".part.etag"):
                with contextlib.suppress(OSError):
                    os.unlink(f"{self._staging}/{dataset_id}{suffix}")

    def _each(self, group: list[DatasetState], in_use: set[str]) -> list[_Outcome]:
        """Files one after the other (a transport gains nothing from grouping them)."""
        return [self._one(state, in_use) for state in group]

    def _one(self, state: DatasetState, in_use: set[str]) -> _Outcome:
        try:
            relative, final, temp = self._prepare(state, in_use)
            if temp is None:
                return state, Staged(relative, final, None, state.file.size), None
            info = state.file
            try:
                got = self.transport.fetch(info.path, temp, resume=True,
                                           on_bytes=self._on_bytes, size=info.size)
            except (TransportError, KeyboardInterrupt):
                raise  # a partial download stays in staging: the next run resumes it
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            self._verify(state, temp, got)
            return state, Staged(relative, final, temp, info.size), None
        except FederationError as exc:
            return state, None, str(exc)
        except OSError as exc:
            return state, None, f"{exc.strerror or exc}"

    def _group(self, group: list[DatasetState], in_use: set[str]) -> list[_Outcome]:
        """Several small files through one :meth:`Transport.fetch_many` call."""
        results: list[_Outcome] = []
        wanted: dict[FetchRequest, tuple[DatasetState, str, str]] = {}
        for state in group:
            try:
                relative, final, temp = self._prepare(state, in_use)
            except (FederationError, OSError) as exc:
                results.append((state, None, str(exc)))
                continue
            if temp is None:
                results.append((state, Staged(relative, final, None, state.file.size), None))
            else:
                wanted[FetchRequest(state.file.path, temp, state.file.size)] = \
                    (state, relative, final)
        for request, outcome in self.transport.fetch_many(list(wanted), on_bytes=self._on_bytes):
            state, relative, final = wanted[request]
            try:
                if isinstance(outcome, BaseException):
                    raise outcome
                self._verify(state, request.local, outcome)
                results.append((state, Staged(relative, final, request.local, state.file.size),
                                None))
            except FederationError as exc:
                results.append((state, None, str(exc)))
            except OSError as exc:
                results.append((state, None, f"{exc.strerror or exc}"))
        return results

    def _prepare(self, state: DatasetState, in_use: set[str]) -> tuple[str, str, Path | None]:
        """(datastore path, final file, staging file), the last None if the file is here."""
        info = state.file
        relative = local_path(state)
        if relative in in_use:
            # Another dataset's file (e.g. one this batch deletes): never touch it.
            stem, suffix = os.path.splitext(relative)
            relative = check_relative(f"{stem}-{state.id}{suffix}")
        final = os.path.join(self._root, relative)
        if os.path.exists(final) and file_checksum(final) == (info.size, info.checksum):
            return relative, final, None  # an earlier, interrupted run brought it
        return relative, final, Path(f"{self._staging}/{state.id}.part")

    def _verify(self, state: DatasetState, temp: Path, got: tuple[int, str]) -> None:
        """Check what arrived against the record (what an earlier run left may not be this
        file's start: then it is fetched whole once more)."""
        info = state.file
        try:
            if got != (info.size, info.checksum) and temp.exists():
                temp.unlink()
                got = self.transport.fetch(info.path, temp, on_bytes=self._on_bytes,
                                           size=info.size)
            problem = mismatch(got, (info.size, info.checksum))
            if problem:
                raise ChecksumError(f"{info.path} from {self.source} does not match its record "
                                    f"({problem}); not imported")
            checkpoint("file verified")
        except (TransportError, KeyboardInterrupt):
            raise  # kept: resumed (and verified) next time
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def _on_bytes(self, nbytes: int) -> None:
        if self._stopped.is_set():
            raise TransportError("stopped; the partial download is kept for the next run")
        self.progress.advance(0, nbytes)


_Outcome = tuple[DatasetState, Staged | None, str | None]


def local_path(state: DatasetState) -> str:
    """Where a dataset's file goes in the destination datastore: its path at the source,
    or, for a file the source ingested in place (absolute path), a home under its RUN."""
    path = state.file.path
    if os.path.isabs(path):
        return check_relative(f"{state.run}/_external/{state.id}{Path(path).suffix}")
    return check_relative(path)


def staging_of(datastore: PosixDatastore) -> Path:
    """Where downloads land before they are verified and renamed into place."""
    return datastore.root / STAGING


def clear_staging(datastore: PosixDatastore, keep_days: float = 7.0) -> None:
    """Drop what interrupted syncs left in staging (call under the sync lock).

    Partial downloads younger than ``keep_days`` stay, for the next transfer of the
    same dataset to resume; they are verified like any other download.
    """
    staging = staging_of(datastore)
    if not staging.is_dir():
        return
    cutoff = time.time() - keep_days * 86400
    for entry in staging.iterdir():
        try:
            if entry.suffix in (".part", ".etag") and entry.stat().st_mtime >= cutoff:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        except OSError:
            continue


def _groups(states: list[DatasetState], jobs: int) -> list[list[DatasetState]]:
    """Groups of at most GROUP files, at least ``jobs`` of them when there are enough."""
    if not states:
        return []
    size = max(1, min(GROUP, -(-len(states) // jobs)))
    return [states[i:i + size] for i in range(0, len(states), size)]
