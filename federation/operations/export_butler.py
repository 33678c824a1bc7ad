"""``fed export-butler``: a selection of a repository as a daf_butler YAML export.

The export (see :mod:`federation.dafbutler.exporter`) is built whole from one
read snapshot of the registry, then written to a temporary file beside the
output and renamed into place: on any error nothing is written. With
``with_files`` the listed files are first copied to ``DIR/<path>``, each
hashed (xxh3-128) as it is read and renamed into place only if it matches its
record, so that ``butler import NEWREPO DIR --export-file EXPORT`` finds them.
Without it the export's paths are relative to the repository's datastore root.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from federation.butler import Butler
from federation.dafbutler import export_yaml
from federation.dafbutler.exporter import (
    ButlerNames,
    ExportedFile,
    build_export,
    check_universe,
)
from federation.datastore.checksum import CHUNK, file_checksum, mismatch
from federation.errors import ChecksumError, DatastoreError, InputError
from federation.operations.selection import refuse_unmatched
from federation.registry.where import parse_where
from federation.sync.progress import Progress
from federation.sync.selection import Selection
from federation.transport.base import check_relative

_NAME = re.compile(r"[A-Za-z_]\w*")
_CLASS_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


@dataclass
class ExportButlerReport:
    """What an export holds and, with ``--with-files``, what was copied."""

    output: Path
    counts: dict[str, int]
    files: int = 0
    bytes: int = 0
    files_dir: Path | None = None
    copied: int = 0
    already_there: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"output": str(self.output), "counts": dict(self.counts),
                "files": self.files, "bytes": self.bytes,
                "files_dir": None if self.files_dir is None else str(self.files_dir),
                "copied": self.copied, "already_there": self.already_there,
                "notes": list(self.notes)}


def export_butler(repo: Path, output: Path, *, collections: Sequence[str],
                  dataset_types: Sequence[str] = (), where: str | None = None,
                  bind: dict[str, Any] | None = None, with_files: Path | None = None,
                  storage_classes: Mapping[str, str] | None = None,
                  formatters: Mapping[str, str] | None = None,
                  progress: Progress | None = None) -> ExportButlerReport:
    """Write the datasets found in ``collections`` (names or globs; chains bring their
    children) of ``dataset_types`` (default all) matching ``where`` to ``output``.

    ``storage_classes`` and ``formatters``: daf_butler's names to write for some dataset
    types (by name), for those whose storage class daf_butler does not have (``Bytes``).
    ``progress`` hears of the files copied for ``with_files`` and of their bytes.
    """
    selection = Selection.make(collections, dataset_types, where, bind)
    given = _given(storage_classes or {}, formatters or {})
    if selection.where:
        parse_where(selection.where)  # an unparsable expression before anything else
    output = Path(output)
    _check_output(output)
    with Butler(repo) as butler:
        check_universe(butler.registry.universe, repo)
        refuse_unmatched(butler.site, butler, selection, "nothing was exported")
        with butler.registry.db.pinned():
            export = build_export(butler, selection, relocate=with_files is not None,
                                  given=given)
    report = ExportButlerReport(output, export.counts, len(export.files),
                                sum(f.size for f in export.files), with_files,
                                notes=export.notes)
    temp = output.with_name(f".{output.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        try:
            stream = temp.open("x", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write {output}: {exc.strerror}") from None
        with stream:
            if with_files is not None:
                _copy_files(export.files, Path(with_files), report, progress)
            export_yaml.dump(export.document, stream)
        os.replace(temp, output)
    finally:
        temp.unlink(missing_ok=True)
    return report


def _given(storage_classes: Mapping[str, str], formatters: Mapping[str, str]
           ) -> dict[str, ButlerNames]:
    """The daf_butler names given for some dataset types, checked for their shape."""
    for option, names, shape in (("--storage-class", storage_classes, _NAME),
                                 ("--formatter", formatters, _CLASS_PATH)):
        for dataset_type, name in names.items():
            if not shape.fullmatch(str(name)):
                raise InputError(f"{option} {dataset_type}={name}: expected a daf_butler "
                                 f"{'class path' if shape is _CLASS_PATH else 'name'}")
    return {name: ButlerNames(storage_classes.get(name), formatters.get(name))
            for name in {*storage_classes, *formatters}}


def _check_output(output: Path) -> None:
    if output.is_dir():
        raise InputError(f"cannot write {output}: it is a directory")
    if not output.parent.is_dir():
        raise InputError(f"cannot write {output}: no directory {output.parent}")


def _copy_files(files: list[ExportedFile], root: Path, report: ExportButlerReport,
                progress: Progress | None) -> None:
    if root.exists() and not root.is_dir():
        raise InputError(f"--with-files {root} is not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create --with-files {root}: {exc.strerror}") from None
    progress = progress or Progress()
    progress.planned(len(files), sum(f.size for f in files))
    for exported in files:
        final = root.joinpath(*check_relative(exported.path).split("/"))
        if copy_verified(exported, final, progress):
            report.copied += 1
        else:
            report.already_there += 1
            progress.advance(0, exported.size)
        progress.advance(1, 0)


def copy_verified(exported: ExportedFile, final: Path, progress: Progress) -> bool:
    """Copy a dataset's file to ``final`` through a temporary name, hashing it as it is
    read; False if ``final`` holds it already. ChecksumError if it does not match."""
    if final.is_file() and file_checksum(final) == (exported.size, exported.checksum):
        return False
    temp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:12]}")
    digest, size = xxhash.xxh3_128(), 0
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        with exported.source.open("rb") as source, temp.open("xb") as copy:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                copy.write(chunk)
                progress.advance(0, len(chunk))
        problem = mismatch((size, digest.hexdigest()), (exported.size, exported.checksum))
        if problem:
            raise ChecksumError(f"{exported.source} does not match its record ({problem}); "
                                "export stopped, no export file written")
        os.replace(temp, final)
    except OSError as exc:
        raise DatastoreError(f"cannot copy {exported.source} to {final}: "
                             f"{exc.strerror}") from None
    finally:
        temp.unlink(missing_ok=True)
    return True
