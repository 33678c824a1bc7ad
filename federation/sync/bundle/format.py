"""The bundle file format: reading and checking a bundle whole, and writing one.

A bundle is JSON lines, gzip-compressed unless its name ends in ``.jsonl``:

1. a header: ``{"format": "federation-bundle", "version": 1, "source": ...,
   "from_seq": ..., "to_seq": ..., "selection": {...}, "created": ...,
   "snapshot": ...}``;
2. the states (:func:`~federation.registry.states.to_json`), each batch closed by
   ``{"kind": "batch_end", "upto": N}`` (``null`` inside a snapshot: the
   cursor only moves at the snapshot's last batch);
3. a manifest, one ``{"kind": "file", "id", "path", "size", "checksum"}`` per
   file the destination must fetch;
4. a trailer ``{"kind": "end", "lines": N, "sha256": ...}``: the number of
   lines before it and the SHA-256 of their uncompressed bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from federation.dimensions.universe import DimensionUniverse
from federation.errors import FederationError, InputError
from federation.registry.state_checks import check_state
from federation.registry.states import DatasetState, State, from_json, identity
from federation.sync.batch import Batch, Marked
from federation.sync.planner import carries_file
from federation.sync.selection import Selection
from federation.transport.base import TransportError, check_relative

FORMAT = "federation-bundle"
VERSION = 1
GZIP_MAGIC = b"\x1f\x8b"
MAX_LINE = 4 << 20  # one state per line: a few KiB; a chain of thousands of children, less


@dataclass(frozen=True)
class BundleHeader:
    version: int
    source: str
    from_seq: int
    to_seq: int
    selection: Selection
    created: str
    snapshot: bool
    #: the source's dimension universe (its configuration); None in older bundles
    universe: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {"format": FORMAT, "version": self.version, "source": self.source,
                "from_seq": self.from_seq, "to_seq": self.to_seq,
                "selection": self.selection.to_dict(), "created": self.created,
                "snapshot": self.snapshot}
        return data if self.universe is None else data | {"universe": self.universe}

    def describe(self) -> str:
        if self.snapshot:
            return f"snapshot of {self.source} up to journal entry {self.to_seq}"
        if self.to_seq == self.from_seq:
            return f"{self.source}: nothing after journal entry {self.from_seq}"
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
class ObjectCounts:
    """Distinct objects by kind. A bundle repeats some states (the collections and
    dimension records every batch needs; a tag changed twice): each counts once."""

    counts: Counter = field(default_factory=Counter)
    _seen: set[int] = field(default_factory=set, repr=False)

    def add(self, state: State) -> None:
        key = hash(identity(state))
        if key not in self._seen:
            self._seen.add(key)
            self.counts[state.kind] += 1


@dataclass
class BundleSummary:
    """What a full read of a bundle found; ``error`` is the first integrity failure.
    ``counts``: distinct objects by kind (``lines`` counts lines)."""

    path: Path
    compressed: bool
    header: BundleHeader | None = None
    objects: ObjectCounts = field(default_factory=ObjectCounts)
    batches: int = 0
    files: int = 0
    bytes: int = 0
    lines: int = 0
    sha256: str | None = None
    error: str | None = None

    @property
    def counts(self) -> Counter:
        return self.objects.counts

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
            while raw := stream.readline(MAX_LINE + 1):
                lineno += 1
                if len(raw) > MAX_LINE:
                    raise self._error(lineno, f"line longer than {MAX_LINE:,} bytes: not a "
                                              "bundle this federation writes")
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
                summary.objects.add(state)
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
        try:
            check_state(state)
        except InputError as exc:
            raise self._error(lineno, str(exc)) from None
        if not isinstance(state, DatasetState) or state.file is None:
            return
        info = state.file
        self._check_path(lineno, info.path)  # every path relative, below the root
        assert self.header is not None
        if carries_file(state, self.header.selection):  # read from --files-from
            wanted[state.id] = ManifestEntry(state.id, info.path, info.size, info.checksum)

    # -- batches ---------------------------------------------------------------

    def batches(self) -> Marked:
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
                yield Batch(states), upto
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
    universe = data.get("universe")
    if universe is not None:
        try:
            DimensionUniverse(universe)
        except FederationError as exc:
            raise InputError(f"{path}: the header's dimension universe is invalid: "
                             f"{exc}") from None
    return BundleHeader(version, source, from_seq, to_seq, selection,
                        str(data.get("created", "")), data["snapshot"], universe)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Writer:
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
