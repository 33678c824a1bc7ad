"""``fed diff``: what two sites hold for a selection, compared (see
:mod:`federation.site_diff`)."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from federation.butler import Butler
from federation.errors import InputError
from federation.operations.release import published
from federation.site_diff import SiteDiff, diff_sites
from federation.sites import load_site
from federation.sync.selection import Selection
from federation.sync.site_access import open_site


def diff(a: str, b: str, *, collections: Sequence[str] = (), dataset_types: Sequence[str] = (),
         sites_dir: str | os.PathLike | None = None,
         progress: Callable[[str], None] | None = None) -> SiteDiff:
    """Compare sites ``a`` and ``b`` (names in the sites directory, or repository
    directories); a remote site is read from what it published."""
    selection = Selection.make(collections or None, dataset_types or None)
    if a == b:
        raise InputError(f"'{a}' is compared with itself: name two sites")
    with _open(a, sites_dir) as left, _open(b, sites_dir) as right:
        if left.registry.instance == right.registry.instance:
            raise InputError(f"{a} and {b} are the same repository")
        names = {c.name for butler in (left, right) for c in butler.registry.collections.query()}
        for pattern in selection.collections:
            if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                raise InputError(f"no collection matches {pattern!r} at {a} or {b}")
        return diff_sites(a, left, b, right, selection, progress)


def _open(where: str, sites_dir: str | os.PathLike | None) -> Butler:
    if (Path(where) / "federation.yaml").is_file():
        return Butler(Path(where))
    site = load_site(where, sites_dir)
    return Butler(published(site)) if site.is_remote else open_site(site)
