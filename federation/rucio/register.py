"""Registering a site's files with Rucio: replicas on its RSE, one dataset per RUN.

Rucio is told only about files that are what the registry says they are: each file not
yet registered is read once (:func:`file_sums`), its size and xxh3 compared with its
record, and Rucio's adler32 and md5 taken from the same read. A file that is missing,
corrupted, ingested in place or has no Rucio name is refused with its reason, and the
others go on. Every request is bulk (chunks of :data:`~federation.rucio.session.CHUNK`
names): a run over N files makes a few requests per thousand files, never one per file.

Registration is idempotent: replicas already AVAILABLE on the RSE are counted, not read
again, and attached to their collections only if a run killed before that left them
out. :func:`register_release` adds a container ``releases/<NAME>`` of datasets
``releases/<NAME>/<RUN>`` holding exactly the release's files, and a locked rule on the
site's RSE that keeps them there.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.registry.states import DatasetState
from federation.rucio.hashing import file_sums
from federation.rucio.names import (
    release_container,
    release_dataset,
    run_dataset,
    why_invalid,
    why_unmappable,
)
from federation.rucio.rules import SiteRules
from federation.rucio.session import RucioFile, RucioSession
from federation.sync.progress import Progress


@dataclass(frozen=True)
class Registrable:
    """A dataset's file as the registry records it: what Rucio is to be told."""

    dataset_id: str
    dataset_type: str
    run: str
    data_id: dict[str, Any]
    path: str  # datastore path (relative to the root; absolute: ingested in place)
    size: int
    checksum: str  # xxh3-128 hex

    @classmethod
    def of(cls, state: DatasetState) -> Registrable:
        """From a dataset's state; it must have a file."""
        if state.file is None:
            raise ValueError(f"dataset {state.id} has no file to register")
        f = state.file
        return cls(state.id, state.dataset_type, state.run, dict(state.data_id), f.path,
                   f.size, f.checksum)

    def meta(self) -> dict[str, str]:
        """Rucio metadata: the dataset UUID as ``guid``, and where the registry has it."""
        return {"guid": uuid.UUID(self.dataset_id).hex, "fed_dataset_type": self.dataset_type,
                "fed_run": self.run,
                "fed_data_id": json.dumps(self.data_id, sort_keys=True, default=str)}


@dataclass
class Registered:
    """What a registration did: files registered now, found registered, refused (by path,
    with the reason); the Rucio requests it made."""

    registered: int = 0
    already: int = 0
    bytes: int = 0  # of the files registered now
    failed: dict[str, str] = field(default_factory=dict)
    calls: int = 0
    not_here: int = 0  # selected datasets without a file at this site (not refused)
    release: str | None = None
    rule: str | None = None  # the release's locked rule on the RSE
    rule_created: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"registered": self.registered, "already": self.already, "bytes": self.bytes,
                "failed": dict(self.failed), "calls": self.calls, "not_here": self.not_here,
                "release": self.release, "rule": self.rule, "rule_created": self.rule_created,
                "notes": list(self.notes)}


def register(session: RucioSession, root: Path, files: Sequence[Registrable], *,
             jobs: int = 4, progress: Progress | None = None,
             rules: SiteRules | None = None) -> Registered:
    """Register ``files`` (under the datastore ``root``) as replicas on the session's RSE,
    each attached to the Rucio dataset of its RUN and kept there by fed's file rule for
    the site (``rules``: the site's rules when the caller holds them already)."""
    start = session.calls
    result = Registered()
    _register(session, Path(root), files, result, jobs, progress, rules)
    result.calls = session.calls - start
    return result


def register_release(session: RucioSession, root: Path, release_name: str,
                     files: Sequence[Registrable], *, jobs: int = 4,
                     progress: Progress | None = None,
                     missing: Mapping[str, str] | None = None) -> Registered:
    """:func:`register`, then the release's container and datasets of exactly ``files``
    and a locked rule on the RSE. ``missing``: the release's files that are not here (by
    path, with why), refused. Nothing of the release is made while any of its files is
    refused: Rucio never holds half a release."""
    start = session.calls
    result = Registered(release=release_name)
    result.failed.update(missing or {})
    why = why_invalid(release_container(release_name))
    if why is not None:
        result.failed.update({f.path: f"release {release_name!r} has no Rucio name: {why}"
                              for f in files})
    else:
        done = _register(session, Path(root), files, result, jobs, progress, None)
        if result.failed:
            result.notes.append(f"release {release_name} not registered: "
                                f"{len(result.failed)} of its files were refused")
        else:
            _release(session, release_name, files, done, result)
    result.calls = session.calls - start
    return result


def _register(session: RucioSession, root: Path, files: Sequence[Registrable],
              result: Registered, jobs: int, progress: Progress | None,
              rules: SiteRules | None) -> dict[str, set[str]]:
    """Register what is new; the collections holding each registered file, by name."""
    rse = session.settings.rse
    named = _named(files, result)
    if not named:
        return {}
    found = session.replicas(rse, list(named), parents=True)
    parents: dict[str, set[str]] = {}
    new: dict[str, Registrable] = {}
    for name, f in named.items():
        replica = found.get(name)
        if replica is None:
            new[name] = f
        elif replica.state != "AVAILABLE":
            result.failed[f.path] = (f"Rucio lists its replica on {rse} as {replica.state}; "
                                     "left as it is")
        elif replica.size != f.size:
            result.failed[f.path] = (f"Rucio records {replica.size} bytes on {rse}, the "
                                     f"registry {f.size}")
        else:
            result.already += 1
            parents[name] = set(replica.parents)
    _refuse_others(session, new, result)
    verified = _verify(root, new, jobs, progress, result)
    session.add_replicas(rse, verified)
    result.registered += len(verified)
    result.bytes += sum(f.size for f in verified)
    parents.update({f.name: set() for f in verified})
    _attach(session, {name: run_dataset(named[name].run) for name in parents}, parents)
    # A registered replica without a rule is Rucio's to delete when the RSE needs room.
    (rules or SiteRules(session, session.site)).ensure(list(parents))
    return parents


