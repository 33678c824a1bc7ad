"""`fed stage`, `fed collect`, `fed provenance`: batch jobs on a staged copy of the inputs."""

from __future__ import annotations

from pathlib import Path

import click

from federation.cli import render
from federation.cli.options import BIND, COLLECTIONS, DATASET_TYPES, JSON, REPO, WHERE
from federation.cli.options import parse_bind as _bind

DIR = click.argument("staging_dir", type=click.Path(file_okay=False, path_type=Path))


@click.command("stage")
@REPO
@COLLECTIONS
@DATASET_TYPES
@WHERE
@BIND
@click.option("--output", "-o", "target", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="The staging directory to write (new, or empty).")
@click.option("--link", is_flag=True,
              help="Hard-link input files where the filesystem allows (else copy).")
def stage(repo: Path, collections, dataset_types, where, bind, target: Path,
          link: bool) -> None:
    """Write the datasets found in --collections into a staging directory for a batch job.

    The directory holds the input files and a YAML registry (dimension
    records, dataset types, collections, inputs with their checksums); a job
    opens it with federation.staging.StagedButler, without a database, and
    `fed collect` brings its outputs back.
    """
    from federation.operations.staging import stage as run

    if not collections:
        raise click.UsageError("give at least one --collections to stage from")
    with render.progress(None, "stage") as advance:
        result = run(repo, target, collections=collections, dataset_types=dataset_types,
                     where=where, bind=_bind(bind), link=link, progress=advance)
    linked = f", {result.linked} hard-linked" if link else ""
    click.echo(f"staged {result.datasets} datasets ({result.bytes:,} bytes{linked}), "
               f"{result.records} dimension records and {len(result.collections)} "
               f"collections into {result.root}")


@click.command("collect")
@DIR
@REPO
def collect(staging_dir: Path, repo: Path) -> None:
    """Bring the outputs a batch job wrote in STAGING_DIR back into REPO.

    Dataset types, output RUNs, datasets (UUIDs kept), files (checksums
    verified) and provenance arrive in one transaction; collecting again is
    a no-op, and a damaged staging directory is refused with nothing written.
    """
    from federation.operations.staging import collect as run

    with render.progress(None, "collect") as advance:
        result = run(staging_dir, repo, progress=advance)
    if not result.changed:
        click.echo(f"nothing new to collect ({result.present} outputs already in {repo})")
        return
    types = f"; new dataset types: {', '.join(result.dataset_types)}" \
        if result.dataset_types else ""
    click.echo(f"collected {result.added} outputs into {', '.join(result.runs)} "
               f"({result.present} already there), {result.provenance} provenance links"
               f"{types}")


@click.command("provenance")
@REPO
@click.argument("dataset_id")
@click.option("--outputs", is_flag=True,
              help="List the datasets made from DATASET_ID instead of its inputs.")
@JSON
def provenance(repo: Path, dataset_id: str, outputs: bool, as_json: bool) -> None:
    """List the inputs a dataset was made from (recorded by `fed collect`)."""
    from federation.operations.staging import query_provenance as run

    report = run(repo, dataset_id, outputs=outputs)
    if as_json:
        render.as_json({"dataset": report.dataset.to_dict(),
                        "outputs" if outputs else "inputs": [
                            {"id": str(link.id),
                             "dataset": link.ref.to_dict() if link.ref else None}
                            for link in report.links]})
        return
    click.echo(f"{report.dataset} ({report.dataset.id}) "
               f"{'was used by' if outputs else 'was made from'} {len(report.links)} datasets")
    render.table(["id", "dataset"], [[str(link.id), str(link.ref) if link.ref else
                                      "(not in this repository)"] for link in report.links])
