"""`fed compare`: the same processing at two sites, compared dataset by dataset (LDF104).

Each side is ``SITE:RUN``: a site of the sites directory (a local one opened
directly; one reached over SFTP or HTTP read through what it published, mirrored
in the cache) or a repository path, then a run (or any collection, searched as a
Butler would). The datasets selected on both sides are paired by dataset type and
data ID and classified (:mod:`federation.compare`); only the files whose content
is compared are read, each verified, and files held at other sites are fetched
into ``$XDG_CACHE_HOME/federation/files/SITE/``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.butler import Butler
from federation.compare.files import Files
from federation.compare.model import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    Comparison,
    FileInfo,
    SideInfo,
    Tolerance,
)
from federation.compare.pairing import Entry, pair_entries
from federation.compare.runner import Progress, classify
from federation.errors import InputError
from federation.operations.release import cache_home, published
from federation.sites import load_site
from federation.sync.site_access import open_site


@dataclass(frozen=True)
class RunRef:
    """One side as given: ``SITE:RUN`` or ``REPO:RUN`` (a run name has no ':')."""

    text: str
    where: str
    run: str

    @classmethod
    def parse(cls, text: str) -> RunRef:
        where, sep, run = text.rpartition(":")
        if not sep or not where.strip() or not run.strip():
            raise InputError(f"{text!r}: give each side as SITE:RUN (a site of the sites "
                             "directory, or a repository path, then the run)")
        return cls(text, where, run)


@dataclass(frozen=True)
class CompareRequest:
    """What to compare and how closely: the two sides, a selection applied to both, the
    tolerance, and where to write the HTML report (None: no report)."""

    a: str
    b: str
    dataset_types: tuple[str, ...] = ()
    where: str | None = None
    bind: Mapping[str, Any] | None = None
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    report: Path | None = None
    jobs: int = 4


@dataclass
class _Side:
    ref: RunRef
    butler: Butler
    site: str  # the site's name, or the repository path
    remote: bool


def compare(request: CompareRequest, sites_dir: Path | None = None,
            progress: Progress | None = None) -> Comparison:
    """Pair and classify the datasets of two runs; with ``request.report``, also write
    the HTML report there. Bad input is refused before anything is read or written."""
    tolerance = Tolerance(request.rtol, request.atol)
    ref_a, ref_b = RunRef.parse(request.a), RunRef.parse(request.b)
    if request.report is not None and request.report.exists() \
            and not request.report.is_dir():
        raise InputError(f"--report {request.report}: not a directory")
    with ExitStack() as stack:
        a = stack.enter_context(_opened(ref_a, sites_dir))
        b = stack.enter_context(_opened(ref_b, sites_dir))
        names = _dataset_types(request.dataset_types, a, b)
        entries_a = _entries(a, names, request)
        entries_b = _entries(b, names, request)
        if not entries_a and not entries_b:
            raise InputError(f"nothing to compare: neither {ref_a.text} nor {ref_b.text} "
                             "holds datasets of the selection")
        files = stack.enter_context(Files(cache_home() / "files",
                                          lambda name: load_site(name, sites_dir),
                                          request.jobs))
        found = classify(pair_entries(entries_a, entries_b), tolerance, files,
                         labels=(a.site, b.site), keep_image=request.report is not None,
                         progress=progress)
        comparison = Comparison(
            SideInfo(ref_a.text, a.site, ref_a.run, len(entries_a), a.remote),
            SideInfo(ref_b.text, b.site, ref_b.run, len(entries_b), b.remote),
            tolerance, found.results, list(found.summaries.values()),
            fetched=files.fetched, fetched_bytes=files.fetched_bytes, reused=files.reused,
            worst_image=found.worst_image)
    if request.report is not None:
        from federation.compare.report import write_report

        comparison.report = str(write_report(comparison, request.report))
    return comparison


@contextmanager
def _opened(ref: RunRef, sites_dir: Path | None) -> Iterator[_Side]:
    """The side's repository: a repository path, a local site, or the records-only
    mirror of what a remote site published; its run must be there."""
    path = Path(ref.where)
    if (path / "federation.yaml").is_file():
        side = _Side(ref, Butler(path), ref.where, False)
    else:
        site = load_site(ref.where, sites_dir)
        butler = Butler(published(site)) if site.is_remote else open_site(site)
        side = _Side(ref, butler, site.name, site.is_remote)
    try:
        if not side.butler.registry.collections.exists(ref.run):
            seen = " in what it published (fed publish there first?)" if side.remote else ""
            raise InputError(f"{side.site} has no run {ref.run!r}{seen}")
        yield side
    finally:
        side.butler.close()


def _dataset_types(patterns: Sequence[str], a: _Side, b: _Side) -> list[str] | None:
    """The dataset type names ``-t`` selects on either side (None: all); a name or glob
    that matches at neither side is an error."""
    if not patterns:
        return None
    names: list[str] = []
    known = {t.name for side in (a, b) for t in side.butler.registry.dataset_types.query()}
    for pattern in patterns:
        found = sorted(fnmatch.filter(known, pattern))
        if not found:
            raise InputError(f"-t {pattern}: no dataset type matches at {a.site} or {b.site}")
        names += [n for n in found if n not in names]
    return names


def _entries(side: _Side, names: list[str] | None, request: CompareRequest) -> list[Entry]:
    """The selected datasets of the side's run, each with its file record."""
    registry = side.butler.registry
    types = registry.dataset_types.query() if names is None else \
        [t for t in (registry.dataset_types.find(n) for n in names) if t is not None]
    if not types:
        return []
    refs = side.butler.query_datasets([t.name for t in types], [side.ref.run],
                                      where=request.where, bind=request.bind)
    files = {i: (stored, held) for i, stored, held
             in registry.datasets.iter_files([r.id for r in refs])}
    entries = []
    for ref in refs:
        info, local = None, None
        if ref.id in files:
            stored, held_at = files[ref.id]
            if side.remote and held_at is None:
                held_at = side.site  # the mirror holds records only
            info = FileInfo(str(ref.id), ref.run, stored.path, stored.size, stored.checksum,
                            held_at)
            if held_at is None:
                local = side.butler.datastore.path_of(stored)
        entries.append(Entry(ref.dataset_type.name, ref.dataset_type.storage_class,
                             ref.required_data_id, info, local))
    return entries
