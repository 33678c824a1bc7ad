"""Printing what syncs, imports and receives did, and the sync log."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from federation.cli.render import as_json, table

NOT_APPLIED = (" skip", " conflict", " refused", " blocked", " failed")


def report(result: Any, as_json_output: bool, *, dry_run: bool, title: str,
           refused: bool = False, strict: bool = True) -> None:
    """A sync/import report: counts by kind and action, conflicts in full, failed files.

    ``refused``: the operation stopped on conflicts and applied nothing (the counts
    are its plan); ``strict``: conflicts stop a run (``--on-conflict fail``).
    """
    if as_json_output:
        as_json(result.to_dict() | {"dry_run": dry_run, "applied": not (dry_run or refused)})
        return
    click.echo(f"{title}: {_outcome(result, dry_run=dry_run, refused=refused, strict=strict)}")
    rows = sorted(result.counts.items())
    table(["kind", "action", "count"], [[k.split(" ")[0], k.split(" ")[1], n] for k, n in rows])
    if result.files or result.bytes:
        click.echo(f"files transferred: {result.files} ({result.bytes:,} bytes), verified")
    if getattr(result, "resumed_files", 0):
        click.echo(f"resumed {result.resumed_files} partial download(s) "
                   f"({result.resumed_bytes:,} bytes were already here)")
    if getattr(result, "rucio_requests", None) is not None:
        click.echo(f"files brought by Rucio ({result.rucio_requests} requests to Rucio)")
    for conflict in result.conflicts:
        click.echo(f"conflict: {conflict}")
    if getattr(result, "more_conflicts", 0):
        click.echo(f"... and {result.more_conflicts} more conflict(s)")
    for dataset_id, path, reason in result.failed:
        click.echo(f"failed: {path} ({dataset_id}): {reason}")
    for note in getattr(result, "notes", ()):
        click.echo(f"note: {note}")
    for check in getattr(result, "verified", ()):
        shown = "complete" if check.complete else \
            f"INCOMPLETE ({check.missing} missing, {check.corrupt} corrupt)"
        click.echo(f"release {check.release} verified at {check.site}: {shown}, "
                   f"{check.files} files, root {check.root}")
    if result.cursor is not None and not dry_run and not refused:
        click.echo(f"cursor now at source journal entry {result.cursor}")


def _outcome(result: Any, *, dry_run: bool, refused: bool, strict: bool) -> str:
    """What the operation did, or would do; never "would apply" for what conflicts stop."""
    conflicts = getattr(result, "conflict_count", 0)
    if refused:
        return f"refused, nothing applied: {conflicts} conflict(s); the plan was"
    if not dry_run:
        return "applied"
    if not conflicts:
        return "would apply"
    if strict:
        return f"dry run: {conflicts} conflict(s), a run would be refused; the plan"
    return f"dry run: would apply the plan but leave out {conflicts} conflict(s)"


def sync_log(sites: list[Any]) -> None:
    """The log of each site: one row per operation."""
    for found in sites:
        click.echo(f"{found.site}:")
        if found.error:
            click.echo(f"  error: {found.error}")
            continue
        rows = []
        for e in found.entries:
            applied = sum(n for k, n in e.counts.items() if not k.endswith(NOT_APPLIED))
            cursor = "" if e.cursor_to is None else (
                f"{'' if e.cursor_from is None else e.cursor_from}..{e.cursor_to}")
            rows.append([_time(e.started), _duration(e), e.operation, e.user,
                         f"{e.source} -> {e.destination}", cursor, applied,
                         f"{e.files} ({_size(e.bytes)})", e.result,
                         e.message[:80]])
        table(["started", "took", "operation", "who", "from -> to", "cursor", "applied",
               "files", "result", "message"], rows)


def _time(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def _duration(entry: Any) -> str:
    if entry.ended is None:
        return ""
    return f"{entry.ended - entry.started:.1f} s"


def _size(nbytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes} B"
