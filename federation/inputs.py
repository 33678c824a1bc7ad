"""Reading user-supplied tables: dimension records and ingest lists (YAML or CSV)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import yaml

from federation.butler import FileDataset
from federation.errors import InputError


def _read_csv(path: Path) -> list[dict[str, Any]]:
    try:
        # utf-8-sig: spreadsheet programs often start CSV files with a byte-order mark.
        # strict: an unterminated quote is an error, not a field swallowing later lines.
        with open(path, newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader((line for line in stream if not line.startswith("#")),
                                    strict=True)
            if not reader.fieldnames:
                raise InputError(f"{path} is empty: expected a CSV header row")
            rows = []
            for number, row in enumerate(reader, start=2):
                if None in row or any(v is None for v in row.values()):
                    raise InputError(f"{path}:{number}: wrong number of columns")
                rows.append({k.strip(): v.strip() for k, v in row.items()})
            return rows
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    except csv.Error as exc:
        raise InputError(f"{path} is not valid CSV: {exc}") from None


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None


def _is_csv(path: Path) -> bool:
    return path.suffix.lower() in (".csv", ".txt")


def read_dimension_records(path: str | Path, dimension: str | None = None
                           ) -> dict[str, list[dict[str, Any]]]:
    """Records per dimension from a CSV file (one dimension) or a YAML file.

    YAML may be a mapping ``{dimension: [records...]}`` or, with
    ``dimension`` given, a list of records.
    """
    path = Path(path)
    if _is_csv(path):
        if dimension is None:
            raise InputError(f"{path}: a CSV file holds one dimension; name it with --dimension")
        return {dimension: _read_csv(path)}
    data = _read_yaml(path)
    if isinstance(data, list):
        if dimension is None:
            raise InputError(f"{path} holds a list of records; name its dimension with --dimension")
        return {dimension: data}
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        if dimension is not None:
            data = {dimension: data.get(dimension, [])}
        return data
    raise InputError(f"{path} must hold a list of records or a mapping of dimension -> records")


def read_ingest_table(path: str | Path, dataset_type: str, *, prefix: str | Path | None = None,
                      common: dict[str, Any] | None = None) -> list[FileDataset]:
    """Files and their data IDs from a CSV or YAML table.

    Each row has a ``file`` column plus data ID columns; relative file paths
    are taken relative to ``prefix`` (default: the table's directory).
    """
    path = Path(path)
    rows = _read_csv(path) if _is_csv(path) else _read_yaml(path)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InputError(f"{path} must hold a list of rows with a 'file' column")
    base = Path(prefix) if prefix is not None else path.parent
    datasets = []
    for number, row in enumerate(rows, start=1):
        row = dict(row)
        file = row.pop("file", None)
        if file is None or file == "":
            raise InputError(f"{path}: row {number} has no 'file' value")
        if not isinstance(file, str):  # YAML may give a number; a list or mapping is wrong
            if not isinstance(file, int | float) or isinstance(file, bool):
                raise InputError(f"{path}: row {number} 'file' must be a path, got {file!r}")
            file = str(file)
        data_id = dict(common or {}) | {k: v for k, v in row.items() if v not in (None, "")}
        datasets.append(FileDataset(Path(base, file), dataset_type, data_id))
    if not datasets:
        raise InputError(f"{path} lists no files")
    return datasets


def parse_assignments(values: tuple[str, ...], what: str) -> dict[str, Any]:
    """``key=value`` pairs from the command line; integer-looking values become ints."""
    result: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{what} {item!r} must look like key=value")
        value = value.strip()
        result[key.strip()] = int(value) if value.lstrip("-").isdigit() else value
    return result
