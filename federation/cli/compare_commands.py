"""`fed compare`: the same processing at two sites, dataset by dataset (LDF104)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from federation.cli import render
from federation.cli.federation_commands import SITES
from federation.cli.transfer_progress import human_bytes
from federation.compare.model import DEFAULT_ATOL, DEFAULT_RTOL

LISTED = 50  # pairs of each kind printed (different, only in A, only in B); --json has all


@click.command("compare")
@click.argument("a", metavar="SITE_A:RUN_A")
@click.argument("b", metavar="SITE_B:RUN_B")
@click.option("--dataset-type", "-t", "dataset_types", multiple=True, metavar="NAME|GLOB",
              help="Only these dataset types (repeatable; default: all).")
@click.option("--where", default=None,
              help="Data ID expression both sides' datasets must match, e.g. "
                   "\"visit = 903334 AND detector IN (0..3)\".")
@click.option("--bind", multiple=True, metavar="KEY=VALUE",
              help="Value for a :KEY bind parameter in --where (repeatable).")
@click.option("--rtol", type=float, default=DEFAULT_RTOL, show_default=True,
              help="Relative tolerance: |A-B| <= atol + rtol * |B|.")
@click.option("--atol", type=float, default=DEFAULT_ATOL, show_default=True,
              help="Absolute tolerance, in the values' own units.")
@click.option("--report", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="Also write an HTML report with plots to DIR/index.html.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=4, show_default=True,
              help="Files verified or fetched in parallel.")
@SITES
@render.JSON_OPTION
def compare(a, b, dataset_types, where, bind, rtol, atol, report, jobs, sites_dir,
            as_json) -> None:
    """Compare two runs of the same processing, e.g. made at NCSA and at IN2P3 from the
    same raws, and decide whether they are scientifically equivalent.

    Each side is SITE:RUN, a site of the sites directory (one reached over SFTP or
    HTTP is read through what it published) or REPO:RUN for a repository path.
    Datasets are paired by dataset type and data ID (their UUIDs differ: each site
    made its own), and each pair is:

    \b
      identical   same size and xxh3-128 checksum (no file is read);
      equivalent  other bytes, but every value within the tolerance;
      different   other shape, type or structure, another NaN pattern,
                  or values beyond the tolerance;
      only in A / only in B.

    \b
    Content is compared by storage class: FitsImage and NumpyArray value by value
    (max and mean |A-B|, fraction beyond the tolerance, NaN patterns; FITS headers
    are not compared), FitsTable column by column (names, types, units; numeric
    columns within the tolerance, others exactly), JSON and YAML structurally with
    numbers within the tolerance, Bytes by checksum only. The tolerance is
    numpy.isclose's: |A-B| <= atol + rtol * |B|, B being the reference.

    Only the files of pairs whose bytes differ are read, each verified against its
    record (size and xxh3-128) first; files held at other sites are fetched into
    $XDG_CACHE_HOME/federation/files/SITE/ and reused from there. A file that does
    not match its record stops the comparison. Prints a summary per dataset type and
    the verdict; exits 0 when the runs are equivalent, 1 when they are not.
    """
    from federation.inputs import parse_assignments
    from federation.operations.compare import CompareRequest
    from federation.operations.compare import compare as run

    request = CompareRequest(a, b, tuple(dataset_types), where,
                             parse_assignments(bind, "--bind"), rtol, atol, report, jobs)
    with _Bar() as bar:
        found = run(request, sites_dir=sites_dir, progress=bar)
    if as_json:
        render.as_json(found.to_dict())
    else:
        _show(found)
    if not found.equivalent:
        sys.exit(1)


def _show(found) -> None:
    from federation.compare.model import Kind

    for label, side in (("A", found.a), ("B", found.b)):
        how = " (records as its site published them)" if side.remote else ""
        click.echo(f"{label}: {side.text}: {side.datasets} datasets{how}")
    kinds = list(Kind)
    render.table(["dataset type", "storage class", "pairs", *(k.label for k in kinds),
                  "max |A-B|"],
                 [[s.dataset_type, s.storage_class, s.pairs, *(s.counts[k] for k in kinds),
                   _number(s.max_abs)] for s in found.summaries])
    different = [p for p in found.pairs if p.kind is Kind.DIFFERENT]
    for pair in different[:LISTED]:
        more = f" (and {len(pair.reasons) - 1} more)" if len(pair.reasons) > 1 else ""
        click.echo(f"different: {pair.describe()}: {pair.reasons[0]}{more}")
    _more(len(different))
    for kind in (Kind.ONLY_A, Kind.ONLY_B):
        alone = [p for p in found.pairs if p.kind is kind]
        for pair in alone[:LISTED]:
            click.echo(f"{kind.label}: {pair.describe()}")
        _more(len(alone))
    if found.fetched or found.reused:
        click.echo(f"files: {found.fetched} fetched from other sites "
                   f"({human_bytes(found.fetched_bytes)}), {found.reused} reused from the "
                   "cache, each verified")
    if found.report:
        click.echo(f"report: {found.report}")
    click.echo(found.verdict())


def _more(count: int) -> None:
    if count > LISTED:
        click.echo(f"  ... and {count - LISTED} more (--json lists every pair)")


def _number(value) -> str:
    return "-" if value is None else ("0" if value == 0 else f"{value:.3g}")


class _Bar:
    """The compare operation's progress: a bar per phase (files read, pairs compared) on a
    terminal, nothing otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.bar = None

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def start(self, total: int, what: str) -> None:
        self._close()
        if self.tty and total:
            from tqdm import tqdm

            title = "reading files" if what == "files" else "comparing"
            self.bar = tqdm(total=total, desc=title, unit=what.rstrip("s"), file=sys.stderr,
                            leave=False)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
