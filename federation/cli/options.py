"""Arguments and options several `fed` commands share."""

from __future__ import annotations

from pathlib import Path

import click

REPO = click.argument("repo", type=click.Path(file_okay=False, path_type=Path))
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
WHERE = click.option("--where", default=None,
                     help="Data ID expression, e.g. \"instrument = 'HSC' AND visit IN (1..5)\".")
BIND = click.option("--bind", multiple=True, metavar="KEY=VALUE",
                    help="Value for a :KEY bind parameter in --where (repeatable).")
COLLECTIONS = click.option("--collections", "-c", multiple=True, metavar="NAME|GLOB",
                           help="Collections to search, in order (repeatable).")
DATASET_TYPES = click.option("--dataset-type", "-t", "dataset_types", multiple=True,
                             metavar="NAME|GLOB", help="Dataset types (repeatable; default all).")


def parse_bind(values: tuple[str, ...]) -> dict:
    """--bind KEY=VALUE pairs as a mapping."""
    from federation.inputs import parse_assignments

    return parse_assignments(values, "--bind")
