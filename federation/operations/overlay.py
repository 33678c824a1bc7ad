"""`fed create REPO --over SITE_OR_RELEASE`: a personal repository layered over a release.

The overlay's registry is layered in SQL over the release's (see
:mod:`federation.registry.overlay`): nothing is copied, so creating one takes as long as
creating an empty repository. Its datastore holds the user's files only; the release's
are read in place under the release's root.
"""

from __future__ import annotations

import getpass
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from federation.config import CONFIG_NAME, RepoConfig
from federation.datastore.templates import FileTemplates
from federation.errors import ConfigError, FederationError
from federation.registry.collections import check_prefix
from federation.registry.database import make_engine, same_database, shown_url
from federation.registry.overlay import (
    ReleaseSource,
    create_overlay,
    read_release,
    search_path_schema,
)
from federation.sites import SiteDefinition, list_sites, load_site
from federation.sites.loader import NAME as SITE_NAME


@dataclass(frozen=True)
class OverlayCreated:
    """A new overlay: its directory, site and owned prefixes, and what it is layered over."""

    root: Path
    site: str
    owns: tuple[str, ...]
    source: ReleaseSource
    db_url: str


def create(repo: Path, over: str, *, db: str | None = None, site: str = "local",
           owns: Sequence[str] = (), templates: Mapping[str, str] | None = None,
           sites_dir: Path | None = None) -> OverlayCreated:
    """Create a personal repository at ``repo`` layered over ``over``: a site of the sites
    directory, a release held at one (``DR1``), or both (``SITE:DR1``). Its collections
    are born under ``owns`` (default ``u/<user>``); nothing is left behind on failure."""
    holder, release = resolve(over, sites_dir)
    url = holder.registry.url
    found = read_release(url)
    if site == found.site:
        raise ConfigError(f"an overlay needs a site name of its own, not the release's "
                          f"({site!r}): give --site")
    owns = tuple(check_prefix(p) for p in owns) or (f"u/{getpass.getuser()}",)
    outside = [p for p in owns if not p.startswith("u/")]
    if outside:
        raise ConfigError(f"an overlay writes personal collections only: its prefixes must "
                          f"be under u/ (u/<user>), not {', '.join(outside)}")
    source = ReleaseSource(url, str(holder.root.resolve()), found.site, found.instance, over,
                           release)
    root = Path(repo).absolute()
    if (root / CONFIG_NAME).exists():
        raise ConfigError(f"{root} is already a federation repository")
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} exists and is not a directory")
    FileTemplates(dict(templates or {}))  # validate before touching anything
    overlay_db = _overlay_url(url, db)
    config = RepoConfig(root=root, db=overlay_db, templates=dict(templates or {}))
    created_dir = None if root.exists() else next(
        (p for p in (root, *root.parents) if p.parent.exists()), root)
    sqlite_file = Path(config.db_url.removeprefix("sqlite:///")) if overlay_db is None else None
    if sqlite_file is not None and sqlite_file.exists():  # never to be deleted by _undo
        raise ConfigError(f"{sqlite_file} exists already")
    try:
        root.mkdir(parents=True, exist_ok=True)
        try:
            create_overlay(config.db_url, source, site=site, owns=owns,
                           universe=found.universe)
        except sa.exc.DBAPIError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            raise ConfigError(f"cannot create the overlay's registry: "
                              f"{reason[0] if reason else type(exc).__name__}") from None
        config.save()
    except BaseException:
        _undo(config, sqlite_file, created_dir, drop_schema=db is None)
        raise
    return OverlayCreated(root, site, owns, source, shown_url(config.db_url))


