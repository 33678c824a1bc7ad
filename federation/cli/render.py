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


@contextmanager
def progress(total: int | None, description: str) -> Iterator[Any]:
    """A callback ``advance(n)`` drawing a bar on a terminal, silent otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=description, unit="file", file=sys.stderr,
              leave=False) as bar:
        yield bar.update
