"""The `fed` command: thin click wrappers over `federation.operations` and the Butler.

Library imports happen inside the commands so that `fed --help` stays fast.
User errors print one line (``error: ...``) and exit 1; ``-v`` shows tracebacks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from federation.cli import render

REPO = click.argument("repo", type=click.Path(file_okay=False, path_type=Path))
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
WHERE = click.option("--where", default=None,
                     help="Data ID expression, e.g. \"instrument = 'HSC' AND visit IN (1..5)\".")
BIND = click.option("--bind", multiple=True, metavar="KEY=VALUE",
                    help="Value for a :KEY bind parameter in --where (repeatable).")
COLLECTIONS = click.option("--collections", "-c", multiple=True, metavar="NAME|GLOB",
                           help="Collections to search, in order (repeatable).")


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


def _bind(values: tuple[str, ...]) -> dict:
    from federation.inputs import parse_assignments

    return parse_assignments(values, "--bind")


# -- repository set-up ---------------------------------------------------------


@cli.command()
@REPO
@click.option("--db", default=None, metavar="URL",
              help="Registry database URL (default: SQLite file inside REPO), e.g. "
                   "postgresql+psycopg://user@host/dbname.")
@click.option("--site", default="local", show_default=True, help="This repository's site name.")
@click.option("--universe", type=click.Path(dir_okay=False, exists=True),
              help="Dimension universe YAML (default: the built-in astronomy universe).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True),
              help="YAML with per-dataset-type file 'templates'.")
def create(repo: Path, db: str | None, site: str, universe: str | None,
           config_file: str | None) -> None:
    """Create an empty repository at REPO."""
    from federation.butler import Butler
    from federation.config import RepoConfig
    from federation.dimensions.universe import DimensionUniverse

    templates = RepoConfig.read_overrides(config_file).get("templates") if config_file else None
    root = Butler.create(repo, db=db, site=site, templates=templates,
                         universe=DimensionUniverse.from_file(universe) if universe else None)
    click.echo(f"created repository {root} (site {site})")


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
    from federation.butler import Butler

    with Butler(repo) as butler:
        new = butler.registry.register_dataset_type(name, dimensions, storage_class)
        dtype = butler.registry.get_dataset_type(name)
    click.echo(f"{'registered' if new else 'already registered'}: {dtype}")


@cli.command("insert-dimension-records")
@REPO
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--dimension", help="Dimension of the records (needed for CSV files).")
def insert_dimension_records(repo: Path, file: Path, dimension: str | None) -> None:
    """Insert dimension records from a YAML or CSV FILE.

    YAML: a mapping of dimension -> list of records, or a list with
    --dimension. CSV: a header row of field names, with --dimension.
    Identical records already present are skipped; differing ones are an error.
    """
    from federation.operations import insert_dimension_records as run

    for name, (given, new) in run(repo, file, dimension).items():
        click.echo(f"{name}: {new} inserted, {given - new} already present")


@cli.command("register-collection")
@REPO
@click.argument("name")
@click.option("--type", "ctype", type=click.Choice(["RUN", "TAGGED", "CALIBRATION"]),
              default="TAGGED", show_default=True)
@click.option("--doc", default=None, help="Documentation string for the collection.")
def register_collection(repo: Path, name: str, ctype: str, doc: str | None) -> None:
    """Create a collection, or update its documentation."""
    from federation.butler import Butler

    with Butler(repo) as butler:
        new = butler.registry.collections.register(name, ctype, doc or "")
        if doc is not None and not new:
            butler.registry.collections.set_doc(name, doc)
    click.echo(f"{'created' if new else 'exists'}: {name} ({ctype})")


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
    """Ingest the files listed in TABLE (CSV or YAML: a 'file' column + data ID columns)."""
    from federation.inputs import parse_assignments
    from federation.operations import ingest_files as run_ingest

    common = parse_assignments(data_id, "--data-id")
    with render.progress(None, "ingest") as advance:
        refs = run_ingest(repo, dataset_type, run, table, transfer=transfer, id_mode=id_mode,
                          prefix=prefix, data_id=common, progress=advance)
    click.echo(f"ingested {len(refs)} {dataset_type} datasets into {run} ({transfer})")


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
    from federation.butler import Butler

    with Butler(repo) as butler:
        refs = butler.query_datasets(list(dataset_types) or None, list(collections) or ["*"],
                                     where=where, bind=_bind(bind), find_first=not find_all)
        uris = {r.id: _uri(butler, r) for r in refs} if show_uri else {}
    if as_json:
        render.as_json([r.to_dict() | ({"uri": uris[r.id]} if show_uri else {}) for r in refs])
        return
    headers = ["type", "run", "id", "data ID"] + (["uri"] if show_uri else [])
    render.table(headers, [
        [r.dataset_type.name, r.run, r.id,
         " ".join(f"{k}={v}" for k, v in r.required_data_id.items())]
        + ([uris[r.id]] if show_uri else []) for r in refs])


def _uri(butler, ref) -> str:
    from federation.errors import MissingDatasetError

    try:
        return butler.get_uri(ref)
    except MissingDatasetError as exc:
        return f"({exc})"


@cli.command("query-collections")
@REPO
@click.argument("patterns", nargs=-1)
@click.option("--type", "types", multiple=True,
              type=click.Choice(["RUN", "TAGGED", "CHAINED", "CALIBRATION"]))
@JSON
def query_collections(repo: Path, patterns, types, as_json) -> None:
    """List collections whose names match PATTERNS (globs; default all)."""
    from federation.butler import Butler

    with Butler(repo) as butler:
        found, seen = [], set()
        for pattern in patterns or ["*"]:
            for coll in butler.registry.collections.query(pattern, types or None):
                if coll.name not in seen:
                    seen.add(coll.name)
                    found.append(coll)
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
    from federation.butler import Butler

    with Butler(repo) as butler:
        records = butler.query_dimension_records(dimension, where=where, bind=_bind(bind))
    rows = [{k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in r.items()}
            for r in records]
    if as_json:
        render.as_json(rows)
        return
    headers = list(rows[0]) if rows else []
    render.table(headers, [[_record_cell(r[h]) for h in headers] for r in rows])


def _record_cell(value):
    if isinstance(value, dict):
        return f"{value.get('begin') or '-inf'} .. {value.get('end') or '+inf'}"
    return value


@cli.command("query-dataset-types")
@REPO
@click.argument("pattern", default="*")
@JSON
def query_dataset_types(repo: Path, pattern: str, as_json: bool) -> None:
    """List dataset types whose names match PATTERN (a glob)."""
    from federation.butler import Butler

    with Butler(repo) as butler:
        types = butler.registry.dataset_types.query(pattern)
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
    from federation.operations import collection_chain as run

    new = run(repo, parent, list(children), mode=mode, doc=doc)
    click.echo(f"{parent} -> [{', '.join(new)}]")


@cli.command()
@REPO
@click.argument("tag")
@COLLECTIONS
@click.option("--dataset-type", "-t", "dataset_types", multiple=True,
              help="Dataset types to tag (default all).")
@WHERE
@click.option("--doc", default="", help="Documentation string if TAG is created.")
def associate(repo: Path, tag: str, collections, dataset_types, where, doc) -> None:
    """Add the datasets found in --collections to the TAGGED collection TAG."""
    from federation.operations import associate as run

    if not collections:
        raise click.UsageError("give at least one --collections to search")
    found, new = run(repo, tag, collections=collections, dataset_types=dataset_types,
                     where=where, doc=doc)
    click.echo(f"{tag}: {new} datasets tagged, {found - new} already there")


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
    from federation.operations import certify_calibrations as run

    count = run(repo, input_run, calibration_collection, dataset_type, begin=begin_date,
                end=end_date, where=where, doc=doc)
    click.echo(f"certified {count} {dataset_type} datasets in {calibration_collection} "
               f"from {begin_date or '-inf'} to {end_date or '+inf'}")


# -- removal -------------------------------------------------------------------


@cli.command("prune-datasets")
@REPO
@click.argument("dataset_types", nargs=-1)
@COLLECTIONS
@WHERE
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def prune_datasets(repo: Path, dataset_types, collections, where, dry_run, yes) -> None:
    """Remove datasets (records and files) found in --collections."""
    from federation.operations import find_for_pruning
    from federation.operations import prune_datasets as run

    if not collections:
        raise click.UsageError("give at least one --collections to search")
    refs = find_for_pruning(repo, collections=collections, dataset_types=dataset_types,
                            where=where)
    for ref in refs[:20]:
        click.echo(f"  {ref}")
    if len(refs) > 20:
        click.echo(f"  ... and {len(refs) - 20} more")
    if dry_run or not refs:
        click.echo(f"{len(refs)} datasets would be removed" if dry_run else "nothing to remove")
        return
    _confirm(yes, f"remove these {len(refs)} datasets and their files?")
    click.echo(f"removed {run(repo, refs)} datasets")


@cli.command("remove-runs")
@REPO
@click.argument("patterns", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Also remove the runs from chains that hold them.")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def remove_runs(repo: Path, patterns, force, dry_run, yes) -> None:
    """Remove RUN collections (names or globs) with all their datasets and files."""
    from federation.operations import find_runs
    from federation.operations import remove_runs as run

    runs = find_runs(repo, patterns)
    render.table(["run", "datasets"], runs)
    if dry_run or not runs:
        return
    _confirm(yes, f"remove {len(runs)} runs and their datasets?")
    removed = run(repo, [name for name, _ in runs], unlink_chains=force)
    click.echo(f"removed {len(runs)} runs ({removed} datasets)")


def _confirm(yes: bool, question: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError("refusing to delete without confirmation: pass --yes")
    click.confirm(question, abort=True)


# -- checking ------------------------------------------------------------------


@cli.command()
@REPO
@COLLECTIONS
@click.option("--dataset-type", "-t", "dataset_types", multiple=True)
@WHERE
@JSON
def verify(repo: Path, collections, dataset_types, where, as_json) -> None:
    """Re-hash files against their recorded size and xxh3 checksum.

    Exits 1 if any file is missing or does not match.
    """
    from federation.butler import Butler

    with Butler(repo) as butler:
        refs = None
        if collections or dataset_types or where:
            refs = butler.query_datasets(list(dataset_types) or None, list(collections) or ["*"],
                                         where=where, find_first=False)
        with render.progress(None, "verify") as advance:
            report = butler.verify(refs, progress=advance)
    if as_json:
        render.as_json({"checked": report.checked, "held_elsewhere": report.held_elsewhere,
                        "problems": [{"id": str(i), "path": p, "problem": m}
                                     for i, p, m in report.problems]})
    else:
        for dataset_id, path, problem in report.problems:
            click.echo(f"{problem}: {path} ({dataset_id})")
        click.echo(f"verified {report.checked} files: {len(report.problems)} problems"
                   + (f", {report.held_elsewhere} held at other sites"
                      if report.held_elsewhere else ""))
    if report.problems:
        sys.exit(1)


def _register_federation_commands() -> None:
    from federation.cli import bundle_commands, federation_commands, remote_commands

    cli.add_command(federation_commands.site)
    cli.add_command(federation_commands.sync)
    cli.add_command(remote_commands.publish)
    cli.add_command(remote_commands.receive)
    for command in (bundle_commands.export, bundle_commands.import_, bundle_commands.bundle):
        cli.add_command(command)


_register_federation_commands()


def main() -> None:
    cli(prog_name="fed")
