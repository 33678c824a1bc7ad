"""A staging directory on disk: its layout, and its YAML registry read and written.

    DIR/
      staging.yaml                 header: source site, selection, search path, templates
      registry/universe.yaml       the source's dimension universe
      registry/dimensions.yaml     records the staged data IDs need (dimension -> rows)
      registry/dataset_types.yaml  the inputs' dataset types
      registry/collections.yaml    input RUNs and named collections, flattened
      registry/inputs.yaml         the input datasets (UUID, type, run, data ID, file)
      registry/output_types/NAME.yaml   one per dataset type the job declared
      registry/outputs/UUID.yaml        one per output dataset, with its inputs
      inputs/...                   the input files
      outputs/...                  the output files, laid out by the source's templates

Every YAML file is written to a temporary name and renamed into place, so a
reader sees a whole file or none. Reading checks everything and raises
:class:`DamagedStagingError` for what does not parse.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from federation import yamlio
from federation.dimensions.universe import DimensionUniverse
from federation.errors import ConfigError
from federation.staging.model import (
    DamagedStagingError,
    StagedCollection,
    StagedDataset,
    StagedType,
    StagingHeader,
)

HEADER = "staging.yaml"
INPUTS_DIR = "inputs"
OUTPUTS_DIR = "outputs"


def write_yaml(path: Path, data: Any) -> None:
    """Write ``data`` as YAML to ``path`` atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        with open(temp, "w") as stream:
            yaml.safe_dump(data, stream, sort_keys=False)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def read_yaml(path: Path, root: Path) -> Any:
    """The YAML in ``path``; a DamagedStagingError naming it when missing or malformed."""
    shown = path.relative_to(root).as_posix()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DamagedStagingError(f"{shown} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DamagedStagingError(f"{shown} cannot be read: {exc}") from None
    try:
        return yamlio.safe_load(text)
    except yaml.YAMLError as exc:
        raise DamagedStagingError(f"{shown} is not valid YAML: "
                                  f"{str(exc).splitlines()[0]}") from None


def _list(data: Any, shown: str) -> list:
    if not isinstance(data, list):
        raise DamagedStagingError(f"{shown} must hold a list")
    return data


@dataclass
class StagingArea:
    """Everything a staging directory's registry holds, read into memory."""

    root: Path
    header: StagingHeader
    universe: DimensionUniverse
    records: dict[str, list[dict[str, Any]]]
    dataset_types: list[StagedType]
    collections: list[StagedCollection]
    inputs: list[StagedDataset]
    output_types: list[StagedType] = field(default_factory=list)
    outputs: list[StagedDataset] = field(default_factory=list)

    # -- paths ---------------------------------------------------------------

    @staticmethod
    def registry_dir(root: Path) -> Path:
        return root / "registry"

    def file_path(self, relative: str) -> Path:
        """The absolute path of a dataset's file, refusing one outside the directory."""
        parts = relative.split("/")
        if not relative or relative.startswith("/") or any(p in ("", ".", "..") for p in parts) \
                or parts[0] not in (INPUTS_DIR, OUTPUTS_DIR):
            raise DamagedStagingError(f"file path {relative!r} is outside the staging "
                                      "directory's inputs/ and outputs/")
        return self.root.joinpath(*parts)

    # -- writing -------------------------------------------------------------

    def write(self) -> None:
        """Write the header and the inputs' registry (a new staging directory)."""
        reg = self.registry_dir(self.root)
        write_yaml(reg / "universe.yaml", yamlio.safe_load(self.universe.to_yaml()))
        write_yaml(reg / "dimensions.yaml", self.records)
        write_yaml(reg / "dataset_types.yaml", [t.to_dict() for t in self.dataset_types])
        write_yaml(reg / "collections.yaml", [c.to_dict() for c in self.collections])
        write_yaml(reg / "inputs.yaml", [d.to_dict() for d in self.inputs])
        (reg / "output_types").mkdir(exist_ok=True)
        (reg / "outputs").mkdir(exist_ok=True)
        (self.root / OUTPUTS_DIR).mkdir(exist_ok=True)
        write_yaml(self.root / HEADER, self.header.to_dict())  # last: marks it complete

    def write_output_type(self, dataset_type: StagedType) -> None:
        write_yaml(self.registry_dir(self.root) / "output_types" / f"{dataset_type.name}.yaml",
                   dataset_type.to_dict())

    def write_output(self, dataset: StagedDataset) -> None:
        write_yaml(self.registry_dir(self.root) / "outputs" / f"{dataset.id}.yaml",
                   dataset.to_dict(with_inputs=True))

    # -- reading -------------------------------------------------------------

    @classmethod
    def load(cls, root: str | os.PathLike) -> StagingArea:
        """Read a staging directory; DamagedStagingError if anything in it is malformed."""
        root = Path(root).absolute()
        if not (root / HEADER).is_file():
            raise DamagedStagingError(f"{root} is not a staging directory: no {HEADER}")
        header = StagingHeader.from_dict(read_yaml(root / HEADER, root), HEADER)
        reg = cls.registry_dir(root)
        universe_data = read_yaml(reg / "universe.yaml", root)
        try:
            universe = DimensionUniverse(universe_data)
        except ConfigError as exc:
            raise DamagedStagingError(f"registry/universe.yaml: {exc}") from None
        if universe.digest != header.universe_digest:
            raise DamagedStagingError("registry/universe.yaml does not match the digest "
                                      f"{HEADER} records")
        records = read_yaml(reg / "dimensions.yaml", root) or {}
        if not isinstance(records, dict) or not all(
                isinstance(v, list) and all(isinstance(r, dict) for r in v)
                for v in records.values()):
            raise DamagedStagingError("registry/dimensions.yaml must map dimensions to lists "
                                      "of records")
        area = cls(root, header, universe, records,
                   _items(reg / "dataset_types.yaml", root, StagedType.from_dict),
                   _items(reg / "collections.yaml", root, StagedCollection.from_dict),
                   _items(reg / "inputs.yaml", root, StagedDataset.from_dict))
        area.output_types = [StagedType.from_dict(read_yaml(p, root), _shown(p, root))
                             for p in _entries(reg / "output_types")]
        area.outputs = [StagedDataset.from_dict(read_yaml(p, root), _shown(p, root),
                                                with_inputs=True)
                        for p in _entries(reg / "outputs")]
        for output, path in zip(area.outputs, _entries(reg / "outputs"), strict=True):
            if path.stem != str(output.id):
                raise DamagedStagingError(f"{_shown(path, root)} holds output {output.id}")
        return area


def _shown(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _entries(directory: Path) -> list[Path]:
    """The YAML entries of a directory, in name order (temporary files left out)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir()
                  if p.suffix == ".yaml" and not p.name.startswith("."))


def _items(path: Path, root: Path, parse) -> list:
    shown = _shown(path, root)
    return [parse(item, f"{shown}[{i}]")
            for i, item in enumerate(_list(read_yaml(path, root) or [], shown))]
