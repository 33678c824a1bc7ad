"""Bringing a batch job's outputs back from a staging directory into a repository.

Everything is checked before anything is written: the directory's YAML, each
output's file against the size and xxh3 checksum its entry records, that
every input an output names was staged (or is another output), and that the
repository's universe is the one staged. Then, in one transaction: the output
dataset types, the output RUNs, the datasets (their UUIDs kept), their files
(copied in under temporary names, renamed at commit) and their provenance.
Outputs the repository already holds identically are skipped, so collecting
again is a no-op; one it holds differently is a conflict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from federation.butler import Butler
from federation.datastore.checksum import verify_file
from federation.datastore.posix import StagedFile, placing
from federation.datastore.storage_classes import get_storage_class
from federation.errors import ConflictError
from federation.model import CollectionType, DatasetRef
from federation.staging.area import StagingArea
from federation.staging.model import DamagedStagingError, StagedDataset


@dataclass
class CollectResult:
    """What a collect brought in (or found already there)."""

    runs: list[str] = field(default_factory=list)
    dataset_types: list[str] = field(default_factory=list)  # newly registered
    added: int = 0
    present: int = 0
    provenance: int = 0  # new (output, input) links

    @property
    def changed(self) -> bool:
        return bool(self.added or self.dataset_types or self.provenance)


def collect_outputs(area: StagingArea, butler: Butler,
                    progress: Callable[[int], None] | None = None) -> CollectResult:
    """Import the outputs of ``area`` into ``butler``'s repository, all or nothing."""
    check_area(area)
    registry = butler.registry
    if registry.universe.digest != area.header.universe_digest:
        raise ConflictError(f"{area.root} was staged with another dimension universe than "
                            f"site {butler.site}'s; collect it into a repository of the same "
                            "universe")
    result = CollectResult()
    if not area.outputs:
        return result
    types = {t.name: registry.dataset_types.make(t.name, t.dimensions, t.storage_class)
             for t in (*area.dataset_types, *area.output_types)}
    existing = registry.datasets.get_many([o.id for o in area.outputs])
    new: list[tuple[DatasetRef, str, StagedDataset]] = []
    for output in area.outputs:
        full, key = registry.expand_data_id(types[output.dataset_type], output.data_id)
        ref = DatasetRef(output.id, types[output.dataset_type], full, output.run)
        if output.id in existing:
            _check_same(butler, existing[output.id], ref, output)
            result.present += 1
        else:
            new.append((ref, key, output))
    result.runs = sorted({output.run for output in area.outputs})
    staged = _stage_files(butler, area, new, progress)
    with placing(staged) as commit_files, registry.transaction():
        for name in sorted({o.dataset_type for o in area.outputs}):
            if registry.dataset_types.register(types[name]):
                result.dataset_types.append(name)
        for run in sorted({ref.run for ref, _, _ in new}):
            registry.collections.register(run, CollectionType.RUN)
            entries = [(ref, s.stored) for (ref, _, _), s in zip(new, staged, strict=True)
                       if ref.run == run]
            registry.datasets.insert(run, entries, keys=[
                key for ref, key, _ in new if ref.run == run])
            result.added += len(entries)
        result.provenance = registry.provenance.add(
            (output.id, source) for output in area.outputs for source in output.inputs)
        commit_files()
    return result


def check_area(area: StagingArea) -> None:
    """Refuse a staging directory whose outputs do not hold together: an unknown type or
    input, a duplicate, or a file missing or not matching its entry."""
    declared = {t.name for t in (*area.dataset_types, *area.output_types)}
    known = {d.id for d in area.inputs} | {o.id for o in area.outputs}
    inputs = {d.id for d in area.inputs}
    for output in area.outputs:
        where = f"output {output.id} ({output.dataset_type} in run {output.run})"
        if output.id in inputs:
            raise DamagedStagingError(f"{where} has the UUID of a staged input")
        if output.dataset_type not in declared:
            raise DamagedStagingError(f"{where}: dataset type {output.dataset_type!r} was "
                                      "never declared")
        unknown = [str(i) for i in output.inputs if i not in known]
        if unknown:
            raise DamagedStagingError(f"{where} refers to unknown input {unknown[0]}")
        if not output.path.startswith("outputs/"):
            raise DamagedStagingError(f"{where}: file {output.path!r} is not under outputs/")
        problem = verify_file(area.file_path(output.path), output.size, output.checksum)
        if problem:
            raise DamagedStagingError(f"{where}: file {output.path} is {problem}"
                                      if problem == "missing" else
                                      f"{where}: file {output.path}: {problem}")


def _check_same(butler: Butler, held: DatasetRef, ref: DatasetRef,
                output: StagedDataset) -> None:
    """An output already in the repository must be the same dataset with the same file."""
    found = butler.registry.datasets.file(ref.id)
    same = (held.dataset_type.name == ref.dataset_type.name and held.run == ref.run
            and held.required_data_id == ref.required_data_id and found is not None
            and (found[0].size, found[0].checksum) == (output.size, output.checksum))
    if not same:
        raise ConflictError(f"dataset {ref.id} is already in this repository as {held}, "
                            f"which differs from the staged output {ref}; nothing collected")


def _stage_files(butler: Butler, area: StagingArea,
                 new: Sequence[tuple[DatasetRef, str, StagedDataset]],
                 progress: Callable[[int], None] | None) -> list[StagedFile]:
    """Copy the new outputs' files into the datastore under temporary names, each checked
    against its staged entry as copied."""
    staged: list[StagedFile] = []
    try:
        for ref, _, output in new:
            item = butler.datastore.stage_ingest(
                ref, area.file_path(output.path),
                get_storage_class(ref.dataset_type.storage_class), "copy")
            staged.append(item)
            if (item.stored.size, item.stored.checksum) != (output.size, output.checksum):
                raise DamagedStagingError(f"file {output.path} changed while being collected")
            if progress is not None:
                progress(1)
    except BaseException:
        for item in staged:
            item.abort()
        raise
    return staged

