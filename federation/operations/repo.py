"""Creating and filling a repository, and checking its files.

One function per `fed` command: create, register-dataset-type,
insert-dimension-records, ingest-files and verify.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.butler import Butler, VerifyReport
from federation.config import RepoConfig
from federation.dimensions import daf_butler as daf_butler_universe
from federation.dimensions.universe import DimensionUniverse
from federation.errors import ConfigError
from federation.inputs import read_dimension_records, read_ingest_table
from federation.model import DatasetRef, DatasetType

Progress = Callable[[int], None] | None


@dataclass(frozen=True)
class Created:
    """A new repository: its directory and the site it belongs to."""

    root: Path
    site: str


@dataclass(frozen=True)
class DatasetTypeRegistration:
    """A dataset type as stored, and whether this call registered it."""

    dataset_type: DatasetType
    new: bool


@dataclass(frozen=True)
class RecordsInserted:
    """Records of one dimension read from a file: how many, and how many were new."""

    dimension: str
    given: int
    new: int

    @property
    def present(self) -> int:
        """Records that were already there (identical ones are skipped)."""
        return self.given - self.new


@dataclass(frozen=True)
class Ingested:
    """Datasets an ingest registered, all in one run."""

    dataset_type: str
    run: str
    transfer: str
    refs: list[DatasetRef]


def create(repo: Path, *, db: str | None = None, site: str = "local",
           universe: str | Path | None = None, config_file: Path | None = None,
           owns: Sequence[str] = ()) -> Created:
    """Create an empty repository; nothing is left behind if anything is wrong. ``owns``:
    the collection prefixes its site owns (collections are born here only below them).
    ``universe``: a universe YAML file, or ``daf_butler[:VERSION]``."""
    templates = RepoConfig.read_overrides(config_file).get("templates") if config_file else None
    root = Butler.create(repo, db=db, site=site, templates=templates,
                         universe=load_universe(universe), owns=owns)
    return Created(root, site)


def load_universe(choice: str | Path | None) -> DimensionUniverse | None:
    """The universe ``fed create --universe`` names (None: the default universe)."""
    if choice is None:
        return None
    named = daf_butler_universe.parse_choice(str(choice))
    if named is not None:
        return daf_butler_universe.load(named[1])
    if not Path(choice).is_file():
        raise ConfigError(f"no universe file {choice} (or say daf_butler[:VERSION])")
    return DimensionUniverse.from_file(choice)


def register_dataset_type(repo: Path, name: str, storage_class: str,
                          dimensions: Sequence[str]) -> DatasetTypeRegistration:
    """Register a dataset type; the same definition again is a no-op, another is refused."""
    with Butler(repo) as butler:
        new = butler.registry.register_dataset_type(name, dimensions, storage_class)
        return DatasetTypeRegistration(butler.registry.get_dataset_type(name), new)


def insert_dimension_records(repo: Path, path: Path, dimension: str | None = None
                             ) -> list[RecordsInserted]:
    """Insert the records of a YAML or CSV file, all in one transaction, in dependency order."""
    records = read_dimension_records(path, dimension)
    with Butler(repo) as butler:
        universe = butler.registry.universe
        ordered = universe.sorted(name for name in records if universe[name])
        result = []
        with butler.registry.transaction():
            for name in ordered:
                new = butler.registry.insert_dimension_records(name, records[name])
                result.append(RecordsInserted(name, len(records[name]), new))
    return result


def ingest_files(repo: Path, dataset_type: str, run: str, table: Path, *,
                 transfer: str = "copy", id_mode: str = "random",
                 prefix: Path | None = None, data_id: dict[str, Any] | None = None,
                 progress: Progress = None) -> Ingested:
    """Ingest the files a table lists into ``run``; nothing is kept if any file fails.

    Errors about a file name its table and line.
    """
    datasets = read_ingest_table(table, dataset_type, prefix=prefix, common=data_id)
    with Butler(repo) as butler:
        refs = butler.ingest(datasets, run=run, transfer=transfer, id_mode=id_mode,
                             progress=progress)
    return Ingested(dataset_type, run, transfer, refs)


def verify(repo: Path, *, collections: Sequence[str] = (), dataset_types: Sequence[str] = (),
           where: str | None = None, bind: dict[str, Any] | None = None,
           progress: Progress = None) -> VerifyReport:
    """Re-hash files (all, or those of the datasets selected) against their records."""
    with Butler(repo) as butler:
        refs = None
        if collections or dataset_types or where:
            refs = butler.query_datasets(list(dataset_types) or None, list(collections) or ["*"],
                                         where=where, bind=bind, find_first=False)
        return butler.verify(refs, progress=progress)