def _named(files: Iterable[Registrable], result: Registered) -> dict[str, Registrable]:
    """The files by Rucio name; those without one (or whose RUN has none) refused."""
    named: dict[str, Registrable] = {}
    for f in files:
        why = why_unmappable(f.path)
        run_why = why_invalid(run_dataset(f.run))
        if why is not None:
            result.failed[f.path] = why
        elif run_why is not None:
            result.failed[f.path] = f"its RUN {f.run!r} has no Rucio dataset name: {run_why}"
        elif f.path in named and named[f.path].dataset_id != f.dataset_id:
            result.failed[f.path] = f"the file of two datasets ({named[f.path].dataset_id})"
        else:
            named[f.path] = f
    return named


def _refuse_others(session: RucioSession, new: dict[str, Registrable],
                   result: Registered) -> None:
    """Refuse names Rucio knows as another file (another dataset, another content)."""
    known = session.files(list(new)) if new else {}
    for name, record in known.items():
        f = new[name]
        guid = record.meta.get("guid")
        if guid is not None and uuid.UUID(guid).hex != uuid.UUID(f.dataset_id).hex:
            why = f"Rucio knows {name} as the file of dataset {uuid.UUID(guid)}"
        elif record.size != f.size:
            why = f"Rucio knows {name} with {record.size} bytes, the registry {f.size}"
        else:
            continue
        result.failed[f.path] = why
        del new[name]


def _verify(root: Path, new: dict[str, Registrable], jobs: int, progress: Progress | None,
            result: Registered) -> list[RucioFile]:
    """Read each file once; those matching their records, with Rucio's checksums."""
    if progress is not None:
        progress.planned(len(new), sum(f.size for f in new.values()))

    def check(item: tuple[str, Registrable]) -> RucioFile | str:
        name, f = item
        try:
            return _checked(root / name, name, f)
        finally:
            if progress is not None:
                progress.advance(1, f.size)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        outcomes = list(pool.map(check, new.items()))
    verified = []
    for f, outcome in zip(new.values(), outcomes, strict=True):
        if isinstance(outcome, str):
            result.failed[f.path] = outcome
        else:
            verified.append(outcome)
    return verified


def _checked(path: Path, name: str, f: Registrable) -> RucioFile | str:
    """The file to register, or why not (missing, not a regular file, corrupted)."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            return f"{path} is not a regular file"
        sums = file_sums(path)
    except FileNotFoundError:
        return f"missing: no file at {path}"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if sums.size != f.size:
        return f"{sums.size} bytes on disk, the registry records {f.size}"
    if sums.xxh3 != f.checksum:
        return "its content no longer matches the registry's xxh3 (corrupted?)"
    return RucioFile(name, sums.size, sums.adler32, sums.md5, f.meta())


def _attach(session: RucioSession, wanted: dict[str, str],
            parents: dict[str, set[str]]) -> None:
    """Attach each file to its collection (name -> collection) unless it is in it already;
    collections made first."""
    todo: dict[str, list[str]] = {}
    for name, collection in wanted.items():
        if collection not in parents.get(name, ()):
            todo.setdefault(collection, []).append(name)
    if not todo:
        return
    session.add_collections("dataset", sorted(todo))
    for collection, names in sorted(todo.items()):
        session.attach(collection, names)
        for name in names:
            parents.setdefault(name, set()).add(collection)


def _release(session: RucioSession, release: str, files: Sequence[Registrable],
             parents: dict[str, set[str]], result: Registered) -> None:
    """The release's datasets and container (made and filled if not yet), and its rule."""
    settings = session.settings
    container = release_container(release)
    runs = {f.path: release_dataset(release, f.run) for f in files}
    if not runs:
        result.notes.append(f"release {release} has no files: nothing to keep in Rucio")
        return
    datasets = sorted(set(runs.values()))
    bad = [f"{d}: {why}" for d in datasets if (why := why_invalid(d)) is not None]
    if bad:
        result.notes.append(f"release {release} not registered: {bad[0]}")
        return
    if any(container not in parents.get(name, ()) for name in runs):
        _attach(session, runs, parents)
        session.add_collections("container", [container])
        session.attach(container, datasets)
    rse = settings.rse
    mine = [r for r in session.rules(rse, name=container) if r.name == container]
    if mine:
        result.rule = mine[0].id
        if not mine[0].locked:
            result.notes.append(f"the rule {mine[0].id} on {rse} keeping release {release} "
                                "is not locked")
        return
    result.rule = session.add_rules([container], rse, comment=f"fed: release {release} at "
                                    f"{session.site}", locked=True, grouping="ALL")[0]
    result.rule_created = True
