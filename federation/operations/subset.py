"""The subsets a repository holds: ``fed subset show`` and ``fed subset verify``.

Every pull keeps a cursor per (source, selection): which source, which query, and
up to which source journal entry it has applied (a release selection names the
release, whose root fixes its content). That cursor is the subset's record.

Verifying reads the selection the way a sync does (a snapshot of the source's
registry through :class:`~federation.sync.reader.SourceReader`, complete subsets'
calibrations included), reads the same selection of this repository the same
way, and compares the two state by state: datasets (type, run, data ID, file and
whether it is here or held elsewhere), collections, TAGGED memberships and
CALIBRATION validity ranges; then re-hashes the files that should be here. A
subset is *exact* when nothing is missing, extra or different and every file
verifies. When the source has moved past the cursor, the differences are its
newer changes (*stale*: sync again) rather than damage.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.butler import Butler
from federation.errors import ConfigError
from federation.registry.cursors import Cursor
from federation.registry.states import (
    CalibSlotState,
    CollectionState,
    DatasetState,
    TagState,
)
from federation.sites import SiteDefinition, list_sites
from federation.sync.reader import SourceReader
from federation.sync.remote.mirror import Mirror
from federation.sync.selection import Selection
from federation.sync.site_access import open_site


@dataclass(frozen=True)
class Subset:
    """One selection this repository pulls from a source, and how far it has gone."""

    source: str
    selection: Selection
    last_seq: int
    synced_at: float
    release_root: str | None = None

    @property
    def describe(self) -> str:
        return self.selection.describe()


@dataclass
class SubsetCheck:
    """What verifying one subset found."""

    subset: Subset
    source_head: int
    datasets: int = 0  # datasets the query gives at the source
    files: int = 0  # of which files here, re-hashed
    records_only: int = 0  # of which held at another site
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # files here that do not verify

    @property
    def stale(self) -> bool:
        """The source has changed since this subset's last sync."""
        return self.source_head > self.subset.last_seq

    @property
    def exact(self) -> bool:
        return not (self.missing or self.extra or self.differing or self.damaged)


def subsets(butler: Butler, source: str | None = None) -> list[Subset]:
    """The subsets ``butler``'s repository holds (from ``source`` only, if given)."""
    found = []
    for cursor in butler.registry.cursors.all("pull"):
        if source is not None and cursor.peer != source:
            continue
        found.append(_subset(butler, cursor))
    return found


def _subset(butler: Butler, cursor: Cursor) -> Subset:
    selection = Selection.from_dict(dict(cursor.selection))
    root = None
    if selection.release is not None:
        held = butler.registry.releases.find(selection.release)
        root = held.root if held is not None else None
    return Subset(cursor.peer, selection, cursor.last_seq, cursor.updated_at, root)


def show(repo: Path, source: str | None = None) -> list[Subset]:
    with Butler(repo) as butler:
        return subsets(butler, source)


def verify(repo: Path, *, source: str | None = None,
           sites_dir: str | os.PathLike | None = None) -> list[SubsetCheck]:
    """Check every subset (from ``source``) against its source as it is now."""
    with Butler(repo) as butler:
        held = subsets(butler, source)
        if not held:
            raise ConfigError(f"{repo} holds no subset" + (f" from {source}" if source else "")
                              + "; 'fed sync SOURCE DEST -c ... --where ...' makes one")
        definitions = {s.name: s for s in list_sites(sites_dir)}
        checks = []
        for subset in held:
            site = definitions.get(subset.source)
            if site is None:
                raise ConfigError(f"no site definition for {subset.source}, the source of "
                                  f"{subset.describe}")
            checks.append(_verify(butler, site, subset))
        return checks


def _verify(here: Butler, site: SiteDefinition, subset: Subset) -> SubsetCheck:
    with _source(here, site) as (source, reader_here):
        theirs = SourceReader(source.registry, subset.selection, here=reader_here)
        with theirs.window() as head:
            expected = _states(theirs)
        check = SubsetCheck(subset, head)
    mine = SourceReader(here.registry, subset.selection)
    with mine.window():
        actual = _states(mine)
    _compare(expected, actual, check, subset.selection.files)
    carried = [uuid.UUID(k) for k, s in expected.datasets.items()
               if subset.selection.files and s.held_at is None and s.file is not None
               and k in actual.datasets]
    check.files = len(carried)
    check.records_only = sum(1 for s in expected.datasets.values() if not (
        subset.selection.files and s.held_at is None and s.file is not None))
    refs = here.registry.datasets.get_many(carried)
    report = here.verify(refs.values())
    check.damaged += [f"{p.path} ({p.dataset_id}): {p.problem}" for p in report.problems]
    return check


@contextmanager
def _source(here: Butler, site: SiteDefinition) -> Iterator[tuple[Butler, str | None]]:
    """The source's registry: the repository itself, or (reached over the network) the
    mirror of its published journal this repository keeps, as of the last sync."""
    if not site.is_remote:
        with open_site(site) as butler:
            yield butler, None
        return
    mirror = Mirror(site, here.config.root)
    with mirror.open() as butler:
        yield butler, site.name


@dataclass
class _Snapshot:
    datasets: dict[str, DatasetState] = field(default_factory=dict)
    memberships: dict[str, Any] = field(default_factory=dict)  # key -> what it holds


def _states(reader: SourceReader) -> _Snapshot:
    snap = _Snapshot()
    for batch in reader.snapshot():
        for state in batch.states:
            if isinstance(state, DatasetState):
                snap.datasets[state.id] = state
            elif isinstance(state, CollectionState):
                snap.memberships[f"collection {state.name}"] = (str(state.type), state.children)
            elif isinstance(state, TagState) and state.present:
                snap.memberships[f"tag {state.collection} {state.dataset_id}"] = True
            elif isinstance(state, CalibSlotState):
                snap.memberships[
                    f"validity {state.collection} {state.dataset_type} {state.data_id_key}"
                ] = sorted(state.entries)
    return snap


def _compare(expected: _Snapshot, actual: _Snapshot, check: SubsetCheck, files: bool) -> None:
    check.datasets = len(expected.datasets)
    for key, state in expected.datasets.items():
        mine = actual.datasets.get(key)
        if mine is None:
            check.missing.append(_describe(state))
        elif _content(state) != _content(mine):
            check.differing.append(f"{_describe(state)}: not as at the source")
        elif files and state.file is not None and state.held_at is None \
                and mine.held_at is not None:
            check.missing.append(f"{_describe(state)}: its file (held at {mine.held_at})")
    check.extra += [_describe(s) for k, s in actual.datasets.items()
                    if k not in expected.datasets]
    for key, value in expected.memberships.items():
        if key not in actual.memberships:
            check.missing.append(key)
        elif actual.memberships[key] != value:
            check.differing.append(f"{key}: not as at the source")
    check.extra += [k for k in actual.memberships if k not in expected.memberships]


def _content(state: DatasetState) -> tuple:
    file = state.file
    return (state.dataset_type, state.run, sorted(state.data_id.items()),
            None if file is None else (file.size, file.checksum))


def _describe(state: DatasetState) -> str:
    data_id = " ".join(f"{k}={v}" for k, v in state.data_id.items())
    return f"{state.dataset_type} {data_id} in {state.run} ({state.id})"


def age(seconds_since_epoch: float) -> str:
    """When, for people: 2026-12-03 07:59."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds_since_epoch)) \
        if seconds_since_epoch else "-"
