"""Data releases: create, show, write the manifest, retract, and compare two releases."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.butler import Butler
from federation.errors import FederationError, InputError
from federation.merkle import diff as tree_diff
from federation.registry.releases import ReleaseCheck, ReleaseInfo
from federation.release.freeze import ReleaseRequest, freeze
from federation.release.manifest import ManifestEntry
from federation.release.verify import Verification
from federation.release.verify import verify as verify_release
from federation.sites import SiteDefinition, list_sites, load_site
from federation.sync.remote.mirror import Mirror
from federation.sync.site_access import open_site


def create(repo: Path, name: str, collections: Sequence[str],
           dataset_types: Sequence[str] | None = None, where: str | None = None,
           bind: Mapping[str, Any] | None = None, doc: str = "") -> ReleaseInfo:
    """Freeze what ``collections`` hold now into release ``name`` (see
    :mod:`federation.release.freeze`)."""
    with Butler(repo) as butler:
        return freeze(butler, ReleaseRequest(name, list(collections),
                                             list(dataset_types or []) or None, where, bind,
                                             doc))


def show(repo: Path, name: str, manifest: Path | None = None) -> ReleaseInfo:
    """A release's record; with ``manifest``, its entries written there as JSON lines (the
    root can be recomputed from that file alone)."""
    with Butler(repo) as butler:
        info = butler.registry.releases.get(name)
        if manifest is not None:
            partial = manifest.with_name(manifest.name + ".part")
            with open(partial, "w", encoding="utf-8") as out:
                for entry in butler.registry.releases.entries(name):
                    out.write(entry.line + "\n")
            partial.replace(manifest)
        return info


def verify(repo: Path, name: str, jobs: int | None = None,
           progress: Callable[[int], None] | None = None,
           restart: bool = False) -> Verification:
    """Re-hash every file of release ``name`` here against its manifest, recompute its
    root, and record the outcome (the registry's release checks and the sync log); an
    interrupted verification resumes unless ``restart``."""
    with Butler(repo) as butler:
        return verify_release(butler, name, jobs=jobs, progress=progress, restart=restart)


def names(repo: Path) -> list[ReleaseInfo]:
    with Butler(repo) as butler:
        return [butler.registry.releases.get(n) for n in butler.registry.releases.names()]


def retract(repo: Path, name: str, reason: str) -> ReleaseInfo:
    """Mark a release retracted: its users are warned; its data stays, still protected."""
    if not reason.strip():
        raise InputError("give the reason for the retraction (--reason)")
    with Butler(repo) as butler:
        return butler.registry.releases.retract(name, reason.strip())


@dataclass(frozen=True)
class ReleaseRef:
    """One side of a comparison: ``REPO:NAME`` or ``SITE:NAME``."""

    repo: Path
    name: str

    @classmethod
    def parse(cls, text: str, sites_dir: Path | None = None) -> ReleaseRef:
        """A repository directory, or else a site of the sites directory (a remote one is
        read through what it published: its outbox, mirrored in the local cache)."""
        where, sep, name = text.rpartition(":")
        if not sep or not where or not name:
            raise InputError(f"{text!r}: give a release as REPO:NAME or SITE:NAME")
        if (Path(where) / "federation.yaml").is_file():
            return cls(Path(where), name)
        site = load_site(where, sites_dir)
        if site.is_remote:
            return cls(published(site), name)
        return cls(site.root, name)


def cache_home() -> Path:
    """Where mirrors of remote sites' outboxes are kept for status and diffs."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "federation"


def published(site: SiteDefinition) -> Path:
    """The records-only mirror of what a remote site published, brought up to date."""
    mirror = Mirror(site, cache_home())
    mirror.path.parent.mkdir(parents=True, exist_ok=True)
    mirror.refresh()
    return mirror.path


@dataclass(frozen=True)
class SiteRelease:
    """Where one site stands with a release: verified (complete, with the root it found
    and when), incomplete (what its last check found missing or corrupt), unverified
    (held, never checked there), absent, or unreachable."""

    site: str
    state: str
    root: str | None = None
    checked: float | None = None
    detail: str = ""


def status(name: str, sites_dir: Path | None = None) -> list[SiteRelease]:
    """Release ``name`` at every site of the sites directory: a local site's own record of
    its verifications, a remote site's as it published them."""
    found = []
    for site in list_sites(sites_dir):
        try:
            if site.is_remote:
                butler = Butler(published(site))
            else:
                butler = open_site(site)
        except FederationError as exc:
            found.append(SiteRelease(site.name, "unreachable", detail=str(exc)))
            continue
        with butler:
            releases = butler.registry.releases
            info = releases.find(name)
            check = None if info is None else releases.last_check(name, site.name)
        found.append(standing(site.name, info, check))
    return found


def standing(site: str, info: ReleaseInfo | None, check: ReleaseCheck | None) -> SiteRelease:
    if info is None:
        return SiteRelease(site, "absent")
    if check is None:
        return SiteRelease(site, "unverified", detail="held, never verified")
    if check.complete and check.root == info.root:
        return SiteRelease(site, "verified", check.root, check.checked,
                           f"{check.files} files, by {check.checker}")
    return SiteRelease(site, "incomplete", check.root, check.checked,
                       f"{check.missing} missing, {check.corrupt} corrupt")


@dataclass
class ReleaseDiff:
    """Entries only in A (removed), only in B (added), and in both with another content
    (changed, as (A's, B's)); and how many tree nodes the comparison read."""

    a: ReleaseInfo
    b: ReleaseInfo
    added: list[ManifestEntry]
    removed: list[ManifestEntry]
    changed: list[tuple[ManifestEntry, ManifestEntry]]
    nodes_visited: int

    @property
    def same(self) -> bool:
        return not (self.added or self.removed or self.changed)


def compare(a: ReleaseRef, b: ReleaseRef) -> ReleaseDiff:
    """Compare two releases by walking only the subtrees whose hashes differ."""
    with Butler(a.repo) as left, Butler(b.repo) as right:
        info_a = left.registry.releases.get(a.name)
        info_b = right.registry.releases.get(b.name)
        found = tree_diff(bytes.fromhex(info_a.root), bytes.fromhex(info_b.root),
                          left.registry.releases.node, right.registry.releases.node)
        lines_a = left.registry.releases.lines_by_hash(h.hex() for h in found.only_a)
        lines_b = right.registry.releases.lines_by_hash(h.hex() for h in found.only_b)
    old = {e.key: e for e in map(ManifestEntry.from_line, lines_a.values())}
    new = {e.key: e for e in map(ManifestEntry.from_line, lines_b.values())}
    return ReleaseDiff(
        info_a, info_b,
        added=[new[k] for k in sorted(new.keys() - old.keys())],
        removed=[old[k] for k in sorted(old.keys() - new.keys())],
        changed=[(old[k], new[k]) for k in sorted(old.keys() & new.keys())],
        nodes_visited=found.nodes_visited)
