"""Bundles: a sync written to a file, for sites that cannot see each other.

A bundle is JSON lines, gzip-compressed unless its name ends in ``.jsonl``:

1. a header: ``{"format": "federation-bundle", "version": 1, "source": ...,
   "from_seq": ..., "to_seq": ..., "selection": {...}, "created": ...,
   "snapshot": ...}``;
2. the states (:func:`~federation.sync.states.to_json`), each batch closed by
   ``{"kind": "batch_end", "upto": N}`` (``null`` inside a snapshot: the
   cursor only moves at the snapshot's last batch);
3. a manifest, one ``{"kind": "file", "id", "path", "size", "checksum"}`` per
   file the destination must fetch;
4. a trailer ``{"kind": "end", "lines": N, "sha256": ...}``: the number of
   lines before it and the SHA-256 of their uncompressed bytes.

An import validates the whole bundle before it writes anything, then applies
it like a sync, batch by batch, files coming from a directory (``--files-from``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

from federation.butler import Butler
from federation.datastore.checksum import file_checksum
from federation.errors import ChecksumError, ConfigError, FederationError, InputError
from federation.faults import checkpoint
from federation.sites import SiteDefinition
from federation.sync.applier import FILE_ACTIONS, Applier, carries_file
from federation.sync.cursors import read_cursor
from federation.sync.engine import SyncConflictError, open_site, sync_lock
from federation.sync.progress import Progress
from federation.sync.reader import SourceReader
from federation.sync.report import Report
from federation.sync.selection import Selection
from federation.sync.states import Batch, DatasetState, FileInfo, State, from_json, to_json
from federation.transport.base import TransportError, check_relative
from federation.transport.factory import transport_for
from federation.transport.local import LocalTransport

FORMAT = "federation-bundle"
VERSION = 1
GZIP_MAGIC = b"\x1f\x8b"


# -- reading -------------------------------------------------------------------


@dataclass(frozen=True)
class BundleHeader:
    version: int
    source: str
    from_seq: int
    to_seq: int
    selection: Selection
    created: str
    snapshot: bool

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": self.version, "source": self.source,
                "from_seq": self.from_seq, "to_seq": self.to_seq,
                "selection": self.selection.to_dict(), "created": self.created,
                "snapshot": self.snapshot}

    def describe(self) -> str:
        if self.snapshot:
            return f"snapshot of {self.source} up to journal entry {self.to_seq}"
        return f"{self.source} journal entries {self.from_seq + 1}..{self.to_seq}"


@dataclass(frozen=True)
class ManifestEntry:
    id: str
    path: str
    size: int
    checksum: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "file", "id": self.id, "path": self.path, "size": self.size,
                "checksum": self.checksum}


@dataclass
class BundleSummary:
    """What a full read of a bundle found; ``error`` is the first integrity failure."""

    path: Path
    compressed: bool
    header: BundleHeader | None = None
    counts: Counter = field(default_factory=Counter)
    batches: int = 0
    files: int = 0
    bytes: int = 0
    lines: int = 0
    sha256: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "compressed": self.compressed,
                "header": self.header.to_dict() if self.header else None,
                "records": dict(sorted(self.counts.items())), "batches": self.batches,
                "manifest": {"files": self.files, "bytes": self.bytes},
                "lines": self.lines, "sha256": self.sha256,
                "integrity": "ok" if self.error is None else self.error}


class Bundle:
    """A bundle file opened once; every pass reads the same open file from the start."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self._raw: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except FileNotFoundError:
            raise InputError(f"no bundle at {self.path}") from None
        except IsADirectoryError:
            raise InputError(f"{self.path} is a directory, not a bundle") from None
        except OSError as exc:
            raise InputError(f"cannot read bundle {self.path}: {exc.strerror}") from None
        self.compressed = self._raw.read(2) == GZIP_MAGIC
        self.header: BundleHeader | None = None
        self.sha256: str | None = None  # of the lines before the manifest, once validated

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._raw.close()

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        """(line number, raw bytes with newline); damaged compression is an InputError."""
        self._raw.seek(0)
        stream: IO[bytes] = gzip.GzipFile(fileobj=self._raw, mode="rb") if self.compressed \
            else self._raw
        lineno = 0
        try:
            for raw in stream:
                lineno += 1
                yield lineno, raw
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise InputError(f"bundle {self.path} is truncated or corrupt after line {lineno} "
                             f"({exc})") from None

    def _error(self, lineno: int, message: str) -> InputError:
        return InputError(f"bundle {self.path}, line {lineno}: {message}")

    def _decode(self, lineno: int, raw: bytes) -> Any:
        if not raw.endswith(b"\n"):
            raise self._error(lineno, "line is cut short (truncated bundle?)")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._error(lineno, f"not valid JSON ({exc})") from None

    # -- validation ------------------------------------------------------------

    def scan(self, summary: BundleSummary | None = None,
             on_state: Callable[[State], None] | None = None) -> BundleSummary:
        """Read and check the whole bundle; InputError at the first problem.

        ``summary`` (if given) is filled as reading goes, so a caller can show
        what was read before a failure.
        """
        summary = summary or BundleSummary(self.path, self.compressed)
        digest = hashlib.sha256()
        count = 0
        trailer = None
        in_batch = False
        in_manifest = False
        wanted: dict[str, ManifestEntry] = {}  # datasets whose file the destination fetches
        listed: set[str] = set()
        for lineno, raw in self._lines():
            if trailer is not None:
                raise self._error(lineno, "data after the end trailer")
            data = self._decode(lineno, raw)
            if lineno == 1:
                self.header = summary.header = parse_header(data, self.path)
            elif isinstance(data, dict) and data.get("kind") == "end":
                trailer = data
                continue
            elif isinstance(data, dict) and data.get("kind") == "batch_end":
                if in_manifest:
                    raise self._error(lineno, "batch_end after the file manifest")
                upto = data.get("upto")
                if upto is not None and (not _is_int(upto) or upto < 0):
                    raise self._error(lineno, f"invalid batch_end upto {upto!r}")
                summary.batches += 1
                in_batch = False
            elif isinstance(data, dict) and data.get("kind") == "file":
                if not in_manifest:
                    self.sha256 = digest.hexdigest()
                in_manifest = True
                entry = self._manifest_entry(lineno, data)
                expected = wanted.get(entry.id)
                if expected is None or expected != entry:
                    raise self._error(lineno, f"manifest entry for {entry.id} does not match "
                                              "any dataset record in the bundle")
                listed.add(entry.id)
                summary.files += 1
                summary.bytes += entry.size
            else:
                if in_manifest:
                    raise self._error(lineno, "record after the file manifest")
                try:
                    state = from_json(data)
                except InputError as exc:
                    raise self._error(lineno, str(exc)) from None
                self._check_state(lineno, state, wanted)
                summary.counts[state.kind] += 1
                in_batch = True
                if on_state is not None:
                    on_state(state)
            digest.update(raw)
            count += 1
            summary.lines = count
        if self.header is None:
            raise InputError(f"bundle {self.path} is empty")
        if trailer is None:
            raise InputError(f"bundle {self.path} has no end trailer after line {count}: "
                             "it is truncated or incomplete")
        if in_batch:
            raise InputError(f"bundle {self.path}: the last batch has no batch_end")
        if not in_manifest:
            self.sha256 = digest.hexdigest()
        if trailer.get("lines") != count:
            raise InputError(f"bundle {self.path}: the trailer counts {trailer.get('lines')} "
                             f"lines but {count} were read")
        summary.sha256 = digest.hexdigest()
        if trailer.get("sha256") != summary.sha256:
            raise InputError(f"bundle {self.path}: SHA-256 mismatch, the bundle was altered or "
                             "damaged after it was written")
        missing = set(wanted) - listed
        if missing:
            raise InputError(f"bundle {self.path}: the manifest does not list the file of "
                             f"dataset {sorted(missing)[0]} ({len(missing)} missing)")
        return summary

    def validate(self) -> BundleSummary:
        summary = BundleSummary(self.path, self.compressed)
        return self.scan(summary)

    def _manifest_entry(self, lineno: int, data: dict[str, Any]) -> ManifestEntry:
        try:
            entry = ManifestEntry(str(uuid.UUID(data["id"])), data["path"], data["size"],
                                  data["checksum"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise self._error(lineno, "malformed file entry") from None
        if not isinstance(entry.path, str) or not _is_int(entry.size) or entry.size < 0 \
                or not isinstance(entry.checksum, str):
            raise self._error(lineno, "malformed file entry")
        self._check_path(lineno, entry.path)
        return entry

    def _check_path(self, lineno: int, path: str) -> None:
        try:
            check_relative(path)
        except TransportError as exc:
            raise self._error(lineno, str(exc)) from None

    def _check_state(self, lineno: int, state: State,
                     wanted: dict[str, ManifestEntry]) -> None:
        if not isinstance(state, DatasetState):
            return
        try:
            uuid.UUID(state.id)
        except (ValueError, TypeError, AttributeError):
            raise self._error(lineno, f"invalid dataset id {state.id!r}") from None
        if state.file is None:
            return
        info = state.file
        if not isinstance(info.path, str) or not _is_int(info.size) or \
                not isinstance(info.checksum, str):
            raise self._error(lineno, f"malformed file of dataset {state.id}")
        assert self.header is not None
        if carries_file(state, self.header.selection):
            self._check_path(lineno, info.path)  # the importer reads it from --files-from
            wanted[state.id] = ManifestEntry(state.id, info.path, info.size, info.checksum)
        elif not os.path.isabs(info.path):
            self._check_path(lineno, info.path)

    # -- batches ---------------------------------------------------------------

    def batches(self) -> Iterator[tuple[Batch, int | None]]:
        """(batch, cursor position after it or None); only after :meth:`validate`."""
        states: list[State] = []
        digest = hashlib.sha256()
        for lineno, raw in self._lines():
            if lineno == 1:
                digest.update(raw)
                continue
            data = self._decode(lineno, raw)
            kind = data.get("kind") if isinstance(data, dict) else None
            if kind in ("file", "end"):
                break
            digest.update(raw)
            if kind == "batch_end":
                upto = data.get("upto")
                yield Batch(states, upto or 0), upto
                states = []
            else:
                states.append(from_json(data))
        if digest.hexdigest() != self.sha256:  # compares what was read up to the manifest
            raise InputError(f"bundle {self.path} changed while it was being imported")

    def records(self) -> Iterator[bytes]:
        """The raw state lines, for `fed bundle show --records`."""
        for lineno, raw in self._lines():
            if lineno > 1:
                data = self._decode(lineno, raw)
                if isinstance(data, dict) and data.get("kind") in ("file", "end"):
                    return
                if isinstance(data, dict) and data.get("kind") != "batch_end":
                    yield raw


def parse_header(data: Any, path: Path) -> BundleHeader:
    """The first line; a bundle of a newer format is refused naming both versions."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path} is not a federation bundle (no {FORMAT} header)")
    version = data.get("version")
    if not _is_int(version) or version < 1:
        raise InputError(f"{path}: invalid bundle format version {version!r}")
    if version > VERSION:
        raise InputError(f"{path} is a version {version} bundle; this federation reads bundle "
                         f"version {VERSION} only: upgrade federation to import it")
    source = data.get("source")
    from_seq, to_seq = data.get("from_seq"), data.get("to_seq")
    if not isinstance(source, str) or not source:
        raise InputError(f"{path}: the header names no source site")
    if not _is_int(from_seq) or not _is_int(to_seq) or not 0 <= from_seq <= to_seq:
        raise InputError(f"{path}: invalid journal range {from_seq!r}..{to_seq!r} in header")
    if not isinstance(data.get("snapshot"), bool):
        raise InputError(f"{path}: the header does not say whether it is a snapshot")
    selection = Selection.from_dict(data.get("selection"))
    return BundleHeader(version, source, from_seq, to_seq, selection,
                        str(data.get("created", "")), data["snapshot"])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- writing -------------------------------------------------------------------


@dataclass
class ExportResult:
    path: Path
    header: BundleHeader
    counts: Counter = field(default_factory=Counter)
    batches: int = 0
    files: int = 0
    bytes: int = 0
    copied: int = 0
    #: each listed file, with where the source holds it
    manifest: list[tuple[ManifestEntry, str]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "header": self.header.to_dict(),
                "records": dict(sorted(self.counts.items())), "batches": self.batches,
                "manifest": {"files": self.files, "bytes": self.bytes},
                "files_copied": self.copied}


class _Writer:
    """JSON lines to a temporary file, hashing every line, renamed into place at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.temp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
        self.compress = not path.name.endswith(".jsonl")
        try:
            self._raw = open(self.temp, "wb")  # noqa: SIM115 - closed in finish()/abort()
        except OSError as exc:
            raise InputError(f"cannot write bundle {path}: {exc.strerror}") from None
        self._out: IO[bytes] = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw,
                                             mtime=0) if self.compress else self._raw
        self.digest = hashlib.sha256()
        self.lines = 0

    def write(self, data: dict[str, Any]) -> None:
        raw = (json.dumps(data, separators=(",", ":"), ensure_ascii=False,
                          default=_not_json) + "\n").encode()
        self._out.write(raw)
        self.digest.update(raw)
        self.lines += 1

    def finish(self) -> None:
        end = {"kind": "end", "lines": self.lines, "sha256": self.digest.hexdigest()}
        self._out.write((json.dumps(end, separators=(",", ":")) + "\n").encode())
        if self.compress:
            self._out.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self.temp, self.path)

    def abort(self) -> None:
        try:
            if self.compress:
                self._out.close()
            self._raw.close()
        finally:
            self.temp.unlink(missing_ok=True)


