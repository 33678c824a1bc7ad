"""`fed export`, `fed import` and `fed bundle show`: syncs carried in a file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from federation.cli import render
from federation.cli.federation_commands import (
    SITES,
    apply_options,
    make_selection,
    run_and_report,
    selection_options,
)


@click.command("export")
@click.argument("source")
@click.option("--since", required=True, metavar="SEQ|snapshot",
              help="Export SOURCE's journal after this entry (the destination's cursor, "
                   "shown by its last import); 0 or 'snapshot' exports the whole selection.")
@selection_options
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Bundle to write: gzip-compressed JSON lines (NAME.jsonl.gz), or plain "
                   "when NAME ends in .jsonl.")
@click.option("--with-files", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="Also copy (and verify) the listed files into DIR.")
@SITES
@render.JSON_OPTION
def export(source, since, collections, dataset_types, where, bind, files, release, output,
           with_files, sites_dir, as_json) -> None:
    """Write the changes of site SOURCE to a bundle file, for a site that cannot reach it.

    The bundle holds SOURCE's journal after --since (or a snapshot) as batches
    of records, then a manifest of the files they need, then a checksum trailer.
    Import it with 'fed import BUNDLE DEST --files-from DIR'.
    """
    from federation.operations.sync import export as run_export
    from federation.sync.bundle.format import parse_since

    selection = make_selection(collections, dataset_types, where, bind, files, release)
    result = run_export(source, output, since=parse_since(since), selection=selection,
                        with_files=with_files, sites_dir=sites_dir)
    if as_json:
        render.as_json(result.to_dict())
        return
    click.echo(f"exported {result.header.describe()} to {output}")
    click.echo(f"selection: {selection.describe()}")
    render.table(["kind", "objects"], sorted(result.counts.items()))
    click.echo(f"batches: {result.batches}; manifest: {result.files} file(s), "
               f"{result.bytes:,} bytes")
    for note in result.notes:
        click.echo(f"note: {note}")
    if with_files is not None and selection.files:
        click.echo(f"files copied to {with_files}: {result.copied} "
                   f"({result.files - result.copied} already there), verified")


@click.command("import")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("destination")
@click.option("--files-from", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="Where the bundle's files are: a 'fed export --with-files' "
                                  "directory or the source repository's root.")
@apply_options
def import_(bundle, destination, files_from, dry_run, on_conflict, jobs, wait, sites_dir,
            as_json) -> None:
    """Apply a bundle written by 'fed export' to site DESTINATION.

    The whole bundle is checked first (format version, trailer, line count,
    SHA-256, every record and path, continuity with DESTINATION's cursor, the
    files in --files-from); if anything is wrong nothing is written. It is
    then applied as 'fed sync' would, advancing the cursor batch by batch.
    """
    from federation.operations.sync import import_ as run_import
    from federation.sync.options import SyncOptions

    options = SyncOptions(dry_run=dry_run, on_conflict=on_conflict, jobs=jobs, lock_timeout=wait)
    run_and_report(f"{bundle.name} -> {destination}", as_json, options,
                   lambda progress: run_import(bundle, destination, options,
                                               files_from=files_from, sites_dir=sites_dir,
                                               progress=progress))


@click.group()
def bundle() -> None:
    """Inspect bundle files written by 'fed export'."""


@bundle.command("show")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--records", is_flag=True, help="Print the records as JSON lines instead.")
@render.JSON_OPTION
def bundle_show(path, records, as_json) -> None:
    """Summarise a bundle: header, distinct objects by kind (a state repeated in several
    lines counts once), manifest, integrity (exit 1 if damaged)."""
    from federation.errors import InputError
    from federation.operations.sync import bundle_records
    from federation.operations.sync import bundle_show as inspect

    if records:
        for raw in bundle_records(path):
            click.echo(raw.decode().rstrip("\n"))
        summary = inspect(path)
        if summary.error:
            raise InputError(summary.error)
        return
    summary = inspect(path)
    if as_json:
        render.as_json(summary.to_dict())
    else:
        _show(summary)
    if summary.error:
        sys.exit(1)


def _show(summary) -> None:
    header = summary.header
    size = summary.path.stat().st_size
    click.echo(f"bundle: {summary.path} ({'gzip' if summary.compressed else 'plain'}, "
               f"{size:,} bytes)")
    click.echo(f"format: federation-bundle version {header.version}")
    click.echo(f"content: {header.describe()}")
    click.echo(f"selection: {header.selection.describe()}")
    click.echo(f"created: {header.created}")
    click.echo(f"batches: {summary.batches}")
    render.table(["kind", "objects"], sorted(summary.counts.items()))
    click.echo(f"manifest: {summary.files} file(s), {summary.bytes:,} bytes")
    if summary.error:
        click.echo(f"integrity: FAILED: {summary.error}")
    else:
        click.echo(f"integrity: ok ({summary.lines} lines, sha256 {summary.sha256})")
