"""`fed release ...`: freeze, show, list, retract and compare data releases."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from pathlib import Path

import click

from federation.cli import render
from federation.cli.federation_commands import SITES

REPO = click.argument("repo", type=click.Path(file_okay=False, path_type=Path))


@click.group("release")
def release() -> None:
    """Data releases: frozen sets of datasets with a Merkle root as their identity.

    A release freezes what its collections hold when it is created (chains
    searched as a Butler would, calibration validity ranges as they stand).
    It is searched by its name like a collection, and nothing changes it:
    pruning a released dataset, removing its run or touching its collections
    is refused.
    """


@release.command("create")
@REPO
@click.argument("name")
@click.option("--collections", "-c", multiple=True, required=True, metavar="NAME|GLOB",
              help="Collections to freeze, searched in the order given (repeatable).")
@click.option("--dataset-type", "-t", "dataset_types", multiple=True, metavar="NAME|GLOB",
              help="Only these dataset types (repeatable; default: all).")
@click.option("--where", default=None,
              help="Data ID expression for the searched (non-calibration) datasets.")
@click.option("--bind", multiple=True, metavar="KEY=VALUE", help="Values for --where names.")
@click.option("--doc", default="", help="What the release is, for its users.")
@render.JSON_OPTION
def create(repo, name, collections, dataset_types, where, bind, doc, as_json) -> None:
    """Freeze what COLLECTIONS hold now into release NAME of REPO.

    Prints the release's id (the root of a Merkle tree over its manifest) and
    its counts. NAME becomes a collection: Butler(REPO, collections=NAME) finds
    what the frozen search found.
    """
    from federation.operations.release import create as run

    info = run(repo, name, collections, dataset_types, where, _bind(bind), doc)
    _show(info, as_json)


@release.command("show")
@REPO
@click.argument("name")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the manifest to this file: one canonical JSON line per "
                   "dataset, in key order (the id can be recomputed from it alone).")
@render.JSON_OPTION
def show(repo, name, manifest, as_json) -> None:
    """Show release NAME: its id, counts by dataset type, bytes, who made it and when."""
    from federation.operations.release import show as run

    info = run(repo, name, manifest)
    _show(info, as_json)
    if manifest is not None and not as_json:
        click.echo(f"manifest: {manifest} ({info.entries} entries)")


@release.command("verify")
@REPO
@click.argument("name")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Processes hashing files (default: one per core).")
@click.option("--restart", is_flag=True,
              help="Verify every file again, even after an interrupted verification.")
@render.JSON_OPTION
def verify(repo, name, jobs, restart, as_json) -> None:
    """Prove that REPO holds release NAME: re-hash every file against the manifest and
    recompute the id from the manifest's entries.

    The outcome (when, by whom, the root found, files missing or corrupt) is recorded
    in REPO's registry and its sync log. An interrupted verification resumes where
    it stopped. Exits 1 unless the release is complete here.
    """
    from federation.operations.release import show as info_of
    from federation.operations.release import verify as run

    total = info_of(repo, name).entries
    with render.progress(total, f"verify {name}") as advance:
        found = run(repo, name, jobs, advance, restart)
    check = found.check
    if as_json:
        render.as_json({"release": name, "complete": check.complete, "root": check.root,
                        "expected_root": found.expected_root, "files": check.files,
                        "bytes": found.bytes, "missing": check.missing,
                        "corrupt": check.corrupt, "resumed": found.resumed,
                        "problems": [{"kind": p.kind, "dataset": str(p.entry.id),
                                      "detail": p.detail} for p in found.problems]})
    else:
        for problem in found.problems:
            click.echo(f"{problem.kind}: {problem.entry.describe()} ({problem.detail})")
        if check.root != found.expected_root:
            click.echo(f"the manifest's entries give root {check.root}, not the release's "
                       f"{found.expected_root}")
        if found.resumed:
            click.echo(f"resumed: {found.resumed} files were verified by an interrupted run")
        state = "complete" if check.complete else "INCOMPLETE"
        click.echo(f"{name} {state} here: {check.files} files ({found.bytes} bytes) checked, "
                   f"{check.missing} missing, {check.corrupt} corrupt; root {check.root}")
    if not check.complete:
        sys.exit(1)


@release.command("list")
@REPO
@render.JSON_OPTION
def list_(repo, as_json) -> None:
    """List the releases REPO holds."""
    from federation.operations.release import names

    infos = names(repo)
    if as_json:
        render.as_json([dataclasses.asdict(i) for i in infos])
        return
    render.table(["name", "id", "entries", "bytes", "created", "retracted"],
                 [[i.name, i.root[:16], i.entries, i.bytes, _when(i.created),
                   _when(i.retracted) if i.retracted else ""] for i in infos])


@release.command("retract")
@REPO
@click.argument("name")
@click.option("--reason", required=True, help="Why: shown to everyone who uses the release.")
def retract(repo, name, reason) -> None:
    """Mark release NAME retracted. Its data stays (and stays protected); users who
    search it are warned."""
    from federation.operations.release import retract as run

    info = run(repo, name, reason)
    click.echo(f"retracted {info.name} ({info.root[:16]}): {info.retract_reason}")


@release.command("status")
@click.argument("name")
@SITES
@render.JSON_OPTION
def status(name, sites_dir, as_json) -> None:
    """Where release NAME stands at every site of the sites directory: verified
    (when, the root found), incomplete (missing or corrupt files), unverified,
    absent or unreachable."""
    from federation.operations.release import status as run

    found = run(name, sites_dir)
    if as_json:
        render.as_json([dataclasses.asdict(s) for s in found])
        return
    render.table(["site", "state", "checked", "root", "detail"],
                 [[s.site, s.state, _when(s.checked), (s.root or "")[:16], s.detail]
                  for s in found])


@release.command("diff")
@click.argument("a")
@click.argument("b")
@SITES
@render.JSON_OPTION
def diff(a, b, sites_dir, as_json) -> None:
    """Compare releases A and B, each given as REPO:NAME or SITE:NAME (DR1 against DR2,
    or one release at two sites).

    Lists entries added, removed and changed (by dataset type + data ID), reading
    only the parts of the two trees whose hashes differ. Exits 1 when they differ.
    """
    from federation.operations.release import ReleaseRef, compare

    found = compare(ReleaseRef.parse(a, sites_dir), ReleaseRef.parse(b, sites_dir))
    if as_json:
        render.as_json({"a": found.a.root, "b": found.b.root, "same": found.same,
                        "nodes_visited": found.nodes_visited,
                        "added": [e.line for e in found.added],
                        "removed": [e.line for e in found.removed],
                        "changed": [[x.line, y.line] for x, y in found.changed]})
    else:
        click.echo(f"A {found.a.name} {found.a.root[:16]}  B {found.b.name} "
                   f"{found.b.root[:16]}")
        for entry in found.added:
            click.echo(f"+ {entry.describe()}")
        for entry in found.removed:
            click.echo(f"- {entry.describe()}")
        for old, new in found.changed:
            click.echo(f"~ {old.describe()}: {_what_changed(old, new)}")
        click.echo(f"{len(found.added)} added, {len(found.removed)} removed, "
                   f"{len(found.changed)} changed ({found.nodes_visited} tree nodes read)")
    if not found.same:
        sys.exit(1)


def _show(info, as_json: bool) -> None:
    if as_json:
        render.as_json(dataclasses.asdict(info))
        return
    click.echo(f"release {info.name}")
    click.echo(f"  id        {info.root}")
    click.echo(f"  site      {info.site}, created {_when(info.created)} by {info.creator}")
    if info.doc:
        click.echo(f"  doc       {info.doc}")
    click.echo(f"  entries   {info.entries} ({info.bytes} bytes)")
    for name, count in info.counts.items():
        click.echo(f"    {name:<20} {count}")
    if info.retracted:
        click.echo(f"  RETRACTED {_when(info.retracted)}: {info.retract_reason}")
    check = info.check
    if check is None:
        click.echo("  verified  never here (fed release verify)")
    else:
        state = "complete" if check.complete else \
            f"INCOMPLETE ({check.missing} missing, {check.corrupt} corrupt)"
        click.echo(f"  verified  {_when(check.checked)} by {check.checker}: {state}")


def _what_changed(old, new) -> str:
    fields = ("id", "size", "checksum", "storage_class", "found", "validity")
    return ", ".join(f"{f} {getattr(old, f)} -> {getattr(new, f)}" for f in fields
                     if getattr(old, f) != getattr(new, f))


def _when(stamp: float | None) -> str:
    if stamp is None:
        return ""
    return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _bind(values: tuple[str, ...]) -> dict:
    from federation.inputs import parse_assignments

    return parse_assignments(values, "--bind")
