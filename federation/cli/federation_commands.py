"""`fed site ...`, `fed sync` and `fed log`: thin wrappers over federation.operations."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from federation.cli import render, sync_render

if TYPE_CHECKING:
    from federation.sync.options import SyncOptions
    from federation.sync.progress import Progress
    from federation.sync.report import Report

SITES = click.option("--sites", "sites_dir", type=click.Path(file_okay=False, path_type=Path),
                     envvar="FED_SITES", default=None,
                     help="Directory of site definitions (default: $FED_SITES or ./sites).")


def selection_options(func):
    """--collections, --dataset-types, --where, --bind, --files/--no-files, --release."""
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
        click.option("--release", default=None, metavar="NAME",
                     help="A data release, whole: its collections, datasets, files, manifest "
                          "and verifications (not with -c, -t, --where). A sync of a release "
                          "ends with the destination verifying it."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def apply_options(func):
    """--dry-run, --on-conflict, --jobs, --wait, --sites, --json: shared by sync and import."""
    options = [
        click.option("--dry-run", is_flag=True,
                     help="Print the plan; change nothing. Exits 1 if the plan has conflicts."),
        click.option("--on-conflict", type=click.Choice(["fail", "skip"]), default="fail",
                     show_default=True,
                     help="fail: apply nothing if anything conflicts; skip: apply the rest."),
        click.option("--jobs", "-j", type=click.IntRange(1, 64), default=None,
                     help="Files transferred in parallel (default: 4 over the network, 1 "
                          "between local disks, where more only slows the kernel)."),
        click.option("--wait", type=click.FloatRange(0), default=60.0, show_default=True,
                     help="Seconds to wait for another sync into DESTINATION to finish."),
        SITES,
        render.JSON_OPTION,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def make_selection(collections, dataset_types, where, bind, files, release=None):
    from federation.inputs import parse_assignments
    from federation.registry.where import parse_where
    from federation.sync.selection import Selection

    selection = Selection.make(collections, dataset_types, where,
                               parse_assignments(bind, "--bind"), files, release)
    if where:  # refuse an unparsable expression before touching anything
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
    """List the defined sites.

    A definition file that cannot be used (not YAML, not a valid definition, or
    named differently from the site it defines) is not hidden: after the table,
    each gets one line on stderr, 'error: FILE...: why' (with --json, an entry
    {"file", "error"}), and the exit status is 1.
    """
    from federation.operations.sites import list_entries

    entries = list_entries(sites_dir)
    broken = [e for e in entries if e.site is None]
    if as_json:
        render.as_json([e.site.to_dict() if e.site else {"file": str(e.path), "error": e.error}
                        for e in entries])
    else:
        render.table(["name", "transport", "registry", "root", "owns", "flags"],
                     [_site_row(e.site) for e in entries if e.site is not None])
        for entry in broken:
            click.echo(f"error: {entry.error}", err=True)
    if broken:
        sys.exit(1)


def _site_row(s) -> list:
    registry = "(published bundles)" if s.is_remote else \
        f"daf_butler: {s.registry.config}" if s.is_daf_butler else s.registry.url
    flags = [f for f, on in (("read-only", s.read_only), ("keep-deleted", s.keep_deleted)) if on]
    if s.rucio is not None:
        flags.append(f"rucio: {s.rucio.rse}")
    return [s.name, s.transport, registry, s.files.describe(), list(s.owns), ", ".join(flags)]


@site.command("show")
@click.argument("name")
@SITES
def site_show(name, sites_dir) -> None:
    """Show one site's definition."""
    from federation.operations.sites import show

    render.as_json(show(name, sites_dir))


@site.command("check")
@click.argument("names", nargs=-1)
@SITES
def site_check(names, sites_dir) -> None:
    """Check that sites' repositories (or published outboxes) are reachable and belong to
    their definitions (default: every definition file, broken ones included).

    Each site that passes gets 'NAME: ok (...)' on stdout; each that fails gets
    'error: NAME: why' on stderr, and the exit status is then 1.
    """
    from federation.operations.sites import check

    results = check(list(names), sites_dir)
    for result in results:
        if result.ok:
            click.echo(f"{result.name}: ok ({result.detail})")
        else:
            click.echo(f"error: {result.name}: {result.detail}", err=True)
    if not all(r.ok for r in results):
        sys.exit(1)


@site.command("init")
@click.argument("name")
@SITES
def site_init(name, sites_dir) -> None:
    """Create the repository a site definition describes (and its PostgreSQL database)."""
    from federation.operations.sites import init

    definition = init(name, sites_dir)
    click.echo(f"created repository for site {definition.name} at {definition.root}")


@click.command()
@click.argument("source")
@click.argument("destination")
@selection_options
@apply_options
@click.option("--reset-cursor", is_flag=True,
              help="SOURCE was rebuilt (another repository under the same name): re-plan "
                   "from a snapshot, comparing contents; every difference is a conflict.")