def resolve(over: str, sites_dir: Path | None = None) -> tuple[SiteDefinition, str | None]:
    """The site an overlay is layered over and the release named, if one was:
    ``SITE``, ``SITE:RELEASE``, or ``RELEASE`` (held by one site of the directory)."""
    site_name, sep, release = over.partition(":")
    if sep:
        holder = _local(load_site(site_name, sites_dir))
        if not _holds(holder, release):
            raise ConfigError(f"site {site_name} holds no release {release!r}")
        return holder, release
    if SITE_NAME.match(over) and (Path(sites_dir or _default_sites()) / f"{over}.yaml").is_file():
        return _local(load_site(over, sites_dir)), None
    holders = []
    for candidate in list_sites(sites_dir):
        try:
            if _holds(_local(candidate), over):
                holders.append(candidate)
        except FederationError:
            continue  # unreachable, remote: not a candidate
    releases = [h for h in holders if h.is_release_site] or holders
    if not releases:
        raise ConfigError(f"{over!r} is neither a site of the sites directory nor a release "
                          "held by one of its sites on this machine")
    if len(releases) > 1:
        names = ", ".join(h.name for h in releases)
        raise ConfigError(f"release {over!r} is held at sites {names}: name one, as "
                          f"--over {releases[0].name}:{over}")
    return releases[0], over


def _default_sites() -> Path:
    from federation.sites import sites_dir

    return sites_dir()


def _local(site: SiteDefinition) -> SiteDefinition:
    """A site whose registry an overlay can be layered over: one on this machine."""
    if site.is_remote or site.is_daf_butler:
        raise ConfigError(f"site {site.name} is reached over {site.transport}: an overlay is "
                          "layered in SQL over a registry on this machine's file system or "
                          "database server")
    if not (site.root / CONFIG_NAME).is_file():
        raise ConfigError(f"site {site.name}: no repository at {site.root}")
    config = RepoConfig.load(site.root)
    if not same_database(site.registry.url, config.db_url):
        raise ConfigError(f"site {site.name}: its definition names the registry "
                          f"{shown_url(site.registry.url)}, but its repository uses "
                          f"{shown_url(config.db_url)}")
    return site


def _holds(site: SiteDefinition, release: str) -> bool:
    engine = make_engine(site.registry.url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT 1 FROM release WHERE name = :n"),
                                {"n": release}).first() is not None
    except sa.exc.DBAPIError:
        return False
    finally:
        engine.dispose()


def _overlay_url(release_url: str, db: str | None) -> str | None:
    """Where the overlay's registry goes: SQLite in the repository (None) beside an SQLite
    release; a new schema of the release's database (or the one ``db`` names) beside a
    PostgreSQL one."""
    release = sa.engine.make_url(release_url)
    if release.get_backend_name() == "sqlite":
        if db is not None and sa.engine.make_url(db).get_backend_name() != "sqlite":
            raise ConfigError("the release's registry is an SQLite file: its overlay is an "
                              "SQLite file too (leave out --db)")
        return db
    if db is None:
        schema = f"fed_overlay_{uuid.uuid4().hex[:12]}"
        return release.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False)
    given = sa.engine.make_url(db)
    if given.get_backend_name() != "postgresql" or not same_database(
            release.set(query={}).render_as_string(hide_password=False),
            given.set(query={}).render_as_string(hide_password=False)):
        raise ConfigError(f"the release's registry is in PostgreSQL database "
                          f"{shown_url(release_url)}: its overlay is a schema of that same "
                          "database (views cannot reach another one); give --db naming it")
    search_path_schema(db)
    return db


def _undo(config: RepoConfig, sqlite_file: Path | None, created_dir: Path | None, *,
          drop_schema: bool) -> None:
    """Remove what a failed creation left: its SQLite file, the schema it made, its
    directory."""
    if sqlite_file is not None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{sqlite_file}{suffix}").unlink(missing_ok=True)
    elif drop_schema and config.db is not None:
        engine = make_engine(config.db)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{search_path_schema(config.db)}" '
                                     "CASCADE")
        except sa.exc.DBAPIError:
            pass
        finally:
            engine.dispose()
    if created_dir is not None:
        shutil.rmtree(created_dir, ignore_errors=True)



def create_from_cli(repo: Path, over: str, *, db: str | None, site: str,
                    universe: str | None, config_file: Path | None, owns: Sequence[str],
                    sites_dir: Path | None) -> OverlayCreated:
    """`fed create REPO --over ...`: its other options checked, then :func:`create`."""
    if universe is not None:
        raise ConfigError("an overlay uses its release's universe: leave out --universe")
    templates = RepoConfig.read_overrides(config_file).get("templates") if config_file else None
    return create(repo, over, db=db, site=site, owns=owns, templates=templates,
                  sites_dir=sites_dir)
