"""`fed rucio ...`: a site's files in Rucio."""

from __future__ import annotations

import sys

import click

from federation.cli import render
from federation.cli.federation_commands import SITES
from federation.cli.transfer_progress import TransferProgress, human_bytes


@click.group("rucio")
def rucio() -> None:
    """Files replicated through Rucio.

    A site whose definition has a 'rucio:' block keeps its files in Rucio as
    well as in its registry: each file is a Rucio file named by its datastore
    path, in the site's scope, with a replica on the site's RSE (which must
    map names with the identity algorithm under the site's datastore root).
    """


@rucio.command("register")
@click.argument("site")
@click.option("--collections", "-c", multiple=True, metavar="NAME|GLOB",
              help="Collections to search (repeatable; default: all).")
@click.option("--dataset-type", "-t", "dataset_types", multiple=True, metavar="NAME|GLOB",
              help="Dataset types (repeatable; default: all).")
@click.option("--where", default=None, help="Data ID expression the datasets must match.")
@click.option("--bind", multiple=True, metavar="KEY=VALUE",
              help="Value for a :KEY bind parameter in --where (repeatable).")
@click.option("--release", default=None, metavar="NAME",
              help="The files of this release, whole (not with -c, -t, --where), kept "
                   "together in Rucio and locked on SITE's RSE.")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=None,
              help="Files read in parallel (default: 4).")
@SITES
@render.JSON_OPTION
def register(site, collections, dataset_types, where, bind, release, jobs, sites_dir,
             as_json) -> None:
    """Register SITE's files with its Rucio: the selected datasets' files here
    (-c/-t/--where; default all of them) become replicas on SITE's RSE.

    \b
    Each file not yet registered is read once: its size and xxh3 are checked
    against the registry's record, and the adler32 and md5 Rucio verifies
    transfers with are computed in the same read. A file that is missing,
    corrupted, ingested in place or whose path is no Rucio name is refused
    with the reason, and Rucio hears nothing of it. The others are registered
    with the dataset's UUID as their guid and its type, RUN and data ID as
    metadata (fed_dataset_type, fed_run, fed_data_id), and attached to one
    Rucio dataset per RUN, named runs/RUN, and held on SITE's RSE by a rule of
    fed's ('fed: files of SITE'), so that Rucio's reaper never removes them.

    \b
    --release NAME registers the release's files the same way, then makes a
    Rucio container releases/NAME of datasets releases/NAME/RUN holding
    exactly the release's files, and a locked rule on SITE's RSE so that
    Rucio never deletes them there. The release is left out of Rucio while
    any of its files is refused (or not at SITE).

    Registering again is safe: files already registered are counted, not
    read. Exits 1 if any file was refused.
    """
    from federation.inputs import parse_assignments
    from federation.operations.rucio import register_site
    from federation.sync.selection import Selection

    selection = Selection.make(collections, dataset_types, where,
                               parse_assignments(bind, "--bind"))
    with TransferProgress(f"reading {site}'s files") as progress:
        result = register_site(site, selection, release=release, sites_dir=sites_dir,
                               jobs=jobs, progress=progress)
    if as_json:
        render.as_json({"site": site} | result.to_dict())
    else:
        _show(site, result)
    if result.failed:
        sys.exit(1)


def _show(site: str, result) -> None:
    for path, why in sorted(result.failed.items()):
        click.echo(f"refused: {path}: {why}")
    for note in result.notes:
        click.echo(f"note: {note}")
    if result.not_here:
        click.echo(f"note: {result.not_here} selected datasets have no file at {site}")
    parts = [f"registered {result.registered} files ({human_bytes(result.bytes)})",
             f"{result.already} already registered"]
    if result.failed:
        parts.append(f"{len(result.failed)} refused")
    click.echo(f"{site}: {', '.join(parts)}; {result.calls} Rucio API calls")
    if result.release is not None and result.rule is not None:
        made = "locked by new rule" if result.rule_created else "kept by rule"
        click.echo(f"release {result.release}: releases/{result.release} {made} "
                   f"{result.rule}")
