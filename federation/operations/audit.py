"""``fed audit`` and ``fed repair``: a repository's files checked, and repaired from
other sites (see :mod:`federation.audit`).

REPO is a repository directory, or the name of a site of the sites directory whose
repository is on this machine. Every argument is checked before anything is
written: a bad one is one line, and nothing changes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from federation.audit.audit import AuditResult, AuditSpec, Phases, run_audit, sqlite_file
from federation.audit.dark import own_entries
from federation.audit.repair import RepairResult, RepairSpec, run_repair
from federation.butler import Butler
from federation.config import RepoConfig
from federation.errors import ConfigError, InputError
from federation.operations.selection import refuse_unmatched
from federation.registry.audits import AuditReads
from federation.sites import SiteDefinition, list_sites, load_site
from federation.sites.loader import NAME
from federation.sync.selection import Selection
from federation.sync.site_access import open_site


@dataclass(frozen=True)
class AuditRequest:
    """``fed audit``: what to check (collections and dataset types, datasets arrived
    ``since`` a time or the last audit, a ``sample`` fraction hashed) and how."""

    repo: str
    collections: tuple[str, ...] = ()
    dataset_types: tuple[str, ...] = ()
    since: str | None = None  # "last", or a time or duration (see fed log --since)
    sample: float = 1.0
    jobs: int | None = None
    quarantine: bool = False
    restart: bool = False
    wait: float = 60.0


@dataclass(frozen=True)
class RepairRequest:
    """``fed repair``: the files of REPO (all, or those of the collections and dataset
    types) found missing or corrupt, repaired from ``sources`` in that order."""

    repo: str
    sources: tuple[str, ...]
    collections: tuple[str, ...] = ()
    dataset_types: tuple[str, ...] = ()
    jobs: int | None = None
    dry_run: bool = False
    wait: float = 60.0


def parse_fraction(text: str | float) -> float:
    """``--sample``: a fraction above 0 and at most 1 (``0.1``), or a percentage (``10%``)."""
    value = str(text).strip()
    try:
        fraction = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        fraction = float("nan")
    if not 0 < fraction <= 1:  # NaN fails too
        raise InputError(f"--sample {text}: give a fraction above 0 and at most 1 (0.1) or "
                         "a percentage (10%)")
    return fraction


def audit(request: AuditRequest, *, sites_dir: str | os.PathLike | None = None,
          phases: Phases | None = None) -> AuditResult:
    """Audit a repository's files: missing, corrupt, dark, and held elsewhere but held
    nowhere; recorded in its sync log (operation ``audit``)."""
    parse_fraction(request.sample)
    since = _since_time(request.since)
    with _opened(request.repo, sites_dir) as (butler, definition):
        ids = _selected(butler, request.collections, request.dataset_types, "nothing was audited")
        selection = {"collections": list(request.collections),
                     "dataset_types": list(request.dataset_types), "since": request.since,
                     "sample": request.sample}
        note = ""
        if since == "last":
            since = _last_audit(butler, selection)
            note = "" if since is not None else "no earlier audit of this selection: " \
                                                "every dataset is checked"
        root = butler.datastore.root
        spec = AuditSpec(selection, since, ids, request.sample, request.jobs,
                         request.quarantine, request.restart, request.wait,
                         frozenset(own_entries(root, sqlite_file(butler.config.db_url))),
                         _skipped(root, definition),
                         {s.name: s for s in list_sites(sites_dir) if s.name != butler.site})
        result = run_audit(butler, spec, phases)
        result.note = note
        return result


def repair(request: RepairRequest, *, sites_dir: str | os.PathLike | None = None,
           phases: Phases | None = None) -> RepairResult:
    """Replace each missing or corrupt file of a repository with a verified copy from
    the first of ``request.sources`` that has one; recorded in its sync log (operation
    ``repair``) unless a dry run."""
    if not request.sources:
        raise InputError("give at least one site to repair from (--from SITE)")
    sources = [load_site(name, sites_dir) for name in dict.fromkeys(request.sources)]
    with _opened(request.repo, sites_dir) as (butler, _):
        for source in sources:
            if source.name == butler.site:
                raise InputError(f"--from {source.name}: that is the repository being "
                                 "repaired; name other sites")
            if not source.is_remote and source.root.resolve() == butler.datastore.root:
                raise InputError(f"--from {source.name}: its repository is the one being "
                                 "repaired")
        ids = _selected(butler, request.collections, request.dataset_types,
                        "nothing was repaired")
        selection = {"from": [s.name for s in sources],
                     "collections": list(request.collections),
                     "dataset_types": list(request.dataset_types)}
        spec = RepairSpec(tuple(sources), selection, ids, request.jobs, request.dry_run,
                          request.wait)
        return run_repair(butler, spec, phases)


@contextmanager
def _opened(repo: str, sites_dir: str | os.PathLike | None
            ) -> Iterator[tuple[Butler, SiteDefinition | None]]:
    """The repository at a path, or of a site of the sites directory (checked against its
    definition), with that definition (for a path: the site whose root it is, if any)."""
    path = Path(repo)
    if NAME.match(repo) and not (path / "federation.yaml").is_file():
        site = load_site(repo, sites_dir)
        if site.is_remote:
            raise ConfigError(f"site {site.name} is reached over {site.transport}: audit and "
                              "repair it on the machine that holds its files")
        with open_site(site) as butler:
            yield butler, site
        return
    RepoConfig.load(path)  # not a repository: one line
    root = path.resolve()
    definition = next((s for s in list_sites(sites_dir)
                       if not s.is_remote and s.root.resolve() == root), None)
    with Butler(path) as butler:
        yield butler, definition


def _since_time(since: str | None) -> float | str | None:
    """``last``, or the time a ``--since`` gives."""
    if since is None:
        return None
    if since.strip().lower() == "last":
        return "last"
    from federation.operations.sync import parse_since_time

    return parse_since_time(since)


def _last_audit(butler: Butler, selection: dict) -> float | None:
    """When the last completed audit of the same collections and dataset types started."""
    for started, logged in AuditReads(butler.registry.db).audits(butler.site):
        if (logged.get("collections"), logged.get("dataset_types")) == \
                (selection["collections"], selection["dataset_types"]):
            return started
    return None


def _selected(butler: Butler, collections: Sequence[str], dataset_types: Sequence[str],
              outcome: str) -> frozenset[uuid.UUID] | None:
    """The datasets the collections and dataset types select (None: every dataset)."""
    if not collections and not dataset_types:
        return None
    refuse_unmatched(butler.site, butler, Selection.make(collections, dataset_types),
                     outcome)
    return frozenset(r.id for r in butler.query_datasets(
        list(dataset_types) or None, list(collections) or ["*"], find_first=False))


def _skipped(root: Path, site: SiteDefinition | None) -> tuple[str, ...]:
    """The site's outbox and inbox when its definition puts them under the root with
    other names (they are not the datastore's)."""
    if site is None or site.is_remote:
        return ()
    folders = []
    for folder in (site.outbox, site.inbox):
        folder = folder.resolve()
        if folder != root and folder.is_relative_to(root):
            folders.append(folder.relative_to(root).as_posix())
    return tuple(folders)


__all__ = ["AuditRequest", "RepairRequest", "audit", "parse_fraction", "repair"]
