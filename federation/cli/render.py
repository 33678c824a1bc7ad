"""Terminal output: aligned tables, JSON and progress bars for the `fed` command."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows as a left-aligned table with a header rule."""
    if not rows:
        click.echo("(none)")
        return
    cells = [[_text(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    click.echo("  ".join("-" * w for w in widths))
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def as_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return str(value)


JSON_OPTION = click.option("--json", "as_json", is_flag=True,
                           help="Print JSON instead of a table.")


@contextmanager
def progress(total: int | None, description: str, unit: str = "file") -> Iterator[Any]:
    """A callback ``advance(n)`` drawing a bar on a terminal, silent otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=description, unit=unit, file=sys.stderr,
              leave=False) as bar:
        yield bar.update


def report(result: Any, as_json_output: bool, *, dry_run: bool, title: str) -> None:
    """Print a sync/import report: counts by kind and action, conflicts in full."""
    if as_json_output:
        as_json(result.to_dict() | {"dry_run": dry_run})
        return
    verb = "would apply" if dry_run else "applied"
    click.echo(f"{title}: {verb}")
    rows = sorted(result.counts.items())
    table(["kind", "action", "count"],
          [[k.split(" ")[0], k.split(" ")[1], n] for k, n in rows])
    if result.files or result.bytes:
        click.echo(f"files transferred: {result.files} ({result.bytes:,} bytes), verified")
    if getattr(result, "resumed_files", 0):
        click.echo(f"resumed {result.resumed_files} partial download(s) "
                   f"({result.resumed_bytes:,} bytes were already here)")
    for conflict in result.conflicts:
        click.echo(f"conflict: {conflict}")
    for dataset_id, path, reason in result.failed:
        click.echo(f"failed: {path} ({dataset_id}): {reason}")
    if result.cursor is not None and not dry_run:
        click.echo(f"cursor now at source journal entry {result.cursor}")
