"""`fed export-butler`: a selection of a repository as an LSST daf_butler YAML export."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import click

from federation.cli import render


@click.command("export-butler")
@click.argument("repo", type=click.Path(file_okay=False, path_type=Path))
@click.option("--collections", "-c", multiple=True, required=True, metavar="NAME|GLOB",
              help="Collections to export (repeatable): every dataset found in them, "
                   "through chains, tags and certifications; chains bring their children.")
@click.option("--dataset-type", "-t", "dataset_types", multiple=True, metavar="NAME|GLOB",
              help="Dataset types (repeatable; default: all).")
@click.option("--where", default=None,
              help="Data ID expression the datasets must match, e.g. \"exposure = 903334\".")
@click.option("--bind", multiple=True, metavar="KEY=VALUE",
              help="Value for a :KEY bind parameter in --where (repeatable).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The export file to write (YAML).")
@click.option("--with-files", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="Also copy the datasets' files to DIR/<path>, checking "
                                  "each against its recorded xxh3 checksum as it is read.")
@click.option("--storage-class", "storage_classes", multiple=True, metavar="TYPE=CLASS",
              help="daf_butler storage class to write for dataset type TYPE (repeatable), "
                   "e.g. raw=StructuredDataDict.")
@click.option("--formatter", "formatters", multiple=True, metavar="TYPE=CLASS",
              help="daf_butler formatter to write for TYPE's files (repeatable), e.g. "
                   "raw=lsst.daf.butler.formatters.json.JsonFormatter.")
@render.JSON_OPTION
def export_butler(repo, collections, dataset_types, where, bind, output, with_files,
                  storage_classes, formatters, as_json) -> None:
    """Write the datasets of REPO's --collections as a daf_butler export file.

    The file (export format 1.0.2) is what 'butler export' writes: the
    dimension records the datasets' data IDs need, their dataset types, their
    RUN collections, the named TAGGED, CALIBRATION and CHAINED collections
    (chain children too), the datasets with their UUIDs, paths and formatters,
    tags and certified validity ranges. Import it with the LSST butler:

    \b
      butler import NEWREPO DIR --export-file EXPORT.yaml --transfer copy

    where DIR is the --with-files directory, or REPO itself without it.
    REPO must use daf_butler's dimension universe ('fed create --universe
    daf_butler'). YAML and JSON datasets are written as daf_butler's
    StructuredDataDict with its YamlFormatter and JsonFormatter (a file whose
    recorded formatter is a daf_butler class keeps it). Other storage classes
    have no daf_butler equivalent (Bytes, which 'fed import-butler' stores
    daf_butler's own as): name daf_butler's with --storage-class and
    --formatter, or leave them out with -t. On any error nothing is written.
    """
    from federation.cli.transfer_progress import TransferProgress
    from federation.inputs import parse_assignments
    from federation.operations.export_butler import export_butler as run

    progress = TransferProgress(f"copying files to {with_files}") if with_files else None
    with progress or nullcontext():
        report = run(repo, output, collections=collections, dataset_types=dataset_types,
                     where=where, bind=parse_assignments(bind, "--bind"),
                     with_files=with_files,
                     storage_classes=parse_assignments(storage_classes, "--storage-class"),
                     formatters=parse_assignments(formatters, "--formatter"),
                     progress=progress)
    if as_json:
        render.as_json(report.to_dict())
        return
    click.echo(f"exported {report.counts['datasets']} datasets to {output}")
    render.table(["kind", "count"], list(report.counts.items()))
    if with_files is not None:
        click.echo(f"files: {report.copied} copied to {with_files} "
                   f"({report.already_there} already there), {report.bytes:,} bytes, verified")
    for note in report.notes:
        click.echo(f"note: {note}")