def _not_json(value: Any) -> Any:
    raise InputError(f"cannot write {type(value).__name__} value {value!r} to a bundle")


def parse_since(value: str | int) -> int:
    """``--since``: a journal sequence number, 0 or ``snapshot`` for a snapshot."""
    if isinstance(value, str) and value.strip().lower() == "snapshot":
        return 0
    try:
        since = int(value)
    except (TypeError, ValueError):
        raise InputError(f"--since must be a journal entry number or 'snapshot', "
                         f"not {value!r}") from None
    if since < 0:
        raise InputError(f"--since must not be negative, not {since}")
    return since


def export_bundle(source: SiteDefinition, output: str | os.PathLike, *, since: int,
                  selection: Selection, with_files: str | os.PathLike | None = None,
                  butler: Butler | None = None) -> ExportResult:
    """Write the states of ``source`` after journal entry ``since`` (0: a snapshot).

    ``butler``: ``source``'s repository when the caller has it open already.
    """
    output = Path(output)
    if not output.parent.is_dir():
        raise InputError(f"cannot write bundle {output}: no directory {output.parent}")
    if output.is_dir():
        raise InputError(f"cannot write bundle {output}: it is a directory")
    files_dir = Path(with_files) if with_files is not None else None
    if files_dir is not None and not selection.files:
        raise InputError("--with-files copies files, but the selection is --no-files")
    with nullcontext(butler) if butler is not None else open_site(source) as src:
        reader = SourceReader(src.registry, selection)
        with reader.window() as upto:
            return _export(reader, source, output, since, upto, selection, files_dir)


