"""`fed site ...`, `fed sync`, `fed export`, `fed import` and `fed bundle show`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from federation.cli import render

SITES = click.option("--sites", "sites_dir", type=click.Path(file_okay=False, path_type=Path),
                     envvar="FED_SITES", default=None,
                     help="Directory of site definitions (default: $FED_SITES or ./sites).")


def selection_options(func):
    """--collections, --dataset-types, --where, --bind, --files/--no-files."""
    options = [
        click.option("--collections", "-c", multiple=True, metavar="GLOB",
                     help="Collections to carry (globs; chains bring their children). "
                          "Default: all."),
        click.option("--dataset-types", "-t", multiple=True, metavar="GLOB",
                     help="Dataset types to carry (globs). Default: all."),
        click.option("--where", default=None, help="Data ID expression datasets must match."),
        click.option("--bind", multiple=True, metavar="KEY=VALUE",
                     help="Value for a :KEY bind parameter in --where."),
        click.option("--files/--no-files", default=True, show_default=True,
                     help="Move files too, or only records (datasets then stay 'held at' the "
                          "source site)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def apply_options(func):
    """--dry-run, --on-conflict, --jobs, --wait, --sites, --json: shared by sync and import."""
    options = [
        click.option("--dry-run", is_flag=True, help="Print the plan; change nothing."),
        click.option("--on-conflict", type=click.Choice(["fail", "skip"]), default="fail",
                     show_default=True,
                     help="fail: apply nothing if anything conflicts; skip: apply the rest."),
        click.option("--jobs", "-j", type=click.IntRange(1, 64), default=4, show_default=True,
                     help="Files transferred in parallel."),
        click.option("--wait", type=click.FloatRange(0), default=60.0, show_default=True,
                     help="Seconds to wait for another sync into DESTINATION to finish."),
        SITES,
        render.JSON_OPTION,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def make_selection(collections, dataset_types, where, bind, files):
    from federation.inputs import parse_assignments
    from federation.sync.selection import Selection

    selection = Selection.make(collections, dataset_types, where,
                               parse_assignments(bind, "--bind"), files)
    if where:  # refuse an unparsable expression before touching anything
        from federation.registry.where import parse_where

        parse_where(where)
    return selection


@click.group()
def site() -> None:
    """Site definitions: sites/NAME.yaml (registry URL, datastore root, transport, owner
    prefixes, read-only, keep_deleted)."""


@site.command("list")
@SITES
@render.JSON_OPTION
def site_list(sites_dir, as_json) -> None:
    """List the defined sites."""
    from federation.sites import list_sites

    found = list_sites(sites_dir)
    if as_json:
        render.as_json([s.to_dict() for s in found])
        return
    render.table(["name", "transport", "registry", "root", "owns", "flags"],
                 [[s.name, s.transport, s.registry or "(published bundles)", _where(s),
                   list(s.owns),
                   ", ".join(f for f, on in (("read-only", s.read_only),
                                             ("keep-deleted", s.keep_deleted)) if on)]
                  for s in found])


def _where(definition) -> str:
    if definition.transport == "sftp":
        block = definition.remote
        return f"sftp://{block['host']}:{block.get('port', 22)}{block['root']}"
    if definition.transport == "http":
        return definition.remote["url"]
    return str(definition.root)


@site.command("show")
@click.argument("name")
@SITES
def site_show(name, sites_dir) -> None:
    """Show one site's definition."""
    from federation.sites import load_site

    render.as_json(load_site(name, sites_dir).to_dict())


@site.command("check")
@click.argument("names", nargs=-1)
@SITES
def site_check(names, sites_dir) -> None:
    """Check that sites' repositories are reachable and match their definitions."""
    from federation.errors import FederationError
    from federation.sites import list_sites, load_site
    from federation.sync.engine import open_site

    sites = [load_site(n, sites_dir) for n in names] or list_sites(sites_dir)
    if not sites:
        raise click.UsageError("no site definitions found (see --sites)")
    bad = 0
    for definition in sites:
        try:
            if definition.is_remote:
                click.echo(f"{definition.name}: ok ({_check_remote(definition)})")
                continue
            with open_site(definition) as butler:
                seq = butler.registry.db.last_seq()
            click.echo(f"{definition.name}: ok (journal at {seq})")
        except FederationError as exc:
            bad += 1
            click.echo(f"{definition.name}: {exc}")
    if bad:
        sys.exit(1)


def _check_remote(definition) -> str:
    """Connect (host key and credentials checked) and read the outbox index."""
    from federation.sync.outbox import fetch_index
    from federation.transport.factory import transport_for

    outbox = transport_for(definition, "outbox")
    try:
        index = fetch_index(outbox, definition.name)
        if index is None:
            return f"reachable at {outbox.describe()}; nothing published yet"
        return f"published up to journal entry {index.last_seq} in {len(index.bundles)} bundles"
    finally:
        outbox.close()


@site.command("init")
@click.argument("name")
@SITES
def site_init(name, sites_dir) -> None:
    """Create the repository a site definition describes (and its PostgreSQL database)."""
    from federation.butler import Butler
    from federation.errors import ConfigError
    from federation.sites import load_site
    from federation.sync.provision import ensure_database

    definition = load_site(name, sites_dir)
    if definition.is_remote:
        raise ConfigError(f"site {name} is reached over {definition.transport}: create its "
                          "repository on the machine that runs it")
    ensure_database(definition.registry)
    Butler.create(definition.root, db=_db_for(definition), site=definition.name)
    click.echo(f"created repository for site {definition.name} at {definition.root}")


def _db_for(definition) -> str | None:
    default = f"sqlite:///{definition.root / 'registry.sqlite3'}"
    return None if definition.registry == default else definition.registry


@click.command()
@click.argument("source")
@click.argument("destination")
@selection_options
@apply_options
def sync(source, destination, collections, dataset_types, where, bind, files, dry_run,
         on_conflict, jobs, wait, sites_dir, as_json) -> None:
    """Bring site DESTINATION up to date with site SOURCE.

    Reads SOURCE's journal after DESTINATION's cursor for this selection (a
    new selection first takes a snapshot), transfers and verifies files, then
    imports records in batches, advancing the cursor with each.
    """
    from federation.sites import list_sites, load_site
    from federation.sync.engine import SyncOptions
    from federation.sync.engine import sync as run_sync

    selection = make_selection(collections, dataset_types, where, bind, files)
    src, dst = load_site(source, sites_dir), load_site(destination, sites_dir)
    options = SyncOptions(selection, dry_run, on_conflict, jobs, wait)
    run_and_report(f"{source} -> {destination}", as_json, dry_run,
                   lambda progress: run_sync(src, dst, options, sites=list_sites(sites_dir),
                                             progress=progress))


def run_and_report(title: str, as_json: bool, dry_run: bool, run) -> None:
    """Run a sync or import with a progress bar; print its report (or its conflicts).

    Exits 1 when files failed to arrive; a conflict error propagates after its report.
    """
    from federation.cli.transfer_progress import TransferProgress
    from federation.sync.engine import SyncConflictError

    with TransferProgress(title) as progress:
        try:
            report = run(progress)
        except SyncConflictError as exc:
            render.report(exc.report, as_json, dry_run=True, title="conflicts")
            raise
    render.report(report, as_json, dry_run=dry_run, title=title)
    if report.failed:
        sys.exit(1)
