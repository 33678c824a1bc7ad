"""`fed drop`: free a site's disk where other sites hold verified copies."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from federation.cli import render
from federation.cli.federation_commands import SITES
from federation.cli.transfer_progress import human_bytes


@click.command("drop")
@click.argument("site")
@click.option("--collections", "-c", multiple=True, metavar="NAME|GLOB",
              help="Collections to search (repeatable; default: all).")
@click.option("--dataset-type", "-t", "dataset_types", multiple=True, metavar="NAME|GLOB",
              help="Dataset types (repeatable; default: all).")
@click.option("--where", default=None, help="Data ID expression the datasets must match.")
@click.option("--bind", multiple=True, metavar="KEY=VALUE",
              help="Value for a :KEY bind parameter in --where (repeatable).")
@click.option("--release", default=None, metavar="NAME",
              help="The datasets of this release here (narrowed by -c, -t, --where if given).")
@click.option("--min-copies", type=int, default=1, show_default=True, metavar="N",
              help="Verified copies other sites must hold for a file to be dropped here "
                   "(more where a policy's flow that carries it asks for more).")
@click.option("--policies", "policies_dir", type=click.Path(file_okay=False, path_type=Path),
              envvar="FED_POLICIES", default=None,
              help="Policies whose flows' min_copies apply (default: $FED_POLICIES or "
                   "./policies, when there).")
@click.option("--dry-run", is_flag=True,
              help="Check the copies and show what would be dropped; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--wait", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Seconds to wait for a sync into a site the drop locks.")
@SITES
@render.JSON_OPTION
def drop(site, collections, dataset_types, where, bind, release, min_copies, policies_dir,
         dry_run, yes, wait, sites_dir, as_json) -> None:
    """Free SITE's disk: remove the local files of the selected datasets (a query with
    -c/-t/--where, or --release) that at least --min-copies other sites hold verified
    now, and keep their records, marked as held at one of those sites.

    \b
    Verified now: at a site on this machine, the file of the same dataset, hashed
    against SITE's record of it (size and xxh3-128), or vouched for by a complete
    verification of a release holding it, recorded there after the file arrived
    there; at a site reached over SFTP or HTTP, the file at the same path, read
    and hashed. Copies that are one file on disk (a hard link, the same path
    ingested in place) count once; a copy that is SITE's own file does not
    count. A site that cannot be reached holds nothing.

    Every other site of the sites directory is looked at. Datasets with fewer
    verified copies elsewhere (released ones too) are kept, listed with what
    was found, and nothing is written for them; the exit status is then 1. A
    later sync with files (a new selection, or --reset-cursor) brings dropped
    files back. Files ingested in place are never dropped.
    """
    from federation.inputs import parse_assignments
    from federation.operations.drop import DropRequest
    from federation.operations.drop import drop as run

    request = DropRequest(site, tuple(collections), tuple(dataset_types), where,
                          parse_assignments(bind, "--bind"), release, min_copies, dry_run,
                          wait, policies_dir)

    def confirm(result) -> None:
        if yes:
            return
        if not sys.stdin.isatty():
            raise click.UsageError("refusing to delete files without confirmation: pass --yes")
        kept = f" ({len(result.kept)} others are kept)" if result.kept else ""
        click.confirm(f"delete {len(result.dropped)} files ({human_bytes(result.bytes)}) "
                      f"from {result.site}{kept}?", abort=True)

    with render.progress(None, "checking copies", unit="check") as advance:
        result = run(request, sites_dir=sites_dir, progress=advance, confirm=confirm)
    if as_json:
        render.as_json(_to_json(result))
    else:
        _show(result)
    if result.kept:
        sys.exit(1)


def _show(result) -> None:
    _kept(result)
    for name, why in result.unreachable.items():
        click.echo(f"note: site {name} could not be checked: {why}")
    if not result.others:
        click.echo("note: no other site is defined in the sites directory")
    if result.rucio_rules_removed:
        click.echo(f"note: removed {result.rucio_rules_removed} Rucio rule(s) for the dropped "
                   "files; Rucio's reaper removes their replicas")
    skipped = []
    if result.not_here:
        skipped.append(f"{result.not_here} selected datasets have no file here")
    if result.in_place:
        skipped.append(f"{result.in_place} files ingested in place are never dropped")
    if skipped:
        click.echo(f"note: {'; '.join(skipped)}")
    holders = ", ".join(f"{site} ({n})" for site, n in result.holders().items())
    size = human_bytes(result.bytes)
    if result.done:
        click.echo(f"dropped {len(result.dropped)} files ({size}) from {result.site}; their "
                   f"records stay, held at {holders}")
    elif result.dropped:
        click.echo(f"would drop {len(result.dropped)} files ({size}) from {result.site}, "
                   f"held at {holders}")
    else:
        click.echo(f"nothing dropped from {result.site}")


def _kept(result) -> None:
    from federation.operations.drop import describe_copies

    if not result.kept:
        return
    needs = {c.need for c in result.kept}
    need = next(iter(needs))
    wanted = f"than {need} verified cop{'y' if need == 1 else 'ies'}" if len(needs) == 1 \
        else "verified copies than they need"
    click.echo(f"kept {len(result.kept)} datasets: fewer {wanted} at other sites")
    render.table(["dataset", "release", "copies", "needs", "found"],
                 [[str(c.ref), c.release or "", c.verified,
                   f"{c.need}" + (f" ({c.because})" if c.because else ""), describe_copies(c)]
                  for c in result.kept])


def _to_json(result) -> dict:
    def entry(candidate) -> dict:
        return {"id": str(candidate.ref.id), "dataset": str(candidate.ref),
                "path": candidate.stored.path, "size": candidate.stored.size,
                "release": candidate.release, "verified_copies": candidate.verified,
                "needs": candidate.need, "needs_because": candidate.because or None,
                "copies": [{"site": c.site, "verified": c.verified, "how": c.how}
                           for c in candidate.copies]}

    return {"site": result.site, "dry_run": result.dry_run, "done": result.done,
            "min_copies": result.min_copies, "bytes": result.bytes,
            "held_at": result.holders(),
            "dropped": [entry(c) | {"held_at": c.holder} for c in result.dropped],
            "kept": [entry(c) for c in result.kept], "not_here": result.not_here,
            "in_place": result.in_place, "unreachable": result.unreachable,
            "sites": result.others, "rucio_rules_removed": result.rucio_rules_removed}
