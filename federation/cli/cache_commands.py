"""`fed cache`: pull-through reads and the shared cache of a repository (DRP17)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from federation.cli import render
from federation.cli.options import BIND, COLLECTIONS, DATASET_TYPES, JSON, REPO, WHERE
from federation.cli.options import parse_bind as _bind

SITES = click.option("--sites", "sites_dir", type=click.Path(file_okay=False, path_type=Path),
                     default=None, help="Directory of site definitions (default: the cache's "
                                        "'sites', else $FED_SITES or ./sites).")


@click.group("cache")
def cache() -> None:
    """Pull-through reads and the shared cache of a repository.

    \b
    With pull-through on, reading a dataset whose file is held at another site
    (synced records-only) fetches the file through that site's transport,
    verifies it and keeps it here; the next read is local. Under a size limit,
    the least recently read fetched files are evicted first, and only where
    another site holds a verified copy (the rule of fed drop).
    """


@cache.command("configure")
@REPO
@click.option("--pull-through/--no-pull-through", default=None,
              help="Fetch files held at other sites on read.")
@click.option("--size-limit", metavar="SIZE|none", default=None,
              help="Bytes of fetched files kept here, e.g. 50GB ('none': no limit).")
@click.option("--sites", "sites_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Directory of the site definitions that reach the holders.")
@click.option("--wait", type=click.FloatRange(0), default=None,
              help="Seconds a reader waits for another reader fetching the same file.")
def configure(repo: Path, pull_through, size_limit, sites_dir, wait) -> None:
    """Set REPO's cache: block (federation.yaml) and show it."""
    from federation.cache import CacheConfig

    config = CacheConfig.load(repo).updated(pull_through=pull_through, size_limit=size_limit,
                                            sites=sites_dir, wait=wait)
    config.save(repo)
    _show_config(config)


@cache.command("status")
@REPO
@click.option("--check", is_flag=True,
              help="Verify which files could be evicted now: reads the other sites' copies, "
                   "as fed drop --dry-run does.")
@click.option("--show", type=click.IntRange(0), default=10, show_default=True,
              help="Least recently read files to list.")
@SITES
@JSON
def status(repo: Path, check: bool, show: int, sites_dir, as_json: bool) -> None:
    """Size used and limit, files, oldest and newest reads, and what is evictable."""
    from federation.operations.cache import cache_status

    with render.progress(None, "checking copies", unit="check") as advance:
        found = cache_status(repo, check=check, show=show, sites_dir=sites_dir,
                             progress=advance)
    if as_json:
        render.as_json(_status_json(found))
        return
    from federation.cache import format_size

    totals, config = found.totals, found.config
    _show_config(config, found.site)
    limit = config.size_limit
    share = f" ({100 * totals.bytes / limit:.0f}%)" if limit else ""
    click.echo(f"used:        {format_size(totals.bytes)} of "
               f"{format_size(limit) if limit is not None else 'no limit'}{share} in "
               f"{totals.files} files fetched from other sites")
    if totals.files:
        click.echo(f"reads:       oldest {_when(totals.oldest_read)}, newest "
                   f"{_when(totals.newest_read)}")
    if found.eviction is None:
        click.echo(f"evictable:   {totals.files} files ({format_size(totals.bytes)}), each only "
                   "where another site holds a verified copy (--check verifies now)")
    else:
        eviction = found.eviction
        click.echo(f"evictable:   {len(eviction.evicted)} files ({format_size(eviction.freed)}) "
                   "held verified at another site now")
        _kept(eviction)
    if found.least_recent:
        click.echo("least recently read:")
        render.table(["dataset", "size", "from", "last read"],
                     [[str(found.datasets.get(e.dataset_id, e.dataset_id)),
                       format_size(e.size), e.source, _when(e.last_read)]
                      for e in found.least_recent])


@cache.command("evict")
@REPO
@click.option("--to", "to_size", metavar="SIZE", default=None,
              help="Evict down to this size (default: the size limit); 0: every file "
                   "another site holds.")