def _export(reader: SourceReader, source: SiteDefinition, output: Path, since: int, upto: int,
            selection: Selection, files_dir: Path | None) -> ExportResult:
    """The bundle of one window of ``source``."""
    if since > upto:
        raise InputError(f"--since {since} is beyond {source.name}'s journal, which ends "
                         f"at entry {upto}")
    header = BundleHeader(VERSION, source.name, since, upto, selection,
                          datetime.now(UTC).isoformat(timespec="seconds"), since == 0)
    copier = _FileCopier(source, files_dir) if files_dir else None
    result = ExportResult(output, header)
    writer = _Writer(output)
    try:
        writer.write(header.to_dict())
        manifest: dict[str, tuple[ManifestEntry, str]] = {}
        for batch, mark in _source_batches(reader, since, upto):
            for state in batch.states:
                state, original = _portable(state, selection)
                writer.write(to_json(state))
                result.counts[state.kind] += 1
                if isinstance(state, DatasetState) and carries_file(state, selection) \
                        and state.id not in manifest:
                    info = state.file
                    manifest[state.id] = (ManifestEntry(state.id, info.path, info.size,
                                                        info.checksum), original)
            writer.write({"kind": "batch_end", "upto": mark})
            result.batches += 1
            checkpoint("export batch written")
        result.manifest = list(manifest.values())
        for entry, original in result.manifest:
            writer.write(entry.to_dict())
            result.files += 1
            result.bytes += entry.size
            if copier is not None:
                result.copied += copier.copy(entry, original)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    return result


