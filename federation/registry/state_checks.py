"""Checking states read from outside (a bundle) before anything is planned or written.

A bundle's checksums prove it is whole, not that what it says is sane: names that
could not exist in a registry (``../../evil`` for a run), values of the wrong type,
fields too long to store. Each is refused with one line, before any file moves.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from federation.errors import FederationError, InputError
from federation.model import CollectionType
from federation.registry.collections import check_collection_name
from federation.registry.states import (
    CalibSlotState,
    CollectionRemoval,
    CollectionState,
    DatasetRemoval,
    DatasetState,
    DatasetTypeState,
    RecordState,
    ReleaseCheckState,
    ReleaseEntries,
    ReleaseState,
    State,
    TagState,
)

MAX_PATH = 4096
MAX_TEXT = 65536  # a collection's documentation
MAX_KEY = 512  # the width of data_id_key
_SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,127}")
_CHECKSUM = re.compile(r"[0-9a-f]{32}")
_ROOT = re.compile(r"[0-9a-f]{64}")
MAX_LINE = 65536  # one manifest entry


def check_state(state: State) -> None:
    """InputError if a state names something no registry could hold."""
    try:
        _CHECKS[type(state)](state)
    except FederationError as exc:
        raise InputError(f"invalid {state.kind}: {exc}") from None


def _collection(state: CollectionState) -> None:
    _name(state.name)
    if state.type not in {t.value for t in CollectionType}:
        raise InputError(f"unknown collection type {state.type!r}")
    _site(state.owner)
    _text(state.doc, MAX_TEXT, "doc")
    _versions(state.created_version, state.doc_version, state.chain_version)
    if state.release is not None:
        _name(state.release)
    if state.children is not None:
        if not isinstance(state.children, list):
            raise InputError("chain children must be a list")
        for child in state.children:
            _name(child)


def _dataset_type(state: DatasetTypeState) -> None:
    _type(state.name)
    if not isinstance(state.dimensions, list) or not all(
            isinstance(d, str) and d.isidentifier() for d in state.dimensions):
        raise InputError(f"dataset type {state.name} has invalid dimensions")
    _text(state.storage_class, 64, "storage class")


def _dataset(state: DatasetState) -> None:
    _uuid(state.id)
    _type(state.dataset_type)
    _name(state.run)
    if not isinstance(state.data_id, dict) or not all(
            isinstance(k, str) and _scalar_key(v) for k, v in state.data_id.items()):
        raise InputError(f"dataset {state.id} has an invalid data ID")
    if state.held_at is not None:
        _site(state.held_at)
    _versions(state.version)
    info = state.file
    if info is not None:
        _text(info.path, MAX_PATH, "file path")
        _text(info.formatter, 32, "formatter")
        if not _count(info.size) or not isinstance(info.checksum, str) \
                or not _CHECKSUM.fullmatch(info.checksum):
            raise InputError(f"dataset {state.id} has an invalid file size or checksum")


def _tag(state: TagState) -> None:
    _name(state.collection)
    _uuid(state.dataset_id)
    if not isinstance(state.present, bool):
        raise InputError("a tag is present or not (true or false)")
    _versions(state.version)


def _calib_slot(state: CalibSlotState) -> None:
    _name(state.collection)
    _type(state.dataset_type)
    _text(state.data_id_key, MAX_KEY, "data ID key")
    _versions(state.version)
    if not isinstance(state.entries, list):
        raise InputError("validity ranges must be a list")
    for entry in state.entries:
        if len(entry) != 3 or not isinstance(entry[1], int) or not isinstance(entry[2], int) \
                or isinstance(entry[1], bool) or isinstance(entry[2], bool):
            raise InputError(f"invalid validity range {entry!r}")
        _uuid(entry[0])


def _dataset_removal(state: DatasetRemoval) -> None:
    _uuid(state.id)
    _name(state.run)
    _type(state.dataset_type)
    _text(state.data_id_key, MAX_KEY, "data ID key")
    _versions(state.version)


def _collection_removal(state: CollectionRemoval) -> None:
    _name(state.name)
    _site(state.owner)
    _versions(state.version)


def _record(state: RecordState) -> None:
    if not isinstance(state.dimension, str) or not isinstance(state.record, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str | int | float | bool))
            for k, v in state.record.items()):
        raise InputError(f"a {state.dimension} record must map field names to values")


def _release(state: ReleaseState) -> None:
    _name(state.name)
    _root(state.root)
    _site(state.site)
    _text(state.creator, 256, "creator")
    _text(state.doc, MAX_TEXT, "doc")
    if not _time(state.created) or not (state.retracted is None or _time(state.retracted)):
        raise InputError("release times must be numbers")
    if state.retract_reason is not None:
        _text(state.retract_reason, MAX_TEXT, "retraction reason")
    if not _count(state.entries) or not _count(state.bytes):
        raise InputError("a release's entry count and bytes must be non-negative integers")
    if not isinstance(state.selection, dict) or not isinstance(state.counts, dict) or not all(
            isinstance(k, str) and _count(v) for k, v in state.counts.items()):
        raise InputError("a release's selection and counts must be mappings")


def _release_entries(state: ReleaseEntries) -> None:
    _name(state.release)
    if not _count(state.start) or not isinstance(state.lines, list):
        raise InputError("manifest lines need a start and a list of lines")
    for line in state.lines:
        _text(line, MAX_LINE, "manifest line")
        try:
            entry = json.loads(line)
            _uuid(entry["id"])
        except (ValueError, TypeError, KeyError):
            raise InputError(f"invalid manifest line {line[:80]!r}") from None


def _release_check(state: ReleaseCheckState) -> None:
    _name(state.release)
    _site(state.site)
    _root(state.root)
    _text(state.checker, 256, "checker")
    if not _time(state.checked) or not isinstance(state.complete, bool) or not all(
            _count(v) for v in (state.files, state.missing, state.corrupt)):
        raise InputError("a verification needs a time, a result and counts")


_CHECKS: dict[type, Any] = {
    CollectionState: _collection, DatasetTypeState: _dataset_type, DatasetState: _dataset,
    TagState: _tag, CalibSlotState: _calib_slot, DatasetRemoval: _dataset_removal,
    CollectionRemoval: _collection_removal, RecordState: _record, ReleaseState: _release,
    ReleaseEntries: _release_entries, ReleaseCheckState: _release_check}


def _name(name: Any) -> None:
    check_collection_name(name)


def _site(name: Any) -> None:
    if not isinstance(name, str) or not _SITE.fullmatch(name):
        raise InputError(f"invalid site name {str(name)[:80]!r}")


def _type(name: Any) -> None:
    if not isinstance(name, str) or not _TYPE.fullmatch(name):
        raise InputError(f"invalid dataset type name {str(name)[:80]!r}")


def _uuid(value: Any) -> None:
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise InputError(f"invalid dataset id {str(value)[:80]!r}") from None


def _text(value: Any, limit: int, what: str) -> None:
    if not isinstance(value, str) or len(value) > limit:
        raise InputError(f"invalid {what} (text of at most {limit} characters)")


def _root(value: Any) -> None:
    if not isinstance(value, str) or not _ROOT.fullmatch(value):
        raise InputError(f"invalid release root {str(value)[:80]!r}")


def _time(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _versions(*values: Any) -> None:
    if not all(_count(v) for v in values):
        raise InputError("versions must be non-negative integers")


def _scalar_key(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, str) and len(value) <= 128
