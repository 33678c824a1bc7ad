"""`fed audit` and `fed repair`: check a repository's files, repair them from replicas."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from federation.cli import render
from federation.cli.federation_commands import SITES
from federation.cli.transfer_progress import TransferProgress, human_bytes

SELECTION = [
    click.option("--collections", "-c", multiple=True, metavar="NAME|GLOB",
                 help="Only the datasets of these collections (repeatable; default: all)."),
    click.option("--dataset-type", "-t", "dataset_types", multiple=True, metavar="NAME|GLOB",
                 help="Only datasets of these types (repeatable; default: all)."),
    click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
                 help="Processes hashing files (default: one per core)."),
    click.option("--wait", type=click.FloatRange(0), default=60.0, show_default=True,
                 help="Seconds to wait for a sync into REPO to finish before taking its "
                      "sync lock."),
    SITES,
]


def _selection(func):
    for option in reversed(SELECTION):
        func = option(func)
    return func


class Phases:
    """A progress bar (on a terminal; a line every 10 s in a log) per phase of the work."""

    def __init__(self) -> None:
        self.current: TransferProgress | None = None

    def __call__(self, title: str, files: int, nbytes: int) -> TransferProgress:
        self.close()
        self.current = TransferProgress(title)
        self.current.planned(files, nbytes)
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.__exit__(None, None, None)
            self.current = None


@click.command("audit")
@click.argument("repo", metavar="REPO")
@_selection
@click.option("--since", default=None, metavar="LAST|WHEN",
              help="Only datasets that arrived since the last completed audit of the same "
                   "-c/-t (LAST), or since WHEN: a date/time (2026-12-01T08:00) or a "
                   "duration back from now (30m, 12h, 7d).")
@click.option("--sample", default="1", metavar="FRACTION", show_default=True,
              help="Hash this fraction of the files, chosen at random (0.1 or 10%); the "
                   "others are checked for presence and size.")
@click.option("--quarantine", is_flag=True,
              help="Move dark files into REPO/.federation-quarantine/<time>/ (never deleted).")
@click.option("--restart", is_flag=True,
              help="Check every file again, even after an interrupted audit.")
@click.option("--json", "as_json", is_flag=True,
              help="JSON lines: one object per problem, then a summary object.")
def audit(repo, collections, dataset_types, jobs, wait, sites_dir, since, sample, quarantine,
          restart, as_json) -> None:
    """Audit REPO's files: missing, corrupt, dark, or held nowhere.

    REPO is a repository directory, or a site of the sites directory whose
    repository is on this machine.

    \b
    Reports, per dataset and per file:
      missing   a recorded file absent from the datastore
      corrupt   a file whose size or xxh3-128 is not its record's (or that is
                not a regular file, or cannot be read)
      dark      a file in the datastore no record names (the repository's own
                files, staging and files in the trash are not counted)
      unheld    a record whose file is held at another site, and no site of
                the sites directory holds it (its holder first, then the others)

    Files are hashed on every core. An interrupted audit resumes where it
    stopped (--restart: from the start). Its last phase runs under REPO's sync
    lock: problems are confirmed against the records as they stand then, and
    the datastore is walked for dark files (always whole, whatever -c, --since
    or --sample say). Each audit is recorded in REPO's sync log. Exits 1 when
    anything is wrong.
    """
    from federation.operations.audit import AuditRequest, parse_fraction
    from federation.operations.audit import audit as run

    request = AuditRequest(repo, tuple(collections), tuple(dataset_types), since,
                           parse_fraction(sample), jobs, quarantine, restart, wait)
    phases = Phases()
    try:
        result = run(request, sites_dir=sites_dir, phases=phases)
    finally:
        phases.close()
    if as_json:
        for problem in result.problems:
            click.echo(json.dumps(problem.to_dict(), default=str))
        click.echo(json.dumps(_summary(result)))
    else:
        _show_audit(result)
    if not result.ok:
        sys.exit(1)


def _summary(result) -> dict[str, Any]:
    return {"kind": "summary", "site": result.site, "ok": result.ok, "files": result.files,
            "hashed": result.hashed, "bytes": result.bytes, "resumed": result.resumed,
            "held_elsewhere": result.elsewhere, "walked": result.walked,
            "since": result.since, "sample": result.sample, "note": result.note,
            "quarantined": {m.path: m.to for m in result.moved if m.to},
            "left_in_place": {m.path: m.why for m in result.moved if not m.to},
            **result.counts()}


def _show_audit(result) -> None:
    for problem in result.problems:
        click.echo(problem.describe())
    if result.note:
        click.echo(f"note: {result.note}")
    if result.resumed:
        click.echo(f"resumed: {result.resumed} files were checked by an interrupted audit")
    quarantined = sum(m.to is not None for m in result.moved)
    if quarantined:
        click.echo(f"quarantined {quarantined} dark files in .federation-quarantine/")
    sampled = "" if result.sample >= 1 else f" (a {result.sample:.0%} sample)"
    click.echo(f"audit of {result.site}: {result.files} files checked, {result.hashed} hashed"
               f"{sampled} ({human_bytes(result.bytes)}); {result.elsewhere} held elsewhere "
               f"looked for; {result.walked} datastore entries walked")
    counts = ", ".join(f"{n} {kind}" for kind, n in result.counts().items())
    click.echo(f"{'no problems' if result.ok else 'PROBLEMS'}: {counts}")


@click.command("repair")
@click.argument("repo", metavar="REPO")
@click.option("--from", "sources", multiple=True, required=True, metavar="SITE",
              help="A site to fetch good copies from (repeatable: tried in order).")
@_selection
@click.option("--dry-run", is_flag=True,
              help="Fetch and verify the copies into a temporary directory; change nothing.")
@render.JSON_OPTION
def repair(repo, sources, collections, dataset_types, jobs, wait, sites_dir, dry_run,
           as_json) -> None:
    """Repair REPO's missing and corrupt files from verified copies at other sites.

    REPO is a repository directory, or a site of the sites directory whose
    repository is on this machine.

    \b
    Under REPO's sync lock, every file is checked; each missing or corrupt one
    is fetched from the --from sites in order, through their transports (a site
    on this machine, or reached over SFTP or HTTP): into staging, verified
    against REPO's record (size and xxh3-128), and only then renamed into
    place. A good file here is never overwritten. A corrupt file replaced is
    kept in REPO/.federation-quarantine/<time>/. When no site has a good copy,
    the repair says so and changes nothing for that dataset. Records are never
    changed. Each repair is recorded in REPO's sync log. Exits 1 when a file
    could not be repaired.
    """
    from federation.operations.audit import RepairRequest
    from federation.operations.audit import repair as run

    request = RepairRequest(repo, tuple(sources), tuple(collections), tuple(dataset_types),
                            jobs, dry_run, wait)
    phases = Phases()
    try:
        result = run(request, sites_dir=sites_dir, phases=phases)
    finally:
        phases.close()
    if as_json:
        render.as_json(_repair_json(result))
    else:
        _show_repair(result)
    if not result.ok:
        sys.exit(1)


def _fix_json(fix) -> dict[str, Any]:
    return fix.problem.to_dict() | {
        "source": fix.source, "kept": fix.kept,
        "attempts": [{"site": a.site, "good": a.good, "how": a.how} for a in fix.attempts]}


def _repair_json(result) -> dict[str, Any]:
    return {"site": result.site, "dry_run": result.dry_run, "from": result.sources,
            "checked": result.checked, "bytes": result.bytes, "ok": result.ok,
            "repaired": [_fix_json(f) for f in result.repaired],
            "unrepaired": [_fix_json(f) for f in result.unrepaired],
            "fine": [_fix_json(f) for f in result.fine]}


def _show_repair(result) -> None:
    verb = "would repair" if result.dry_run else "repaired"
    for fix in result.repaired:
        kept = f"; the corrupt file is kept as {fix.kept}" if fix.kept else ""
        click.echo(f"{verb} from {fix.source}: {fix.problem.subject()}, {fix.problem.kind} "
                   f"({fix.problem.detail}){kept}")
    for fix in result.unrepaired:
        tried = "; ".join(f"{a.site}: {a.how}" for a in fix.attempts) or "no site tried"
        click.echo(f"NOT repaired: {fix.problem.subject()}, {fix.problem.kind} "
                   f"({fix.problem.detail}): no site has a good copy ({tried}); nothing "
                   "changed for it")
    if result.fine:
        click.echo(f"note: {len(result.fine)} files were found good on a second look and "
                   "left as they are")
    total = len(result.repaired) + len(result.unrepaired)
    if not total:
        click.echo(f"{result.site}: {result.checked} files checked, nothing to repair")
        return
    size = human_bytes(sum(f.problem.size or 0 for f in result.repaired))
    click.echo(f"{result.site}: {result.checked} files checked; {verb} {len(result.repaired)} "
               f"of {total} ({size}) from {', '.join(result.sources)}"
               + (f"; {len(result.unrepaired)} without a good copy" if result.unrepaired
                  else ""))
