"""`fed import-butler`: bring an LSST butler (daf_butler) export into a repository."""

from __future__ import annotations

from pathlib import Path

import click

from federation.cli import render


@click.command("import-butler")
@click.argument("repo", type=click.Path(file_okay=False, path_type=Path))
@click.argument("export", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--files-from", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Where the datasets' files are: each at DIR/<path the export gives> "
                   "(default: EXPORT's directory; for a daf_butler repository, its root).")
@click.option("--transfer", type=click.Choice(["copy", "move", "hardlink", "symlink", "direct"]),
              default="copy", show_default=True, help="How files get into the datastore.")
@click.option("--on-conflict", type=click.Choice(["fail", "skip"]), default="fail",
              show_default=True,
              help="fail: import nothing if anything differs from the repository; skip: "
                   "leave differing items as they are and import the rest.")
def import_butler(repo: Path, export: Path, files_from: Path | None, transfer: str,
                  on_conflict: str) -> None:
    """Import EXPORT, a daf_butler YAML export (butler / Butler.export), into REPO.

    Dimension records (regions too), dataset types, RUN, TAGGED, CHAINED and
    CALIBRATION collections (docs, chain order, tags, validity ranges) and
    datasets with their UUIDs come in; files are placed at the export's paths
    (or where REPO's file templates say) and hashed on the way in.

    REPO must use daf_butler's universe at the export's version: create it with
    'fed create REPO --universe daf_butler[:VERSION]'. The whole export is
    checked first; any error, and nothing is written. Importing the same export
    again changes nothing. daf_butler storage classes this project does not know
    (StructuredDataDict, ExposureF, ...) are stored as Bytes (files kept as they
    are, read back as bytes).

    \b
    Example:
      fed create repo --universe daf_butler:7
      fed import-butler repo export.yaml --files-from /data/lsst-repo
    """
    from federation.operations.import_butler import import_butler as run

    with render.progress(None, "import") as advance:
        report = run(repo, export, files_from=files_from, transfer=transfer,
                     on_conflict=on_conflict, progress=advance)
    for conflict in report.conflicts:
        click.echo(f"skipped conflict: {conflict}")
    if not report.new:
        click.echo(f"nothing new: {report.present} item(s) of {export} already in {repo}"
                   + (f"; {report.skipped} conflict(s) skipped" if report.skipped else ""))
        return
    notes = [f"{report.present} item(s) already there"] if report.present else []
    notes += [f"{report.skipped} conflict(s) skipped"] if report.skipped else []
    click.echo(f"imported {export} into {repo}" + (f" ({'; '.join(notes)})" if notes else ""))
    render.table(["kind", "new"], [
        ["dimension records", report.records], ["dataset types", report.dataset_types],
        ["collections", report.collections], ["chains", report.chains],
        ["datasets", report.datasets], ["tags", report.tags],
        ["certifications", report.certifications]])
    click.echo(f"files: {report.files} ({report.bytes:,} bytes, {transfer}), "
               "size and xxh3 recorded")
