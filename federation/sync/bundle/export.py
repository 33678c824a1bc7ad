"""Writing bundles: ``fed export`` (and the outboxes and pushes built on it).

One window of the source is read, so that a bundle holds every change up to its
``to_seq`` and nothing half-way: a change made meanwhile is in the next bundle.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from federation.butler import Butler
from federation.datastore.checksum import file_checksum, mismatch
from federation.errors import ChecksumError, InputError
from federation.faults import checkpoint
from federation.registry.states import DatasetState, State, to_json
from federation.sites import SiteDefinition
from federation.sync.batch import Batch, Marked
from federation.sync.bundle.format import (
    VERSION,
    BundleHeader,
    ManifestEntry,
    ObjectCounts,
    Writer,
)
from federation.sync.fetcher import local_path
from federation.sync.planner import carries_file
from federation.sync.reader import SourceReader
from federation.sync.selection import Selection
from federation.sync.site_access import open_site
from federation.transport.base import check_relative


@dataclass
class ExportResult:
    """What an export wrote; ``counts``: distinct objects by kind."""

    path: Path
    header: BundleHeader
    objects: ObjectCounts = field(default_factory=ObjectCounts)
    batches: int = 0
    files: int = 0
    bytes: int = 0
    copied: int = 0
    notes: list[str] = field(default_factory=list)  # e.g. that the selection matched no dataset
    #: each listed file, with where the source holds it
    manifest: list[tuple[ManifestEntry, str]] = field(default_factory=list, repr=False)

    @property
    def counts(self) -> Counter:
        return self.objects.counts

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "header": self.header.to_dict(),
                "records": dict(sorted(self.counts.items())), "batches": self.batches,
                "manifest": {"files": self.files, "bytes": self.bytes},
                "files_copied": self.copied, "notes": list(self.notes)}


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
                          datetime.now(UTC).isoformat(timespec="seconds"), since == 0,
                          reader.registry.universe.config)
    copier = _FileCopier(source, files_dir) if files_dir else None
    result = ExportResult(output, header)
    writer = Writer(output)
    try:
        writer.write(header.to_dict())
        manifest: dict[str, tuple[ManifestEntry, str]] = {}
        for batch, mark in _source_batches(reader, since, upto):
            for state in batch.states:
                state, original = _portable(state, selection)
                writer.write(to_json(state))
                result.objects.add(state)
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


def _source_batches(reader: SourceReader, since: int, upto: int) -> Marked:
    if since == 0:
        for batch in reader.snapshot():
            yield batch, None
        yield Batch(), upto
    else:
        yield from reader.journal(since, upto)


def _portable(state: State, selection: Selection) -> tuple[State, str]:
    """A state whose file has a relative path: a file ingested in place at the source
    (absolute path) gets the path a destination gives it; returns the state and the
    source's own path (bundles hold no absolute paths)."""
    if not isinstance(state, DatasetState) or state.file is None:
        return state, ""
    info = state.file
    if not os.path.isabs(info.path):
        return state, info.path
    moved = replace(state, file=replace(info, path=local_path(state)))
    return moved, info.path


class _FileCopier:
    """``--with-files``: each listed file copied from the source, verified, renamed."""

    def __init__(self, source: SiteDefinition, root: Path) -> None:
        if root.exists() and not root.is_dir():
            raise InputError(f"--with-files {root} is not a directory")
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()
        self.transport = source.open_files()
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
            problem = mismatch((size, checksum), (entry.size, entry.checksum))
            if problem:
                raise ChecksumError(f"{original} at {self.source} does not match its record "
                                    f"({problem}); export stopped")
            os.replace(temp, final)
        finally:
            temp.unlink(missing_ok=True)
        return 1
