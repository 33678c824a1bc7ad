"""Reading user-supplied tables: dimension records and ingest lists (YAML or CSV).

Errors name the file and, where there is one, the line and column at fault.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import yaml

from federation.butler import FileDataset
from federation.errors import InputError

Row = tuple[int, Any]  # (line number in the file, the row)


def _read_text(path: Path) -> str:
    """The file as text; anything but UTF-8 is refused with the position of the first bad byte."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    try:
        # utf-8-sig: spreadsheet programs often start CSV files with a byte-order mark.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        decoded = bytes(exc.object)  # without a byte-order mark, if there was one
        offset = exc.start + len(data) - len(decoded)
        line = decoded.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"{path}:{line}: not UTF-8 text (byte 0x{decoded[exc.start]:02x} at offset "
            f"{offset}); save the file as UTF-8") from None


def _read_csv(path: Path) -> tuple[list[str], list[Row]]:
    """The header and the rows of a CSV file, each row with its line number.

    Lines starting with ``#`` are comments.
    """
    lines = [(number, line) for number, line in enumerate(
        io.StringIO(_read_text(path), newline=""), start=1) if not line.startswith("#")]
    # strict: an unterminated quote is an error, not a field swallowing later lines.
    reader = csv.reader((line for _, line in lines), strict=True)
    try:
        header = [name.strip() for name in next(reader, [])]
        if not header:
            raise InputError(f"{path} is empty: expected a CSV header row")
        rows = []
        start = reader.line_num  # lines consumed so far: the next row starts after them
        for values in reader:
            number = lines[start][0]
            start = reader.line_num
            if not values:  # a blank line
                continue
            if len(values) != len(header):
                raise InputError(
                    f"{path}:{number}: wrong number of columns ({len(values)} values for "
                    f"{len(header)} columns: {', '.join(header)})")
            rows.append((number, {k: v.strip() for k, v in zip(header, values, strict=True)}))
        return header, rows
    except csv.Error as exc:
        raise InputError(f"{path} is not valid CSV: {exc}") from None


def _read_yaml(path: Path) -> tuple[Any, list[int]]:
    """The document, and for a top-level list the line number of each item."""
    loader = yaml.SafeLoader(_read_text(path))
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    finally:
        loader.dispose()
    lines = ([item.start_mark.line + 1 for item in node.value]
             if isinstance(node, yaml.SequenceNode) else [])
    return data, lines


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
        return {dimension: [row for _, row in _read_csv(path)[1]]}
    data, _ = _read_yaml(path)
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
    are taken relative to ``prefix`` (default: the table's directory). Each
    file's ``origin`` is ``TABLE:LINE``, so later errors name its row.
    """
    path = Path(path)
    if _is_csv(path):
        rows = _read_csv(path)[1]
    else:
        data, lines = _read_yaml(path)
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise InputError(f"{path} must hold a list of rows with a 'file' column")
        rows = list(zip(lines, data, strict=True))
    base = Path(prefix) if prefix is not None else path.parent
    datasets = []
    for index, (number, row) in enumerate(rows, start=1):
        row = dict(row)
        file = row.pop("file", None)
        where = f"{path}:{number}"
        if file is None or file == "":
            raise InputError(f"{where}: row {index} has no 'file' value")
        if not isinstance(file, str):  # YAML may give a number; a list or mapping is wrong
            if not isinstance(file, int | float) or isinstance(file, bool):
                raise InputError(f"{where}: row {index} 'file' must be a path, got {file!r}")
            file = str(file)
        data_id = dict(common or {}) | {k: v for k, v in row.items() if v not in (None, "")}
        datasets.append(FileDataset(Path(base, file), dataset_type, data_id, origin=where))
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
