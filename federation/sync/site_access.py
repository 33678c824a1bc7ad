"""Reaching a site: its repository (checked against its definition), its sync lock, its files."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from federation.butler import Butler
from federation.config import RepoConfig
from federation.dimensions.universe import DimensionUniverse
from federation.errors import ConfigError, FederationError
from federation.registry.database import same_database, shown_url
from federation.sites import SiteDefinition
from federation.sync.selection import Selection

LOCK_NAME = ".federation-sync.lock"


def open_site(site: SiteDefinition) -> Butler:
    """The repository a site definition describes; its registry must match the definition."""
    if site.is_remote:
        raise ConfigError(f"site {site.name} is reached over {site.transport}; its registry is "
                          "read only through the bundles it publishes")
    if not (site.root / "federation.yaml").is_file():
        raise ConfigError(f"site {site.name}: no repository at {site.root} "
                          f"(create it with 'fed site init {site.name}')")
    config = RepoConfig.load(site.root)
    if not same_database(site.registry.url, config.db_url):
        raise ConfigError(f"site {site.name}: its definition names the registry "
                          f"{shown_url(site.registry.url)}, but the repository at {site.root} "
                          f"uses {shown_url(config.db_url)}; correct one of them")
    butler = Butler(site.root)
    if butler.site != site.name:
        butler.close()
        raise ConfigError(f"site {site.name}: the repository at {site.root} belongs to site "
                          f"{butler.site!r}")
    if site.is_release_site and butler.registry.db.role != "release":
        butler.close()
        raise ConfigError(f"site {site.name}: its definition says 'role: release' but its "
                          f"repository at {site.root} was created as an ordinary one")
    return butler


def check_accepts(dst: Butler, selection: Selection) -> None:
    """A release site takes releases (and what they need) only."""
    if dst.registry.db.role == "release" and selection.release is None:
        raise ConfigError(f"site {dst.site} is a release site: it takes only releases "
                          f"('fed sync SOURCE {dst.site} --release NAME')")


@contextmanager
def sync_lock(root: Path, site: str, timeout: float) -> Iterator[None]:
    """One sync into a repository at a time: wait up to ``timeout`` s, then fail clearly."""
    with file_lock(root / LOCK_NAME, timeout, lambda holder: FederationError(
            f"another sync into {site} is running ({holder}); waited {timeout:.0f} s, try "
            "again later")):
        yield


@contextmanager
def file_lock(path: Path, timeout: float, busy: Callable[[str], Exception]
              ) -> Iterator[None]:
    """An exclusive lock on ``path`` that names its holder (pid, since when) in the file:
    wait up to ``timeout`` s (0: not at all), then raise ``busy(holder)``."""
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    raise busy(handle.read().strip() or "another process") from None
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_universes(source: str, theirs: DimensionUniverse, destination: str,
                    ours: DimensionUniverse) -> None:
    """Refuse to sync between repositories whose dimension universes differ (records and
    data IDs would be converted, or fail half-way): one line naming the differences."""
    if theirs.digest == ours.digest:
        return
    found = ours.differences(theirs)
    shown = "; ".join(found[:4]) + (f"; and {len(found) - 4} more" if len(found) > 4 else "")
    raise ConfigError(f"{source} and {destination} use different dimension universes "
                      f"({shown}; 'here' is {destination}): nothing synced")
