"""Terminal output: aligned tables, JSON and progress bars for the `fed` command."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from federation.butler import VerifyReport
    from federation.model import DatasetRef
    from federation.operations.queries import DatasetQuery, DimensionRecordQuery
    from federation.operations.removal import CollectionSummary


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


# -- repository command results --------------------------------------------------


def dataset_query(result: DatasetQuery, as_json_output: bool) -> None:
    """Datasets found by `fed query-datasets`: type, run, id, data ID (and URI)."""
    def uri(found) -> str:
        return found.uri if found.uri is not None else f"({found.no_uri})"

    if as_json_output:
        as_json([f.ref.to_dict() | ({"uri": uri(f)} if result.show_uri else {})
                 for f in result.datasets])
        return
    headers = ["type", "run", "id", "data ID"] + (["uri"] if result.show_uri else [])
    table(headers, [
        [f.ref.dataset_type.name, f.ref.run, f.ref.id,
         " ".join(f"{k}={v}" for k, v in f.ref.required_data_id.items())]
        + ([uri(f)] if result.show_uri else []) for f in result.datasets])


def dimension_records(result: DimensionRecordQuery, as_json_output: bool) -> None:
    """Records of one dimension; a timespan shows as ``begin .. end``."""
    rows = [{k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in r.items()}
            for r in result.records]
    if as_json_output:
        as_json(rows)
        return
    headers = result.fields
    table(headers, [[_record_cell(r[h]) for h in headers] for r in rows])


def _record_cell(value: Any) -> Any:
    if isinstance(value, dict):
        return f"{value.get('begin') or '-inf'} .. {value.get('end') or '+inf'}"
    return value


def ref_listing(refs: Sequence[DatasetRef], limit: int = 20) -> None:
    """The first ``limit`` datasets, one per line, and how many more there are."""
    for ref in refs[:limit]:
        click.echo(f"  {ref}")
    if len(refs) > limit:
        click.echo(f"  ... and {len(refs) - limit} more")


def collection_removals(found: Sequence[CollectionSummary]) -> None:
    """Collections `fed remove-collections` would remove, with what they hold."""
    table(["collection", "type", "members", "in chains"],
          [[c.name, c.type, c.members, c.chains] for c in found])


def verify_report(report: VerifyReport, as_json_output: bool) -> None:
    """Problems found by `fed verify`, then the count of files checked."""
    if as_json_output:
        as_json({"checked": report.checked, "held_elsewhere": report.held_elsewhere,
                 "problems": [{"id": str(p.dataset_id), "path": p.path, "problem": p.problem}
                              for p in report.problems]})
        return
    for problem in report.problems:
        click.echo(f"{problem.problem}: {problem.path} ({problem.dataset_id})")
    click.echo(f"verified {report.checked} files: {len(report.problems)} problems"
               + (f", {report.held_elsewhere} held at other sites"
                  if report.held_elsewhere else ""))
