"""Data releases: create, show, write the manifest, retract, and compare two releases."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.butler import Butler
from federation.errors import FederationError, InputError
from federation.merkle import diff as tree_diff
from federation.registry.releases import ReleaseInfo
from federation.release.freeze import ReleaseRequest, freeze
from federation.release.manifest import ManifestEntry
from federation.release.verify import Verification
from federation.release.verify import verify as verify_release
from federation.sites import list_sites, load_site
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
        """A repository directory, or else a site of the sites directory (local sites:
        remote ones do not publish their releases yet)."""
        where, sep, name = text.rpartition(":")
        if not sep or not where or not name:
            raise InputError(f"{text!r}: give a release as REPO:NAME or SITE:NAME")
        if (Path(where) / "federation.yaml").is_file():
            return cls(Path(where), name)
        site = load_site(where, sites_dir)
        if site.is_remote:
            raise InputError(f"site {site.name} is reached over {site.transport}: remote sites "
                             "do not publish their releases yet; compare at the site")
        return cls(site.root, name)


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
    """Release ``name`` at every site of the sites directory."""
    found = []
    for site in list_sites(sites_dir):
        if site.is_remote:
            found.append(SiteRelease(site.name, "unreachable", detail=(
                f"reached over {site.transport}; remote sites do not publish release checks "
                "yet")))
            continue
        try:
            butler = open_site(site)
        except FederationError as exc:
            found.append(SiteRelease(site.name, "unreachable", detail=str(exc)))
            continue
        with butler:
            releases = butler.registry.releases
            if name not in releases.names():
                found.append(SiteRelease(site.name, "absent"))
                continue
            info = releases.get(name)
        check = info.check
        if check is None:
            found.append(SiteRelease(site.name, "unverified", detail="held, never verified"))
        elif check.complete and check.root == info.root:
            found.append(SiteRelease(site.name, "verified", check.root, check.checked,
                                     f"{check.files} files, by {check.checker}"))
        else:
            found.append(SiteRelease(site.name, "incomplete", check.root, check.checked,
                                     f"{check.missing} missing, {check.corrupt} corrupt"))
    return found


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