@click.option("--dry-run", is_flag=True, help="Check the copies and show what would go.")
@click.option("--wait", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Seconds to wait for a sync into a site the eviction locks.")
@SITES
@JSON
def evict(repo: Path, to_size, dry_run: bool, wait: float, sites_dir, as_json: bool) -> None:
    """Evict the least recently read fetched files of REPO, each only where another site
    holds a verified copy now (fed drop's rule); their records stay, held at that site.
    Exit status 1 when files that no other site holds keep the cache above the size."""
    from federation.cache import format_size, parse_size
    from federation.operations.cache import evict as run

    target = None if to_size is None else parse_size(to_size, "--to size")
    with render.progress(None, "checking copies", unit="check") as advance:
        result = run(repo, to=target, dry_run=dry_run, sites_dir=sites_dir, wait=wait,
                     progress=advance)
    if as_json:
        render.as_json(_eviction_json(result))
    else:
        verb = "would evict" if dry_run else "evicted"
        for name, why in result.unreachable.items():
            click.echo(f"note: site {name} could not be checked: {why}")
        _kept(result)
        click.echo(f"{verb} {len(result.evicted)} files ({format_size(result.freed)}) from "
                   f"{result.site}: {format_size(result.left)} left (target "
                   f"{format_size(result.target)})")
    if result.left > result.target:
        sys.exit(1)


@cache.command("fetch")
@REPO
@DATASET_TYPES
@COLLECTIONS
@WHERE
@BIND
def fetch(repo: Path, dataset_types, collections, where, bind) -> None:
    """Read the selected datasets through the cache: fetch the files held at other sites
    (as Butler.get does with pull-through on) and print where each now is."""
    from federation.operations.cache import fetch as run

    if not collections:
        raise click.UsageError("give the collections to search with --collections/-c")
    with render.progress(None, "reading through", unit="dataset") as advance:
        result = run(repo, dataset_types, collections, where=where, bind=_bind(bind),
                     progress=advance)
    for ref, uri in result.fetched:
        click.echo(f"{ref}  {uri}")
    click.echo(f"fetched {len(result.fetched)} files into {result.site}; {result.here} were "
               "here already")


def _show_config(config, site: str | None = None) -> None:
    from federation.cache import format_size

    where = f" of {site}" if site else ""
    limit = format_size(config.size_limit) if config.size_limit is not None else "none"
    click.echo(f"cache{where}: pull-through {'on' if config.pull_through else 'off'}, "
               f"size limit {limit}, sites {config.sites or '$FED_SITES or ./sites'}")


def _kept(eviction) -> None:
    from federation.operations.drop import describe_copies

    if not eviction.kept:
        return
    click.echo(f"kept {len(eviction.kept)} files: no verified copy at another site")
    render.table(["dataset", "found"], [[str(c.ref), describe_copies(c)]
                                        for c in eviction.kept])


def _when(stamp: float | None) -> str:
    if stamp is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


def _entry_json(entry, ref) -> dict:
    return {"id": str(entry.dataset_id), "dataset": str(ref) if ref else None,
            "path": entry.path, "size": entry.size, "source": entry.source,
            "fetched": entry.fetched, "last_read": entry.last_read}


def _eviction_json(result) -> dict:
    return {"site": result.site, "dry_run": result.dry_run, "target": result.target,
            "used": result.used, "freed": result.freed, "left": result.left,
            "evicted": [_entry_json(e, result.datasets.get(e.dataset_id))
                        for e in result.evicted],
            "kept": [{"id": str(c.ref.id), "dataset": str(c.ref), "size": c.stored.size,
                      "copies": [{"site": k.site, "verified": k.verified, "how": k.how}
                                 for k in c.copies]} for c in result.kept],
            "unreachable": result.unreachable}


def _status_json(found) -> dict:
    config, totals = found.config, found.totals
    return {"site": found.site, "pull_through": config.pull_through,
            "size_limit": config.size_limit,
            "sites": str(config.sites) if config.sites else None,
            "files": totals.files, "bytes": totals.bytes, "oldest_read": totals.oldest_read,
            "newest_read": totals.newest_read,
            "least_recent": [_entry_json(e, found.datasets.get(e.dataset_id))
                             for e in found.least_recent],
            "evictable": None if found.eviction is None else _eviction_json(found.eviction)}