def _source_batches(reader: SourceReader, since: int, upto: int
                    ) -> Iterator[tuple[Batch, int | None]]:
    if since == 0:
        for batch in reader.snapshot():
            yield batch, None
        yield Batch([], upto), upto
    else:
        for batch in reader.journal(since, upto):
            yield batch, batch.upto


def _portable(state: State, selection: Selection) -> tuple[State, str]:
    """A state whose transferable file has a relative path (in-place ingests get the
    path an Applier would give them); returns the state and the source's own path."""
    if not isinstance(state, DatasetState) or not carries_file(state, selection):
        return state, ""
    info = state.file
    if not os.path.isabs(info.path):
        return state, info.path
    relative = f"{state.run}/_external/{state.id}{Path(info.path).suffix}"
    moved = DatasetState(state.id, state.dataset_type, state.run, state.data_id,
                         FileInfo(relative, info.formatter, info.size, info.checksum),
                         state.held_at)
    return moved, info.path


class _FileCopier:
    """``--with-files``: each listed file copied from the source, verified, renamed."""

    def __init__(self, source: SiteDefinition, root: Path) -> None:
        if root.exists() and not root.is_dir():
            raise InputError(f"--with-files {root} is not a directory")
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()
        self.transport = transport_for(source)
        self.source = source.name

    def copy(self, entry: ManifestEntry, original: str) -> int:
        final = self.root.joinpath(*check_relative(entry.path).split("/"))
        if final.is_file() and file_checksum(final) == (entry.size, entry.checksum):
            return 0
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:12]}")
        try:
            self.transport.get(original, temp)
            size, checksum = file_checksum(temp)
            if (size, checksum) != (entry.size, entry.checksum):
                raise ChecksumError(
                    f"{original} at {self.source} does not match its record (size {size} vs "
                    f"{entry.size}, checksum {checksum} vs {entry.checksum}); export stopped")
            os.replace(temp, final)
        finally:
            temp.unlink(missing_ok=True)
        return 1


