"""``fed drop``: free a site's disk, never the federation's last verified copies.

A drop removes a site's local files of the selected datasets and keeps their
records, marked as held at another site (a later sync with files can bring them
back). Only datasets that at least ``min_copies`` other sites hold *verified now*
(:mod:`federation.operations.copies`) are dropped; the others are kept and
listed, and nothing is written for them. That holds for released datasets too:
the last verified copy of a released dataset is never dropped.

Copies are checked first, without locks. To commit, the drop takes the sync
locks of this site and of every local site whose copies it counts (in name
order, so two drops never wait on each other), checks that those copies are
unchanged (two laptops dropping the same data at once cannot each count the
other's copy), marks the files held elsewhere in one transaction, and deletes
them after it commits. Sites reached over SFTP or HTTP are read, not locked.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from federation.butler import Butler
from federation.errors import ConfigError, InputError
from federation.model import DatasetRef, StoredFile
from federation.operations.copies import (
    NOT_HELD,
    Copy,
    SiteCopies,
    Wanted,
    check_site,
    still_there,
    storage_of,
)
from federation.operations.selection import refuse_unmatched
from federation.policy.loader import read_policies
from federation.registry.datasets import HeldElsewhere
from federation.registry.releases import ReleaseCheck
from federation.registry.sync_log import LogEntry, who
from federation.rucio.rules import SiteRules
from federation.rucio.session import RucioSession
from federation.sites import SiteDefinition, list_sites, load_site
from federation.sync.selection import Selection
from federation.sync.site_access import open_site, sync_lock


@dataclass(frozen=True)
class DropRequest:
    """What to drop at which site: a query (collections, dataset types, `where`) and/or a
    release's datasets, and how many verified copies elsewhere each needs."""

    site: str
    collections: tuple[str, ...] = ()
    dataset_types: tuple[str, ...] = ()
    where: str | None = None
    bind: Mapping[str, Any] = field(default_factory=dict)
    release: str | None = None
    min_copies: int = 1
    dry_run: bool = False
    wait: float = 60.0  # seconds to wait for the sync locks
    #: the policies whose flows' ``min_copies`` raise the minimum for what they carry
    #: (None: ``--policies``' default, $FED_POLICIES or ./policies, if it exists)
    policies: str | os.PathLike | None = None
    #: exactly these datasets, in this order (the shared cache evicts through the drop);
    #: a query given too narrows them (a release is then not looked at)
    ids: tuple[uuid.UUID, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        chosen = {"datasets": len(self.ids)} if self.ids else {}
        return {"collections": list(self.collections), "dataset_types": list(self.dataset_types),
                "where": self.where, "bind": dict(self.bind), "release": self.release,
                "min_copies": self.min_copies} | chosen


@dataclass
class Candidate:
    """A dataset whose file is here, with the copies other sites hold of it."""

    ref: DatasetRef
    stored: StoredFile
    copies: list[Copy] = field(default_factory=list)
    release: str | None = None  # a release holding it here
    need: int = 1  # verified copies elsewhere it needs (the request's, or a flow's)
    because: str = ""  # the flow that raised ``need``, if one did

    @property
    def verified(self) -> int:
        """Verified copies elsewhere, those on one storage counted once."""
        return len({c.storage for c in self.copies if c.verified})

    @property
    def holder(self) -> str:
        """The site its record will name as holding its file."""
        return next(c.site for c in self.copies if c.verified)


@dataclass
class DropResult:
    """Datasets dropped (or, on a dry run, to drop) and kept; ``done`` once dropped.

    ``not_here``: selected datasets whose file is not here (held elsewhere already, or
    none); ``in_place``: files ingested in place, which are not the datastore's to delete.
    """

    site: str
    min_copies: int
    dry_run: bool
    dropped: list[Candidate] = field(default_factory=list)
    kept: list[Candidate] = field(default_factory=list)
    not_here: int = 0
    in_place: int = 0
    unreachable: dict[str, str] = field(default_factory=dict)
    others: list[str] = field(default_factory=list)
    done: bool = False
    rucio_rules_removed: int = 0  # fed's rules for the dropped files on the site's RSE

    @property
    def bytes(self) -> int:
        return sum(c.stored.size for c in self.dropped)

    def holders(self) -> dict[str, int]:
        """How many dropped files each site will be recorded as holding."""
        counts: dict[str, int] = {}
        for candidate in self.dropped:
            counts[candidate.holder] = counts.get(candidate.holder, 0) + 1
        return dict(sorted(counts.items()))


Advance = Callable[[int], None]
Confirm = Callable[[DropResult], None]


def drop(request: DropRequest, *, sites_dir: str | os.PathLike | None = None,
         progress: Advance | None = None, confirm: Confirm | None = None) -> DropResult:
    """Drop the selected files of site ``request.site`` that enough other sites hold.

    ``progress(n)`` is called as (dataset, site) pairs are checked; ``confirm`` (the
    caller's question to the user, raising to cancel) before anything is written.
    """
    if request.min_copies < 1:
        raise InputError(f"--min-copies must be at least 1, not {request.min_copies}: a drop "
                         "never leaves a dataset without a verified copy")
    site = load_site(request.site, sites_dir)
    if site.is_remote:
        raise ConfigError(f"site {site.name} is reached over {site.transport}: run fed drop "
                          "on the machine that holds its files")
    others = [s for s in list_sites(sites_dir) if s.name != site.name]
    advance = progress or (lambda n: None)
    with open_site(site) as butler:
        result = DropResult(site.name, request.min_copies, request.dry_run,
                            others=[s.name for s in others])
        candidates = _candidates(butler, request, result)
        _needs(candidates, request, butler)
        wanted = [Wanted(c.ref.id, c.stored, storage_of(butler.datastore.path_of(c.stored)))
                  for c in candidates]
        for other in others:
            _add_copies(candidates, check_site(other, wanted, advance), result)
        _decide(result, candidates)
        if request.dry_run:
            return result
        butler.empty_trash()  # files of a drop killed after its commit
        if not result.dropped:
            return result
        if confirm is not None:
            confirm(result)
        result = _commit(butler, site, others, request, result)
    if site.rucio is not None and result.dropped:
        # Files no longer here: fed's rules for them on the site's RSE go too, so that Rucio
        # neither keeps nor lists copies that are not there (its reaper drops the replicas).
        rules = SiteRules(RucioSession(site.rucio, site.name), site.name)
        result.rucio_rules_removed = rules.remove([c.stored.path for c in result.dropped])
    return result


def _candidates(butler: Butler, request: DropRequest, result: DropResult) -> list[Candidate]:
    """The selected datasets whose files are here, in the order found."""
    registry = butler.registry
    selection = Selection.make(request.collections, request.dataset_types, request.where,
                               dict(request.bind))
    refuse_unmatched(registry.site, butler, selection, "nothing was dropped")
    narrowed = bool(request.collections or request.dataset_types or request.where)
    if request.ids:
        found = registry.datasets.get_many(request.ids)
        refs = [found[i] for i in request.ids if i in found]
        if narrowed:
            chosen = {r.id for r in _query(butler, request)}
            refs = [r for r in refs if r.id in chosen]
    elif request.release is None:
        refs = _query(butler, request)
    else:
        registry.releases.get(request.release)  # an unknown release: one line
        ids = [e.dataset_id for e in registry.releases.entries(request.release)]
        if narrowed:
            chosen = {r.id for r in _query(butler, request)}
            ids = [i for i in ids if i in chosen]
        found = registry.datasets.get_many(ids)
        refs = [found[i] for i in ids if i in found]
    files = registry.datasets.files_here(r.id for r in refs)
    released = registry.releases.holding(list(files))
    candidates = []
    for ref in refs:
        local = files.get(ref.id)
        if local is None:
            result.not_here += 1
        elif os.path.isabs(local.stored.path):
            result.in_place += 1
        else:
            candidates.append(Candidate(ref, local.stored, release=released.get(ref.id)))
    return candidates


def _query(butler: Butler, request: DropRequest) -> list[DatasetRef]:
    """Every dataset the query finds along its collections (default: all of them)."""
    return butler.query_datasets(list(request.dataset_types) or None,
                                 list(request.collections) or ["*"], where=request.where,
                                 bind=dict(request.bind), find_first=False)


def _add_copies(candidates: list[Candidate], found: SiteCopies, result: DropResult) -> None:
    if found.unreachable is not None:
        result.unreachable[found.site] = found.unreachable
    for candidate in candidates:
        copy = found.copies.get(candidate.ref.id)
        if copy is not None:
            candidate.copies.append(copy)


def _decide(result: DropResult, candidates: list[Candidate]) -> None:
    result.dropped = [c for c in candidates if c.verified >= c.need]
    result.kept = [c for c in candidates if c.verified < c.need]


def _needs(candidates: list[Candidate], request: DropRequest, butler: Butler) -> None:
    """Each dataset needs ``--min-copies`` verified copies elsewhere, or more where an
    enabled flow of the policies that carries it says so (its ``min_copies``): a flow
    carries a dataset when its collection and type globs match the dataset's run and
    type, or, for a release flow, when its release holds the dataset here."""
    flows = [f for f in read_policies(request.policies).flows if f.enabled]
    releases = butler.registry.releases
    members = {f.release: {e.dataset_id for e in releases.entries(f.release)}
               for f in flows if f.release is not None and releases.find(f.release)}
    for candidate in candidates:
        candidate.need = request.min_copies
        for flow in flows:
            if flow.min_copies <= candidate.need:
                continue
            if flow.release is not None:
                carried = candidate.ref.id in members.get(flow.release, ())
            else:
                selection = flow.selection()
                carried = selection.matches_collection(candidate.ref.run) and \
                    selection.matches_type(candidate.ref.dataset_type.name)
            if carried:
                candidate.need, candidate.because = flow.min_copies, flow.key


def _commit(butler: Butler, site: SiteDefinition, others: list[SiteDefinition],
            request: DropRequest, result: DropResult) -> DropResult:
    """Under the sync locks of this site and of the local sites counted: check the counted
    copies again, mark the files held elsewhere, delete them; logged in the sync log."""
    local = {s.name: s for s in others if not s.is_remote}
    counted = sorted({c.site for cand in result.dropped for c in cand.copies
                      if c.verified and c.site in local})
    roots = {site.name: site.root} | {name: local[name].root for name in counted}
    log = butler.registry.log
    entry = log.start(LogEntry("drop", site.name, site.name, request.to_dict()))
    try:
        with ExitStack() as locks:
            for name in sorted(roots):
                locks.enter_context(sync_lock(roots[name], name, request.wait))
            for name in counted:
                _recheck(result, local[name])
            _decide(result, result.dropped + result.kept)
            marked = set(butler.registry.datasets.hold_elsewhere([
                HeldElsewhere(c.ref.id, c.stored.path, c.stored.checksum, c.holder)
                for c in result.dropped]))
            changed = [c for c in result.dropped if c.ref.id not in marked]
            for candidate in changed:
                candidate.copies.append(Copy(site.name, False, "its file here changed while "
                                                               "the drop was checking"))
            result.dropped = [c for c in result.dropped if c.ref.id in marked]
            result.kept += changed
            _no_longer_held(butler, list(marked))
            butler.empty_trash()
    except BaseException as exc:
        entry.result, entry.message = "error", str(exc).splitlines()[0] if str(exc) else \
            type(exc).__name__
        log.finish(entry)
        raise
    entry.result = "ok"
    entry.counts = {"dataset drop": len(result.dropped)} if result.dropped else {}
    entry.files, entry.bytes = len(result.dropped), result.bytes
    held = ", ".join(f"{s} ({n})" for s, n in result.holders().items())
    kept = f"{len(result.kept)} kept (too few verified copies elsewhere)" if result.kept else ""
    entry.message = "; ".join(m for m in (f"now held at {held}" if held else "", kept) if m)
    log.finish(entry)
    result.done = True
    return result


def _no_longer_held(butler: Butler, dropped: list[uuid.UUID]) -> None:
    """This site stops holding the releases whose files it dropped: each gets a check
    saying what is no longer here (it travels, so no site counts on a verification made
    before the drop)."""
    releases = butler.registry.releases
    for name in sorted(releases.containing(dropped)):
        info = releases.get(name)
        gone = releases.files_not_here(name)
        releases.record_check(ReleaseCheck(name, time.time(), f"{who()} (fed drop)",
                                           info.root, complete=False,
                                           files=info.entries - gone, missing=gone,
                                           corrupt=0, site=butler.site))


def _recheck(result: DropResult, site: SiteDefinition) -> None:
    """Replace the verified copies counted at ``site`` with what stands there now."""
    counted: dict[uuid.UUID, tuple[Candidate, int]] = {}
    for candidate in result.dropped:
        for position, copy in enumerate(candidate.copies):
            if copy.site == site.name and copy.verified:
                counted[candidate.ref.id] = (candidate, position)
    now = still_there(site, {i: c.copies[p] for i, (c, p) in counted.items()})
    for dataset_id, (candidate, position) in counted.items():
        candidate.copies[position] = now[dataset_id]


def describe_copies(candidate: Candidate) -> str:
    """``SITE: how`` for each site holding something, then the sites holding nothing."""
    found = [f"{c.site}: {c.how}" for c in candidate.copies if c.how != NOT_HELD]
    absent = [c.site for c in candidate.copies if c.how == NOT_HELD]
    return "; ".join(found + ([f"not held at {', '.join(absent)}"] if absent else []))