@click.option("--no-wait", is_flag=True,
              help="DESTINATION's files come through Rucio: ask Rucio for them and return "
                   "at once; a later sync imports what Rucio brought meanwhile.")
def sync(source, destination, collections, dataset_types, where, bind, files, release,
         dry_run, on_conflict, jobs, wait, sites_dir, as_json, reset_cursor, no_wait) -> None:
    """Bring site DESTINATION up to date with site SOURCE.

    Reads SOURCE's journal after DESTINATION's cursor for this selection (a
    new selection first takes a snapshot), transfers and verifies files, then
    imports records in batches, advancing the cursor with each. A DESTINATION
    reached over SFTP is pushed to (see 'fed receive').

    The first sync of a selection whose -c or -t globs match nothing at SOURCE
    is an error and writes nothing; one whose --where matches no dataset runs
    and says so. With --release NAME the sync carries that release whole and
    ends with DESTINATION verifying it (every file re-hashed, the root
    recomputed); a release site (role: release) accepts nothing else.

    When both sites' definitions have a 'rucio:' block, Rucio moves the files:
    the sync registers at SOURCE's RSE what Rucio does not know yet, adds a
    rule per file on DESTINATION's RSE, waits while Rucio brings them (at most
    the site's 'wait' seconds; see --no-wait), verifies each arrived file's
    size and xxh3 against its record, and only then imports the records. A
    file whose rule is stuck fails with Rucio's reason and is retried by the
    next sync; a deletion removes the file's rule, and Rucio's reaper the
    replica.

    A SOURCE of 'kind: daf_butler' is an LSST butler repository, read through
    daf_butler (pip install 'federation[butler]') into a DESTINATION made with
    'fed create --universe daf_butler': -c, -t and --where select through
    daf_butler's queries; files are size-checked, copied and hashed; a
    re-sync asks only for what was ingested since (--reset-cursor compares
    the whole selection and reports datasets gone from SOURCE).
    """
    from federation.operations.sync import sync as run_sync
    from federation.sync.options import SyncOptions

    selection = make_selection(collections, dataset_types, where, bind, files, release)
    options = SyncOptions(selection, dry_run, on_conflict, jobs, wait, reset_cursor,
                          no_wait=no_wait)
    run_and_report(f"{source} -> {destination}", as_json, options,
                   lambda progress: run_sync(source, destination, options, sites_dir=sites_dir,
                                             progress=progress))


def run_and_report(title: str, as_json: bool, options: SyncOptions,
                   run: Callable[[Progress], Report]) -> None:
    """Run a sync or import with a progress bar; print its report (or its conflicts).

    Exits 1 when files failed to arrive, or when a dry run found conflicts (so that
    scripts can check first); a conflict error propagates after its report.
    """
    from federation.cli.transfer_progress import TransferProgress
    from federation.sync.report import SyncConflictError

    with TransferProgress(title) as progress:
        try:
            report = run(progress)
        except SyncConflictError as exc:
            sync_render.report(exc.report, as_json, dry_run=False, title=title, refused=True)
            raise
    sync_render.report(report, as_json, dry_run=options.dry_run, title=title,
                       strict=options.strict)
    unverified = [c.release for c in report.verified if not c.complete]
    if unverified and not report.failed:
        click.echo(f"error: release {', '.join(unverified)} arrived but did not verify here "
                   "(listed above): it is not held until 'fed release verify' passes",
                   err=True)
        sys.exit(1)
    if report.failed:
        click.echo(f"error: {len(report.failed)} file(s) did not arrive or did not match their "
                   "records (listed above); they were left out with what needs them, the rest "
                   "was applied, and the next run retries them", err=True)
        sys.exit(1)
    if options.dry_run and report.conflict_count:
        outcome = ("a run would be refused and change nothing" if options.strict
                   else "a run with --on-conflict skip would leave them out")
        click.echo(f"error: {report.conflict_count} conflict(s) (listed above): {outcome}",
                   err=True)
        sys.exit(1)


@click.command("log")
@click.argument("site_name", metavar="[SITE]", required=False)
@click.option("--since", default=None, metavar="WHEN",
              help="Only operations started since WHEN: a date/time (2026-12-01T08:00) or a "
                   "duration back from now (30m, 12h, 7d).")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Only the last N operations of each site.")
@SITES
@render.JSON_OPTION
def log(site_name, since, limit, sites_dir, as_json) -> None:
    """Show the sync log: every sync, import, receive, publish and push of SITE (default:
    every site whose repository is on this machine), oldest first.

    Each line says who ran it, when, between which sites, the journal range its
    cursor moved over, what it applied, the files and bytes it moved, and how it
    ended (ok, failed, conflict, interrupted, error).
    """
    from federation.operations.sync import log as read_log
    from federation.operations.sync import parse_since_time

    found = read_log(site_name, since=parse_since_time(since) if since else None,
                     limit=limit, sites_dir=sites_dir)
    if as_json:
        render.as_json([{"site": s.site, "error": s.error,
                         "entries": [e.to_dict() for e in s.entries]} for s in found])
        return
    sync_render.sync_log(found)
