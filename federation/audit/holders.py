"""Files recorded as held at another site: does any site hold them?

A record whose file is held elsewhere names one site. That site is looked at first;
for the files it does not hold, every other site of the sites directory. A site holds
a file when:

* on this machine: its registry holds the dataset's file there (not held elsewhere in
  turn) with this record's size and checksum, and the file is there with that size;
* reached over SFTP or HTTP: the file at the same relative path (a synced dataset keeps
  its path) has that size, as its transport states it.

This is a check of presence, not a verification: nothing is read or hashed (``fed
drop`` verifies copies before it counts on them). A site that cannot be reached holds
nothing, and says why.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from federation.errors import FederationError
from federation.registry.audits import FileRecord
from federation.sites import SiteDefinition
from federation.sync.site_access import open_site
from federation.transport.base import TransportError, check_relative

Advance = Callable[[int, int], None]
NOT_HELD = "not held"


@dataclass(frozen=True)
class Finding:
    """What one site was found to hold of one file."""

    site: str
    held: bool
    how: str


def held_nowhere(records: Sequence[FileRecord], sites: Mapping[str, SiteDefinition],
                 here: str, advance: Advance | None = None
                 ) -> dict[uuid.UUID, list[Finding]]:
    """The records whose file no site holds, each with what every site looked at was
    found to hold (its named holder first)."""
    findings: dict[uuid.UUID, list[Finding]] = {r.dataset_id: [] for r in records}
    remaining = {r.dataset_id: r for r in records}
    by_holder: dict[str, list[FileRecord]] = {}
    for record in records:
        by_holder.setdefault(record.held_at or "", []).append(record)
    for holder, group in sorted(by_holder.items()):
        site = sites.get(holder)
        if site is None or holder == here:
            why = ("this site itself, by its record" if holder == here else
                   "a site the sites directory does not define")
            for record in group:
                findings[record.dataset_id].append(Finding(holder, False, why))
            continue
        _look(site, group, findings, remaining, advance)
    for name in sorted(sites):
        if not remaining:
            break
        if name == here:
            continue
        looked = [r for r in remaining.values() if r.held_at != name]
        if looked:  # (progress counts each file once: at its holder)
            _look(sites[name], looked, findings, remaining, None)
    return {i: findings[i] for i in remaining}


def _look(site: SiteDefinition, records: Sequence[FileRecord],
          findings: dict[uuid.UUID, list[Finding]], remaining: dict[uuid.UUID, FileRecord],
          advance: Advance | None) -> None:
    found = _check_remote(site, records) if site.is_remote else _check_local(site, records)
    for record in records:
        finding = found[record.dataset_id]
        findings[record.dataset_id].append(finding)
        if finding.held:
            remaining.pop(record.dataset_id, None)
    if advance is not None:
        advance(len(records), sum(r.size for r in records))


def _check_local(site: SiteDefinition, records: Sequence[FileRecord]
                 ) -> dict[uuid.UUID, Finding]:
    name = site.name
    try:
        butler = open_site(site)
    except (FederationError, sa.exc.SQLAlchemyError, OSError) as exc:
        return _unreachable(name, records, exc)
    found = {}
    with butler:
        theirs = butler.registry.datasets.files_here(r.dataset_id for r in records)
        for record in records:
            local = theirs.get(record.dataset_id)
            if local is None:
                found[record.dataset_id] = Finding(name, False, NOT_HELD)
                continue
            if (local.stored.size, local.stored.checksum) != (record.size, record.checksum):
                found[record.dataset_id] = Finding(name, False,
                                                   "its record has another size or checksum")
                continue
            try:
                size = os.stat(butler.datastore.path_of(local.stored)).st_size
            except (OSError, FederationError):
                found[record.dataset_id] = Finding(name, False, "its file is missing")
                continue
            found[record.dataset_id] = Finding(
                name, size == record.size,
                "held" if size == record.size else f"its file has {size} bytes, not {record.size}")
    return found


def _check_remote(site: SiteDefinition, records: Sequence[FileRecord]
                  ) -> dict[uuid.UUID, Finding]:
    name = site.name
    try:
        transport = site.open_files()
    except FederationError as exc:
        return _unreachable(name, records, exc)
    found: dict[uuid.UUID, Finding] = {}
    try:
        for done, record in enumerate(records):
            try:
                check_relative(record.path)
            except TransportError:
                found[record.dataset_id] = Finding(name, False,
                                                   "its path is not one to look for there")
                continue
            try:
                info = transport.stat(record.path)
            except FederationError as exc:  # the site, not one file, failed
                found |= _unreachable(name, records[done:], exc)
                break
            if info is None:
                found[record.dataset_id] = Finding(name, False, NOT_HELD)
            elif info.size != record.size:
                found[record.dataset_id] = Finding(
                    name, False, f"its file has {info.size} bytes, not {record.size}")
            else:
                found[record.dataset_id] = Finding(name, True,
                                                   f"held (stat over {site.transport.upper()})")
    finally:
        transport.close()
    return found


def _unreachable(site: str, records: Sequence[FileRecord], exc: BaseException
                 ) -> dict[uuid.UUID, Finding]:
    text = str(exc).strip()
    why = f"unreachable ({text.splitlines()[0] if text else type(exc).__name__})"
    return {r.dataset_id: Finding(site, False, why) for r in records}


def describe(findings: Sequence[Finding]) -> str:
    """``SITE: how`` for each site looked at."""
    return "; ".join(f"{f.site}: {f.how}" for f in findings)
