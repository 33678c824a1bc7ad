"""`fed stage`, `fed collect` and `fed provenance`: batch jobs on a staged copy.

``stage`` writes the datasets a selection finds, with the records, dataset
types and collections they need, into a directory a batch job opens with
:class:`federation.staging.StagedButler` (no database). ``collect`` brings
the job's outputs back with their provenance; ``provenance`` shows it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.butler import Butler
from federation.errors import InputError, MissingDatasetError
from federation.model import DatasetRef
from federation.operations.selection import refuse_unmatched
from federation.staging.area import StagingArea
from federation.staging.collect import CollectResult, collect_outputs
from federation.staging.stage import StageRequest, StageResult, check_target, write_staging
from federation.sync.selection import Selection

Progress = Callable[[int], None] | None


def stage(repo: Path, target: Path, *, collections: Sequence[str],
          dataset_types: Sequence[str] = (), where: str | None = None,
          bind: dict[str, Any] | None = None, link: bool = False,
          progress: Progress = None) -> StageResult:
    """Stage the datasets found along ``collections`` (first match per type and data ID)
    into a new directory ``target``; nothing is left there on failure."""
    if not collections:
        raise InputError("give at least one collection (-c) to stage from")
    check_target(Path(target).absolute())
    selection = Selection.make(collections, dataset_types, where, bind)
    with Butler(repo) as butler:
        refuse_unmatched(butler.site, butler, selection, "nothing was staged")
        search_path = butler.registry.collections.expand_patterns(selection.collections)
        refs = butler.query_datasets(list(selection.dataset_types), search_path,
                                     where=selection.where, bind=selection.bind_dict or None)
        if not refs:
            raise InputError(f"no datasets at {butler.site} match the selection "
                             f"({selection.describe()}); nothing was staged")
        request = StageRequest(refs, search_path, selection.to_dict(), Path(target), link)
        return write_staging(butler, request, progress)


def collect(staging_dir: Path, repo: Path, progress: Progress = None) -> CollectResult:
    """Bring the outputs written in ``staging_dir`` into ``repo``, all or nothing."""
    area = StagingArea.load(staging_dir)
    with Butler(repo) as butler:
        return collect_outputs(area, butler, progress)


@dataclass(frozen=True)
class ProvenanceLink:
    """A dataset on the other side of a provenance link; ``ref`` None when this
    repository does not hold it (any more)."""

    id: uuid.UUID
    ref: DatasetRef | None


@dataclass(frozen=True)
class ProvenanceReport:
    """A dataset and what it was made from (or, with ``outputs``, what was made from it)."""

    dataset: DatasetRef
    links: list[ProvenanceLink]
    outputs: bool = False


def query_provenance(repo: Path, dataset_id: str, *, outputs: bool = False
                     ) -> ProvenanceReport:
    """The inputs recorded for ``dataset_id`` (or the outputs made from it)."""
    try:
        wanted = uuid.UUID(dataset_id)
    except ValueError:
        raise InputError(f"{dataset_id!r} is not a dataset UUID") from None
    with Butler(repo) as butler:
        registry = butler.registry
        ref = registry.datasets.get(wanted)
        if ref is None:
            raise MissingDatasetError(f"no dataset {wanted} in {repo}")
        ids = (registry.provenance.outputs_of(wanted) if outputs
               else registry.provenance.inputs_of(wanted))
        held = registry.datasets.get_many(ids)
    return ProvenanceReport(ref, [ProvenanceLink(i, held.get(i)) for i in ids], outputs)
