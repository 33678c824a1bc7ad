"""``fed subset show|verify``: the subsets a repository (a laptop, a cache) holds."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from federation.cli import render
from federation.cli.federation_commands import SITES

REPO = click.argument("repo", type=click.Path(file_okay=False, path_type=Path))
SOURCE = click.option("--source", metavar="SITE", help="Only the subsets pulled from SITE.")
SHOWN = 20  # problems listed per kind on a terminal (all of them with --json)


@click.group("subset")
def subset() -> None:
    """Subsets this repository holds: per selection, its source, its query and how far
    it has synced (kept by every 'fed sync')."""


@subset.command("show")
@REPO
@SOURCE
@render.JSON_OPTION
def show(repo: Path, source: str | None, as_json: bool) -> None:
    """List REPO's subsets: source, selection, and the source journal entry (or release
    root) each has been synced up to."""
    from federation.operations.subset import age
    from federation.operations.subset import show as run

    found = run(repo, source)
    if as_json:
        render.as_json([{"source": s.source, "selection": s.selection.to_dict(),
                         "last_seq": s.last_seq, "release_root": s.release_root,
                         "synced_at": s.synced_at} for s in found])
        return
    if not found:
        click.echo(f"{repo} holds no subset (nothing synced into it)")
        return
    render.table(["source", "selection", "up to", "synced"],
                 [[s.source, s.describe, f"root {s.release_root[:12]}" if s.release_root
                   else f"entry {s.last_seq}", age(s.synced_at)] for s in found])


@subset.command("verify")
@REPO
@SOURCE
@SITES
@render.JSON_OPTION
def verify(repo: Path, source: str | None, sites_dir: Path | None, as_json: bool) -> None:
    """Prove each subset of REPO is exactly its query's result at its source.

    Reads the selection at the source as a sync would (calibrations a subset needs
    included) and here, compares datasets, collections, tagged members and validity
    ranges, and re-hashes the files that should be here. A source reached over the
    network is read from the copy of its journal the last sync kept. Lists what is
    missing, extra, different or damaged; 'stale' means the source changed since the
    last sync (sync again). Exits 1 unless every subset is exact.
    """
    from federation.operations.subset import verify as run

    checks = run(repo, source=source, sites_dir=sites_dir)
    if as_json:
        render.as_json([{"source": c.subset.source, "selection": c.subset.selection.to_dict(),
                         "exact": c.exact, "stale": c.stale, "synced_up_to": c.subset.last_seq,
                         "source_head": c.source_head, "datasets": c.datasets,
                         "files": c.files, "records_only": c.records_only,
                         "missing": c.missing, "extra": c.extra, "differing": c.differing,
                         "damaged": c.damaged} for c in checks])
    else:
        for check in checks:
            _show(check)
    if not all(c.exact for c in checks):
        sys.exit(1)


def _show(check) -> None:
    head = f"{check.subset.source} [{check.subset.describe}]"
    if check.exact:
        state = "exact" + (f" as of entry {check.subset.last_seq}; the source is at "
                           f"{check.source_head} (stale: sync again)" if check.stale else "")
        click.echo(f"{head}: {state}: {check.datasets} dataset(s), {check.files} file(s) "
                   f"verified here, {check.records_only} record(s) only")
        return
    why = "the source changed since the last sync (stale)" if check.stale else "damaged"
    click.echo(f"{head}: NOT exact: {why}")
    for kind, items in (("missing", check.missing), ("extra", check.extra),
                        ("different", check.differing), ("damaged", check.damaged)):
        for item in items[:SHOWN]:
            click.echo(f"  {kind}: {item}")
        if len(items) > SHOWN:
            click.echo(f"  ... and {len(items) - SHOWN} more {kind} (--json lists them all)")