# -- importing -----------------------------------------------------------------


def check_cursor(header: BundleHeader, cursor: int | None, destination: str) -> None:
    """A journal bundle must start at or before what the destination already has."""
    if header.snapshot:
        return
    if cursor is None:
        raise InputError(f"{destination} has never synced {header.source} with this "
                         f"selection, and this bundle starts after journal entry "
                         f"{header.from_seq}: export a snapshot (fed export {header.source} "
                         f"--since 0)")
    if header.from_seq > cursor:
        raise InputError(f"this bundle starts after {header.source} journal entry "
                         f"{header.from_seq}, but {destination} has {header.source} only up to "
                         f"entry {cursor}: export again with --since {cursor}")


def import_bundle(path: str | os.PathLike, destination: SiteDefinition, *,
                  files_from: str | os.PathLike | None = None, dry_run: bool = False,
                  on_conflict: str = "fail", jobs: int = 4,
                  sites: Sequence[SiteDefinition] = (), lock_timeout: float = 60.0,
                  progress: Progress | None = None) -> Report:
    """Validate a whole bundle, then apply it to ``destination`` as a sync would.

    Nothing is written unless the bundle is intact, continues the destination's
    cursor (or is a snapshot), and every file to fetch is in ``files_from``.
    """
    if on_conflict not in ("fail", "skip"):
        raise ConfigError(f"--on-conflict must be fail or skip, not {on_conflict!r}")
    if destination.read_only and not dry_run:
        raise ConfigError(f"site {destination.name} is read-only")
    with open_site(destination) as dst:
        with sync_lock(dst.config.root, destination.name, lock_timeout):
            return import_into(path, dst, files_from=files_from, dry_run=dry_run,
                               on_conflict=on_conflict, jobs=jobs, sites=sites,
                               keep_deleted=destination.keep_deleted, progress=progress)


