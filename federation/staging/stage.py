"""Writing a staging directory: selected datasets of a repository, with what they need.

Everything is written into a hidden sibling of the target and renamed into
place at the end, so a failure (a bad selection, a corrupt file, a full disk)
leaves nothing at the target.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.butler import Butler
from federation.datastore.checksum import verify_file
from federation.errors import ChecksumError, InputError, MissingDatasetError
from federation.model import CollectionType, DatasetRef
from federation.staging.area import INPUTS_DIR, StagingArea
from federation.staging.model import (
    StagedCollection,
    StagedDataset,
    StagedType,
    StagingHeader,
)


@dataclass(frozen=True)
class StageRequest:
    """What to stage: the datasets found, the collections named, where and how."""

    refs: list[DatasetRef]
    search_path: list[str]
    selection: dict[str, Any]
    target: Path
    link: bool = False


@dataclass(frozen=True)
class StageResult:
    """A staging directory written: its path and what it holds."""

    root: Path
    datasets: int
    bytes: int
    linked: int
    records: int
    collections: list[str]


def check_target(target: Path) -> None:
    """Refuse a target that exists and is not an empty directory."""
    if target.is_symlink() or target.exists() and not target.is_dir():
        raise InputError(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()):
        raise InputError(f"{target} exists and is not empty; give a new directory")
    if not target.parent.is_dir():
        raise InputError(f"{target.parent} does not exist")


def write_staging(butler: Butler, request: StageRequest,
                  progress: Callable[[int], None] | None = None) -> StageResult:
    """Write ``request.refs`` of ``butler``'s repository as a staging directory."""
    target = request.target.absolute()
    check_target(target)
    temp = target.with_name(f".{target.name}.staging-{uuid.uuid4().hex[:12]}")
    temp.mkdir()
    try:
        inputs, linked = _copy_files(butler, request.refs, temp, request.link, progress)
        area = StagingArea(
            temp,
            StagingHeader(butler.site, butler.registry.instance,
                          butler.registry.universe.digest,
                          dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                          request.selection, request.search_path,
                          dict(butler.config.templates)),
            butler.registry.universe, _records(butler, request.refs),
            _types(request.refs), _collections(butler, request), inputs)
        area.write()
        if target.is_dir():
            target.rmdir()  # empty (checked): the rename puts the staged one in its place
        os.rename(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return StageResult(target, len(inputs), sum(d.size for d in inputs), linked,
                       sum(len(rows) for rows in area.records.values()),
                       [c.name for c in area.collections])


def _copy_files(butler: Butler, refs: Sequence[DatasetRef], root: Path, link: bool,
                progress: Callable[[int], None] | None) -> tuple[list[StagedDataset], int]:
    """Copy (or hard-link) each dataset's file under ``inputs/``, checked against its record."""
    files = butler.registry.datasets.files_here([ref.id for ref in refs])
    staged, linked = [], 0
    for ref in refs:
        local = files.get(ref.id)
        if local is None:
            held = butler.exists(ref).held_at
            raise MissingDatasetError(
                f"{ref} has no file in this repository" + (
                    f" (held at site {held}: sync it with files first)" if held else ""))
        stored = local.stored
        source = butler.datastore.path_of(stored)
        relative = (f"{INPUTS_DIR}/{stored.path}" if not os.path.isabs(stored.path)
                    else f"{INPUTS_DIR}/direct/{ref.id}{source.suffix}")
        destination = root.joinpath(*relative.split("/"))
        destination.parent.mkdir(parents=True, exist_ok=True)
        if link and _hard_link(source, destination):
            linked += 1
        else:
            shutil.copyfile(source, destination)
        problem = verify_file(destination, stored.size, stored.checksum)
        if problem:
            raise ChecksumError(f"the file of {ref} ({source}) does not match its record: "
                                f"{problem}; nothing was staged (fed verify checks them all)")
        staged.append(StagedDataset(ref.id, ref.dataset_type.name, ref.run, dict(ref.data_id),
                                    relative, stored.size, stored.checksum))
        if progress is not None:
            progress(1)
    return staged, linked


def _hard_link(source: Path, destination: Path) -> bool:
    """Hard-link when the filesystem allows (same device, links permitted)."""
    try:
        os.link(source, destination)
    except OSError:
        return False
    return True


def _records(butler: Butler, refs: Sequence[DatasetRef]) -> dict[str, list[dict[str, Any]]]:
    """Every dimension record the data IDs of ``refs`` name, by dimension, as stored."""
    universe = butler.registry.universe
    found: dict[str, dict[tuple, dict[str, Any]]] = {}
    for ref in refs:
        for name in ref.dataset_type.dimensions.names:
            keys = universe[name].keys
            key = tuple(ref.data_id[k] for k in keys)
            table = found.setdefault(name, {})
            if key not in table:
                record = butler.registry.dimensions.get(name, key)
                if record is not None:
                    table[key] = {str(k): v for k, v in record.items()}
    return {name: list(found[name].values()) for name in universe.dimensions if name in found}


def _types(refs: Sequence[DatasetRef]) -> list[StagedType]:
    types = {ref.dataset_type.name: ref.dataset_type for ref in refs}
    return [StagedType(t.name, t.dimensions.names, t.storage_class)
            for _, t in sorted(types.items())]


def _collections(butler: Butler, request: StageRequest) -> list[StagedCollection]:
    """The inputs' RUNs, and each named collection that is not a RUN flattened to the
    staged datasets found through it."""
    staged = {ref.id for ref in request.refs}
    runs = {ref.run: None for ref in request.refs}
    result = [StagedCollection(run, CollectionType.RUN) for run in runs]
    types = sorted({ref.dataset_type.name for ref in request.refs})
    registry = butler.registry
    for name in request.search_path:
        _, ctype = registry.collections.lookup(name)
        if ctype is CollectionType.RUN:
            if name not in runs:
                result.append(StagedCollection(name, CollectionType.RUN))
            continue
        found = butler.query_datasets(types, [name], where=request.selection.get("where"),
                                      bind=request.selection.get("bind") or None)
        result.append(StagedCollection(name, CollectionType.TAGGED,
                                       tuple(ref.id for ref in found if ref.id in staged),
                                       ctype))
    return result
