"""``fed diff``: two sites compared for a selection."""

from __future__ import annotations

import sys

import click

from federation.cli import render
from federation.cli.federation_commands import SITES

SHOWN = 50  # differences printed on a terminal (all of them with --json)


@click.command("diff")
@click.argument("site_a")
@click.argument("site_b")
@click.option("--collections", "-c", multiple=True, metavar="GLOB",
              help="Collections to compare (globs; chains bring their children). Default: "
                   "all, and then the dimension records too.")
@click.option("--dataset-types", "-t", multiple=True, metavar="GLOB",
              help="Dataset types to compare (globs). Default: all.")
@SITES
@render.JSON_OPTION
def diff(site_a, site_b, collections, dataset_types, sites_dir, as_json) -> None:
    """Compare what sites SITE_A and SITE_B hold for a selection.

    Compares collections (type, owner, documentation), chain definitions,
    tagged membership, calibration validity ranges, datasets (UUID, type, data
    ID, run, size, checksum), dimension records and releases. Each group
    (a run's datasets, a collection's members, a dimension's records) is
    summarized by a Merkle root: groups that agree are confirmed without
    listing them, and a release both sites hold under the same root confirms
    its frozen collections. A site reached over SFTP or HTTP is read from what
    it published ('fed publish'). A site may also be given as a repository
    directory. Exits 1 when the sites differ.
    """
    from federation.operations.diff import diff as run_diff

    result = run_diff(site_a, site_b, collections=collections, dataset_types=dataset_types,
                      sites_dir=sites_dir)
    if as_json:
        render.as_json(result.to_dict())
    else:
        _show(result)
    if not result.same:
        sys.exit(1)


def _show(result) -> None:
    a, b = result.a, result.b
    selection = result.selection
    click.echo(f"{a} vs {b}: collections {', '.join(selection.collections)}; dataset types "
               f"{', '.join(selection.dataset_types)}")
    by_kind: dict[str, list] = {}
    for group in result.groups:
        by_kind.setdefault(group.group.split(" ")[0], []).append(group)
    rows = []
    for kind, groups in by_kind.items():
        same = [g for g in groups if g.same]
        vouched = [g for g in same if g.confirmed != "root"]
        detail = f"{len(vouched)} by a shared release's root" if vouched else ""
        rows.append([kind, len(groups), len(same), len(groups) - len(same),
                     sum(g.a_entries for g in groups), sum(g.b_entries for g in groups),
                     detail])
    render.table(["group", "groups", "same", "differ", f"entries at {a}",
                  f"entries at {b}", "confirmed"], rows)
    for difference in result.differences[:SHOWN]:
        kind = difference.kind.replace(" A", f" {a}").replace(" B", f" {b}")
        shown = f"{difference.group}: {difference.key}: {kind}"
        if difference.kind == "differs":
            shown += f" ({a}: {render_value(difference.a)}; {b}: {render_value(difference.b)})"
        click.echo(shown)
    if len(result.differences) > SHOWN:
        click.echo(f"... and {len(result.differences) - SHOWN} more (--json lists them all)")
    if result.same:
        click.echo(f"{a} and {b} hold the same")
    else:
        click.echo(f"{a} and {b} differ: {len(result.differences)} difference(s)")


def render_value(value) -> str:
    text = str(value)
    return text if len(text) <= 160 else text[:157] + "..."