def import_into(path: str | os.PathLike, dst: Butler, *,
                files_from: str | os.PathLike | None = None, dry_run: bool = False,
                on_conflict: str = "fail", jobs: int = 4,
                sites: Sequence[SiteDefinition] = (), keep_deleted: bool = False,
                expect_source: str | None = None,
                progress: Progress | None = None) -> Report:
    """:func:`import_bundle` into an open repository whose sync lock the caller holds."""
    with Bundle(path) as bundle:
        summary = bundle.validate()
        header = summary.header
        assert header is not None
        selection = header.selection
        if expect_source is not None and header.source != expect_source:
            raise InputError(f"bundle {bundle.path} comes from {header.source}, not from "
                             f"{expect_source}")
        if header.source == dst.site:
            raise ConfigError(f"this bundle comes from {dst.site} itself")
        transport = None
        if selection.files and summary.files:
            if files_from is None:
                raise InputError(f"the bundle lists {summary.files} file(s): give --files-from "
                                 "DIR (a directory from 'fed export --with-files', or the "
                                 f"{header.source} repository root), or export with --no-files")
            if not Path(files_from).is_dir():
                raise InputError(f"--files-from {files_from} is not a directory")
            transport = LocalTransport(files_from)
        cursor = read_cursor(dst, header.source, selection)
        check_cursor(header, cursor, dst.site)
        applier = Applier(dst, header.source, selection, sites=sites,
                          keep_deleted=keep_deleted, transport=transport,
                          jobs=jobs, progress=progress)
        return _apply(bundle, header, dst, applier, cursor, dry_run, on_conflict)


def _apply(bundle: Bundle, header: BundleHeader, dst, applier: Applier, cursor: int | None,
           dry_run: bool, on_conflict: str) -> Report:
    planned = Report()
    needed: dict[str, FileInfo] = {}
    removed: dict[str, int] = {}
    for batch, _ in bundle.batches():
        plan = applier.plan(batch, removed)
        planned.add(plan)
        for state, action in plan.actions:
            if isinstance(state, DatasetState) and action in FILE_ACTIONS \
                    and carries_file(state, applier.selection):
                needed[state.id] = state.file
    _check_files(needed, applier, dst)
    if dry_run:
        planned.cursor = header.to_seq if cursor is None else max(cursor, header.to_seq)
        return planned
    if on_conflict == "fail" and planned.conflicts:
        raise SyncConflictError(planned)
    report = Report()
    for batch, upto in bundle.batches():
        advance = upto is not None and (cursor is None or upto > cursor)
        applier.apply(batch, cursor=(header.source, upto) if advance else None, report=report)
        if advance:
            cursor = upto
    report.cursor = cursor
    return report


def _check_files(needed: dict[str, FileInfo], applier: Applier, dst) -> None:
    """Every file to fetch is in --files-from with its size (or already in place)."""
    if not needed:
        return
    transport = applier.transport
    assert isinstance(transport, LocalTransport)
    missing: list[str] = []
    for info in needed.values():
        found = transport.stat(info.path)
        if found is not None and found.size == info.size:
            continue
        here = dst.datastore.safe_path(info.path)
        if here.is_file() and here.stat().st_size == info.size:
            continue
        missing.append(info.path if found is None else f"{info.path} (size {found.size}, "
                                                        f"expected {info.size})")
    if missing:
        raise InputError(f"{len(missing)} file(s) the bundle needs are missing from "
                         f"--files-from {transport.root}: {missing[0]}"
                         + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))


def inspect(path: str | os.PathLike) -> BundleSummary:
    """Read a bundle for `fed bundle show`: the summary, with ``error`` set if damaged.

    A file that is not a bundle at all (no readable header) is an InputError.
    """
    with Bundle(path) as bundle:
        summary = BundleSummary(bundle.path, bundle.compressed)
        try:
            bundle.scan(summary)
        except FederationError as exc:
            if summary.header is None:
                raise
            summary.error = str(exc)
    return summary


__all__ = ["FORMAT", "VERSION", "Bundle", "BundleHeader", "BundleSummary", "ExportResult",
           "ManifestEntry", "check_cursor", "export_bundle", "import_bundle", "import_into",
           "inspect", "parse_since"]
