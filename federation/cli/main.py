"""The `fed` command: parses arguments, calls one `federation.operations` function, prints.

Library imports happen inside the commands so that `fed --help` stays fast.
User errors print one line (``error: ...``) and exit 1; ``-v`` shows tracebacks.
Confirmation questions are asked here and handed to the operations as callbacks.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from federation.cli import render
from federation.cli.options import (  # noqa: F401 - shared options, also used below
    BIND,
    COLLECTIONS,
    DATASET_TYPES,
    JSON,
    REPO,
    WHERE,
)
from federation.cli.options import parse_bind as _bind

DRY_RUN = click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
YES = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")


class FedGroup(click.Group):
    """Turns user errors into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context):
        from federation.errors import FederationError

        try:
            return super().invoke(ctx)
        except FederationError as exc:
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            message = " ".join(str(exc).split("\n")[:1])
            click.echo(f"error: {message}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=FedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="federation")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Federated multi-site repositories for astronomical data.

    Each site runs a repository: a registry (SQLite or PostgreSQL) of
    datasets, collections and dimension records, plus a datastore of
    checksummed files. Exit status: 0 success, 1 error, 2 bad usage.
    """
    ctx.obj = {"verbose": verbose}
    warnings.showwarning = _warning_line


def _warning_line(message, category, *_args, **_kwargs) -> None:
    """Warnings meant for users (a retracted release searched) as one `warning:` line."""
    click.echo(f"warning: {message}", err=True)


def _need_collections(collections: tuple[str, ...]) -> None:
    if not collections:
        raise click.UsageError("give at least one --collections to search")


def _confirm(yes: bool, question: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError("refusing to delete without confirmation: pass --yes")
    click.confirm(question, abort=True)


# -- repository set-up ---------------------------------------------------------


def _universe_choice(ctx: click.Context, param: click.Parameter, value: str | None
                     ) -> str | None:
    """``daf_butler[:VERSION]`` as it is; anything else must be an existing file."""
    if value is None or value.partition(":")[0] == "daf_butler":
        return value
    return str(click.Path(dir_okay=False, exists=True).convert(value, param, ctx))


@cli.command()
@REPO
@click.option("--db", default=None, metavar="URL",
              help="Registry database URL (default: SQLite file inside REPO), e.g. "
                   "postgresql+psycopg://user@host/dbname.")
@click.option("--site", default="local", show_default=True, help="This repository's site name.")
@click.option("--universe", metavar="FILE|daf_butler[:VERSION]", callback=_universe_choice,
              help="Dimension universe: a YAML file, or the LSST butler's universe "
                   "(daf_butler: its current version; daf_butler:7: that version; needs the "
                   "lsst-daf-butler package). Default: the built-in astronomy universe.")
@click.option("--config", "config_file",
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="YAML with per-dataset-type file 'templates'.")
@click.option("--owns", multiple=True, metavar="PREFIX",
              help="A collection prefix this site owns (repeatable); collections can then "
                   "be created here only below them (default: any; with --over: u/<user>).")
@click.option("--over", metavar="SITE|RELEASE|SITE:RELEASE",
              help="Make a personal repository layered over a release's read-only registry "
                   "(a site of the sites directory, or a release held at one): it sees the "
                   "release's datasets without copying them; writes go to its own "
                   "collections only.")
@click.option("--sites", "sites_dir", type=click.Path(file_okay=False, path_type=Path),
              envvar="FED_SITES", default=None,
              help="With --over: directory of site definitions (default: $FED_SITES or ./sites).")
def create(repo: Path, db: str | None, site: str, universe: str | None,
           config_file: Path | None, owns: tuple[str, ...], over: str | None,
           sites_dir: Path | None) -> None:
    """Create an empty repository at REPO (with --over: a personal overlay of a release)."""
    if over is not None:  # -- an overlay: federation/operations/overlay.py ---------------
        from federation.operations.overlay import create_from_cli

        made = create_from_cli(repo, over, db=db, site=site, universe=universe,
                               config_file=config_file, owns=owns, sites_dir=sites_dir)
        what = (f"release {made.source.release} at " if made.source.release else "") + \
            f"site {made.source.site}"
        click.echo(f"created overlay {made.root} (site {made.site}, writes under "
                   f"{', '.join(made.owns)}) over {what}; its files are read in place "
                   f"from {made.source.root}")
        return
    from federation.operations.repo import create as run

    created = run(repo, db=db, site=site, universe=universe, config_file=config_file,
                  owns=owns)
    click.echo(f"created repository {created.root} (site {created.site})")


@cli.command("register-dataset-type")
@REPO
@click.argument("name")
@click.argument("storage_class")
@click.argument("dimensions", nargs=-1)
def register_dataset_type(repo: Path, name: str, storage_class: str,
                          dimensions: tuple[str, ...]) -> None:
    """Register dataset type NAME with a STORAGE_CLASS and DIMENSIONS.

    Storage classes: Bytes, JSON, YAML, NumpyArray, FitsImage, FitsTable.
    Registering an identical definition again does nothing.
    """
    from federation.operations.repo import register_dataset_type as run

    result = run(repo, name, storage_class, dimensions)
    click.echo(f"{'registered' if result.new else 'already registered'}: {result.dataset_type}")


@cli.command("insert-dimension-records")
@REPO
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--dimension", help="Dimension of the records (needed for CSV files).")
def insert_dimension_records(repo: Path, file: Path, dimension: str | None) -> None:
    """Insert dimension records from a YAML or CSV FILE (UTF-8).

    YAML: a mapping of dimension -> list of records, or a list with
    --dimension. CSV: a header row of field names, with --dimension.
    Field values are checked against the universe: text fields take text,
    numeric fields numbers. Identical records already present are skipped;
    differing ones are an error, and then nothing is inserted.
    """
    from federation.operations.repo import insert_dimension_records as run

    for counts in run(repo, file, dimension):
        click.echo(f"{counts.dimension}: {counts.new} inserted, {counts.present} already present")


@cli.command("register-collection")
@REPO
@click.argument("name")
@click.option("--type", "ctype", type=click.Choice(["RUN", "TAGGED", "CALIBRATION"]),
              default="TAGGED", show_default=True)
@click.option("--doc", default=None, help="Documentation string for the collection.")
def register_collection(repo: Path, name: str, ctype: str, doc: str | None) -> None:
    """Create a collection, or update its documentation."""
    from federation.operations.membership import register_collection as run

    result = run(repo, name, ctype, doc)
    click.echo(f"{'created' if result.new else 'exists'}: {result.name} ({result.type})")


@cli.command("ingest-files")
@REPO
@click.argument("dataset_type")
@click.argument("run")
@click.argument("table", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--transfer", type=click.Choice(["copy", "move", "hardlink", "symlink", "direct"]),
              default="copy", show_default=True, help="How files get into the datastore.")
@click.option("--id-mode", type=click.Choice(["random", "deterministic", "deterministic-run"]),
              default="random", show_default=True,
              help="deterministic: the same file ingested at any site gets the same ID.")
@click.option("--prefix", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for relative paths in TABLE (default: TABLE's directory).")
@click.option("--data-id", multiple=True, metavar="KEY=VALUE",
              help="Data ID value common to every row (repeatable).")
def ingest_files(repo: Path, dataset_type: str, run: str, table: Path, transfer: str,
                 id_mode: str, prefix: Path | None, data_id: tuple[str, ...]) -> None:
    """Ingest the files listed in TABLE (CSV or YAML: a 'file' column + data ID columns).

    Only regular files can be ingested. The table is checked whole before
    any file is touched, and everything is registered in one transaction:
    one bad row (named by its line) and nothing is ingested.
    """
    from federation.inputs import parse_assignments
    from federation.operations.repo import ingest_files as run_ingest

    common = parse_assignments(data_id, "--data-id")
    with render.progress(None, "ingest") as advance:
        result = run_ingest(repo, dataset_type, run, table, transfer=transfer, id_mode=id_mode,
                            prefix=prefix, data_id=common, progress=advance)
    click.echo(f"ingested {len(result.refs)} {result.dataset_type} datasets into {result.run} "
               f"({result.transfer})")


# -- queries -------------------------------------------------------------------


@cli.command("query-datasets")
@REPO
@click.argument("dataset_types", nargs=-1)
@COLLECTIONS
@WHERE
@BIND
@click.option("--find-all", is_flag=True,
              help="Every match in every collection, not just the first along the path.")
@click.option("--show-uri", is_flag=True, help="Show each dataset's file location.")
@JSON
def query_datasets(repo: Path, dataset_types, collections, where, bind, find_all, show_uri,
                   as_json) -> None:
    """List datasets of DATASET_TYPES (names or globs; default all) in --collections."""
    from federation.operations.queries import query_datasets as run

    result = run(repo, dataset_types, collections=collections, where=where, bind=_bind(bind),
                 find_all=find_all, show_uri=show_uri)
    render.dataset_query(result, as_json)


@cli.command("query-collections")
@REPO
@click.argument("patterns", nargs=-1)
@click.option("--type", "types", multiple=True,
              type=click.Choice(["RUN", "TAGGED", "CHAINED", "CALIBRATION"]))
@JSON
def query_collections(repo: Path, patterns, types, as_json) -> None:
    """List collections whose names match PATTERNS (globs; default all)."""
    from federation.operations.queries import query_collections as run

    found = run(repo, patterns, types)
    if as_json:
        render.as_json([c.to_dict() for c in found])
        return
    render.table(["name", "type", "owner", "children", "doc"],
                 [[c.name, c.type, c.owner_site, c.children, c.doc] for c in found])


@cli.command("query-dimension-records")
@REPO
@click.argument("dimension")
@WHERE
@BIND
@JSON
def query_dimension_records(repo: Path, dimension, where, bind, as_json) -> None:
    """List the records of DIMENSION."""
    from federation.operations.queries import query_dimension_records as run

    render.dimension_records(run(repo, dimension, where=where, bind=_bind(bind)), as_json)


@cli.command("query-dataset-types")
@REPO
@click.argument("pattern", default="*")
@JSON
def query_dataset_types(repo: Path, pattern: str, as_json: bool) -> None:
    """List dataset types whose names match PATTERN (a glob)."""
    from federation.operations.queries import query_dataset_types as run

    types = run(repo, pattern)
    if as_json:
        render.as_json([t.to_dict() for t in types])
        return
    render.table(["name", "dimensions", "storage class"],
                 [[t.name, list(t.dimensions.required), t.storage_class] for t in types])


# -- collection changes --------------------------------------------------------


@cli.command("collection-chain")
@REPO
@click.argument("parent")
@click.argument("children", nargs=-1)
@click.option("--mode", type=click.Choice(["redefine", "extend", "prepend", "remove", "pop"]),
              default="redefine", show_default=True,
              help="redefine: replace the children; extend/prepend: add at the end/front; "
                   "remove: drop the named children; pop: drop children by position.")
@click.option("--doc", default=None, help="Documentation string for the chain.")
def collection_chain(repo: Path, parent: str, children, mode: str, doc: str | None) -> None:
    """Create or change the CHAINED collection PARENT (a search path of CHILDREN)."""
    from federation.operations.membership import collection_chain as run

    chain = run(repo, parent, list(children), mode=mode, doc=doc)
    click.echo(f"{chain.parent} -> [{', '.join(chain.children)}]")


@cli.command()
@REPO
@click.argument("tag")
@COLLECTIONS
@DATASET_TYPES
@WHERE
@click.option("--doc", default="", help="Documentation string if TAG is created.")
def associate(repo: Path, tag: str, collections, dataset_types, where, doc) -> None:
    """Add the datasets found in --collections to the TAGGED collection TAG."""
    from federation.operations.membership import associate as run

    _need_collections(collections)
    result = run(repo, tag, collections=collections, dataset_types=dataset_types, where=where,
                 doc=doc)
    click.echo(f"{tag}: {result.new} datasets tagged, {result.already} already there")


@cli.command()
@REPO
@click.argument("tag")
@COLLECTIONS
@DATASET_TYPES
@WHERE
def disassociate(repo: Path, tag: str, collections, dataset_types, where) -> None:
    """Remove the datasets found in --collections from the TAGGED collection TAG.

    Every dataset the search finds (not just the first per data ID) leaves
    TAG if it is there; the datasets themselves stay in their runs. Search
    TAG itself to untag by data ID: fed disassociate REPO TAG -c TAG --where ...
    """
    from federation.operations.membership import disassociate as run

    _need_collections(collections)
    result = run(repo, tag, collections=collections, dataset_types=dataset_types, where=where)
    click.echo(f"{tag}: {result.removed} datasets untagged, {result.not_tagged} were not tagged")


@cli.command("certify-calibrations")
@REPO
@click.argument("input_run")
@click.argument("calibration_collection")
@click.argument("dataset_type")
@click.option("--begin-date", default=None, help="Start of validity, ISO 8601 (default: -inf).")
@click.option("--end-date", default=None, help="End of validity, ISO 8601 (default: +inf).")
@WHERE
@click.option("--doc", default="", help="Documentation string if the collection is created.")
def certify_calibrations(repo: Path, input_run, calibration_collection, dataset_type,
                         begin_date, end_date, where, doc) -> None:
    """Certify DATASET_TYPE datasets of INPUT_RUN into CALIBRATION_COLLECTION."""
    from federation.operations.membership import certify_calibrations as run

    result = run(repo, input_run, calibration_collection, dataset_type, begin=begin_date,
                 end=end_date, where=where, doc=doc)
    click.echo(f"certified {result.count} {dataset_type} datasets in {calibration_collection} "
               f"from {begin_date or '-inf'} to {end_date or '+inf'}")


@cli.command()
@REPO
@click.argument("collection")
@click.argument("dataset_type")
@click.option("--begin-date", default=None, help="Start of the span, ISO 8601 (default: -inf).")
@click.option("--end-date", default=None, help="End of the span, ISO 8601 (default: +inf).")
@WHERE
def decertify(repo: Path, collection, dataset_type, begin_date, end_date, where) -> None:
    """Remove DATASET_TYPE validity from the CALIBRATION collection COLLECTION.

    Between --begin-date and --end-date (default: all time), lookups in
    COLLECTION then find no DATASET_TYPE dataset: validity ranges inside the
    span are removed, ranges reaching outside it are trimmed or split. --where
    limits this to the data IDs it selects among the certified datasets. The
    datasets themselves stay in their runs.
    """
    from federation.operations.membership import decertify as run

    result = run(repo, collection, dataset_type, begin=begin_date, end=end_date, where=where)
    selected = "" if result.data_ids is None else f" for {result.data_ids} data IDs"
    click.echo(f"decertified {dataset_type} in {collection}{selected} from "
               f"{begin_date or '-inf'} to {end_date or '+inf'}: {result.changed} validity "
               "ranges removed, trimmed or split")


# -- removal -------------------------------------------------------------------


@cli.command("prune-datasets")
@REPO
@click.argument("dataset_types", nargs=-1)
@COLLECTIONS
@WHERE
@DRY_RUN
@YES
def prune_datasets(repo: Path, dataset_types, collections, where, dry_run, yes) -> None:
    """Remove datasets (records and files) found in --collections."""
    from federation.operations.removal import prune_datasets as run

    _need_collections(collections)

    def confirm(refs) -> None:
        render.ref_listing(refs)
        _confirm(yes, f"remove these {len(refs)} datasets and their files?")

    result = run(repo, dataset_types, collections=collections, where=where, dry_run=dry_run,
                 confirm=confirm)
    if result.done:
        click.echo(f"removed {len(result.refs)} datasets")
        return
    render.ref_listing(result.refs)
    click.echo(f"{len(result.refs)} datasets would be removed" if dry_run
               else "nothing to remove")


@cli.command("remove-runs")
@REPO
@click.argument("patterns", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Also remove the runs from chains that hold them.")
@DRY_RUN
@YES
def remove_runs(repo: Path, patterns, force, dry_run, yes) -> None:
    """Remove RUN collections (names or globs) with all their datasets and files."""
    from federation.operations.removal import remove_runs as run

    def confirm(runs) -> None:
        render.table(["run", "datasets"], [[r.name, r.datasets] for r in runs])
        _confirm(yes, f"remove {len(runs)} runs and their datasets?")

    result = run(repo, patterns, unlink_chains=force, dry_run=dry_run, confirm=confirm)
    if result.done:
        click.echo(f"removed {len(result.runs)} runs ({result.removed} datasets)")
    else:
        render.table(["run", "datasets"], [[r.name, r.datasets] for r in result.runs])


@cli.command("remove-collections")
@REPO
@click.argument("patterns", nargs=-1, required=True)
@click.option("--force", is_flag=True,
              help="Also take the collections out of chains that hold them.")
@DRY_RUN
@YES
def remove_collections(repo: Path, patterns, force, dry_run, yes) -> None:
    """Remove TAGGED, CHAINED and CALIBRATION collections (names or globs).

    Their datasets stay in their runs: only the tags, certifications or
    chain links go. RUN collections are refused (use fed remove-runs, which
    removes their datasets too). A collection held by a chain that is not
    removed as well is refused unless --force takes it out of that chain.
    All the collections are removed in one transaction, or none.
    """
    from federation.operations.removal import remove_collections as run

    def confirm(found) -> None:
        render.collection_removals(found)
        _confirm(yes, f"remove {len(found)} collections?")

    result = run(repo, patterns, unlink_chains=force, dry_run=dry_run, confirm=confirm)
    if result.done:
        click.echo(f"removed {len(result.collections)} collections (their datasets stay)")
    else:
        render.collection_removals(result.collections)


# -- checking ------------------------------------------------------------------


@cli.command()
@REPO
@COLLECTIONS
@DATASET_TYPES
@WHERE
@JSON
def verify(repo: Path, collections, dataset_types, where, as_json) -> None:
    """Re-hash files against their recorded size and xxh3 checksum.

    Exits 1 if any file is missing or does not match; each problem says
    which value is the file's and which its record's.
    """
    from federation.operations.repo import verify as run

    with render.progress(None, "verify") as advance:
        report = run(repo, collections=collections, dataset_types=dataset_types, where=where,
                     progress=advance)
    render.verify_report(report, as_json)
    if report.problems:
        sys.exit(1)


def _register_federation_commands() -> None:
    from federation.cli import (
        audit_commands,
        bundle_commands,
        butler_commands,
        butler_export_commands,
        cache_commands,
        compare_commands,
        diff_commands,
        drop_commands,
        federation_commands,
        policy_commands,
        release_commands,
        remote_commands,
        rucio_commands,
        staging_commands,
        status_commands,
        subset_commands,
    )

    cli.add_command(federation_commands.site)
    cli.add_command(federation_commands.sync)
    cli.add_command(federation_commands.log)
    cli.add_command(release_commands.release)
    cli.add_command(diff_commands.diff)
    cli.add_command(drop_commands.drop)
    cli.add_command(audit_commands.audit)
    cli.add_command(audit_commands.repair)
    cli.add_command(compare_commands.compare)
    cli.add_command(policy_commands.policy)
    cli.add_command(policy_commands.federate)
    cli.add_command(status_commands.status)
    cli.add_command(status_commands.serve)
    cli.add_command(remote_commands.publish)
    cli.add_command(remote_commands.receive)
    cli.add_command(rucio_commands.rucio)
    cli.add_command(subset_commands.subset)
    cli.add_command(butler_export_commands.export_butler)
    cli.add_command(butler_commands.import_butler)
    cli.add_command(cache_commands.cache)
    for command in (bundle_commands.export, bundle_commands.import_, bundle_commands.bundle):
        cli.add_command(command)
    for command in (staging_commands.stage, staging_commands.collect,
                    staging_commands.provenance):
        cli.add_command(command)


_register_federation_commands()


def main() -> None:
    cli(prog_name="fed")
